import Foundation
import XCTest
@testable import DGTensor

/// The bfloat16 product (`GEMM.gemmBF16`, vdpbf16ps) and the layers that use it for bf16 weights.
///
/// Reference: the same sums in Double over the operands rounded to bf16 (as the kernel rounds them at
/// its input). A product of two bf16 values is exact in f32, so the only differences are the f32
/// roundings of the sums: the f32 tolerance of the other kernel tests (1e-5 of the largest value)
/// applies unchanged, and any indexing, packing or pairing mistake is O(1).
extension KernelTests {
    /// v rounded to the nearest bf16 (ties to even), in Double.
    func bf16Rounded(_ v: Double) -> Double { Double(floatFromBFloat16Bits(bfloat16Bits(Float(v)))) }

    /// A copy of `s` stored in bf16, and its values as the kernel reads them.
    func storedBF16(_ s: KernelSample) -> KernelSample {
        KernelSample(t: s.t.converted(to: .bf16), d: s.d.map(bf16Rounded))
    }

    /// Runs `body` with the bf16 kernel on (skipping the test where the CPU lacks AVX512-BF16).
    func withBF16Kernel(_ body: () throws -> Void) throws {
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = true
        try XCTSkipUnless(GEMM.bf16, "no AVX512-BF16 on this machine (or AVX-512 switched off)")
        try body()
    }

    func testBF16GEMMAgainstReference() throws {
        // (m, n, k, A transposed, A in bf16, B transposed, B in bf16, alpha, beta, biases, j0): edge shapes
        // (1s, odd k, k past one 512 block, m and n off the 12/24-row tiles and 16/32-column panels).
        let cases: [(Int, Int, Int, Bool, Bool, Bool, Bool, Float, Float, Bool, Int)] = [
            (1, 1, 1, false, false, false, false, 1, 0, false, 0),
            (1, 1, 2, false, true, true, true, 1, 0, false, 0),
            (13, 17, 5, false, false, false, false, 1, 0, false, 0),
            (13, 17, 5, true, false, true, true, 0.5, 0, true, 3),
            (25, 33, 300, false, true, true, false, 1, 1, false, 0),   // bf16 A read in place (k even)
            (25, 33, 301, false, true, false, true, 1, 0, true, 0),    // k odd: bf16 A packed, last pair half 0
            (50, 15, 40, true, false, false, false, 2, 0.5, true, 1),  // narrow: 16-wide panels, 24-row tiles
            (50, 15, 40, true, true, true, true, 1, 0, false, 2),      // bf16 A transposed (packed value by value)
            (200, 130, 70, false, false, true, true, 1, 0, true, 0),   // several threads
            (30, 300, 1025, true, false, true, true, 1, 0, false, 5),  // three k blocks, the last of one value
            (48, 64, 1024, false, true, true, true, 1, 0, false, 0),   // rows 2 KB apart: packed, not in place
            (7, 64, 0, false, false, false, false, 1, 0.5, true, 0),   // k = 0: beta C + biases
        ]
        // With the bf16 products switched off the same calls widen the bf16 operands and compute in f32:
        // the reference then rounds only what is stored in bf16.
        for kernelOn in [true, false] where GEMM.vectorized {
            let saved = GEMM.bf16
            defer { GEMM.bf16 = saved }
            GEMM.bf16 = kernelOn
            if kernelOn && !GEMM.bf16 { continue }
            func rounded(_ v: Double) -> Double { kernelOn ? bf16Rounded(v) : v }
            for (ci, c) in cases.enumerated() {
                let (m, n, k, ta, aBF16, tb, bBF16, alpha, beta, biases, j0) = c
                let a32 = random(ta ? [k, m] : [m, k]), b32 = random(tb ? [n + j0, k] : [k, n + j0])
                let a = aBF16 ? storedBF16(a32) : a32, b = bBF16 ? storedBF16(b32) : b32
                let c0 = random([m, n]), rb = random([m]), cb = random([n])
                let ref = referenceGEMM(a, b, c: c0, rowBias: rb, columnBias: cb, m: m, n: n, k: k, ta: ta, tb: tb, j0: j0,
                                        alpha: alpha, beta: beta, biases: biases, round: rounded)
                var results: [[Float]] = []
                for threads in [1, 2, 3] {
                    let out = c0.t.copied()
                    withThreads(threads) {
                        withExtendedLifetime((a.t, b.t, rb.t, cb.t, out)) {
                            let rs = tb ? 1 : n + j0, cs = tb ? k : 1
                            let source = bBF16 ? GEMM.matrix(bf16: b.t.rawPointer.assumingMemoryBound(to: UInt16.self), rowStride: rs, columnStride: cs)
                                               : GEMM.matrix(Kernels.pointer(b.t), rowStride: rs, columnStride: cs)
                            GEMM.gemmBF16(m: m, n: n, k: k, alpha: alpha, a: a.t.rawPointer, aBF16: aBF16,
                                          ars: ta ? 1 : k, aks: ta ? m : 1, b: source, j0: j0, beta: beta,
                                          c: Kernels.pointer(out), ldc: n,
                                          rowBias: biases ? UnsafePointer(Kernels.pointer(rb.t)) : nil,
                                          colBias: biases ? UnsafePointer(Kernels.pointer(cb.t)) : nil)
                        }
                    }
                    assertClose(out, ref, "bf16 gemm (bf16 products \(kernelOn)) case \(ci) threads \(threads)")
                    results.append(out.floats)
                }
                XCTAssertTrue(results[0] == results[1], "bf16 gemm case \(ci): 1 vs 2 threads differ")
                XCTAssertTrue(results[0] == results[2], "bf16 gemm case \(ci): 1 vs 3 threads differ")
            }
        }
        try XCTSkipUnless(GEMM.vectorized && GEMM.bf16DotRates.bf16 > 0, "no AVX512-BF16 here: the bf16 products were not run")
    }

