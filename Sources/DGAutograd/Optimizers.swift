import CDGKernels
import DGTensor
import Foundation

/// Updates parameters from their gradients. State is kept per parameter, in the order given
/// at construction, so it can be saved and restored exactly.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    /// Double, as PyTorch's scheduler hands it over: the step's scalars are computed in double and
    /// rounded to float once.
    var learningRate: Double { get set }
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
///
/// With `.blockwise8bit` state the moments of every parameter of at least 4096 elements are kept
/// as bitsandbytes' 8-bit optimizers keep them (AdamW8bit: diffusers' --use_8bit_adam, kohya's
/// default optimizer): one byte per moment, a code into a dynamic quantization map, times the
/// largest magnitude of its block of 256 — 2 bytes per parameter instead of 8. The step itself
/// runs in f32 on the dequantized moments, in bitsandbytes' order of operations.
public final class AdamW: Optimizer {
    /// The raw values are the optimizer's names on the command line and in checkpoints.
    public enum StateStorage: String, Sendable, CaseIterable {
        case f32 = "adamw", blockwise8bit = "adamw8bit"
    }

    /// Elements per 8-bit block (one scale each), as bitsandbytes' blockwise optimizers.
    public static let stateBlock = Int(DG_ADAM8_BLOCK)

    public let parameters: [Parameter]
    public var learningRate: Double
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    public let stateStorage: StateStorage
    public private(set) var step = 0
    /// First and second moments, one per parameter (nil until its first update): f32 tensors of
    /// the parameter's shape, or for 8-bit state U8 codes of that shape.
    public var firstMoments: [Tensor?]
    public var secondMoments: [Tensor?]
    /// 8-bit state: each block's scale (f32, one per 256 elements); nil where the moments are f32.
    public var firstScales: [Tensor?]
    public var secondScales: [Tensor?]

    public init(_ parameters: [Parameter], learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999,
                eps: Double = 1e-8, weightDecay: Double = 1e-2, stateStorage: StateStorage = .f32) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.stateStorage = stateStorage
        firstMoments = Array(repeating: nil, count: parameters.count)
        secondMoments = Array(repeating: nil, count: parameters.count)
        firstScales = Array(repeating: nil, count: parameters.count)
        secondScales = Array(repeating: nil, count: parameters.count)
    }

    /// Whether parameter `i`'s moments are 8-bit: bitsandbytes keeps f32 state below 4096 elements
    /// (min_8bit_size), where the scales would cost more than the bytes saved.
    public func quantizesState(of i: Int) -> Bool {
        stateStorage == .blockwise8bit && parameters[i].count >= 4096
    }

    /// Block scales of parameter `i`'s 8-bit moments.
    public func stateBlocks(of i: Int) -> Int { (parameters[i].count + Self.stateBlock - 1) / Self.stateBlock }

    /// Restores the step count (with the moments and, for 8-bit state, the block scales) when resuming.
    public func restore(step: Int, first: [Tensor?], second: [Tensor?], firstScales: [Tensor?]? = nil, secondScales: [Tensor?]? = nil) {
        self.step = step
        firstMoments = first
        secondMoments = second
        self.firstScales = firstScales ?? Array(repeating: nil, count: parameters.count)
        self.secondScales = secondScales ?? Array(repeating: nil, count: parameters.count)
    }

    public func update() {
        step += 1
        // In double, rounded once, as PyTorch computes its Python-float scalars (1 - 0.999 in float
        // would be 1.3e-5 off).
        let bias2Sqrt = Float((1 - pow(beta2, Double(step))).squareRoot())
        let stepSize = Float(learningRate / (1 - pow(beta1, Double(step))))
        let decay = Float(1 - learningRate * weightDecay)
        let (b1, b2, eps) = (Float(beta1), Float(beta2), Float(eps))
        let (c1, c2) = (Float(1 - beta1), Float(1 - beta2))
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad?.contiguous(), var value = p.value else { continue }
            // In place only when nobody else can see the memory: a loaded (mapped) tensor, a view
            // or a tensor shared with another model (a ControlNet copied from its UNet) is copied.
            p.value = nil
            if !isKnownUniquelyReferenced(&value.storage) || value.storage.isBorrowed || !value.isContiguous
                || value.byteCount != value.storage.byteCount {
                value = value.copied()
            }
            let n = value.count
            let pp = value.rawPointer.assumingMemoryBound(to: Float.self)
            let pg = g.rawPointer.assumingMemoryBound(to: Float.self)
            if quantizesState(of: i) {
                let blocks = stateBlocks(of: i)
                let m = firstMoments[i] ?? Tensor(zeros: p.shape, dtype: .u8)
                let v = secondMoments[i] ?? Tensor(zeros: p.shape, dtype: .u8)
                let sm = firstScales[i] ?? Tensor(zeros: [blocks])
                let sv = secondScales[i] ?? Tensor(zeros: [blocks])
                let maps = DynamicQuantizationMap.adamStates
                withExtendedLifetime((value, g, m, v, sm, sv)) {
                    let (qm, qv) = (m.rawPointer.assumingMemoryBound(to: UInt8.self), v.rawPointer.assumingMemoryBound(to: UInt8.self))
                    let (am, av) = (sm.rawPointer.assumingMemoryBound(to: Float.self), sv.rawPointer.assumingMemoryBound(to: Float.self))
                    Parallel.forEach(blocks, minimumChunk: 64) { r in
                        dg_adamw_8bit(r.lowerBound, r.upperBound, n, pp, pg, qm, qv, am, av,
                                      maps.first.codes, maps.second.codes, maps.first.lookup, maps.second.lookup,
                                      b1, c1, b2, c2, eps, -stepSize, bias2Sqrt, decay)
                    }
                }
                (firstMoments[i], secondMoments[i], firstScales[i], secondScales[i]) = (m, v, sm, sv)
            } else {
                let m = firstMoments[i] ?? Tensor(zeros: p.shape)
                let v = secondMoments[i] ?? Tensor(zeros: p.shape)
                let pm = m.rawPointer.assumingMemoryBound(to: Float.self)
                let pv = v.rawPointer.assumingMemoryBound(to: Float.self)
                withExtendedLifetime((value, g, m, v)) {
                    Parallel.forEach(n, minimumChunk: 1 << 15) { r in
                        for j in r {
                            pp[j] *= decay
                            pm[j] += (pg[j] - pm[j]) * c1   // lerp, as torch
                            pv[j] = pv[j] * b2 + c2 * pg[j] * pg[j]
                            let denom = pv[j].squareRoot() / bias2Sqrt + eps
                            pp[j] += -stepSize * pm[j] / denom   // (value m) / denom: torch's addcdiv
                        }
                    }
                }
                firstMoments[i] = m
                secondMoments[i] = v
            }
            p.value = value
        }
    }
}

