import Foundation
import XCTest
@testable import DGTensor

/// The matrix-product engine (AVX-512 kernels where the CPU has them, OpenBLAS and the portable
/// packing code otherwise) and the kernels built on it. Each test runs on every path this machine
/// has, and checks that results do not depend on the thread count.
extension KernelTests {
    /// Runs `body` with the AVX-512 kernels on and off. Where the CPU lacks AVX-512 the portable path
    /// still runs, and then the test is skipped (XCTSkip) instead of passing as if both had been checked.
    func forEachGEMMPath(_ body: (String) -> Void) throws {
        let saved = GEMM.vectorized
        defer { GEMM.vectorized = saved }
        GEMM.vectorized = true
        let available = GEMM.vectorized
        if available { body("avx512") }
        GEMM.vectorized = false
        body("portable")
        try XCTSkipUnless(available, "AVX-512 path not run: this CPU lacks AVX-512 (the portable path passed)")
    }

    func withThreads<R>(_ n: Int, _ body: () -> R) -> R {
        let saved = Parallel.threads
        Parallel.setThreads(n)
        defer { Parallel.setThreads(saved) }
        return body()
    }

    func testGEMMAgainstReference() throws {
        // (m, n, k, A transposed, B transposed, alpha, beta, biases, j0)
        let cases: [(Int, Int, Int, Bool, Bool, Float, Float, Bool, Int)] = [
            (1, 1, 1, false, false, 1, 0, false, 0),
            (13, 17, 5, false, false, 1, 0, false, 0),
            (13, 17, 5, true, true, 0.5, 0, true, 3),
            (25, 33, 300, false, true, 1, 1, false, 0),     // several k blocks, 16/32-wide panels
            (50, 15, 40, true, false, 2, 0.5, true, 1),     // narrow: 16-wide panels, 24-row tiles
            (200, 130, 70, false, false, 1, 0, true, 0),    // large enough to run on several threads
            (30, 300, 513, true, true, 1, 0, false, 5),
            (40, 70, 1024, false, false, 1, 0, true, 0),    // rows 4 KB apart: packed where the L1 has < 12 ways
            (50, 20, 512, false, false, 1, 0.5, false, 0),  // rows 2 KB apart, 24-row tiles: packed
            (7, 64, 0, false, false, 1, 0.5, true, 0),      // k = 0: beta C + biases
        ]
        try forEachGEMMPath { path in
            for (ci, c) in cases.enumerated() {
                let (m, n, k, ta, tb, alpha, beta, biases, j0) = c
                let a = random(ta ? [k, m] : [m, k]), b = random(tb ? [n + j0, k] : [k, n + j0])
                let c0 = random([m, n]), rb = random([m]), cb = random([n])
                let ref = referenceGEMM(a, b, c: c0, rowBias: rb, columnBias: cb, m: m, n: n, k: k, ta: ta, tb: tb, j0: j0,
                                        alpha: alpha, beta: beta, biases: biases)
                var results: [[Float]] = []
                for threads in [1, 2, 3] {
                    let out = c0.t.copied()
                    withThreads(threads) {
                        withExtendedLifetime((a.t, b.t, rb.t, cb.t, out)) {
                            let ap = Kernels.pointer(a.t), bp = Kernels.pointer(b.t)
                            GEMM.gemm(m: m, n: n, k: k, alpha: alpha, a: ap, ars: ta ? 1 : k, aks: ta ? m : 1,
                                      b: GEMM.matrix(bp, rowStride: tb ? 1 : n + j0, columnStride: tb ? k : 1), j0: j0,
                                      beta: beta, c: Kernels.pointer(out), ldc: n,
                                      rowBias: biases ? UnsafePointer(Kernels.pointer(rb.t)) : nil,
                                      colBias: biases ? UnsafePointer(Kernels.pointer(cb.t)) : nil)
                        }
                    }
                    assertClose(out, ref, "\(path) gemm case \(ci) threads \(threads)")
                    results.append(out.floats)
                }
                // Our kernels give the same bits whatever the thread count (OpenBLAS does not promise that).
                if path == "avx512" {
                    XCTAssertTrue(results[0] == results[1], "\(path) gemm case \(ci): 1 vs 2 threads differ")
                    XCTAssertTrue(results[0] == results[2], "\(path) gemm case \(ci): 1 vs 3 threads differ")
                }
            }
        }
    }