    /// Linear, per-pixel and convolution layers with bf16 weights: with the bf16 kernel, the reference
    /// over bf16-rounded activations and weights; with it switched off, exactly the f32 layer on the
    /// weights converted to f32 (what every CPU without AVX512-BF16 computes).
    func testLayersWithBF16WeightsOnBothPaths() throws {
        let x = random([2, 3, 40]), w = storedBF16(random([37, 40])), b = random([37])
        let img = random([2, 33, 5, 7]), pw = storedBF16(random([20, 33, 1, 1])), pb = random([20])
        let tok = random([2, 35, 33]), tw = storedBF16(random([20, 33])), tb = random([20])
        // (x, w) of convolutions: 3x3 stride 1 and 2 (im2col packed from x), k = cin 9 odd, a plane of
        // whole 32-column rows, 1x1.
        let convs: [(KernelSample, KernelSample, Int, Int)] = [
            (random([2, 5, 9, 40]), storedBF16(random([7, 5, 3, 3])), 1, 1),
            (random([1, 3, 35, 37]), storedBF16(random([30, 3, 3, 3])), 2, 1),
            (random([1, 4, 6, 32]), storedBF16(random([5, 4, 3, 3])), 1, 1),
            (random([2, 6, 5, 7]), storedBF16(random([3, 6, 1, 1])), 1, 0),
        ]
        let convBias = convs.map { random([$0.1.shape[0]]) }
        func layers() -> [Tensor] {
            [Kernels.linear(x.t, w.t, b.t), Kernels.pointwiseToTokens(img.t, pw.t, pb.t),
             Kernels.tokensToPointwise(tok.t, tw.t, tb.t, height: 5, width: 7)]
                + zip(convs, convBias).map { c, bias in Kernels.conv2d(c.0.t, c.1.t, bias.t, stride: c.2, padding: c.3) }
        }
        // The few rows of a large weight take the transposed product (weight as A, read in place).
        let fx = random([3, 256]), fw = storedBF16(random([300, 256])), fb = random([300])
        XCTAssertTrue(!GEMM.vectorized || Kernels.transposedIsCheaper(rows: 3, weight: 300 * 256))
        func rounded(_ s: KernelSample) -> [Double] { s.d.map(bf16Rounded) }
        try withBF16Kernel {
            var outs: [[Float]] = []
            for threads in [1, 2] {
                let ys = withThreads(threads) { layers() + [Kernels.linear(fx.t, fw.t, fb.t)] }
                func linearRef(_ xd: [Double], _ wd: [Double], _ bd: [Double], rows: Int, inF: Int, outF: Int) -> [Double] {
                    var out = [Double](repeating: 0, count: rows * outF)
                    for r in 0..<rows { for o in 0..<outF {
                        var s = bd[o]
                        for i in 0..<inF { s += xd[r * inF + i] * wd[o * inF + i] }
                        out[r * outF + o] = s
                    } }
                    return out
                }
                assertClose(ys[0], linearRef(rounded(x), w.d, b.d, rows: 6, inF: 40, outF: 37), "bf16 linear")
                let conv = Self.convRef(rounded(img), img.shape, pw.d, pw.shape, pb.d, stride: 1, padding: 0)
                var tokensRef = [Double](repeating: 0, count: conv.count)
                for s in 0..<2 { for ch in 0..<20 { for p in 0..<35 { tokensRef[(s * 35 + p) * 20 + ch] = conv[(s * 20 + ch) * 35 + p] } } }
                assertClose(ys[1], tokensRef, "bf16 pointwiseToTokens")
                var imageRef = [Double](repeating: 0, count: 2 * 20 * 35), td = rounded(tok)
                for s in 0..<2 { for ch in 0..<20 { for p in 0..<35 {
                    var acc = tb.d[ch]
                    for i in 0..<33 { acc += tw.d[ch * 33 + i] * td[(s * 35 + p) * 33 + i] }
                    imageRef[(s * 20 + ch) * 35 + p] = acc
                } } }
                assertClose(ys[2], imageRef, "bf16 tokensToPointwise")
                for (i, (c, bias)) in zip(convs, convBias).enumerated() {
                    assertClose(ys[3 + i], Self.convRef(rounded(c.0), c.0.shape, c.1.d, c.1.shape, bias.d, stride: c.2, padding: c.3),
                                "bf16 conv \(i)")
                }
                assertClose(ys[3 + convs.count], linearRef(rounded(fx), fw.d, fb.d, rows: 3, inF: 256, outF: 300), "bf16 linear, few rows")
                outs.append(ys.flatMap(\.floats))
            }
            XCTAssertTrue(outs[0] == outs[1], "bf16 layers: thread count changed the output")
        }
        // Switched off: the f32 path on the converted weights, bit for bit.
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = false
        let off = layers()
        let f32 = [Kernels.linear(x.t, w.t.converted(to: .f32), b.t),
                   Kernels.pointwiseToTokens(img.t, pw.t.converted(to: .f32), pb.t),
                   Kernels.tokensToPointwise(tok.t, tw.t.converted(to: .f32), tb.t, height: 5, width: 7)]
            + zip(convs, convBias).map { c, bias in Kernels.conv2d(c.0.t, c.1.t.converted(to: .f32), bias.t, stride: c.2, padding: c.3) }
        for (i, (a, e)) in zip(off, f32).enumerated() {
            XCTAssertTrue(a.floats == e.floats, "layer \(i) with bf16 weights, bf16 kernel off: not the f32 result")
        }
    }
}
