import XCTest
@testable import DGAutograd
import DGTensor

final class OptimizerTests: XCTestCase {
    /// Three AdamW steps against the update rule written out in Double (PyTorch's AdamW:
    /// decoupled decay p *= 1 - lr*wd, then m, v, bias corrections, p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)).
    func testAdamWFollowsPyTorchsUpdate() {
        let p = Parameter([4])
        p.value = Tensor(shape: [4], floats: [0.5, -1.0, 2.0, 0.0])
        let grads: [[Float]] = [[0.1, -0.2, 0.3, 0.0], [0.05, 0.2, -0.1, 1.0], [-0.3, 0.1, 0.2, -1.0]]
        let opt = AdamW([p], learningRate: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1)
        var x = [0.5, -1.0, 2.0, 0.0], m = [Double](repeating: 0, count: 4), v = m
        for (t, g) in grads.enumerated() {
            p.grad = Tensor(shape: [4], floats: g)
            opt.update()
            let step = Double(t + 1)
            for j in 0..<4 {
                let gj = Double(g[j])
                x[j] *= 1 - 0.01 * 0.1
                m[j] = 0.9 * m[j] + 0.1 * gj
                v[j] = 0.999 * v[j] + 0.001 * gj * gj
                let denom = v[j].squareRoot() / (1 - pow(0.999, step)).squareRoot() + 1e-8
                x[j] -= 0.01 / (1 - pow(0.9, step)) * m[j] / denom
            }
            for (a, b) in zip(p.value!.floats, x) { XCTAssertEqual(Double(a), b, accuracy: 1e-6) }
        }
        XCTAssertEqual(opt.step, 3)
    }

    func testSGDWithMomentumAndNesterov() {
        for nesterov in [false, true] {
            let p = Parameter([2])
            p.value = Tensor(shape: [2], floats: [1, -1])
            let opt = SGD([p], learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: nesterov)
            var x = [1.0, -1.0], buf: [Double]? = nil
            for g in [[0.5, 0.25], [-0.5, 1.0]] as [[Double]] {
                p.grad = Tensor(shape: [2], floats: g.map(Float.init))
                opt.update()
                let d = zip(g, x).map { $0 + 0.01 * $1 }
                buf = buf.map { zip($0, d).map { 0.9 * $0 + $1 } } ?? d
                let step = nesterov ? zip(d, buf!).map { $0 + 0.9 * $1 } : buf!
                x = zip(x, step).map { $0 - 0.1 * $1 }
                for (a, b) in zip(p.value!.floats, x) { XCTAssertEqual(Double(a), b, accuracy: 1e-6) }
            }
        }
    }

    func testClipGradientNorm() {
        let a = Parameter([2]), b = Parameter([1])
        a.grad = Tensor(shape: [2], floats: [3, 0])
        b.grad = Tensor(shape: [1], floats: [4])
        XCTAssertEqual(clipGradientNorm([a, b], maxNorm: 10), 5, accuracy: 1e-6)
        XCTAssertEqual(a.grad!.floats, [3, 0])  // under the limit: untouched
        XCTAssertEqual(clipGradientNorm([a, b], maxNorm: 1), 5, accuracy: 1e-6)
        XCTAssertEqual(Double(a.grad!.floats[0]), 3.0 / (5 + 1e-6), accuracy: 1e-6)
        XCTAssertEqual(Double(b.grad!.floats[0]), 4.0 / (5 + 1e-6), accuracy: 1e-6)
    }

    /// A loaded (memory-mapped, shared) value is never written in place.
    func testUpdatesDoNotWriteIntoSharedStorage() {
        let shared = Tensor(shape: [2], floats: [1, 2])
        let p = Parameter([2])
        p.value = shared
        p.grad = Tensor(shape: [2], floats: [1, 1])
        SGD([p], learningRate: 1).update()
        XCTAssertEqual(shared.floats, [1, 2])
        XCTAssertEqual(p.value!.floats, [0, 1])
        p.value = shared
        AdamW([p], learningRate: 1, weightDecay: 0).update()
        XCTAssertEqual(shared.floats, [1, 2])
        XCTAssertEqual(p.value!.floats[0], 0, accuracy: 1e-6)
    }
}