    func testGEMMPackedSourceMatchesMatrix() throws {
        let saved = GEMM.vectorized
        defer { GEMM.vectorized = saved }
        GEMM.vectorized = true
        try XCTSkipUnless(GEMM.vectorized, "no AVX-512 on this machine")
        for (m, n, k) in [(5, 9, 3), (40, 77, 64), (30, 16, 300), (12, 100, 257)] {
            let a = random([m, k]), b = random([k, n])
            let direct = Tensor(zeros: [m, n]), viaPack = Tensor(zeros: [m, n])
            let (count, _) = GEMM.packedSize(k: k, n: n)
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { buffer.deallocate() }
            withExtendedLifetime((a.t, b.t, direct, viaPack)) {
                let source = GEMM.matrix(Kernels.pointer(b.t), rowStride: n, columnStride: 1)
                GEMM.gemm(m: m, n: n, k: k, a: Kernels.pointer(a.t), ars: k, aks: 1, b: source,
                          c: Kernels.pointer(direct), ldc: n)
                let packed = GEMM.pack(source, k: k, n: n, into: buffer)
                GEMM.gemm(m: m, n: n, k: k, a: Kernels.pointer(a.t), ars: k, aks: 1, b: packed,
                          c: Kernels.pointer(viaPack), ldc: n)
            }
            XCTAssertTrue(direct.floats == viaPack.floats, "packed \(m)x\(n)x\(k) differs")
        }
    }

