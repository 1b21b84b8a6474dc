import Foundation
import XCTest
@testable import DGTensor

/// 3x3 convolutions through Winograd F(2x2, 3x3) (`Kernels.winogradConvolve`), forced onto small shapes:
/// against the Double reference, across thread counts, with the input gradient against the GEMM
/// route's, in bands of tile rows, and with a bf16 weight (widened, or with the products in bf16).
extension KernelTests {
    /// tiles4: `Kernels.winograd4Tiles` (default never: the F(2x2, 3x3) cases stay F(2x2, 3x3)).
    func withWinograd<R>(tiles: Int, band: Int = 0, filter: Int = 0, tiles4: Int = -1, _ body: () -> R) -> R {
        let saved = (Kernels.winogradTiles, Kernels.winogradBand, Kernels.winogradFilter, Kernels.winograd4Tiles)
        Kernels.winogradTiles = tiles
        Kernels.winogradBand = band
        Kernels.winogradFilter = filter
        Kernels.winograd4Tiles = tiles4
        defer {
            Kernels.winogradTiles = saved.0; Kernels.winogradBand = saved.1; Kernels.winogradFilter = saved.2
            Kernels.winograd4Tiles = saved.3
        }
        return body()
    }

    /// Each case (N, Cin, H, W, Cout, band bytes, filter bytes) forced onto Winograd (F(4x4, 3x3) from
    /// tiles4 4x4 tiles, else F(2x2, 3x3)): the forward against the Double reference, the input gradient
    /// (the same block size) against the GEMM route's, with 1 and 2 threads, bit-identical across them.
    func checkWinograd(_ cases: [(Int, Int, Int, Int, Int, Int, Int)], tiles4: Int, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        for (ci, c) in cases.enumerated() {
            let (n, cin, h, wd, cout, band, filter) = c
            let x = random([n, cin, h, wd]), w = random([cout, cin, 3, 3], scale: 0.2), b = random([cout])
            let ref = Self.convRef(x.d, x.shape, w.d, w.shape, b.d, stride: 1, padding: 1)
            let r = random([n, cout, h, wd])
            let viaGEMM = withWinograd(tiles: -1) {
                Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
            }
            var outs: [[Float]] = [], grads: [[Float]] = []
            for threads in [1, 2] {
                withWinograd(tiles: 1, band: band, filter: filter, tiles4: tiles4) {
                    XCTAssertEqual(Kernels.winogradBlock(x: x.shape, weight: w.t, stride: 1, padding: 1), tiles4 > 0 ? 4 : 2,
                                   "\(what) \(ci)", file: file, line: line)
                    let y = withThreads(threads) { Kernels.conv2d(x.t, w.t, b.t, stride: 1, padding: 1) }
                    assertClose(y, ref, "\(what) \(ci) threads \(threads)", file: file, line: line)
                    outs.append(y.floats)
                    let gx = withThreads(threads) {
                        Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
                    }
                    assertClose(gx, viaGEMM.floats.map(Double.init), "\(what) \(ci) dx threads \(threads)", file: file, line: line)
                    grads.append(gx.floats)
                }
            }
            XCTAssertTrue(outs[0] == outs[1], "\(what) \(ci): thread count changed the output", file: file, line: line)
            XCTAssertTrue(grads[0] == grads[1], "\(what) \(ci): thread count changed the input gradient", file: file, line: line)
        }
    }

