import Foundation
import XCTest
@testable import DGTensor

/// 3x3 convolutions through Winograd F(2x2, 3x3) (`Kernels.winogradConvolve`), forced onto small shapes:
/// against the Double reference, across thread counts, with the input gradient against the GEMM
/// route's, in bands of tile rows, and with a bf16 weight.
extension KernelTests {
    func withWinograd<R>(tiles: Int, band: Int = 0, _ body: () -> R) -> R {
        let saved = (Kernels.winogradTiles, Kernels.winogradBand)
        Kernels.winogradTiles = tiles
        Kernels.winogradBand = band
        defer { Kernels.winogradTiles = saved.0; Kernels.winogradBand = saved.1 }
        return body()
    }

    func testWinogradConvolution() throws {
        try XCTSkipUnless(GEMM.vectorized, "Winograd runs only on the AVX-512 path (this CPU lacks it)")
        // (N, Cin, H, W, Cout, band bytes): odd and even sides, one pixel, a row of 18 tiles (more than
        // one 16-tile vector), several bands of tile rows.
        let cases: [(Int, Int, Int, Int, Int, Int)] = [
            (1, 32, 5, 7, 40, 0), (2, 33, 6, 35, 32, 0), (1, 48, 9, 1, 32, 0), (1, 32, 1, 1, 36, 0),
            (1, 40, 2, 64, 33, 0), (2, 32, 11, 13, 32, 64 * 64 * 7 * 2), (1, 34, 8, 33, 35, 1),
        ]
        for (ci, c) in cases.enumerated() {
            let (n, cin, h, wd, cout, band) = c
            let x = random([n, cin, h, wd]), w = random([cout, cin, 3, 3], scale: 0.2), b = random([cout])
            let ref = Self.convRef(x.d, x.shape, w.d, w.shape, b.d, stride: 1, padding: 1)
            let r = random([n, cout, h, wd])
            let viaGEMM = withWinograd(tiles: -1) {
                Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
            }
            var outs: [[Float]] = [], grads: [[Float]] = []
            for threads in [1, 2] {
                withWinograd(tiles: 1, band: band) {
                    XCTAssertTrue(Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1), "case \(ci)")
                    let y = withThreads(threads) { Kernels.conv2d(x.t, w.t, b.t, stride: 1, padding: 1) }
                    assertClose(y, ref, "winograd conv \(ci) threads \(threads)")
                    outs.append(y.floats)
                    let gx = withThreads(threads) {
                        Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
                    }
                    assertClose(gx, viaGEMM.floats.map(Double.init), "winograd conv \(ci) dx threads \(threads)")
                    grads.append(gx.floats)
                }
            }
            XCTAssertTrue(outs[0] == outs[1], "winograd conv \(ci): thread count changed the output")
            XCTAssertTrue(grads[0] == grads[1], "winograd conv \(ci): thread count changed the input gradient")
        }
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
            assertClose(Kernels.conv2d(x.t, w16, b.t, stride: 1, padding: 1), ref, "winograd conv, bf16 weight")
            // The input gradient reads the bf16 weight as stored: as the GEMM route on its f32 copy.
            let r = random([2, 36, 7, 10])
            let gx = Kernels.conv2dBackward(r.t, x: x.t, w: w16, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
            let viaGEMM = withWinograd(tiles: -1) {
                Kernels.conv2dBackward(r.t, x: x.t, w: w16.converted(to: .f32), stride: 1, padding: 1,
                                       needInput: true, needWeight: false, needBias: false).x!
            }
            assertClose(gx, viaGEMM.floats.map(Double.init), "winograd conv dx, bf16 weight")
        }
        // The rule: too few tiles, too few channels, another geometry, or bf16 products: the GEMM route.
        XCTAssertFalse(withWinograd(tiles: 1000) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: 1) { Kernels.usesWinograd(x: [1, 16, 8, 8], weight: random([32, 16, 3, 3]).t, stride: 1, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: 1) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 2, padding: 1) })
        XCTAssertFalse(withWinograd(tiles: -1) { Kernels.usesWinograd(x: x.shape, weight: w.t, stride: 1, padding: 1) })
        GEMM.bf16 = true
        if GEMM.bf16 {
            XCTAssertFalse(withWinograd(tiles: 1) { Kernels.usesWinograd(x: x.shape, weight: w16, stride: 1, padding: 1) })
        }
    }
}
