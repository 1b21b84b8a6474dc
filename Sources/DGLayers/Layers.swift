import DGAutograd
import DGTensor

// The building blocks, with the parameter names and shapes PyTorch gives them.

public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int, outFeatures: Int
    /// A LoRA adapter, nil unless `attachLoRA` gave it one (LoRA.swift). The property names are
    /// PEFT's, so the adapter's keys (`to_q.lora_A.weight`) are those of a diffusers LoRA file.
    public internal(set) var lora_A: Linear?
    public internal(set) var lora_B: Linear?
    /// alpha / rank (PEFT's `scaling`), times a merge scale.
    public internal(set) var loraScale: Float = 0

    /// Whether the weight is stored in bf16 (frozen): its products run in bf16 where the CPU's pay, and
    /// the attention fed by such projections follows suit.
    public var bf16: Bool { weight.value?.dtype == .bf16 }

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter([outFeatures, inFeatures])
        self.bias = bias ? Parameter([outFeatures]) : nil
    }
}

public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    /// A LoRA adapter as PEFT builds one for a convolution: `lora_A` has this layer's kernel,
    /// stride and padding, `lora_B` is 1x1. Nil unless `attachLoRA` gave it one.
    public internal(set) var lora_A: Conv2d?
    public internal(set) var lora_B: Conv2d?
    public internal(set) var loraScale: Float = 0

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        weight = Parameter([outChannels, inChannels, kernel, kernel])
        self.bias = bias ? Parameter([outChannels]) : nil
    }
}

public final class GroupNorm: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let groups: Int, channels: Int, eps: Float

    public init(groups: Int, channels: Int, eps: Float = 1e-5) {
        self.groups = groups
        self.channels = channels
        self.eps = eps
        weight = Parameter([channels])
        bias = Parameter([channels])
    }
}

public final class LayerNorm: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let dim: Int, eps: Float

    public init(_ dim: Int, eps: Float = 1e-5) {
        self.dim = dim
        self.eps = eps
        weight = Parameter([dim])
        bias = Parameter([dim])
    }
}

public final class Embedding: Module {
    public let weight: Parameter
    public let count: Int, dim: Int

    public init(_ count: Int, _ dim: Int) {
        self.count = count
        self.dim = dim
        weight = Parameter([count, dim])
    }
}

/// A parameterless stand-in that keeps diffusers' indices (`to_out.1` is its Dropout).
public final class Dropout: Module {
    public let probability: Float
    public init(_ probability: Float = 0) { self.probability = probability }
}

// MARK: forward passes

extension Linear {
    public func callAsFunction(_ x: Var) -> Var {
        let y = linear(x, weight.v, bias?.v)
        return loraDelta(x).map { y + $0 } ?? y
    }

    /// The adapter's term, scaling*B(A x); nil without an adapter. The scale is applied to the
    /// rank-wide intermediate, the cheapest place (PEFT scales B's output: the same to rounding).
    public func loraDelta(_ x: Var) -> Var? {
        guard let a = lora_A, let b = lora_B else { return nil }
        return linear(linear(x, a.weight.v, nil) * loraScale, b.weight.v, nil)
    }
}

extension Conv2d {
    public func callAsFunction(_ x: Var) -> Var {
        let y = conv2d(x, weight.v, bias?.v, stride: stride, padding: padding)
        return loraDelta(x).map { y + $0 } ?? y
    }

    /// The adapter's term (see `Linear.loraDelta`); `paddingEnd` as the layer's own convolution
    /// is called with.
    public func loraDelta(_ x: Var, paddingEnd: Int = 0) -> Var? {
        guard let a = lora_A, let b = lora_B else { return nil }
        let down = conv2d(x, a.weight.v, nil, stride: stride, padding: padding, paddingEnd: paddingEnd) * loraScale
        return conv2d(down, b.weight.v, nil)
    }
}

extension GroupNorm {
    public func callAsFunction(_ x: Var) -> Var { groupNorm(x, groups: groups, weight: weight.v, bias: bias.v, eps: eps) }

    /// silu(self(x)) in one pass.
    public func withSiLU(_ x: Var) -> Var { groupNorm(x, groups: groups, weight: weight.v, bias: bias.v, eps: eps, silu: true) }
}

extension LayerNorm {
    public func callAsFunction(_ x: Var) -> Var { layerNorm(x, weight: weight.v, bias: bias.v, eps: eps) }
}

extension Embedding {
    public func callAsFunction(_ ids: Tensor) -> Var { embedding(weight.v, ids: ids) }
}

extension Dropout {
    /// Dropout is the identity here: Stable Diffusion trains with probability 0.
    public func callAsFunction(_ x: Var) -> Var { x }
}
