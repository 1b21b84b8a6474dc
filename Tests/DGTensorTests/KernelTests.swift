import DGBase
import Foundation
import XCTest
@testable import DGTensor

// Every kernel is checked against a naive reference written here in Double.
//
// Forward: |kernel - reference| <= 1e-5 * max|reference| + 1e-6. The kernels compute in float32
// (epsilon 6e-8 per rounding); the largest reductions here run over a few hundred terms, so honest
// errors are ~1e-6 relative, while any indexing or formula mistake is O(1).
//
// Backward: the analytic float32 gradient of L = sum(y * r) (r fixed and random) is compared with
// central differences of the *Double reference* loss (step 1e-6, truncation error ~1e-12, rounding
// ~1e-10), so the finite differences themselves are exact to float32 precision and no large float
// step is needed. Tolerance 1e-4 * max|gradient| + 1e-6: float32 backward passes accumulate a few
// hundred terms (errors ~1e-6 relative); a wrong term gives errors of order 1.

// MARK: - Helpers


/// A random tensor and the same values (exactly) in Double.
struct KernelSample {
    let t: Tensor
    let d: [Double]
    var shape: [Int] { t.shape }
}

/// alpha op(A) op(B)[:, j0...] + beta C + row/column biases, in Double: the GEMM reference the
/// f32 and bf16 path tests share. `round` is applied to every operand (bf16 rounding for the
/// bf16 products, the identity otherwise).
func referenceGEMM(_ a: KernelSample, _ b: KernelSample, c: KernelSample, rowBias: KernelSample, columnBias: KernelSample,
                   m: Int, n: Int, k: Int, ta: Bool, tb: Bool, j0: Int, alpha: Float, beta: Float, biases: Bool,
                   round: (Double) -> Double = { $0 }) -> [Double] {
    var ref = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n {
        var s = 0.0
        for p in 0..<k {
            let av = ta ? a.d[p * m + i] : a.d[i * k + p]
            let bv = tb ? b.d[(j + j0) * k + p] : b.d[p * (n + j0) + j + j0]
            s += round(av) * round(bv)
        }
        ref[i * n + j] = Double(alpha) * s + Double(beta) * c.d[i * n + j] + (biases ? rowBias.d[i] + columnBias.d[j] : 0)
    } }
    return ref
}

final class KernelTests: XCTestCase {
    var rng = SplitMix64(seed: 12345)

    func random(_ shape: [Int], scale: Double = 1, offset: Double = 0) -> KernelSample {
        let n = shape.reduce(1, *)
        let f = (0..<n).map { _ in Float(Double.random(in: -1...1, using: &rng) * scale + offset) }
        return KernelSample(t: Tensor(shape: shape, floats: f), d: f.map(Double.init))
    }

    func assertClose(_ actual: Tensor, _ expected: [Double], rtol: Double = 1e-5, atol: Double = 1e-6,
                     _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let a = actual.floats
        XCTAssertEqual(a.count, expected.count, "\(what): count", file: file, line: line)
        guard a.count == expected.count else { return }
        let scale = expected.map(abs).max() ?? 0
        var worst = 0.0, at = 0
        for i in 0..<a.count where abs(Double(a[i]) - expected[i]) > worst { worst = abs(Double(a[i]) - expected[i]); at = i }
        XCTAssertLessThanOrEqual(worst, rtol * scale + atol,
                                 "\(what): max error \(worst) at \(at) (\(a.isEmpty ? 0 : a[at]) vs \(expected.isEmpty ? 0 : expected[at])), scale \(scale)",
                                 file: file, line: line)
    }

    /// Compares the analytic gradient with central differences of `loss` (Double) at `x`, on up to
    /// `samples` coordinates.
    func checkGradient(_ analytic: Tensor?, at x: [Double], samples: Int = 30, atol: Double = 1e-6, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line, loss: ([Double]) -> Double) {
        guard let analytic else { return XCTFail("\(what): no gradient", file: file, line: line) }
        let g = analytic.floats
        XCTAssertEqual(g.count, x.count, "\(what): gradient size", file: file, line: line)
        guard g.count == x.count else { return }
        var indices = Array(0..<x.count)
        if indices.count > samples {
            indices.shuffle(using: &rng)
            indices = Array(indices.prefix(samples))
        }
        let scale = g.map { abs(Double($0)) }.max() ?? 0
        let h = 1e-6
        var xp = x
        for i in indices {
            xp[i] = x[i] + h
            let up = loss(xp)
            xp[i] = x[i] - h
            let down = loss(xp)
            xp[i] = x[i]
            let numeric = (up - down) / (2 * h)
            XCTAssertEqual(Double(g[i]), numeric, accuracy: 1e-4 * max(scale, abs(numeric)) + atol,
                           "\(what)[\(i)]", file: file, line: line)
        }
    }

    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    // MARK: - Convolution

