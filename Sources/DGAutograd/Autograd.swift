import DGTensor

/// Reverse-mode automatic differentiation. Every op on `Var`s computes its value at once and,
/// while recording, remembers how to send a gradient back to its inputs. `backward` walks the
/// recorded graph from a scalar loss in reverse creation order (a topological order, since a
/// node is always created after its inputs) and accumulates into parameters' `grad`.
/// When nothing is recorded (no-grad evaluation, or no input needs a gradient) an op keeps no
/// reference to its inputs, so activations are freed as soon as they are consumed.
public enum Autograd {
    nonisolated(unsafe) static var recording = true
    nonisolated(unsafe) static var counter = 0

    public static var isRecording: Bool { recording }

    /// Evaluates `body` without recording anything.
    public static func noGrad<R>(_ body: () throws -> R) rethrows -> R {
        let saved = recording
        recording = false
        defer { recording = saved }
        return try body()
    }

    /// Evaluates `body` recording, even inside `noGrad` (used by gradient checkpointing).
    public static func withGrad<R>(_ body: () throws -> R) rethrows -> R {
        let saved = recording
        recording = true
        defer { recording = saved }
        return try body()
    }

    /// Back-propagates from a scalar loss (gradient 1).
    public static func backward(_ loss: Var) {
        precondition(loss.value.count == 1, "backward() needs a scalar loss, got shape \(loss.shape)")
        backward([(loss, Tensor(shape: loss.shape, floats: [1]))])
    }

    /// Back-propagates the given output gradients together.
    public static func backward(_ roots: [(Var, Tensor)]) {
        var nodes: [Node] = []
        var seen = Set<ObjectIdentifier>()
        var stack: [Node] = []
        for (v, g) in roots {
            guard let n = v.node else { continue }
            n.accumulate(g)
            if seen.insert(ObjectIdentifier(n)).inserted { stack.append(n) }
        }
        while let n = stack.popLast() {
            nodes.append(n)
            for case let input? in n.inputs where seen.insert(ObjectIdentifier(input)).inserted { stack.append(input) }
        }
        nodes.sort { $0.order > $1.order }
        for n in nodes {
            guard let g = n.grad else { continue }
            n.grad = nil
            if let leaf = n.leaf { leaf(g); continue }
            guard let fn = n.backwardFn else { continue }
            n.backwardFn = nil  // frees the saved activations as we go
            let grads = fn(g, n.inputs.map { $0 != nil })
            for (input, gi) in zip(n.inputs, grads) {
                if let input, let gi { input.accumulate(gi) }
            }
        }
    }
}

/// bf16 autocast (accelerate's `--mixed_precision bf16`): while on, linear layers and convolutions
/// read each float32 weight rounded to bf16 in their forward product, as bf16-stored weights are
/// read (bf16 products where the CPU runs them, else the rounded weight widened back), and the
/// attention runs its products in bf16 as after bf16 projections (as PyTorch's autocast runs
/// `scaled_dot_product_attention`). Backward,
/// the optimizer and everything outside those products stay float32, and the weights themselves
/// (the f32 masters) are never rounded. Gradient checkpointing recomputes a block under the
/// setting its forward ran with.
public enum Autocast {
    nonisolated(unsafe) static var bf16 = false

    public static var isBF16: Bool { bf16 }

    /// Evaluates `body` with bf16 autocast on or off.
    public static func bf16<R>(_ on: Bool, _ body: () throws -> R) rethrows -> R {
        let saved = bf16
        bf16 = on
        defer { bf16 = saved }
        return try body()
    }

    /// The weight a forward product reads.
    static func forwardWeight(_ w: Var) -> Tensor {
        bf16 && w.value.dtype == .f32 ? w.value.converted(to: .bf16) : w.value
    }
}

final class Node {
    let inputs: [Node?]
    var backwardFn: ((Tensor, [Bool]) -> [Tensor?])?
    let leaf: ((Tensor) -> Void)?
    var grad: Tensor?
    let order: Int

    init(inputs: [Node?], backward: ((Tensor, [Bool]) -> [Tensor?])?, leaf: ((Tensor) -> Void)? = nil) {
        self.inputs = inputs
        backwardFn = backward
        self.leaf = leaf
        Autograd.counter += 1
        order = Autograd.counter
    }

    func accumulate(_ g: Tensor) {
        if let current = grad { grad = Kernels.add(current, g) } else { grad = g }
    }
}

/// A tensor taking part in differentiation: its value, and (while recording) the node that
/// produced it. A `Var` without a node is a constant.
public struct Var {
    public let value: Tensor
    let node: Node?
    /// The 16-bit tensor a constant stands for (a frozen weight stored in bf16/f16): then `value`
    /// is that tensor itself. Kernels widen it to float32 at their input (norms, embeddings), or
    /// read bf16 as it is where the bf16 products run (linear, convolution); ops that need it
    /// again in backward keep this compact form and widen it there. So no float32 copy of a
    /// whole weight outlives its op.
    public let widenedFrom: Tensor?

    /// A constant: no gradient flows into it.
    public init(_ value: Tensor) {
        self.value = value
        node = nil
        widenedFrom = nil
    }

    /// A constant stored compactly (see `widenedFrom`): widened by the kernels that read it.
    public init(widening compact: Tensor) {
        value = compact
        node = nil
        widenedFrom = compact.dtype == .f32 ? nil : compact
    }

    init(_ value: Tensor, node: Node?) {
        self.value = value
        self.node = node
        widenedFrom = nil
    }

    /// The value to keep for backward: the compact form when there is one.
    var saved: Tensor { widenedFrom ?? value }

    /// A leaf whose gradient is handed to `receive` during backward.
    public static func leaf(_ value: Tensor, receive: @escaping (Tensor) -> Void) -> Var {
        guard Autograd.recording else { return Var(value) }
        return Var(value, node: Node(inputs: [], backward: nil, leaf: receive))
    }

    public var shape: [Int] { value.shape }
    public var requiresGrad: Bool { node != nil }

    /// The same value, cut off from the graph.
    public var detached: Var { Var(value) }
}

/// Records an op: `backward(gradOut, needs)` returns one gradient per input (nil where
/// `needs` is false or the input gets none).
/// `name` labels the op's forward and backward time in the profile (`Profiler`); `timed: false`
/// when the caller computed (and timed) `out` itself.
func record(_ name: StaticString, _ out: @autoclosure () -> Tensor, timed: Bool = true, _ inputs: [Var],
            _ backward: @escaping (Tensor, [Bool]) -> [Tensor?]) -> Var {
    let value = timed ? Profiler.measure("\(name)") { out() } : out()
    guard Autograd.recording, inputs.contains(where: { $0.node != nil }) else { return Var(value) }
    if Profiler.enabled {
        return Var(value, node: Node(inputs: inputs.map(\.node), backward: { g, need in
            Profiler.measure("\(name).backward") { backward(g, need) }
        }))
    }
    return Var(value, node: Node(inputs: inputs.map(\.node), backward: backward))
}
