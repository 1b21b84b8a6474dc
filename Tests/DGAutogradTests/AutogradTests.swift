import XCTest
@testable import DGAutograd
import DGBase
import DGTensor

/// Gradients through the recorded graph, checked against central finite differences of the
/// same float32 forward. With inputs of magnitude ~1, eps = 1e-2 keeps the truncation error
/// (O(eps^2) times third derivatives of order 1) and the float32 rounding of the loss
/// (~1e-7 x |loss| / eps) both near 1e-4 relative, so 2e-3 relative to the gradient's norm
/// separates a correct backward from a wrong one by orders of magnitude.
final class AutogradTests: XCTestCase {
    var rng = SplitMix64(seed: 42)

    func random(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -scale...scale, using: &rng) })
    }

    /// Checks d(sum(f(x) * r))/dx for every input against finite differences.
    func gradcheck(_ inputs: [Tensor], tolerance: Double = 2e-3, file: StaticString = #filePath, line: UInt = #line,
                   _ f: ([Var]) -> Var) {
        var grads = [Tensor?](repeating: nil, count: inputs.count)
        let leaves = inputs.enumerated().map { i, t in Var.leaf(t) { g in grads[i] = g } }
        let y = f(leaves)
        let r = random(y.shape)
        Autograd.backward(sum(y * Var(r)))
        func loss(_ xs: [Tensor]) -> Double {
            Autograd.noGrad {
                let out = f(xs.map { Var($0) }).value.floats
                return zip(out, r.floats).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
        }
        for (i, x) in inputs.enumerated() {
            guard let g = grads[i]?.floats else { XCTFail("input \(i) got no gradient", file: file, line: line); continue }
            XCTAssertEqual(g.count, x.count, file: file, line: line)
            var numeric = [Double](repeating: 0, count: x.count)
            let eps: Float = 1e-2
            for j in 0..<x.count {
                var plus = inputs, minus = inputs
                var p = x.floats, m = x.floats
                p[j] += eps
                m[j] -= eps
                plus[i] = Tensor(shape: x.shape, floats: p)
                minus[i] = Tensor(shape: x.shape, floats: m)
                numeric[j] = (loss(plus) - loss(minus)) / Double(2 * eps)
            }
            let diff = zip(g, numeric).reduce(0.0) { $0 + pow(Double($1.0) - $1.1, 2) }.squareRoot()
            let norm = numeric.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            XCTAssertLessThan(diff / max(norm, 1e-6), tolerance, "input \(i): |analytic - numeric| / |numeric|", file: file, line: line)
        }
    }

    func testElementwiseAndBroadcasting() {
        gradcheck([random([2, 3, 4]), random([1, 3, 1])]) { $0[0] + $0[1] }
        gradcheck([random([2, 3, 4]), random([4])]) { $0[0] * $0[1] - $0[1] }
        gradcheck([random([2, 3]), random([2, 3], scale: 0.5).map { $0 + 2 }]) { $0[0] / $0[1] }
        gradcheck([random([5, 6])]) { -($0[0] * 0.5) }
    }

    func testActivations() {
        for a in [Activation.silu, .geluTanh, .geluErf, .quickGELU] {
            gradcheck([random([3, 7], scale: 3)]) { activate($0[0], a) }
        }
        gradcheck([random([2, 9], scale: 3)]) { softmax($0[0]) }
    }

    func testLinearAndMatmul() {
        gradcheck([random([2, 3, 5]), random([4, 5]), random([4])]) { linear($0[0], $0[1], $0[2]) }
        gradcheck([random([2, 3, 5]), random([4, 5])]) { linear($0[0], $0[1], nil) }
        gradcheck([random([2, 3, 5]), random([2, 5, 4])]) { matmul($0[0], $0[1]) }
        gradcheck([random([2, 3, 5]), random([2, 4, 5])]) { matmul($0[0], $0[1], transposeB: true) }
    }

    func testConvolutionNormalisationAndUpsampling() {
        gradcheck([random([2, 3, 5, 5]), random([4, 3, 3, 3], scale: 0.5), random([4])]) { conv2d($0[0], $0[1], $0[2], stride: 1, padding: 1) }
        gradcheck([random([1, 2, 6, 6]), random([3, 2, 3, 3], scale: 0.5)]) { conv2d($0[0], $0[1], nil, stride: 2, padding: 1) }
        gradcheck([random([2, 4, 3, 3]), random([4]), random([4])]) { groupNorm($0[0], groups: 2, weight: $0[1], bias: $0[2], eps: 1e-5) }
        gradcheck([random([2, 3, 6]), random([6]), random([6])]) { layerNorm($0[0], weight: $0[1], bias: $0[2], eps: 1e-5) }
        gradcheck([random([1, 2, 3, 3])]) { upsampleNearest2x($0[0]) }
    }

    func testAttentionEmbeddingAndShapes() {
        gradcheck([random([2, 5, 4]), random([2, 7, 4]), random([2, 7, 3])]) { attention($0[0], $0[1], $0[2], scale: 0.5) }
        gradcheck([random([2, 5, 4]), random([2, 5, 4]), random([2, 5, 4])]) { attention($0[0], $0[1], $0[2], scale: 0.5, causal: true) }
        let ids = Tensor(shape: [2, 3], floats: [0, 2, 2, 4, 1, 0]).converted(to: .i64)
        gradcheck([random([5, 3])]) { embedding($0[0], ids: ids) }
        gradcheck([random([2, 3, 4])]) { $0[0].permuted([2, 0, 1]).reshaped([4, 6]) }
        gradcheck([random([2, 6, 2])]) { x in
            let parts = x[0].chunked(2, axis: 1)
            return parts[0] * activate(parts[1], .geluErf)  // GEGLU
        }
        gradcheck([random([2, 3]), random([2, 5])]) { concat([$0[0], $0[1]], axis: 1) }
        gradcheck([random([4, 3]), random([4, 3])]) { mseLoss($0[0], $0[1]) }
        gradcheck([random([4, 3])]) { mean($0[0]) * 3 }
    }

    /// The autoencoder's losses: reparameterised sample, KL and L1 (away from its kinks).
    func testAutoencoderLosses() {
        let noise = random([2, 3, 2, 2])
        gradcheck([random([2, 6, 2, 2])]) { gaussianSample($0[0], noise: noise) }
        gradcheck([random([2, 6, 2, 2], scale: 2)]) { gaussianKL($0[0]) }
        let x = random([2, 3, 4])
        let target = Tensor(shape: x.shape, floats: x.floats.enumerated().map { $0.element + ($0.offset % 3 == 0 ? 0.3 : -0.2) })
        gradcheck([x]) { l1Loss($0[0], Var(target)) }
        // KL of N(0, 1) is 0; of N(1, e^0) it is 1/2 per element.
        XCTAssertEqual(gaussianKL(Var(Tensor(zeros: [1, 2, 1, 1]))).value.floats[0], 0, accuracy: 1e-7)
        XCTAssertEqual(gaussianKL(Var(Tensor(shape: [1, 2, 1, 1], floats: [1, 0]))).value.floats[0], 0.5, accuracy: 1e-6)
        // The sample is mean + exp(logvar / 2) * noise, mean first on the channel axis.
        let z = gaussianSample(Var(Tensor(shape: [1, 2, 1, 1], floats: [0.5, 2 * log(3)])), noise: Tensor(shape: [1, 1, 1, 1], floats: [2]))
        XCTAssertEqual(z.value.floats[0], 6.5, accuracy: 1e-5)
    }

    func testGradientsAccumulateIntoParametersAndNoGradRecordsNothing() {
        let p = Parameter([3])
        p.value = Tensor(shape: [3], floats: [1, 2, 3])
        let x = Var(Tensor(shape: [3], floats: [4, 5, 6]))
        Autograd.backward(sum(p.v * x))
        Autograd.backward(sum(p.v * x + p.v))
        XCTAssertEqual(p.grad?.floats, [9, 11, 13])
        let y = Autograd.noGrad { p.v * x }
        XCTAssertFalse(y.requiresGrad)
        p.requiresGrad = false
        XCTAssertFalse((p.v * x).requiresGrad)
    }

    /// A checkpointed block must give the same gradients as the same block recorded normally.
    func testCheckpointingGivesTheSameGradients() {
        let w = Parameter([4, 4]), b = Parameter([4])
        w.value = random([4, 4])
        b.value = random([4])
        let input = random([2, 3, 4])
        func block(_ xs: [Var]) -> [Var] {
            let h = silu(linear(xs[0], w.v, b.v))
            return [h, h * xs[0]]
        }
        var plainInput: Tensor?
        let out1 = block([Var.leaf(input) { plainInput = $0 }])
        Autograd.backward(sum(out1[0] * out1[1]))
        let (gw, gb) = (w.grad!.floats, b.grad!.floats)
        w.grad = nil
        b.grad = nil
        var ckInput: Tensor?
        let out2 = checkpointed([Var.leaf(input) { ckInput = $0 }], block)
        Autograd.backward(sum(out2[0] * out2[1]))
        XCTAssertEqual(w.grad!.floats, gw)
        XCTAssertEqual(b.grad!.floats, gb)
        XCTAssertEqual(ckInput!.floats, plainInput!.floats)
    }

    /// bf16 autocast: linear layers and convolutions read their weights rounded to bf16 (exactly
    /// what a bf16-stored weight gives) while the weights stay f32, and backward is the f32
    /// backward (for a loss linear in the outputs, the same gradients as without autocast). A
    /// checkpointed block, whose backward runs after autocast was left, recomputes under it.
    func testAutocastRoundsWeightsInTheForwardProductsOnly() {
        let w = Parameter([6, 5]), b = Parameter([6]), cw = Parameter([3, 2, 3, 3])
        w.value = random([6, 5])
        b.value = random([6])
        cw.value = random([3, 2, 3, 3])
        let x = random([2, 4, 5]), image = random([1, 2, 5, 5])
        let r = random([2, 4, 6])
        let weights = (w.value!.floats, cw.value!.floats)
        func run(autocast: Bool, checkpoint: Bool = false, square: Bool = false) -> [[Float]] {
            w.grad = nil
            b.grad = nil
            cw.grad = nil
            var gx: Tensor?
            // Squared, through a SiLU: a backward that depends on the forward's values.
            let body: ([Var]) -> [Var] = { xs in
                let y = linear(xs[0], w.v, b.v)
                return [square ? silu(y) : y, conv2d(Var(image), cw.v, nil, padding: 1)]
            }
            let (out, loss) = Autocast.bf16(autocast) {
                let leaf = Var.leaf(x) { gx = $0 }
                let out = checkpoint ? checkpointed([leaf], body) : body([leaf])
                return (out, square ? sum(out[0] * out[0]) + sum(out[1] * out[1]) : sum(out[0] * Var(r)) + sum(out[1]))
            }
            XCTAssertFalse(Autocast.isBF16)
            Autograd.backward(loss)
            return [out[0].value.floats, out[1].value.floats, w.grad!.floats, b.grad!.floats, cw.grad!.floats, gx!.floats]
        }
        let plain = run(autocast: false), cast = run(autocast: true)
        XCTAssertEqual(plain[0], Kernels.linear(x, w.value!, b.value).floats)
        XCTAssertEqual(cast[0], Kernels.linear(x, w.value!.converted(to: .bf16), b.value).floats)
        XCTAssertEqual(cast[1], Kernels.conv2d(image, cw.value!.converted(to: .bf16), nil, stride: 1, padding: 1).floats)
        XCTAssertNotEqual(cast[0], plain[0])
        XCTAssertNotEqual(cast[1], plain[1])
        XCTAssertEqual(Array(cast[2...]), Array(plain[2...]))
        XCTAssertEqual(w.value!.floats, weights.0)
        XCTAssertEqual(cw.value!.floats, weights.1)

        let squared = run(autocast: true, square: true), recomputed = run(autocast: true, checkpoint: true, square: true)
        XCTAssertEqual(recomputed, squared)
        XCTAssertNotEqual(squared[2], run(autocast: false, square: true)[2])
    }

    /// Under bf16 autocast the attention is the bf16 attention (forward and backward), as after bf16
    /// projections; a checkpointed block recomputes it the same way.
    func testAutocastRunsTheAttentionInBF16() throws {
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = true
        try XCTSkipUnless(GEMM.vectorized && GEMM.bf16, "no AVX512-BF16 here: the bf16 attention does not run")
        let q = random([2, 9, 8]), k = random([2, 11, 8]), v = random([2, 11, 8]), r = random([2, 9, 8])
        func run(autocast: Bool, checkpoint: Bool = false) -> [[Float]] {
            var grads = [Tensor?](repeating: nil, count: 3)
            let out = Autocast.bf16(autocast) { () -> Var in
                let leaves = [q, k, v].enumerated().map { i, t in Var.leaf(t) { grads[i] = $0 } }
                let body: ([Var]) -> [Var] = { [attention($0[0], $0[1], $0[2], heads: 2, scale: 0.5)] }
                let out = (checkpoint ? checkpointed(leaves, body) : body(leaves))[0]
                Autograd.backward(sum(out * Var(r)))
                return out
            }
            return [out.value.floats] + grads.map { $0!.floats }
        }
        let cast = run(autocast: true)
        let kernel = Kernels.attention(q: q, k: k, v: v, heads: 2, scale: 0.5, causal: false, bf16: true)
        XCTAssertEqual(cast[0], kernel.out.floats)
        let back = Kernels.attentionBackward(r, q: q, k: k, v: v, out: kernel.out, logsumexp: kernel.logsumexp, heads: 2,
                                             scale: 0.5, causal: false, bf16: true)
        XCTAssertEqual(Array(cast[1...]), [back.q.floats, back.k.floats, back.v.floats])
        XCTAssertNotEqual(cast[0], run(autocast: false)[0])
        XCTAssertEqual(run(autocast: true, checkpoint: true), cast)
    }
}

extension Tensor {
    func map(_ f: (Float) -> Float) -> Tensor { Tensor(shape: shape, floats: floats.map(f)) }
}