    /// A bf16 weight through the Winograd route the settings choose: the forward against `ref` (Double sums
    /// over the weight's bf16 values); the input gradient, which reads the weight as stored, against the
    /// GEMM route's on its f32 copy.
    func checkBF16Weight(_ x: Tensor, _ w16: Tensor, _ b: Tensor, _ ref: [Double], _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        assertClose(Kernels.conv2d(x, w16, b, stride: 1, padding: 1), ref, what, file: file, line: line)
        let r = random([x.shape[0], w16.shape[0], x.shape[2], x.shape[3]])
        let gx = Kernels.conv2dBackward(r.t, x: x, w: w16, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
        let viaGEMM = withWinograd(tiles: -1) {
            Kernels.conv2dBackward(r.t, x: x, w: w16.converted(to: .f32), stride: 1, padding: 1,
                                   needInput: true, needWeight: false, needBias: false).x!
        }
        assertClose(gx, viaGEMM.floats.map(Double.init), "\(what), dx", file: file, line: line)
    }

    /// F(4x4, 3x3) forced onto small shapes: against the Double reference at the f32 tolerance (its
    /// rounding, ~5x F(2x2, 3x3)'s, stays far below it at these channel counts; a transform, pairing or
    /// edge mistake is O(1)), across thread counts, in bands and filter blocks (of the products' k in the
    /// input gradient), from a bf16 weight; the input gradient (the kernels turned in the filter
    /// transform) against the GEMM route's.
    func testWinogradF4x4() throws {
        try XCTSkipUnless(GEMM.vectorized, "Winograd runs only on the AVX-512 path (this CPU lacks it)")
        // (N, Cin, H, W, Cout, band bytes, filter bytes): sides that are and are not multiples of 4, one
        // pixel, rows of 17 and 18 tiles (past one 16-tile vector; 4 x 16 + 1 and + 5 columns), several
        // bands of tile rows, the filter in blocks of output channels, alone and with bands.
        let cases: [(Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 32, 8, 8, 40, 0, 0), (2, 33, 7, 5, 32, 0, 0), (1, 48, 9, 1, 32, 0, 0), (1, 32, 1, 1, 36, 0, 0),
            (1, 40, 3, 65, 33, 0, 0), (1, 32, 6, 69, 34, 0, 0), (2, 32, 13, 11, 32, 36 * 64 * 3 * 4, 0),
            (1, 34, 12, 33, 35, 1, 0), (2, 37, 10, 12, 41, 0, 36 * 10 * 37 * 4), (2, 32, 11, 14, 36, 36 * 68 * 3 * 4, 1),
        ]
        checkWinograd(cases, tiles4: 1, "winograd F(4x4) conv")
        // A bf16 weight where the bf16 products do not run: widened in the filter transform.
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = false
        let x = random([2, 32, 9, 10]), w = random([36, 32, 3, 3], scale: 0.2), b = random([36])
        let w16 = w.t.converted(to: .bf16)
        let ref = Self.convRef(x.d, x.shape, w16.floats.map(Double.init), w.shape, b.d, stride: 1, padding: 1)
        withWinograd(tiles: 1, tiles4: 1) {
            XCTAssertEqual(Kernels.winogradBlock(x: x.shape, weight: w16, stride: 1, padding: 1), 4)
            checkBF16Weight(x.t, w16, b.t, ref, "winograd F(4x4) conv, bf16 weight")
        }
        // The rule: fewer 4x4 tiles than asked, or bf16 products: F(2x2, 3x3).
        XCTAssertEqual(withWinograd(tiles: 1, tiles4: 10) { Kernels.winogradBlock(x: x.shape, weight: w.t, stride: 1, padding: 1) }, 2)
        GEMM.bf16 = true
        if GEMM.bf16 {
            XCTAssertEqual(withWinograd(tiles: 1, tiles4: 1) { Kernels.winogradBlock(x: x.shape, weight: w16, stride: 1, padding: 1) }, 2)
        }
        XCTAssertEqual(withWinograd(tiles: -1, tiles4: 1) { Kernels.winogradBlock(x: x.shape, weight: w.t, stride: 1, padding: 1) }, 0)
    }

    func testWinogradConvolution() throws {
        try XCTSkipUnless(GEMM.vectorized, "Winograd runs only on the AVX-512 path (this CPU lacks it)")
        // (N, Cin, H, W, Cout, band bytes, filter bytes): odd and even sides, one pixel, a row of 18 tiles
        // (more than one 16-tile vector), several bands of tile rows, the filter in blocks of rows (of
        // output channels forward, of the products' k in the input gradient), alone and with bands.
        let cases: [(Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 32, 5, 7, 40, 0, 0), (2, 33, 6, 35, 32, 0, 0), (1, 48, 9, 1, 32, 0, 0), (1, 32, 1, 1, 36, 0, 0),
            (1, 40, 2, 64, 33, 0, 0), (2, 32, 11, 13, 32, 64 * 64 * 7 * 2, 0), (1, 34, 8, 33, 35, 1, 0),
            (2, 37, 9, 12, 41, 0, 16 * 10 * 41 * 4), (2, 32, 11, 13, 36, 64 * 68 * 7 * 2, 1),
            (1, 40, 6, 9, 37, 0, 16 * 8 * 40 * 4),   // one sample in one band: its input transform kept for every block
        ]
        checkWinograd(cases, tiles4: -1, "winograd conv")
    }

    func testWinogradWithABFloat16Weight() throws {
        try XCTSkipUnless(GEMM.vectorized, "Winograd runs only on the AVX-512 path (this CPU lacks it)")
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = false   // bf16 products take the GEMM route; widened in the filter transform here
        let x = random([2, 32, 7, 10]), w = random([36, 32, 3, 3], scale: 0.2), b = random([36])
        let w16 = w.t.converted(to: .bf16)
        let ref = Self.convRef(x.d, x.shape, w16.floats.map(Double.init), w.shape, b.d, stride: 1, padding: 1)
        withWinograd(tiles: 1) {
            XCTAssertTrue(Kernels.usesWinograd(x: x.shape, weight: w16, stride: 1, padding: 1))
            checkBF16Weight(x.t, w16, b.t, ref, "winograd conv, bf16 weight")
        }
        // Any other stored type (an f16 file's weights) goes to the filter transform as f32: the f32
        // result, bit for bit, forward and input gradient.
        let w16f = w.t.converted(to: .f16), widened = w16f.converted(to: .f32)
        withWinograd(tiles: 1) {
            XCTAssertTrue(Kernels.conv2d(x.t, w16f, b.t, stride: 1, padding: 1).floats
                          == Kernels.conv2d(x.t, widened, b.t, stride: 1, padding: 1).floats, "winograd conv, f16 weight")
            let r = random([2, 36, 7, 10])
            func dx(_ weight: Tensor) -> [Float] {
                Kernels.conv2dBackward(r.t, x: x.t, w: weight, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!.floats
            }
            XCTAssertTrue(dx(w16f) == dx(widened), "winograd conv dx, f16 weight")
        }
        // The rule: too few tiles, too few channels or another geometry: the GEMM route.
        XCTAssertFalse(withWinograd(tiles: 1000) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: 1) { Kernels.usesWinograd(x: [1, 16, 8, 8], weight: random([32, 16, 3, 3]).t, stride: 1, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: 1) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 2, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: -1) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1) })
    }

    /// With the bf16 products on, a bf16 weight's forward runs Winograd's 16 products in bf16: against
    /// the sums in Double over what the kernels compute and round, the transforms in f32 in the
    /// kernels' order (U = G g G^T from the stored weight, V = B^T d B), U and V rounded to bf16, their
    /// products and the output transform exact. A product of two bf16 values is exact in f32, so the
    /// f32 tolerance applies; an indexing, pairing or rounding mistake is O(1) or 2^-9.
    func testWinogradInBFloat16() throws {
        try XCTSkipUnless(GEMM.vectorized, "Winograd runs only on the AVX-512 path (this CPU lacks it)")
        try withBF16Kernel {
            // (N, Cin, H, W, Cout, band bytes, filter bytes): odd sides, a row of 18 tiles, several bands,
            // odd channels, the filter in blocks of 7 output channels.
            let cases: [(Int, Int, Int, Int, Int, Int, Int)] = [
                (1, 32, 5, 7, 40, 0, 0), (2, 33, 6, 35, 32, 0, 0), (2, 35, 11, 13, 33, 64 * 68 * 7 * 2, 16 * 7 * 35 * 2),
            ]
            for (ci, c) in cases.enumerated() {
                let (n, cin, h, wd, cout, band, filter) = c
                let x = random([n, cin, h, wd]), w = storedBF16(random([cout, cin, 3, 3], scale: 0.2)), b = random([cout])
                let ref = winogradBF16Reference(x, w, b)
                var outs: [[Float]] = []
                for threads in [1, 2] {
                    let y = withWinograd(tiles: 1, band: band, filter: filter) {
                        XCTAssertTrue(Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1), "case \(ci)")
                        return withThreads(threads) { Kernels.conv2d(x.t, w.t, b.t, stride: 1, padding: 1) }
                    }
                    assertClose(y, ref, "bf16 winograd conv \(ci) threads \(threads)")
                    outs.append(y.floats)
                }
                XCTAssertTrue(outs[0] == outs[1], "bf16 winograd conv \(ci): thread count changed the output")
            }
        }
    }

    /// conv(x, w) + b for a bf16 weight as `testWinogradInBFloat16` describes.
    func winogradBF16Reference(_ x: KernelSample, _ w: KernelSample, _ b: KernelSample) -> [Double] {
        let (n, cin, h, wd, cout) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0])
        let th = (h + 1) / 2, tw = (wd + 1) / 2
        func r(_ v: Float) -> Double { bf16Rounded(Double(v)) }
        // Two passes of the 1-D transforms, rows then columns, as the kernels order them.
        func filter(_ g: [Float]) -> [Float] {
            func g4(_ g0: Float, _ g1: Float, _ g2: Float) -> [Float] { let s = g0 + g2; return [g0, 0.5 * (s + g1), 0.5 * (s - g1), g2] }
            let a = (0..<3).map { j in g4(g[j], g[3 + j], g[6 + j]) }   // a[j][i]
            return (0..<4).flatMap { i in g4(a[0][i], a[1][i], a[2][i]) }
        }
        func input(_ d: [[Float]]) -> [Float] {
            func b4(_ d0: Float, _ d1: Float, _ d2: Float, _ d3: Float) -> [Float] { [d0 - d2, d1 + d2, d2 - d1, d1 - d3] }
            let t = (0..<4).map { col in b4(d[0][col], d[1][col], d[2][col], d[3][col]) }   // t[col][i]
            return (0..<4).flatMap { i in b4(t[0][i], t[1][i], t[2][i], t[3][i]) }
        }
        let xf = x.d.map(Float.init), wf = w.d.map(Float.init)
        let u = (0..<cout * cin).map { oc in filter(Array(wf[oc * 9..<oc * 9 + 9])).map(r) }
        var out = [Double](repeating: 0, count: n * cout * h * wd)
        for s in 0..<n { for ty in 0..<th { for tx in 0..<tw {
            func pixel(_ c: Int, _ iy: Int, _ ix: Int) -> Float {
                iy < 0 || iy >= h || ix < 0 || ix >= wd ? 0 : xf[((s * cin + c) * h + iy) * wd + ix]
            }
            var v: [[Double]] = []
            for c in 0..<cin {
                var d: [[Float]] = []
                for a in 0..<4 { d.append((0..<4).map { (bb: Int) -> Float in pixel(c, 2 * ty - 1 + a, 2 * tx - 1 + bb) }) }
                v.append(input(d).map(r))
            }
            for o in 0..<cout {
                var m = [Double](repeating: 0, count: 16)
                for c in 0..<cin { for xi in 0..<16 { m[xi] += u[o * cin + c][xi] * v[c][xi] } }
                var rows: [[Double]] = [[], []]
                for j in 0..<4 {
                    let first: Double = m[j] + m[4 + j] + m[8 + j], second: Double = m[4 + j] - m[8 + j] - m[12 + j]
                    rows[0].append(first)
                    rows[1].append(second)
                }
                for i in 0..<2 {
                    let row = rows[i], oy = 2 * ty + i
                    let values: [Double] = [row[0] + row[1] + row[2], row[1] - row[2] - row[3]]
                    for jj in 0..<2 where oy < h && 2 * tx + jj < wd {
                        out[((s * cout + o) * h + oy) * wd + 2 * tx + jj] = values[jj] + b.d[o]
                    }
                }
            }
        } } }
        return out
    }
}
