import DGAutograd
import DGTensor

// The building blocks, with the parameter names and shapes PyTorch gives them.

public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int, outFeatures: Int

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
    public func callAsFunction(_ x: Var) -> Var { linear(x, weight.v, bias?.v) }
}

extension Conv2d {
    public func callAsFunction(_ x: Var) -> Var { conv2d(x, weight.v, bias?.v, stride: stride, padding: padding) }
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
