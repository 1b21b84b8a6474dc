import DGTensor
import Foundation

/// Updates parameters from their gradients. State is kept per parameter, in the order given
/// at construction, so it can be saved and restored exactly.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    var step: Int { get }
    func update()
}

extension Optimizer {
    public func zeroGrad() {
        for p in parameters { p.grad = nil }
    }
}

/// AdamW with decoupled weight decay and bias correction, computed in the same order as
/// PyTorch's single-tensor implementation so results agree to float32 rounding.
public final class AdamW: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    public private(set) var step = 0
    /// First and second moments, one per parameter (nil until its first update).
    public var firstMoments: [Tensor?]
    public var secondMoments: [Tensor?]

    public init(_ parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 1e-2) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        firstMoments = Array(repeating: nil, count: parameters.count)
        secondMoments = Array(repeating: nil, count: parameters.count)
    }

    /// Restores the step count (with the moments) when resuming.
    public func restore(step: Int, first: [Tensor?], second: [Tensor?]) {
        self.step = step
        firstMoments = first
        secondMoments = second
    }

    public func update() {
        step += 1
        let bias1 = 1 - pow(beta1, Float(step))
        let bias2Sqrt = (1 - pow(beta2, Float(step))).squareRoot()
        let stepSize = learningRate / bias1
        let decay = 1 - learningRate * weightDecay
        let (b1, b2, eps) = (beta1, beta2, eps)
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad?.contiguous(), var value = p.value else { continue }
            // In place only when nobody else can see the memory: a loaded (mapped) tensor, a view
            // or a tensor shared with another model (a ControlNet copied from its UNet) is copied.
            p.value = nil
            if !isKnownUniquelyReferenced(&value.storage) || value.storage.isBorrowed || !value.isContiguous
                || value.byteCount != value.storage.byteCount {
                value = value.copied()
            }
            let m = firstMoments[i] ?? Tensor(zeros: p.shape)
            let v = secondMoments[i] ?? Tensor(zeros: p.shape)
            let n = value.count
            let pp = value.rawPointer.assumingMemoryBound(to: Float.self)
            let pg = g.rawPointer.assumingMemoryBound(to: Float.self)
            let pm = m.rawPointer.assumingMemoryBound(to: Float.self)
            let pv = v.rawPointer.assumingMemoryBound(to: Float.self)
            withExtendedLifetime((value, g, m, v)) {
                Parallel.forEach(n, minimumChunk: 1 << 15) { r in
                    for j in r {
                        pp[j] *= decay
                        pm[j] += (pg[j] - pm[j]) * (1 - b1)   // lerp, as torch
                        pv[j] = pv[j] * b2 + (1 - b2) * pg[j] * pg[j]
                        let denom = pv[j].squareRoot() / bias2Sqrt + eps
                        pp[j] += -stepSize * (pm[j] / denom)
                    }
                }
            }
            p.value = value
            firstMoments[i] = m
            secondMoments[i] = v
        }
    }
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay,
/// as PyTorch's SGD.
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    public private(set) var step = 0
    public var momentumBuffers: [Tensor?]

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        momentumBuffers = Array(repeating: nil, count: parameters.count)
    }

    public func update() {
        step += 1
        for (i, p) in parameters.enumerated() {
            guard var g = p.grad?.contiguous(), let value = p.value else { continue }
            if weightDecay != 0 { g = Kernels.addScaled(g, value, weightDecay) }
            if momentum != 0 {
                let buf: Tensor
                if let old = momentumBuffers[i] {
                    buf = Kernels.addScaled(Kernels.scale(old, momentum), g, 1 - dampening)
                } else {
                    buf = g.copied()
                }
                momentumBuffers[i] = buf
                g = nesterov ? Kernels.addScaled(g, buf, momentum) : buf
            }
            p.value = Kernels.addScaled(value, g, -learningRate)
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm` (PyTorch's
/// clip_grad_norm_, including its 1e-6); returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var total: Double = 0
    for p in parameters {
        guard let g = p.grad?.contiguous() else { continue }
        total += g.withFloats { buf in
            Parallel.sum(buf.count) { r in r.reduce(0.0) { $0 + Double(buf[$1]) * Double(buf[$1]) } }
        }
    }
    let norm = Float(total.squareRoot())
    let coefficient = maxNorm / (norm + 1e-6)
    if coefficient < 1 {
        for p in parameters { if let g = p.grad { p.grad = Kernels.scale(g, coefficient) } }
    }
    return norm
}