    func testConvolutionOnEveryPath() throws {
        // (N, Cin, H, W, Cout, k, stride, padding): planes wide enough for several panels and
        // column blocks, plus the odd shapes.
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int)] = [
            (2, 5, 9, 40, 7, 3, 1, 1), (1, 3, 35, 37, 4, 3, 2, 1), (2, 4, 6, 5, 3, 1, 1, 0),
            (1, 2, 8, 8, 3, 3, 1, 2), (3, 3, 4, 4, 30, 3, 1, 1), (1, 6, 5, 7, 2, 1, 2, 0),
            // Rows of whole 32-column panels: the direct convolution (image read in place), edges packed.
            (2, 3, 6, 32, 5, 3, 1, 1), (1, 2, 4, 64, 3, 5, 1, 2), (1, 20, 3, 32, 4, 3, 1, 1),
        ]
        try forEachGEMMPath { path in
            for (ci, c) in cases.enumerated() {
                let (n, cin, h, wd, cout, k, stride, padding) = c
                let x = random([n, cin, h, wd]), w = random([cout, cin, k, k]), b = random([cout])
                let ref = Self.convRef(x.d, x.shape, w.d, w.shape, b.d, stride: stride, padding: padding)
                var outs: [[Float]] = [], grads: [[Float]] = []
                let ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - k) / stride + 1
                let r = random([n, cout, ho, wo])
                for threads in [1, 2] {
                    let y = withThreads(threads) { Kernels.conv2d(x.t, w.t, b.t, stride: stride, padding: padding) }
                    assertClose(y, ref, "\(path) conv \(ci) threads \(threads)")
                    outs.append(y.floats)
                    let g = withThreads(threads) {
                        Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: stride, padding: padding,
                                               needInput: true, needWeight: true, needBias: true)
                    }
                    checkGradient(g.x, at: x.d, "\(path) conv \(ci) dx") {
                        self.dot(Self.convRef($0, x.shape, w.d, w.shape, b.d, stride: stride, padding: padding), r.d)
                    }
                    checkGradient(g.w, at: w.d, "\(path) conv \(ci) dw") {
                        self.dot(Self.convRef(x.d, x.shape, $0, w.shape, b.d, stride: stride, padding: padding), r.d)
                    }
                    grads.append((g.x?.floats ?? []) + (g.w?.floats ?? []))
                }
                if path == "avx512" {
                    XCTAssertTrue(outs[0] == outs[1], "\(path) conv \(ci): thread count changed the output")
                    XCTAssertTrue(grads[0] == grads[1], "\(path) conv \(ci): thread count changed the gradients")
                }
            }
        }
    }

    func testConvWeightGradientStraightFromTheImage() throws {
        // 3x3 / stride 1 / padding 1 with few output channels: dW from x and gy in place
        // (dg_conv3x3_weight_gradient) against a Double reference and against the product route.
        // (N, Cin, H, W, Cout): row tails (W not a multiple of 16, W < 16), 1 and 2 channels left
        // over by the 3-channel tiles, and planes tall enough for several row bands.
        let cases: [(Int, Int, Int, Int, Int)] = [(2, 5, 9, 40, 7), (1, 3, 7, 5, 4), (3, 2, 16, 16, 5), (1, 40, 45, 64, 60)]
        let saved = GEMM.vectorized, rule = Kernels.directWeightGradientChannels
        defer { GEMM.vectorized = saved; Kernels.directWeightGradientChannels = rule }
        GEMM.vectorized = true
        guard GEMM.vectorized else { throw XCTSkip("no AVX-512 on this CPU") }
        for (n, cin, h, wd, cout) in cases {
            XCTAssertLessThanOrEqual(cout, rule, "the default rule takes these shapes directly")
            let x = random([n, cin, h, wd]), w = random([cout, cin, 3, 3]), gy = random([n, cout, h, wd])
            var ref = [Double](repeating: 0, count: cout * cin * 9)
            for s in 0..<n { for o in 0..<cout { for c in 0..<cin { for ki in 0..<3 { for kj in 0..<3 {
                var acc = 0.0
                for oy in 0..<h { for ox in 0..<wd {
                    let iy = oy + ki - 1, ix = ox + kj - 1
                    if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                    acc += gy.d[((s * cout + o) * h + oy) * wd + ox] * x.d[((s * cin + c) * h + iy) * wd + ix]
                }}
                ref[(o * cin + c) * 9 + ki * 3 + kj] += acc
            }}}}}
            var direct: [[Float]] = []
            for threads in [1, 2] {
                let g = withThreads(threads) {
                    Kernels.conv2dBackward(gy.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: false, needWeight: true, needBias: false)
                }
                assertClose(g.w!, ref, "direct dW \(n)x\(cin)x\(h)x\(wd) -> \(cout), \(threads) threads")
                direct.append(g.w!.floats)
            }
            XCTAssertTrue(direct[0] == direct[1], "direct dW: the thread count changed the result")
            Kernels.directWeightGradientChannels = -1
            let product = Kernels.conv2dBackward(gy.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: false, needWeight: true, needBias: false)
            Kernels.directWeightGradientChannels = rule
            assertClose(product.w!, ref, "product dW \(n)x\(cin)x\(h)x\(wd) -> \(cout)")
        }
    }

    func testAttentionWithHeadsOnEveryPath() throws {
        // (B, heads, Lq, Lk, D, Dv, causal, backward key block: 0 automatic); 32 keys of 77 or 100 make
        // three or four key blocks, the last partial, over query blocks of 16 rows.
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, Int)] = [
            (2, 3, 40, 33, 8, 5, false, 0), (1, 4, 50, 50, 6, 6, true, 0), (2, 2, 20, 77, 16, 16, false, 0),
            (2, 2, 20, 77, 16, 16, false, 32), (1, 2, 70, 100, 8, 6, false, 32),
        ]
        defer { Kernels.attentionBlock = nil; Kernels.attentionBackwardKeyBlock = nil }
        try forEachGEMMPath { path in
            for (ci, c) in cases.enumerated() {
                let (b, heads, lq, lk, d, dv, causal, keyBlock) = c
                Kernels.attentionBackwardKeyBlock = keyBlock == 0 ? nil : keyBlock
                Kernels.attentionBlock = keyBlock == 0 ? nil : 16
                let q = random([b, lq, heads * d]), k = random([b, lk, heads * d]), v = random([b, lk, heads * dv])
                let scale = 0.4
                // The reference per head: [B H, L, D] copies of the head slices.
                func split(_ x: [Double], _ l: Int, _ dd: Int) -> [Double] {
                    var out = [Double](repeating: 0, count: b * heads * l * dd)
                    for bi in 0..<b { for h in 0..<heads { for i in 0..<l { for t in 0..<dd {
                        out[((bi * heads + h) * l + i) * dd + t] = x[(bi * l + i) * heads * dd + h * dd + t]
                    } } } }
                    return out
                }
                func merged(_ q2: [Double], _ k2: [Double], _ v2: [Double]) -> [Double] {
                    let r = Self.attentionRef(split(q2, lq, d), split(k2, lk, d), split(v2, lk, dv), b: b * heads, lq: lq, lk: lk,
                                              d: d, dv: dv, scale: scale, causal: causal).out
                    var out = [Double](repeating: 0, count: b * lq * heads * dv)
                    for bi in 0..<b { for h in 0..<heads { for i in 0..<lq { for t in 0..<dv {
                        out[(bi * lq + i) * heads * dv + h * dv + t] = r[((bi * heads + h) * lq + i) * dv + t]
                    } } } }
                    return out
                }
                let (out, lse) = Kernels.attention(q: q.t, k: k.t, v: v.t, heads: heads, scale: Float(scale), causal: causal)
                assertClose(out, merged(q.d, k.d, v.d), "\(path) attention heads case \(ci)")
                XCTAssertEqual(lse.shape, [b * heads, lq])
                let r = random(out.shape)
                let g = Kernels.attentionBackward(r.t, q: q.t, k: k.t, v: v.t, out: out, logsumexp: lse, heads: heads,
                                                  scale: Float(scale), causal: causal)
                checkGradient(g.q, at: q.d, samples: 15, "\(path) attention heads \(ci) dq") { self.dot(merged($0, k.d, v.d), r.d) }
                checkGradient(g.k, at: k.d, samples: 15, "\(path) attention heads \(ci) dk") { self.dot(merged(q.d, $0, v.d), r.d) }
                checkGradient(g.v, at: v.d, samples: 15, "\(path) attention heads \(ci) dv") { self.dot(merged(q.d, k.d, $0), r.d) }
            }
        }
    }

    func testLinearAndPointwiseLayouts() throws {
        try forEachGEMMPath { path in
            // linear over the last dimension
            let x = random([2, 3, 7]), w = random([5, 7]), b = random([5])
            func linearRef(_ xd: [Double], _ wd: [Double], _ bd: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: 6 * 5)
                for r in 0..<6 { for o in 0..<5 {
                    var s = bd[o]
                    for i in 0..<7 { s += xd[r * 7 + i] * wd[o * 7 + i] }
                    out[r * 5 + o] = s
                } }
                return out
            }
            let y = Kernels.linear(x.t, w.t, b.t)
            XCTAssertEqual(y.shape, [2, 3, 5])
            assertClose(y, linearRef(x.d, w.d, b.d), "\(path) linear")
            let r = random(y.shape)
            let g = Kernels.linearBackward(r.t, x: x.t, w: w.t, needInput: true, needWeight: true, needBias: true)
            checkGradient(g.x, at: x.d, "\(path) linear dx") { self.dot(linearRef($0, w.d, b.d), r.d) }
            checkGradient(g.w, at: w.d, "\(path) linear dw") { self.dot(linearRef(x.d, $0, b.d), r.d) }
            checkGradient(g.bias, at: b.d, "\(path) linear db") { self.dot(linearRef(x.d, w.d, $0), r.d) }

            // image [N, C, H, W] -> tokens [N, HW, O] and back, against 1x1 convolutions + permutes
            let (n, c, h, wd, o) = (2, 6, 3, 5, 4)
            let img = random([n, c, h, wd]), pw = random([o, c, 1, 1]), pb = random([o])
            func toTokensRef(_ xd: [Double], _ wdd: [Double], _ bd: [Double]) -> [Double] {
                let conv = Self.convRef(xd, [n, c, h, wd], wdd, [o, c, 1, 1], bd, stride: 1, padding: 0)
                var out = [Double](repeating: 0, count: n * h * wd * o)
                for s in 0..<n { for ch in 0..<o { for p in 0..<(h * wd) { out[(s * h * wd + p) * o + ch] = conv[(s * o + ch) * h * wd + p] } } }
                return out
            }
            let tokens = Kernels.pointwiseToTokens(img.t, pw.t, pb.t)
            XCTAssertEqual(tokens.shape, [n, h * wd, o])
            assertClose(tokens, toTokensRef(img.d, pw.d, pb.d), "\(path) pointwiseToTokens")
            let rt = random(tokens.shape)
            let gt = Kernels.pointwiseToTokensBackward(rt.t, x: img.t, w: pw.t, needInput: true, needWeight: true, needBias: true)
            checkGradient(gt.x, at: img.d, "\(path) pointwiseToTokens dx") { self.dot(toTokensRef($0, pw.d, pb.d), rt.d) }
            checkGradient(gt.w, at: pw.d, "\(path) pointwiseToTokens dw") { self.dot(toTokensRef(img.d, $0, pb.d), rt.d) }
            checkGradient(gt.bias, at: pb.d, "\(path) pointwiseToTokens db") { self.dot(toTokensRef(img.d, pw.d, $0), rt.d) }

            let t = random([n, h * wd, c]), tw = random([o, c]), tb = random([o])
            func fromTokensRef(_ td: [Double], _ wdd: [Double], _ bd: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: n * o * h * wd)
                for s in 0..<n { for ch in 0..<o { for p in 0..<(h * wd) {
                    var acc = bd[ch]
                    for i in 0..<c { acc += wdd[ch * c + i] * td[(s * h * wd + p) * c + i] }
                    out[(s * o + ch) * h * wd + p] = acc
                } } }
                return out
            }
            let img2 = Kernels.tokensToPointwise(t.t, tw.t, tb.t, height: h, width: wd)
            XCTAssertEqual(img2.shape, [n, o, h, wd])
            assertClose(img2, fromTokensRef(t.d, tw.d, tb.d), "\(path) tokensToPointwise")
            let ri = random(img2.shape)
            let gi = Kernels.tokensToPointwiseBackward(ri.t, t: t.t, w: tw.t, needInput: true, needWeight: true, needBias: true)
            checkGradient(gi.t, at: t.d, "\(path) tokensToPointwise dt") { self.dot(fromTokensRef($0, tw.d, tb.d), ri.d) }
            checkGradient(gi.w, at: tw.d, "\(path) tokensToPointwise dw") { self.dot(fromTokensRef(t.d, $0, tb.d), ri.d) }
            checkGradient(gi.bias, at: tb.d, "\(path) tokensToPointwise db") { self.dot(fromTokensRef(t.d, tw.d, $0), ri.d) }
        }
    }

    func testGEGLU() {
        let h = random([3, 4, 10], scale: 3)
        func ref(_ hd: [Double]) -> [Double] {
            var out = [Double](repeating: 0, count: 12 * 5)
            for r in 0..<12 { for k in 0..<5 {
                out[r * 5 + k] = hd[r * 10 + k] * Self.activationRef(hd[r * 10 + 5 + k], .geluErf)
            } }
            return out
        }
        let y = Kernels.geglu(h.t)
        XCTAssertEqual(y.shape, [3, 4, 5])
        assertClose(y, ref(h.d), "geglu")
        // Bit for bit what the unfused ops give.
        let a = h.t.slice(axis: 2, 0..<5).contiguous(), g = h.t.slice(axis: 2, 5..<10).contiguous()
        XCTAssertTrue(y.floats == Kernels.mul(a, Kernels.activate(g, .geluErf)).floats, "geglu differs from the unfused ops")
        let r = random(y.shape)
        checkGradient(Kernels.gegluBackward(r.t, h: h.t), at: h.d, "geglu dh") { self.dot(ref($0), r.d) }
    }

    func testGroupNormWithSiLU() {
        for (shape, groups) in [([2, 8, 3, 5], 4), ([1, 6, 7], 3)] {
            let x = random(shape, scale: 2, offset: 1)
            let c = shape[1], w = random([c]), b = random([c])
            func ref(_ xd: [Double], _ wd: [Double], _ bd: [Double]) -> [Double] {
                Self.groupNormRef(xd, shape, groups: groups, wd, bd, eps: 1e-5).map { $0 / (1 + Foundation.exp(-$0)) }
            }
            let out = Kernels.groupNorm(x.t, groups: groups, weight: w.t, bias: b.t, eps: 1e-5, silu: true)
            assertClose(out.y, ref(x.d, w.d, b.d), "groupNorm+silu \(shape)")
            let plain = Kernels.groupNorm(x.t, groups: groups, weight: w.t, bias: b.t, eps: 1e-5)
            XCTAssertTrue(out.y.floats == Kernels.activate(plain.y, .silu).floats, "fused differs from unfused")
            let r = random(shape)
            let g = Kernels.groupNormBackward(r.t, x: x.t, mean: out.mean, rstd: out.rstd, groups: groups, weight: w.t,
                                              silu: true, bias: b.t)
            // The same conditioning allowance as testGroupNorm (float statistics saved by the forward).
            let conditioning = 1e-6 * Double(out.rstd.floats.max()!) * x.d.map(abs).max()!
            checkGradient(g.x, at: x.d, atol: conditioning, "groupNorm+silu dx") { self.dot(ref($0, w.d, b.d), r.d) }
            checkGradient(g.weight, at: w.d, "groupNorm+silu dw") { self.dot(ref(x.d, $0, b.d), r.d) }
            checkGradient(g.bias, at: b.d, "groupNorm+silu db") { self.dot(ref(x.d, w.d, $0), r.d) }
        }
    }

    func testElementwiseKernelsGiveTheSameBitsOnEveryPath() throws {
        let x = random([2, 8, 13, 11], scale: 4, offset: 0.5), w = random([8]), b = random([8])
        let h = random([3, 7, 2 * 37], scale: 3), g = random([3, 7, 37]), gx = random([2, 8, 13, 11])
        var results: [[[Float]]] = []
        try forEachGEMMPath { _ in
            let n = Kernels.groupNorm(x.t, groups: 4, weight: w.t, bias: b.t, eps: 1e-5, silu: true)
            let nb = Kernels.groupNormBackward(gx.t, x: x.t, mean: n.mean, rstd: n.rstd, groups: 4, weight: w.t, silu: true, bias: b.t)
            results.append([n.y.floats, n.mean.floats, n.rstd.floats, nb.x.floats, nb.weight!.floats, nb.bias!.floats,
                            Kernels.activate(x.t, .silu).floats, Kernels.activateBackward(gx.t, x: x.t, .silu).floats,
                            Kernels.geglu(h.t).floats, Kernels.gegluBackward(g.t, h: h.t).floats,
                            [Float(Kernels.sum(x.t))]])
        }
        if results.count == 2 {
            for i in 0..<results[0].count {
                XCTAssertTrue(results[0][i] == results[1][i], "element-wise result \(i) differs between the AVX-512 and portable paths")
            }
        }
    }

    func testConvolutionWithExtraEndPadding() throws {
        // diffusers' downsampling: pad right and bottom by 1, then an unpadded stride-2 convolution.
        try forEachGEMMPath { path in
            for (h, wd, stride) in [(8, 7, 2), (9, 9, 2), (5, 6, 1)] {
                let x = random([2, 3, h, wd]), w = random([4, 3, 3, 3]), b = random([4])
                let wide = Kernels.concat([x.t, Tensor(zeros: [2, 3, h, 1])], axis: 3)
                let padded = Kernels.concat([wide, Tensor(zeros: [2, 3, 1, wd + 1])], axis: 2)
                let pd = padded.floats.map(Double.init)
                let ref = Self.convRef(pd, padded.shape, w.d, w.shape, b.d, stride: stride, padding: 0)
                let y = Kernels.conv2d(x.t, w.t, b.t, stride: stride, padding: 0, paddingEnd: 1)
                assertClose(y, ref, "\(path) conv with end padding \(h)x\(wd) s\(stride)")
                let r = random(y.shape)
                let g = Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: stride, padding: 0, paddingEnd: 1,
                                               needInput: true, needWeight: true, needBias: true)
                func loss(_ xd: [Double], _ wdd: [Double]) -> Double {
                    // Pad xd the same way, in Double.
                    var p = [Double](repeating: 0, count: 2 * 3 * (h + 1) * (wd + 1))
                    for n in 0..<2 { for c in 0..<3 { for i in 0..<h { for j in 0..<wd {
                        p[((n * 3 + c) * (h + 1) + i) * (wd + 1) + j] = xd[((n * 3 + c) * h + i) * wd + j]
                    } } } }
                    return self.dot(Self.convRef(p, [2, 3, h + 1, wd + 1], wdd, w.shape, b.d, stride: stride, padding: 0), r.d)
                }
                checkGradient(g.x, at: x.d, "\(path) end padding dx") { loss($0, w.d) }
                checkGradient(g.w, at: w.d, "\(path) end padding dw") { loss(x.d, $0) }
            }
        }
    }

    func testLinearWithFewRowsAndALargeWeight() throws {
        // Few rows against a weight of >= 2^16 values: the product is taken transposed on the AVX-512 path.
        try forEachGEMMPath { path in
            let (rows, inF, outF) = (6, 300, 260)
            let x = random([2, 3, inF]), w = random([outF, inF]), b = random([outF])
            func ref(_ xd: [Double], _ wd: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: rows * outF)
                for r in 0..<rows { for o in 0..<outF {
                    var s = b.d[o]
                    for i in 0..<inF { s += xd[r * inF + i] * wd[o * inF + i] }
                    out[r * outF + o] = s
                } }
                return out
            }
            let y = Kernels.linear(x.t, w.t, b.t)
            assertClose(y, ref(x.d, w.d), "\(path) linear, few rows")
            let r = random(y.shape)
            let g = Kernels.linearBackward(r.t, x: x.t, w: w.t, needInput: true, needWeight: true, needBias: false)
            checkGradient(g.x, at: x.d, samples: 10, "\(path) linear few rows dx") { self.dot(ref($0, w.d), r.d) }
            checkGradient(g.w, at: w.d, samples: 10, "\(path) linear few rows dw") { self.dot(ref(x.d, $0), r.d) }

            // The same for the image -> tokens layer on a small plane.
            let (c, o, h, wd) = (256, 260, 3, 4)
            let img = random([1, c, h, wd]), pw = random([o, c]), pb = random([o])
            var expected = [Double](repeating: 0, count: h * wd * o)
            for p in 0..<(h * wd) { for ch in 0..<o {
                var s = pb.d[ch]
                for i in 0..<c { s += pw.d[ch * c + i] * img.d[i * h * wd + p] }
                expected[p * o + ch] = s
            } }
            assertClose(Kernels.pointwiseToTokens(img.t, pw.t, pb.t), expected, "\(path) pointwiseToTokens, small plane")
        }
    }
}
