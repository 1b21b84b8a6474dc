import DGTensor

/// A learnable tensor. Its shape is known when the model is built; its value arrives when a
/// checkpoint is loaded or the parameter is initialised, so a model can be described (names
/// and shapes) without allocating anything.
public final class Parameter: @unchecked Sendable {
    public let shape: [Int]
    public var value: Tensor?
    public var grad: Tensor?
    /// Frozen parameters take part in the forward pass but collect no gradient.
    public var requiresGrad = true

    public init(_ shape: [Int]) { self.shape = shape }

    public var count: Int { shape.reduce(1, *) }

    /// The value as a graph leaf; its gradient accumulates into `grad`. A frozen parameter may
    /// be stored in a 16-bit float type to halve its memory: the kernels widen it to float32 at
    /// their input, or (bf16 weights of linear and conv, where the CPU has AVX512-BF16) run their
    /// products in bf16; backward widens it again, so no float32 copy outlives its op. Trainable
    /// parameters stay float32 (their update is done in place).
    public var v: Var {
        guard let value else { fatalError("parameter of shape \(shape) used before it was loaded or initialised") }
        guard requiresGrad else { return Var(widening: value) }
        guard value.dtype == .f32 else { fatalError("trainable parameter of shape \(shape) is stored as \(value.dtype.name); only frozen ones may be") }
        return Var.leaf(value) { [unowned self] g in
            self.grad = self.grad.map { Kernels.add($0, g) } ?? g.contiguous()
        }
    }
}
