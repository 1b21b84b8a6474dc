import DGBase
import DGTensor
import Foundation

extension Module {
    /// Every module below this one (itself included), depth first, in declaration order.
    public func allModules() -> [Module] {
        [self] + namedChildren().flatMap { $0.module.allModules() }
    }

    /// PyTorch's default initialisation, reproducibly from `seed`: Linear and Conv2d weights and
    /// biases uniform in ±1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)), norms weight 1 and
    /// bias 0, embeddings standard normal. Each parameter draws from its own stream, so the
    /// values do not depend on the order parameters are visited in.
    public func initializeParameters(seed: UInt64) {
        var index: UInt64 = 0
        func next() -> UInt64 { index += 1; return index }
        for m in allModules() {
            switch m {
            case let l as Linear:
                let bound = 1 / Float(l.inFeatures).squareRoot()
                l.weight.value = uniform(l.weight.shape, bound, seed, next())
                if let b = l.bias { b.value = uniform(b.shape, bound, seed, next()) }
            case let c as Conv2d:
                let bound = 1 / Float(c.inChannels * c.kernel * c.kernel).squareRoot()
                c.weight.value = uniform(c.weight.shape, bound, seed, next())
                if let b = c.bias { b.value = uniform(b.shape, bound, seed, next()) }
            case let n as GroupNorm:
                n.weight.value = Tensor(shape: n.weight.shape, floats: [Float](repeating: 1, count: n.channels))
                n.bias.value = Tensor(zeros: n.bias.shape)
            case let n as LayerNorm:
                n.weight.value = Tensor(shape: n.weight.shape, floats: [Float](repeating: 1, count: n.dim))
                n.bias.value = Tensor(zeros: n.bias.shape)
            case let e as Embedding:
                e.weight.value = normal(e.weight.shape, seed, next())
            default:
                break
            }
        }
    }

    /// Sets every parameter below this module to zero (diffusers' zero_module).
    public func zeroParameters() {
        for (_, p) in namedParameters() { p.value = Tensor(zeros: p.shape) }
    }
}

// Each parameter draws from its own counter-based SplitMix64 stream: value i of stream
// (seed, stream) does not depend on thread count or visiting order.
private func splitmix(_ x: UInt64) -> UInt64 { SplitMix64.mix(x) }

func uniform(_ shape: [Int], _ bound: Float, _ seed: UInt64, _ stream: UInt64) -> Tensor {
    let base = splitmix(seed ^ splitmix(stream))
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, floats: (0..<n).map { i in
        let u = Float(splitmix(base &+ UInt64(i)) >> 40) / Float(1 << 24)
        return (2 * u - 1) * bound
    })
}

func normal(_ shape: [Int], _ seed: UInt64, _ stream: UInt64) -> Tensor {
    let base = splitmix(seed ^ splitmix(stream))
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, floats: (0..<n).map { i in
        // Box-Muller on two independent uniforms in (0, 1].
        let u1 = (Double(splitmix(base &+ UInt64(2 * i)) >> 11) + 1) / 9_007_199_254_740_992
        let u2 = Double(splitmix(base &+ UInt64(2 * i + 1)) >> 11) / 9_007_199_254_740_992
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    })
}

extension Module {
    /// transformers' initialisation of CLIP-like text models: Linear weights and embeddings
    /// normal with standard deviation `std` (initializer_range, 0.02), biases 0, LayerNorm
    /// weight 1 and bias 0. transformers further scales some projections by the depth; at
    /// two layers that refinement does not matter. Streams as in `initializeParameters`.
    public func initializeNormal(std: Float = 0.02, seed: UInt64) {
        var index: UInt64 = 0
        func next() -> UInt64 { index += 1; return index }
        func scaled(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, floats: t.floats.map { $0 * std }) }
        for m in allModules() {
            switch m {
            case let l as Linear:
                l.weight.value = scaled(normal(l.weight.shape, seed, next()))
                if let b = l.bias { b.value = Tensor(zeros: b.shape) }
            case let c as Conv2d:
                c.weight.value = scaled(normal(c.weight.shape, seed, next()))
                if let b = c.bias { b.value = Tensor(zeros: b.shape) }
            case let n as GroupNorm:
                n.weight.value = Tensor(shape: n.weight.shape, floats: [Float](repeating: 1, count: n.channels))
                n.bias.value = Tensor(zeros: n.bias.shape)
            case let n as LayerNorm:
                n.weight.value = Tensor(shape: n.weight.shape, floats: [Float](repeating: 1, count: n.dim))
                n.bias.value = Tensor(zeros: n.bias.shape)
            case let e as Embedding:
                e.weight.value = scaled(normal(e.weight.shape, seed, next()))
            default:
                break
            }
        }
    }
}
