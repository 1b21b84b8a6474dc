import XCTest
import DGAutograd
import DGBase
@testable import DGLayers
import DGTensor

/// The LoRA layers (DGLayers/LoRA.swift): gradients of the adapter's factors and of the input
/// against central finite differences (the same method and tolerance as AutogradTests), the
/// adapted forward against the merged weight, and PEFT's initialisation.
final class LoRATests: XCTestCase {
    var rng = SplitMix64(seed: 7)

    func random(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -scale...scale, using: &rng) })
    }

    /// Checks d(sum(layer(x) * r)) / d(A, B, x) against finite differences; W is frozen.
    func gradcheck(_ layer: LoRAAdaptable & Module, input: Tensor, _ forward: (Var) -> Var, file: StaticString = #filePath, line: UInt = #line) {
        layer.weight.requiresGrad = false
        var inputGrad: Tensor?
        let y = forward(Var.leaf(input) { inputGrad = $0 })
        let r = random(y.shape)
        Autograd.backward(sum(y * Var(r)))
        var x = input
        func loss() -> Double {
            Autograd.noGrad { zip(forward(Var(x)).value.floats, r.floats).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        }
        let (down, up, _) = layer.loraFactors!
        XCTAssertNil(layer.weight.grad, "the base weight is frozen", file: file, line: line)
        let eps: Float = 1e-2
        func check(_ analytic: Tensor?, _ values: Tensor, _ set: (Tensor) -> Void, _ what: String) {
            guard let g = analytic?.floats else { return XCTFail("\(what) got no gradient", file: file, line: line) }
            var numeric = [Double](repeating: 0, count: values.count)
            for j in 0..<values.count {
                var p = values.floats, m = values.floats
                p[j] += eps
                m[j] -= eps
                set(Tensor(shape: values.shape, floats: p))
                let lp = loss()
                set(Tensor(shape: values.shape, floats: m))
                numeric[j] = (lp - loss()) / Double(2 * eps)
            }
            set(values)
            let diff = zip(g, numeric).reduce(0.0) { $0 + pow(Double($1.0) - $1.1, 2) }.squareRoot()
            let norm = numeric.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            XCTAssertLessThan(diff / max(norm, 1e-6), 2e-3, "\(what): |analytic - numeric| / |numeric|", file: file, line: line)
        }
        check(down.grad, down.value!, { down.value = $0 }, "lora_A")
        check(up.grad, up.value!, { up.value = $0 }, "lora_B")
        check(inputGrad, input, { x = $0 }, "input")
    }

    func testLinearAdapterGradients() {
        let l = Linear(5, 4)
        (l.weight.value, l.bias!.value) = (random([4, 5]), random([4]))
        // B is zero at initialisation; a nonzero B exercises the gradient of A as well.
        l.attachLoRA(down: random([2, 5]), up: random([4, 2]), scale: 1.5)
        gradcheck(l, input: random([2, 3, 5])) { l($0) }
    }

    func testConvolutionAdapterGradients() {
        let c = Conv2d(3, 4, kernel: 3, stride: 2, padding: 1)
        (c.weight.value, c.bias!.value) = (random([4, 3, 3, 3], scale: 0.5), random([4]))
        c.attachLoRA(down: random([2, 3, 3, 3], scale: 0.5), up: random([4, 2, 1, 1]), scale: 0.5)
        gradcheck(c, input: random([1, 3, 5, 5])) { c($0) }
    }

    func testAdaptedForwardEqualsTheMergedWeight() {
        let l = Linear(6, 5)
        (l.weight.value, l.bias!.value) = (random([5, 6]), random([5]))
        let (down, up) = (random([3, 6]), random([5, 3]))
        l.attachLoRA(down: down, up: up, scale: 0.75)
        let x = random([2, 4, 6])
        let adapted = Autograd.noGrad { l(Var(x)) }.value.floats
        l.detachLoRA()
        l.mergeLowRank(down: down, up: up, scale: 0.75)
        let merged = Autograd.noGrad { l(Var(x)) }.value.floats
        for (a, b) in zip(adapted, merged) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }

    /// PEFT: A uniform in +-1/sqrt(fan_in) (kaiming_uniform, a = sqrt(5)), B zero, scaling alpha/r;
    /// only the targeted layers adapted, and the adapters' keys are PEFT's.
    func testAttachInitialisesAsPEFTAndNamesAsDiffusers() {
        final class Block: Module {
            let to_q = Linear(8, 8), to_k = Linear(8, 8), proj_in = Conv2d(8, 8, kernel: 1), conv1 = Conv2d(8, 8, kernel: 3, padding: 1)
        }
        let block = Block()
        block.initializeParameters(seed: 1)
        let names = block.attachLoRA(rank: 4, alpha: 8, targets: .attn, seed: 3)
        XCTAssertEqual(names, ["to_q", "to_k", "proj_in"])
        XCTAssertEqual(block.loraParameters().map(\.name), ["to_q.lora_A.weight", "to_q.lora_B.weight", "to_k.lora_A.weight",
                                                             "to_k.lora_B.weight", "proj_in.lora_A.weight", "proj_in.lora_B.weight"])
        let (a, b, s) = block.to_q.loraFactors!
        XCTAssertEqual(s, 2)
        XCTAssertEqual(b.value!.floats, [Float](repeating: 0, count: 32))
        let bound = 1 / Float(8).squareRoot()
        XCTAssert(a.value!.floats.allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan(a.value!.floats.map(abs).max()!, 0.8 * bound)
        XCTAssertEqual(block.proj_in.loraFactors!.down.shape, [4, 8, 1, 1])
        XCTAssertEqual(block.attachLoRA(rank: 2, alpha: 2, targets: .all, seed: 3), ["to_q", "to_k", "proj_in", "conv1"], "all: every Linear and Conv2d, not the adapters")
    }
}
