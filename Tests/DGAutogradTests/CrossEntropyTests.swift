import XCTest
@testable import DGAutograd
import DGBase
import DGTensor

/// The segmentation loss: values by hand, gradients against finite differences, and the
/// edge cases a training run meets (ignored pixels, a crop with nothing but ignored pixels).
final class CrossEntropyTests: XCTestCase {
    /// Gradient of the loss with respect to the logits, and the loss.
    func lossAndGradient(_ logits: Tensor, _ targets: [UInt8], weights: [Float]? = nil) -> (Float, [Float]) {
        var grad: Tensor?
        let x = Var.leaf(logits) { grad = $0 }
        let loss = crossEntropy(x, targets: targets, weights: weights)
        Autograd.backward(loss)
        return (loss.value.floats[0], grad?.floats ?? [])
    }

    func testValuesAndGradientsByHand() {
        // [N=1, C=2, H=1, W=3], channel-major: pixel 0 scores (0, ln 3), pixel 1 (0, 0),
        // pixel 2 (5, -5) but ignored.
        let logits = Tensor(shape: [1, 2, 1, 3], floats: [0, 0, 5, Float(log(3.0)), 0, -5])
        let (loss, g) = lossAndGradient(logits, [1, 0, 255])
        // Pixel 0: -log(3/4); pixel 1: -log(1/2); the mean over the 2 counted pixels.
        XCTAssertEqual(Double(loss), (log(4.0 / 3) + log(2.0)) / 2, accuracy: 1e-6)
        // (softmax - onehot) / 2: pixel 0 (1/4, 3/4) - (0, 1); pixel 1 (1/2, 1/2) - (1, 0); pixel 2 nothing.
        let expected: [Float] = [0.125, -0.25, 0, -0.125, 0.25, 0]
        for (a, b) in zip(g, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// PyTorch's `weight=`: sum w(t) nll / sum w(t), the gradient of each pixel scaled by w(t).
    func testClassWeightsByHand() {
        let logits = Tensor(shape: [1, 2, 1, 3], floats: [0, 0, 5, Float(log(3.0)), 0, -5])
        let (loss, g) = lossAndGradient(logits, [1, 0, 255], weights: [3, 1])
        // Pixel 0 (class 1, weight 1): -log(3/4); pixel 1 (class 0, weight 3): -log(1/2); over 1 + 3.
        XCTAssertEqual(Double(loss), (log(4.0 / 3) + 3 * log(2.0)) / 4, accuracy: 1e-6)
        // (softmax - onehot) w / 4.
        let expected: [Float] = [0.0625, -0.375, 0, -0.0625, 0.375, 0]
        for (a, b) in zip(g, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        // Equal weights give the unweighted loss.
        let (plain, _) = lossAndGradient(logits, [1, 0, 255])
        let (equal, _) = lossAndGradient(logits, [1, 0, 255], weights: [2.5, 2.5])
        XCTAssertEqual(plain, equal, accuracy: 1e-7)
    }

    func testAllIgnoredGivesZeroLossAndZeroGradient() {
        let logits = Tensor(shape: [2, 3, 2, 2], floats: (0..<24).map { Float($0) * 0.3 - 2 })
        let (loss, g) = lossAndGradient(logits, [UInt8](repeating: 255, count: 8))
        XCTAssertEqual(loss, 0)
        XCTAssertEqual(g.count, 24)
        XCTAssertTrue(g.allSatisfy { $0 == 0 })
        // Ids that are no class (here 3 of 3 classes) are ignored like 255.
        let (other, _) = lossAndGradient(logits, [UInt8](repeating: 3, count: 8))
        XCTAssertEqual(other, 0)
    }

    /// Large logits must not overflow: the log-sum-exp is taken around the maximum.
    func testLargeLogitsStayFinite() {
        let logits = Tensor(shape: [1, 3, 1, 1], floats: [1000, 0, -1000])
        let (loss, g) = lossAndGradient(logits, [1])
        XCTAssertEqual(loss, 1000, accuracy: 1e-3)
        XCTAssertTrue(g.allSatisfy(\.isFinite))
        XCTAssertEqual(g[0], 1, accuracy: 1e-6)
        XCTAssertEqual(g[1], -1, accuracy: 1e-6)
    }

    func testGradientMatchesFiniteDifferences() {
        checkFiniteDifferences(weights: nil)
    }

    func testWeightedGradientMatchesFiniteDifferences() {
        checkFiniteDifferences(weights: [0.5, 4, 1, 20, 2])
    }

    func checkFiniteDifferences(weights: [Float]?) {
        var rng = SplitMix64(seed: 7)
        let (n, c, h, w) = (2, 5, 3, 4)
        let values = (0..<(n * c * h * w)).map { _ in Float.random(in: -2...2, using: &rng) }
        var targets = (0..<(n * h * w)).map { _ in UInt8.random(in: 0..<UInt8(c), using: &rng) }
        for i in stride(from: 0, to: targets.count, by: 5) { targets[i] = 255 }
        let logits = Tensor(shape: [n, c, h, w], floats: values)
        let (_, analytic) = lossAndGradient(logits, targets, weights: weights)
        func loss(_ v: [Float]) -> Double {
            Double(Autograd.noGrad { crossEntropy(Var(Tensor(shape: [n, c, h, w], floats: v)), targets: targets, weights: weights) }.value.floats[0])
        }
        let eps: Float = 1e-2
        var diff = 0.0, norm = 0.0
        for j in values.indices {
            var plus = values, minus = values
            plus[j] += eps
            minus[j] -= eps
            let numeric = (loss(plus) - loss(minus)) / Double(2 * eps)
            diff += pow(Double(analytic[j]) - numeric, 2)
            norm += numeric * numeric
        }
        XCTAssertLessThan(diff.squareRoot() / norm.squareRoot(), 2e-3)
        // Ignored pixels receive no gradient at all.
        for i in stride(from: 0, to: targets.count, by: 5) {
            let (b, p) = (i / (h * w), i % (h * w))
            for ch in 0..<c { XCTAssertEqual(analytic[(b * c + ch) * h * w + p], 0) }
        }
    }
}