    static func convRef(_ x: [Double], _ xs: [Int], _ w: [Double], _ ws: [Int], _ b: [Double]?, stride: Int, padding: Int) -> [Double] {
        let (n, cin, h, wd) = (xs[0], xs[1], xs[2], xs[3])
        let (cout, kh, kw) = (ws[0], ws[2], ws[3])
        let ho = (h + 2 * padding - kh) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1
        var y = [Double](repeating: 0, count: n * cout * ho * wo)
        for b0 in 0..<n { for co in 0..<cout { for oy in 0..<ho { for ox in 0..<wo {
            var s = b?[co] ?? 0
            for ci in 0..<cin { for ki in 0..<kh { for kj in 0..<kw {
                let iy = oy * stride - padding + ki, ix = ox * stride - padding + kj
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                s += x[((b0 * cin + ci) * h + iy) * wd + ix] * w[((co * cin + ci) * kh + ki) * kw + kj]
            } } }
            y[((b0 * cout + co) * ho + oy) * wo + ox] = s
        } } } }
        return y
    }

    func testConv2dForwardAndBackward() {
        // (N, Cin, H, W, Cout, k, stride, padding, bias)
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int, Bool)] = [
            (2, 3, 7, 6, 4, 3, 1, 1, true),    // the UNet's 3x3 conv
            (2, 3, 7, 6, 4, 3, 2, 1, false),   // downsampling conv, odd sizes
            (2, 5, 5, 7, 3, 1, 1, 0, true),    // 1x1: plain sgemm
            (2, 3, 9, 7, 2, 3, 1, 0, true),    // unpadded
            (2, 3, 9, 7, 2, 3, 2, 0, false),   // strided, unpadded, odd
            (2, 4, 6, 5, 3, 1, 2, 0, true),    // 1x1 strided: im2col path
            (2, 2, 5, 5, 3, 1, 1, 1, true),    // 1x1 padded
            (1, 2, 4, 4, 2, 3, 1, 2, true),    // padding larger than k/2: whole zero rows
            (3, 3, 5, 6, 4, 3, 1, 1, true),    // batch 3: uneven sample packing
            (3, 4, 5, 6, 3, 1, 1, 0, false),   // 1x1, batch 3
        ]
        let saved = Kernels.columnBudget
        defer { Kernels.columnBudget = saved }
        for (ci, c) in cases.enumerated() {
            let (n, cin, h, wd, cout, k, stride, padding, hasBias) = c
            let x = random([n, cin, h, wd]), w = random([cout, cin, k, k]), b = random([cout])
            let bias = hasBias ? b : nil
            let ref = Self.convRef(x.d, x.shape, w.d, w.shape, bias?.d, stride: stride, padding: padding)
            // Default: all samples in one pass (small planes); 1 byte: one output row per pass;
            // room for 2 samples: passes of 2 then 1 with a batch of 3.
            let ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - k) / stride + 1
            for budget in [saved, 1, 2 * cin * k * k * ho * wo * 4] {
                Kernels.columnBudget = budget
                let y = Kernels.conv2d(x.t, w.t, bias?.t, stride: stride, padding: padding)
                assertClose(y, ref, "conv case \(ci) budget \(budget)")
                let r = random(y.shape)
                let g = Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: stride, padding: padding,
                                               needInput: true, needWeight: true, needBias: hasBias)
                checkGradient(g.x, at: x.d, "conv \(ci) dx") {
                    self.dot(Self.convRef($0, x.shape, w.d, w.shape, bias?.d, stride: stride, padding: padding), r.d)
                }
                checkGradient(g.w, at: w.d, "conv \(ci) dw") {
                    self.dot(Self.convRef(x.d, x.shape, $0, w.shape, bias?.d, stride: stride, padding: padding), r.d)
                }
                if hasBias {
                    checkGradient(g.bias, at: b.d, "conv \(ci) dbias") {
                        self.dot(Self.convRef(x.d, x.shape, w.d, w.shape, $0, stride: stride, padding: padding), r.d)
                    }
                } else {
                    XCTAssertNil(g.bias)
                }
                // Only what is asked for.
                let only = Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: stride, padding: padding,
                                                  needInput: false, needWeight: true, needBias: false)
                XCTAssertNil(only.x); XCTAssertNil(only.bias)
                XCTAssertEqual(only.w?.floats, g.w?.floats)
            }
        }
    }

    func testConv2dOnViews() {
        // A permuted (non-contiguous) input gives the same result as its contiguous copy.
        let x = random([2, 6, 5, 3]), w = random([4, 3, 3, 3])
        let view = x.t.permuted([0, 3, 1, 2])   // [2, 3, 6, 5]
        XCTAssertFalse(view.isContiguous)
        let y = Kernels.conv2d(view, w.t, nil, stride: 1, padding: 1)
        XCTAssertEqual(y.floats, Kernels.conv2d(view.contiguous(), w.t, nil, stride: 1, padding: 1).floats)
    }

    // MARK: - Normalisation

    static func groupNormRef(_ x: [Double], _ shape: [Int], groups: Int, _ w: [Double]?, _ b: [Double]?, eps: Double) -> [Double] {
        let n = shape[0], c = shape[1], s = shape.dropFirst(2).reduce(1, *), cg = c / groups
        var y = x
        for b0 in 0..<n { for g in 0..<groups {
            let base = (b0 * c + g * cg) * s, m = cg * s
            let mean = x[base..<(base + m)].reduce(0, +) / Double(m)
            let v = x[base..<(base + m)].reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(m)
            for j in 0..<cg { for t in 0..<s {
                let i = base + j * s + t, ch = g * cg + j
                y[i] = (x[i] - mean) / (v + eps).squareRoot() * (w?[ch] ?? 1) + (b?[ch] ?? 0)
            } }
        } }
        return y
    }

    func testGroupNorm() {
        // (shape, groups, affine)
        let cases: [([Int], Int, Bool)] = [
            ([2, 8, 3, 5], 1, true), ([2, 8, 3, 5], 8, true), ([2, 8, 3, 5], 4, false),
            ([2, 16], 8, true), ([2, 16, 1, 1], 8, true), ([1, 6, 7], 3, true), ([3, 4, 2, 2, 2], 2, true),
        ]
        for (shape, groups, affine) in cases {
            let x = random(shape, scale: 2, offset: 3)   // a mean well away from 0
            let c = shape[1], w = random([c]), b = random([c])
            let (wt, bt) = affine ? (w, b) as (KernelSample?, KernelSample?) : (nil, nil)
            let eps = 1e-5
            let out = Kernels.groupNorm(x.t, groups: groups, weight: wt?.t, bias: bt?.t, eps: Float(eps))
            let ref = Self.groupNormRef(x.d, shape, groups: groups, wt?.d, bt?.d, eps: eps)
            assertClose(out.y, ref, "groupNorm \(shape) g\(groups)")
            XCTAssertEqual(out.mean.shape, [shape[0] * groups])
            XCTAssertEqual(out.rstd.shape, [shape[0] * groups])
            let r = random(shape)
            let g = Kernels.groupNormBackward(r.t, x: x.t, mean: out.mean, rstd: out.rstd, groups: groups, weight: wt?.t)
            // Small groups (2 values when spatial is 1) can have a tiny variance: dx is then a
            // cancellation of terms rstd times larger than itself, and the float mean saved by the
            // forward (error ~6e-8 |x|) moves xhat by that times rstd. Absolute tolerance
            // ~16 ulp x rstd x |x|, which is 1e-6-ish for well-spread groups.
            let conditioning = 1e-6 * Double(out.rstd.floats.max()!) * x.d.map(abs).max()!
            checkGradient(g.x, at: x.d, atol: conditioning, "groupNorm \(shape) g\(groups) dx") {
                self.dot(Self.groupNormRef($0, shape, groups: groups, wt?.d, bt?.d, eps: eps), r.d)
            }
            if affine {
                checkGradient(g.weight, at: w.d, "groupNorm dw") {
                    self.dot(Self.groupNormRef(x.d, shape, groups: groups, $0, b.d, eps: eps), r.d)
                }
                checkGradient(g.bias, at: b.d, "groupNorm db") {
                    self.dot(Self.groupNormRef(x.d, shape, groups: groups, w.d, $0, eps: eps), r.d)
                }
            } else {
                XCTAssertNil(g.weight)
            }
        }
    }

    static func layerNormRef(_ x: [Double], _ d: Int, _ w: [Double]?, _ b: [Double]?, eps: Double) -> [Double] {
        var y = x
        for row in 0..<(x.count / d) {
            let s = x[(row * d)..<(row * d + d)]
            let m = s.reduce(0, +) / Double(d)
            let v = s.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(d)
            for k in 0..<d { y[row * d + k] = (x[row * d + k] - m) / (v + eps).squareRoot() * (w?[k] ?? 1) + (b?[k] ?? 0) }
        }
        return y
    }

    func testLayerNorm() {
        for (shape, affine) in [([3, 4, 10], true), ([5, 33], false), ([2, 1, 7], true)] {
            let d = shape.last!
            let x = random(shape, scale: 3, offset: -2), w = random([d]), b = random([d])
            let (wt, bt) = affine ? (w, b) as (KernelSample?, KernelSample?) : (nil, nil)
            let out = Kernels.layerNorm(x.t, weight: wt?.t, bias: bt?.t, eps: 1e-5)
            assertClose(out.y, Self.layerNormRef(x.d, d, wt?.d, bt?.d, eps: 1e-5), "layerNorm \(shape)")
            XCTAssertEqual(out.mean.count, x.t.count / d)
            let r = random(shape)
            let g = Kernels.layerNormBackward(r.t, x: x.t, mean: out.mean, rstd: out.rstd, weight: wt?.t)
            checkGradient(g.x, at: x.d, "layerNorm dx") { self.dot(Self.layerNormRef($0, d, wt?.d, bt?.d, eps: 1e-5), r.d) }
            if affine {
                checkGradient(g.weight, at: w.d, "layerNorm dw") { self.dot(Self.layerNormRef(x.d, d, $0, b.d, eps: 1e-5), r.d) }
                checkGradient(g.bias, at: b.d, "layerNorm db") { self.dot(Self.layerNormRef(x.d, d, w.d, $0, eps: 1e-5), r.d) }
            } else {
                XCTAssertNil(g.weight)
            }
        }
    }

    // MARK: - Softmax

    static func softmaxRef(_ x: [Double], _ d: Int) -> [Double] {
        var y = x
        for row in 0..<(x.count / d) {
            let s = x[(row * d)..<(row * d + d)], m = s.max()!
            let e = s.map { Foundation.exp($0 - m) }, total = e.reduce(0, +)
            for k in 0..<d { y[row * d + k] = e[k] / total }
        }
        return y
    }

    func testSoftmax() {
        for (shape, scale, offset) in [([5, 13], 3.0, 0.0), ([2, 3, 40], 1000.0, 0.0), ([4, 17], 5.0, 1e4), ([3, 1], 1.0, 0.0)] {
            let d = shape.last!
            let x = random(shape, scale: scale, offset: offset)
            let y = Kernels.softmax(x.t)
            let ref = Self.softmaxRef(x.d, d)
            assertClose(y, ref, "softmax \(shape) scale \(scale)")
            XCTAssertFalse(y.floats.contains { !$0.isFinite })
            // Rows sum to 1.
            let yf = y.floats
            for row in 0..<(yf.count / d) {
                XCTAssertEqual(yf[(row * d)..<(row * d + d)].reduce(0, +), 1, accuracy: 1e-5)
            }
            if scale <= 5 && offset == 0 {
                let r = random(shape)
                let g = Kernels.softmaxBackward(r.t, y: y)
                checkGradient(g, at: x.d, "softmax dx") { self.dot(Self.softmaxRef($0, d), r.d) }
            }
        }
        // A fully masked row gives zeros, a partly masked one ignores -inf.
        let masked = Tensor(shape: [2, 3], floats: [-.infinity, -.infinity, -.infinity, 0, -.infinity, 0])
        XCTAssertEqual(Kernels.softmax(masked).floats, [0, 0, 0, 0.5, 0, 0.5])
    }

    // MARK: - Activations

    static func activationRef(_ x: Double, _ a: Kernels.Activation) -> Double {
        switch a {
        case .silu: return x / (1 + Foundation.exp(-x))
        case .quickGELU: return x / (1 + Foundation.exp(-1.702 * x))
        case .geluTanh: return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        case .geluErf: return 0.5 * x * erfc(-x / 2.0.squareRoot())
        }
    }

    func testActivations() {
        for a in [Kernels.Activation.silu, .geluTanh, .geluErf, .quickGELU] {
            var x = random([3, 100], scale: 6)
            // Include the far tails and exact zero.
            var values = x.t.floats
            values[0] = 0; values[1] = -30; values[2] = 30; values[3] = -100; values[4] = 100; values[5] = -9
            x = KernelSample(t: Tensor(shape: [3, 100], floats: values), d: values.map(Double.init))
            let y = Kernels.activate(x.t, a)
            let ref = x.d.map { Self.activationRef($0, a) }
            assertClose(y, ref, "\(a)")
            // Relative accuracy on the negative tail (these are tiny but should be right).
            let yf = y.floats
            for i in 0..<ref.count where abs(ref[i]) > 1e-30 {
                XCTAssertEqual(Double(yf[i]), ref[i], accuracy: 2e-5 * abs(ref[i]) + 1e-7, "\(a)(\(values[i]))")
            }
            let r = random([3, 100])
            let g = Kernels.activateBackward(r.t, x: x.t, a)
            checkGradient(g, at: x.d, samples: 300, "\(a) dx") { xs in
                self.dot(xs.map { Self.activationRef($0, a) }, r.d)
            }
        }
    }

    // MARK: - Upsample

    func testUpsample() {
        let x = random([2, 3, 4, 5])
        let y = Kernels.upsampleNearest2x(x.t)
        XCTAssertEqual(y.shape, [2, 3, 8, 10])
        var ref = [Double](repeating: 0, count: 2 * 3 * 8 * 10)
        for p in 0..<6 { for i in 0..<8 { for j in 0..<10 { ref[(p * 8 + i) * 10 + j] = x.d[(p * 4 + i / 2) * 5 + j / 2] } } }
        assertClose(y, ref, rtol: 0, atol: 0, "upsample")
        let r = random(y.shape)
        let g = Kernels.upsampleNearest2xBackward(r.t)
        var gref = [Double](repeating: 0, count: x.d.count)
        for p in 0..<6 { for i in 0..<8 { for j in 0..<10 { gref[(p * 4 + i / 2) * 5 + j / 2] += r.d[(p * 8 + i) * 10 + j] } } }
        assertClose(g, gref, "upsample backward")
    }

    // MARK: - Attention

    static func attentionRef(_ q: [Double], _ k: [Double], _ v: [Double], b: Int, lq: Int, lk: Int, d: Int, dv: Int,
                             scale: Double, causal: Bool) -> (out: [Double], lse: [Double]) {
        var out = [Double](repeating: 0, count: b * lq * dv), lse = [Double](repeating: 0, count: b * lq)
        for h in 0..<b { for i in 0..<lq {
            let n = causal ? min(lk, i + 1) : lk
            var s = [Double](repeating: 0, count: n)
            for j in 0..<n {
                var acc = 0.0
                for t in 0..<d { acc += q[(h * lq + i) * d + t] * k[(h * lk + j) * d + t] }
                s[j] = acc * scale
            }
            let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, total = e.reduce(0, +)
            lse[h * lq + i] = m + Foundation.log(total)
            for j in 0..<n { for t in 0..<dv { out[(h * lq + i) * dv + t] += e[j] / total * v[(h * lk + j) * dv + t] } }
        } }
        return (out, lse)
    }

    /// The forward flop count that `bench model` divides by time: 2 per multiply-add of each forward
    /// product, from the shapes (causal attention: only the scores a query sees).
    func testForwardFlopsAreCountedFromTheShapes() {
        func counted(_ body: () -> Void) -> Int {
            let before = Kernels.forwardFlops
            body()
            return Kernels.forwardFlops - before
        }
        XCTAssertEqual(counted { _ = Kernels.conv2d(random([2, 3, 6, 5]).t, random([4, 3, 3, 3]).t, nil, stride: 2, padding: 1) },
                       2 * 2 * 4 * 27 * (3 * 3))
        XCTAssertEqual(counted { _ = Kernels.linear(random([2, 5, 7]).t, random([6, 7]).t, nil) }, 2 * 10 * 7 * 6)
        XCTAssertEqual(counted { _ = Kernels.pointwiseToTokens(random([2, 3, 4, 5]).t, random([6, 3]).t, nil) }, 2 * 2 * 20 * 3 * 6)
        XCTAssertEqual(counted { _ = Kernels.attention(q: random([2, 4, 6]).t, k: random([2, 3, 6]).t, v: random([2, 3, 4]).t,
                                                       heads: 2, scale: 1, causal: false) }, 2 * 4 * 4 * 3 * (3 + 2))
        XCTAssertEqual(counted { _ = Kernels.attention(q: random([1, 4, 6]).t, k: random([1, 3, 6]).t, v: random([1, 3, 6]).t,
                                                       scale: 1, causal: true) }, 2 * (1 + 2 + 3 + 3) * (6 + 6))
    }

    func testAttention() {
        let savedThreads = Parallel.threads
        defer { Kernels.attentionBlock = nil; Parallel.setThreads(savedThreads) }
        // (B, Lq, Lk, D, Dv, causal, block, threads)
        let cases: [(Int, Int, Int, Int, Int, Bool, Int, Int)] = [
            (3, 70, 45, 8, 6, false, 16, savedThreads),   // Lq != Lk, several blocks, last one partial
            (3, 70, 45, 8, 6, true, 16, savedThreads),    // causal with Lq > Lk
            (2, 33, 50, 5, 7, true, 16, savedThreads),    // causal with Lq < Lk
            (1, 130, 130, 8, 8, true, 32, 3),             // one head: query blocks split across threads
            (1, 100, 20, 4, 4, false, 32, 2),
            (2, 20, 77, 8, 8, false, 64, savedThreads),   // a single block
            (1, 1, 9, 3, 2, false, 64, savedThreads),
            (2, 300, 200, 8, 8, true, 0, savedThreads),   // automatic block size (0: nil)
            (1, 40, 20000, 2, 3, false, 0, savedThreads), // automatic: the minimum of 16 rows
        ]
        for (ci, c) in cases.enumerated() {
            let (b, lq, lk, d, dv, causal, block, threads) = c
            Kernels.attentionBlock = block == 0 ? nil : block
            Parallel.setThreads(threads)
            let q = random([b, lq, d]), k = random([b, lk, d]), v = random([b, lk, dv])
            let scale = 1 / Double(d).squareRoot() * 2
            let (out, lse) = Kernels.attention(q: q.t, k: k.t, v: v.t, scale: Float(scale), causal: causal)
            let ref = Self.attentionRef(q.d, k.d, v.d, b: b, lq: lq, lk: lk, d: d, dv: dv, scale: scale, causal: causal)
            assertClose(out, ref.out, "attention case \(ci)")
            assertClose(lse, ref.lse, "attention lse case \(ci)")
            let r = random(out.shape)
            let g = Kernels.attentionBackward(r.t, q: q.t, k: k.t, v: v.t, out: out, logsumexp: lse, scale: Float(scale), causal: causal)
            func loss(_ q2: [Double], _ k2: [Double], _ v2: [Double]) -> Double {
                dot(Self.attentionRef(q2, k2, v2, b: b, lq: lq, lk: lk, d: d, dv: dv, scale: scale, causal: causal).out, r.d)
            }
            let samples = lk > 1000 ? 4 : 20
            checkGradient(g.q, at: q.d, samples: samples, "attention \(ci) dq") { loss($0, k.d, v.d) }
            checkGradient(g.k, at: k.d, samples: samples, "attention \(ci) dk") { loss(q.d, $0, v.d) }
            checkGradient(g.v, at: v.d, samples: samples, "attention \(ci) dv") { loss(q.d, k.d, $0) }
        }
    }

    func testAttentionOnViews() {
        // q, k, v as the head-split views a model makes: [L, B, D] permuted to [B, L, D].
        let q = random([40, 3, 8]), k = random([30, 3, 8]), v = random([30, 3, 8])
        let (qv, kv, vv) = (q.t.permuted([1, 0, 2]), k.t.permuted([1, 0, 2]), v.t.permuted([1, 0, 2]))
        let a = Kernels.attention(q: qv, k: kv, v: vv, scale: 0.3, causal: false)
        let b = Kernels.attention(q: qv.contiguous(), k: kv.contiguous(), v: vv.contiguous(), scale: 0.3, causal: false)
        XCTAssertEqual(a.out.floats, b.out.floats)
    }

    // MARK: - Broadcasting

    static func broadcastRef(_ a: [Double], _ sa: [Int], _ b: [Double], _ sb: [Int], _ f: (Double, Double) -> Double) -> ([Int], [Double]) {
        let shape = Kernels.broadcastShape(sa, sb)!
        let r = shape.count, n = shape.reduce(1, *)
        func index(_ linear: Int, _ s: [Int]) -> Int {
            var rem = linear, idx = 0, step = 1
            for i in stride(from: r - 1, through: 0, by: -1) {
                let coord = rem % shape[i]; rem /= shape[i]
                let j = i - (r - s.count)
                if j >= 0 { idx += (s[j] == 1 ? 0 : coord) * step; step *= s[j] }
            }
            return idx
        }
        return (shape, (0..<n).map { f(a[index($0, sa)], b[index($0, sb)]) })
    }

    static func sumToShapeRef(_ x: [Double], _ xs: [Int], _ shape: [Int]) -> [Double] {
        var out = [Double](repeating: 0, count: shape.reduce(1, *))
        let r = xs.count
        for linear in 0..<x.count {
            var rem = linear, idx = 0, step = 1
            for i in stride(from: r - 1, through: 0, by: -1) {
                let coord = rem % xs[i]; rem /= xs[i]
                let j = i - (r - shape.count)
                if j >= 0 { idx += (shape[j] == 1 ? 0 : coord) * step; step *= shape[j] }
            }
            out[idx] += x[linear]
        }
        return out
    }

    func testBroadcastingBinaryOps() {
        let pairs: [([Int], [Int])] = [
            ([2, 3, 4, 5], [1, 3, 1, 1]), ([2, 3, 4, 5], [5]), ([3, 1, 5], [2, 3, 4, 5]), ([2, 1, 4, 1], [3, 1, 5]),
            ([2, 3, 4, 5], [2, 3, 4, 5]), ([4, 1], [1, 6]), ([7], [1]), ([2, 3], [2, 1]),
        ]
        let ops: [(String, (Tensor, Tensor) -> Tensor, (Double, Double) -> Double)] = [
            ("add", Kernels.add, { $0 + $1 }), ("sub", Kernels.sub, { $0 - $1 }),
            ("mul", Kernels.mul, { $0 * $1 }), ("div", Kernels.div, { $0 / $1 }),
        ]
        for (sa, sb) in pairs {
            let a = random(sa), b = random(sb, scale: 1, offset: 2)   // divisor away from 0
            for (name, f, g) in ops {
                let (shape, ref) = Self.broadcastRef(a.d, sa, b.d, sb, g)
                let y = f(a.t, b.t)
                XCTAssertEqual(y.shape, shape, "\(name) \(sa) \(sb)")
                assertClose(y, ref, "\(name) \(sa) \(sb)")
                // Backward shape reduction: d(a+b)/db summed back to b's shape.
                let r = random(shape)
                assertClose(Kernels.sumToShape(r.t, sb), Self.sumToShapeRef(r.d, shape, sb), "sumToShape \(shape) -> \(sb)")
                assertClose(Kernels.sumToShape(r.t, sa), Self.sumToShapeRef(r.d, shape, sa), "sumToShape \(shape) -> \(sa)")
            }
        }
        // Strided views as operands.
        let m = random([4, 6])
        let t = m.t.transposed(0, 1)   // [6, 4], non-contiguous
        let row = random([4])
        let (shape, ref) = Self.broadcastRef(t.contiguous().floats.map(Double.init), [6, 4], row.d, [4], { $0 * $1 })
        let y = Kernels.mul(t, row.t)
        XCTAssertEqual(y.shape, shape)
        assertClose(y, ref, "mul on a transposed view")
        let col = m.t.slice(axis: 1, 2..<3)   // [4, 1] view with stride 6
        assertClose(Kernels.add(col, m.t), Self.broadcastRef(col.floats.map(Double.init), [4, 1], m.d, [4, 6], { $0 + $1 }).1, "add on a sliced view")
        XCTAssertEqual(Kernels.add(Tensor(shape: [], floats: [2]), Tensor(shape: [], floats: [3])).floats, [5])
    }

    func testSumToShape() {
        let x = random([2, 3, 4, 5])
        for target in [[1, 3, 1, 1], [5], [3, 4, 5], [2, 3, 4, 5], [2, 1, 4, 1], [1], [1, 1, 1, 1], [2, 3, 1, 1], [1, 1, 4, 5], [4, 1]] {
            let y = Kernels.sumToShape(x.t, target)
            XCTAssertEqual(y.shape, target)
            assertClose(y, Self.sumToShapeRef(x.d, x.shape, target), "sumToShape -> \(target)")
        }
        // Large enough to run in parallel chunks (reduced first dimension with partials).
        let big = random([64, 1000])
        assertClose(Kernels.sumToShape(big.t, [1000]), Self.sumToShapeRef(big.d, big.shape, [1000]), "sumToShape big rows")
        assertClose(Kernels.sumToShape(big.t, [64, 1]), Self.sumToShapeRef(big.d, big.shape, [64, 1]), "sumToShape big cols")
        // A fresh tensor even when nothing is reduced.
        XCTAssertFalse(Kernels.sumToShape(x.t, x.shape).storage === x.t.storage)
    }

    func testScaleSumMean() {
        let x = random([3, 7, 11])
        assertClose(Kernels.scale(x.t, -2.5), x.d.map { $0 * -2.5 }, "scale")
        let y = random([3, 7, 11])
        assertClose(Kernels.addScaled(x.t, y.t, 0.5), zip(x.d, y.d).map { $0 + 0.5 * $1 }, "addScaled")
        // Sums run in float SIMD lanes over runs of at most 32 values per lane, then in Double:
        // error ~ 32 x 6e-8 x sum|x| at worst.
        let tolerance = 2e-6 * x.d.reduce(0) { $0 + abs($1) }
        XCTAssertEqual(Kernels.sum(x.t), x.d.reduce(0, +), accuracy: tolerance)
        XCTAssertEqual(Kernels.mean(x.t), x.d.reduce(0, +) / Double(x.d.count), accuracy: tolerance / Double(x.d.count))
        let big = random([300_001])
        XCTAssertEqual(Kernels.sum(big.t), big.d.reduce(0, +), accuracy: 2e-6 * big.d.reduce(0) { $0 + abs($1) })
        XCTAssertEqual(Kernels.sum(x.t.permuted([2, 0, 1])), x.d.reduce(0, +), accuracy: tolerance)
    }

    // MARK: - Embedding, concat

    func testEmbedding() throws {
        let table = random([7, 4])
        let idValues: [Int64] = [3, 0, 3, 6, 3, 1]
        let ids64 = try idValues.withUnsafeBytes { try Tensor(shape: [2, 3], dtype: .i64, bytes: $0) }
        let ids32 = try idValues.map(Int32.init).withUnsafeBytes { try Tensor(shape: [2, 3], dtype: .i32, bytes: $0) }
        for ids in [ids64, ids32] {
            let y = Kernels.embedding(table.t, ids: ids)
            XCTAssertEqual(y.shape, [2, 3, 4])
            assertClose(y, idValues.flatMap { id in (0..<4).map { table.d[Int(id) * 4 + $0] } }, rtol: 0, atol: 0, "embedding")
            let r = random([2, 3, 4])
            var ref = [Double](repeating: 0, count: 7 * 4)
            for (i, id) in idValues.enumerated() { for k in 0..<4 { ref[Int(id) * 4 + k] += r.d[i * 4 + k] } }
            let g = Kernels.embeddingBackward(r.t, ids: ids, vocabulary: 7)
            XCTAssertEqual(g.shape, [7, 4])
            assertClose(g, ref, "embedding backward")
        }
    }

    func testConcatAndSplit() {
        let a = random([2, 3, 4]), b = random([1, 3, 4]), c = random([2, 5, 4])
        let y0 = Kernels.concat([a.t, b.t], axis: 0)
        XCTAssertEqual(y0.shape, [3, 3, 4])
        assertClose(y0, a.d + b.d, rtol: 0, atol: 0, "concat axis 0")
        let y1 = Kernels.concat([a.t, c.t], axis: 1)
        XCTAssertEqual(y1.shape, [2, 8, 4])
        var ref: [Double] = []
        for n in 0..<2 { ref += a.d[(n * 12)..<(n * 12 + 12)]; ref += c.d[(n * 20)..<(n * 20 + 20)] }
        assertClose(y1, ref, rtol: 0, atol: 0, "concat axis 1")
        let y2 = Kernels.concat([a.t, a.t.permuted([0, 1, 2])], axis: -1)
        XCTAssertEqual(y2.shape, [2, 3, 8])
        let parts = Kernels.split(y1, sizes: [3, 5], axis: 1)
        XCTAssertEqual(parts.map(\.shape), [[2, 3, 4], [2, 5, 4]])
        XCTAssertEqual(parts[0].floats, a.t.floats)
        XCTAssertEqual(parts[1].floats, c.t.floats)
        XCTAssertFalse(parts[0].storage === y1.storage)
    }

    // MARK: - Determinism

    func testDeterminism() {
        let x = random([2, 16, 24, 24]), w = random([16, 16, 3, 3]), b = random([16])
        let y1 = Kernels.conv2d(x.t, w.t, b.t, stride: 1, padding: 1)
        let y2 = Kernels.conv2d(x.t, w.t, b.t, stride: 1, padding: 1)
        XCTAssertEqual(y1.floats, y2.floats)
        let r = random(y1.shape)
        let g1 = Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: true, needBias: true)
        let g2 = Kernels.conv2dBackward(r.t, x: x.t, w: w.t, stride: 1, padding: 1, needInput: true, needWeight: true, needBias: true)
        XCTAssertEqual(g1.x?.floats, g2.x?.floats)
        XCTAssertEqual(g1.w?.floats, g2.w?.floats)
        XCTAssertEqual(g1.bias?.floats, g2.bias?.floats)

        for heads in [1, 4] {
            let q = random([heads, 300, 16]), k = random([heads, 300, 16]), v = random([heads, 300, 16])
            let a1 = Kernels.attention(q: q.t, k: k.t, v: v.t, scale: 0.25, causal: false)
            let a2 = Kernels.attention(q: q.t, k: k.t, v: v.t, scale: 0.25, causal: false)
            XCTAssertEqual(a1.out.floats, a2.out.floats)
            XCTAssertEqual(a1.logsumexp.floats, a2.logsumexp.floats)
            let go = random(a1.out.shape)
            let b1 = Kernels.attentionBackward(go.t, q: q.t, k: k.t, v: v.t, out: a1.out, logsumexp: a1.logsumexp, scale: 0.25, causal: false)
            let b2 = Kernels.attentionBackward(go.t, q: q.t, k: k.t, v: v.t, out: a1.out, logsumexp: a1.logsumexp, scale: 0.25, causal: false)
            XCTAssertEqual(b1.q.floats, b2.q.floats)
            XCTAssertEqual(b1.k.floats, b2.k.floats)
            XCTAssertEqual(b1.v.floats, b2.v.floats)
        }
        let big = random([8, 64, 32, 32])
        let n1 = Kernels.groupNorm(big.t, groups: 32, weight: nil, bias: nil, eps: 1e-5)
        let n2 = Kernels.groupNorm(big.t, groups: 32, weight: nil, bias: nil, eps: 1e-5)
        XCTAssertEqual(n1.y.floats, n2.y.floats)
        XCTAssertEqual(Kernels.sum(big.t), Kernels.sum(big.t))
    }

    func testFastExp() {
        // The vectorisable exp is within a few ulp over the whole range softmax and sigmoid use.
        var worst = 0.0
        for i in 0...200_000 {
            let x = Float(-87 + 175 * Double(i) / 200_000)
            let e = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(Kernels.exp(x)) - e) / e)
        }
        XCTAssertLessThan(worst, 5e-7)
        XCTAssertEqual(Kernels.exp(-.infinity), 0)
        XCTAssertEqual(Kernels.exp(-200), 0)
        XCTAssertEqual(Kernels.exp(0), 1)
    }
}
