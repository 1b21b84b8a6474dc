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
    /// Attention with both products in bf16: against the reference over q, k, v rounded to bf16 and
    /// the unnormalised probabilities exp(s - max) rounded to bf16 (as the kernel rounds them at the
    /// second product's input), scores, softmax sums and log-sum-exp exact. The kernel's f32 scores
    /// and exponentials can round an exponential to the other neighbouring bf16 value where the
    /// reference's lies within ~1e-6 of a rounding boundary; each such flip moves one output by at most
    /// 2^-8 e_j / sum(e) |v_j| <= 2^-8 max |v|, hence atol 2^-8 max |v| for the output (an error in a
    /// key's pairing or a lost row is of the order of max |v|). With the bf16 products off: the f32
    /// attention, bit for bit.
    func testBF16AttentionAgainstReference() throws {
        // (B, heads, Lq, Lk, D, Dv, causal): odd key counts (a padded pair), a last panel of fewer than
        // 32 queries and of at most 16 (16-wide tiles), several k blocks of 512 keys, causal.
        let cases: [(Int, Int, Int, Int, Int, Int, Bool)] = [
            (2, 3, 40, 33, 8, 5, false), (1, 4, 50, 50, 6, 6, true), (2, 2, 20, 77, 16, 16, false),
            (1, 2, 70, 1100, 40, 40, false), (1, 1, 13, 13, 7, 3, true),
        ]
        func rounded(_ x: [Double]) -> [Double] { x.map(bf16Rounded) }
        func reference(_ q: [Double], _ k: [Double], _ v: [Double], _ c: (Int, Int, Int, Int, Int, Int, Bool), scale: Double)
            -> (out: [Double], lse: [Double]) {
            let (b, heads, lq, lk, d, dv, causal) = c
            var out = [Double](repeating: 0, count: b * lq * heads * dv), lse = [Double](repeating: 0, count: b * heads * lq)
            for bi in 0..<b { for h in 0..<heads { for i in 0..<lq {
                let n = causal ? min(lk, i + 1) : lk
                var s = [Double](repeating: 0, count: n)
                for j in 0..<n {
                    var acc = 0.0
                    for t in 0..<d { acc += q[(bi * lq + i) * heads * d + h * d + t] * k[(bi * lk + j) * heads * d + h * d + t] }
                    s[j] = acc * scale
                }
                let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, total = e.reduce(0, +)
                lse[(bi * heads + h) * lq + i] = m + Foundation.log(total)
                for j in 0..<n {
                    let p = bf16Rounded(e[j]) / total
                    for t in 0..<dv { out[(bi * lq + i) * heads * dv + h * dv + t] += p * v[(bi * lk + j) * heads * dv + h * dv + t] }
                }
            } } }
            return (out, lse)
        }
        let scale = 0.4
        var samples: [(KernelSample, KernelSample, KernelSample)] = []
        try withBF16Kernel {
            for (ci, c) in cases.enumerated() {
                let (b, heads, lq, lk, d, dv, causal) = c
                let q = random([b, lq, heads * d]), k = random([b, lk, heads * d]), v = random([b, lk, heads * dv])
                samples.append((q, k, v))
                let ref = reference(rounded(q.d), rounded(k.d), rounded(v.d), c, scale: scale)
                var outs: [[Float]] = []
                for threads in [1, 2] {
                    let (out, lse) = withThreads(threads) {
                        Kernels.attention(q: q.t, k: k.t, v: v.t, heads: heads, scale: Float(scale), causal: causal, bf16: true)
                    }
                    let maxV = v.d.map(abs).max()!
                    assertClose(out, ref.out, rtol: 0, atol: maxV / 256, "bf16 attention case \(ci) threads \(threads)")
                    assertClose(lse, ref.lse, rtol: 1e-5, atol: 1e-5, "bf16 attention lse case \(ci) threads \(threads)")
                    outs.append(out.floats + lse.floats)
                }
                XCTAssertTrue(outs[0] == outs[1], "bf16 attention case \(ci): thread count changed the output")
                // Not merely the f32 attention: the rounding shows (far above f32's own error).
                let f32 = Kernels.attention(q: q.t, k: k.t, v: v.t, heads: heads, scale: Float(scale), causal: causal).out.floats
                XCTAssertGreaterThan(zip(f32, outs[0]).map { abs($0 - $1) }.max()!, 1e-4, "bf16 attention case \(ci): no bf16 rounding seen")
            }
        }
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = false
        for (c, (q, k, v)) in zip(cases, samples) {
            let bf = Kernels.attention(q: q.t, k: k.t, v: v.t, heads: c.1, scale: Float(scale), causal: c.6, bf16: true)
            let f = Kernels.attention(q: q.t, k: k.t, v: v.t, heads: c.1, scale: Float(scale), causal: c.6)
            XCTAssertTrue(bf.out.floats == f.out.floats && bf.logsumexp.floats == f.logsumexp.floats,
                          "bf16 attention with the bf16 products off: not the f32 attention")
        }
    }
    /// The backward of the bf16 attention rebuilds the forward's probabilities: it recomputes the scores
    /// by the same bf16 product, P = exp(S - lse) with the forward's lse, then the f32 backward of
    /// softmax(S) V at those probabilities. Reference: that formula in Double, S over q and k rounded
    /// to bf16, the other products over the f32 values. Scores from f32 q and k instead (the f32
    /// backward on the bf16 forward) miss by ~1e-3 relative, far outside the tolerance.
    func testBF16AttentionBackwardRebuildsTheForwardProbabilities() throws {
        // (B, heads, Lq, Lk, D, Dv, causal, backward key block: 0 automatic)
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, Int)] = [(2, 2, 37, 45, 8, 6, false, 0), (1, 3, 40, 40, 10, 4, true, 0),
                                                                  (2, 2, 37, 77, 8, 6, false, 32)]
        defer { Kernels.attentionBackwardKeyBlock = nil }
        try withBF16Kernel {
            for (ci, c) in cases.enumerated() {
                let (b, heads, lq, lk, d, dv, causal, keyBlock) = c
                Kernels.attentionBackwardKeyBlock = keyBlock == 0 ? nil : keyBlock
                let q = random([b, lq, heads * d]), k = random([b, lk, heads * d]), v = random([b, lk, heads * dv])
                let scale = 0.5
                let (out, lse) = Kernels.attention(q: q.t, k: k.t, v: v.t, heads: heads, scale: Float(scale), causal: causal, bf16: true)
                let g = random(out.shape)
                let grads = Kernels.attentionBackward(g.t, q: q.t, k: k.t, v: v.t, out: out, logsumexp: lse, heads: heads,
                                                      scale: Float(scale), causal: causal, bf16: true)
                let o = out.floats.map(Double.init), l = lse.floats.map(Double.init)
                var dq = [Double](repeating: 0, count: q.d.count), dk = [Double](repeating: 0, count: k.d.count)
                var dvr = [Double](repeating: 0, count: v.d.count)
                for bi in 0..<b { for h in 0..<heads { for i in 0..<lq {
                    func qi(_ t: Int) -> Int { (bi * lq + i) * heads * d + h * d + t }
                    func kj(_ j: Int, _ t: Int) -> Int { (bi * lk + j) * heads * d + h * d + t }
                    func vj(_ j: Int, _ t: Int) -> Int { (bi * lk + j) * heads * dv + h * dv + t }
                    func oi(_ t: Int) -> Int { (bi * lq + i) * heads * dv + h * dv + t }
                    var delta = 0.0
                    for t in 0..<dv { delta += g.d[oi(t)] * o[oi(t)] }
                    for j in 0..<(causal ? min(lk, i + 1) : lk) {
                        var sc = 0.0
                        for t in 0..<d { sc += bf16Rounded(q.d[qi(t)]) * bf16Rounded(k.d[kj(j, t)]) }
                        let p = Foundation.exp(sc * scale - l[(bi * heads + h) * lq + i])
                        var dp = 0.0
                        for t in 0..<dv { dp += g.d[oi(t)] * v.d[vj(j, t)]; dvr[vj(j, t)] += p * g.d[oi(t)] }
                        let ds = p * (dp - delta) * scale
                        for t in 0..<d { dq[qi(t)] += ds * k.d[kj(j, t)]; dk[kj(j, t)] += ds * q.d[qi(t)] }
                    }
                } } }
                assertClose(grads.q, dq, rtol: 1e-4, atol: 1e-6, "bf16 attention backward case \(ci) dq")
                assertClose(grads.k, dk, rtol: 1e-4, atol: 1e-6, "bf16 attention backward case \(ci) dk")
                assertClose(grads.v, dvr, rtol: 1e-4, atol: 1e-6, "bf16 attention backward case \(ci) dv")
            }
        }
    }
}