/// The 256 values an 8-bit optimizer state code stands for (in units of its block's largest
/// magnitude), as bitsandbytes builds them (Dettmers et al., "8-bit Optimizers via Block-wise
/// Quantization"): dynamic tree quantization, seven decades 10^-6 .. 1, each split linearly, the
/// finer the larger, plus 0 and 1. Signed for the first moment, unsigned (twice as fine) for the
/// second.
public final class DynamicQuantizationMap: @unchecked Sendable {
    /// Sorted ascending.
    public let values: [Float]
    /// The values and +inf after them (so the code above the last needs no bounds test).
    let codes: UnsafeMutablePointer<Float>
    /// For every float's top 17 bits (sign, exponent, 8 mantissa bits: buckets 2^-8 of their size
    /// wide, narrower than any two codes are apart), the last code at or below the bucket's lower
    /// end: the code at or below x is that one or the next. Three bytes of padding after it, for
    /// 32-bit gathers.
    let lookup: UnsafeMutablePointer<UInt8>

    public init(signed: Bool) {
        var v: [Float] = [0, 1]
        for level in 0..<7 {
            let count = signed ? 1 << level : 2 << level
            let scale = pow(10.0, Double(level - 6))
            for j in 0..<count {
                // The midpoints of `count` equal parts of [0.1, 1].
                let lo = 0.1 + 0.9 * Double(j) / Double(count), hi = 0.1 + 0.9 * Double(j + 1) / Double(count)
                let x = Float(scale * Double(Float((lo + hi) / 2)))
                v.append(x)
                if signed { v.append(-x) }
            }
        }
        values = v.sorted()
        precondition(values.count == 256)
        codes = .allocate(capacity: 257)
        codes.initialize(from: values + [.infinity], count: 257)
        lookup = .allocate(capacity: (1 << 17) + 3)
        lookup.initialize(repeating: 0, count: (1 << 17) + 3)
        for bucket in 0..<(1 << 17) {
            let a = Float(bitPattern: UInt32(bucket) << 15), b = Float(bitPattern: UInt32(bucket) << 15 | 0x7FFF)
            let low = min(a, b)
            var c = 0
            if !low.isNaN { while c < 255 && values[c + 1] <= low { c += 1 } }
            lookup[bucket] = UInt8(c)
        }
    }

    /// The nearest code to x (ties to the lower one): the optimizer's kernel's own search.
    public func code(_ x: Float) -> UInt8 { dg_nearest_code(x, codes, lookup) }

    /// The maps of the first (signed) and second (unsigned) moments.
    public static let adamStates = (first: DynamicQuantizationMap(signed: true), second: DynamicQuantizationMap(signed: false))
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay,
/// as PyTorch's SGD.
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Double
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    public private(set) var step = 0
    public var momentumBuffers: [Tensor?]

    public init(_ parameters: [Parameter], learningRate: Double, momentum: Float = 0, dampening: Float = 0,
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
            p.value = Kernels.addScaled(value, g, Float(-learningRate))
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
