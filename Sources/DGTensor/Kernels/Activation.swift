import CDGKernels
import Foundation

/// Element-wise activations and their derivatives, vectorisable (exp and erf approximations
/// written as plain arithmetic, see `Kernels.exp`).
extension Kernels {
    public enum Activation: Sendable {
        /// x sigmoid(x)
        case silu
        /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as x sigmoid(2u)
        case geluTanh
        /// x Phi(x), PyTorch's default GELU
        case geluErf
        /// x sigmoid(1.702 x), CLIP's
        case quickGELU
    }

    static let sqrt2OverPi: Float = 0.7978845608028654
    static let invSqrt2: Float = 0.7071067811865476
    static let invSqrt2Pi: Float = 0.3989422804014327

    /// erfc(z) for z >= 0 with relative error < 1.2e-7 (Numerical Recipes' Chebyshev fit), in the form
    /// t exp(-z^2 + P(t)), t = 1 / (1 + z/2). Returns (t, P(t)).
    @inline(__always)
    static func erfcParts(_ z: Float) -> (Float, Float) {
        let t = 1 / (1 + 0.5 * z)
        var p: Float = 0.17087277
        p = p * t - 0.82215223
        p = p * t + 1.48851587
        p = p * t - 1.13520398
        p = p * t + 0.27886807
        p = p * t - 0.18628806
        p = p * t + 0.09678418
        p = p * t + 0.37409196
        p = p * t + 1.00002368
        p = p * t - 1.26551223
        return (t, p)
    }

    /// The standard normal CDF, accurate in relative terms on both tails.
    @inline(__always)
    static func normalCDF(_ x: Float) -> Float {
        let z = Swift.abs(x) * invSqrt2
        let (t, p) = erfcParts(z)
        let half = 0.5 * t * exp(p - 0.5 * x * x)   // erfc(z) / 2; z^2 as x^2/2 (one rounding)
        return x >= 0 ? 1 - half : half
    }

    public static func activate(_ x: Tensor, _ a: Activation) -> Tensor {
        let xc = f32(x), y = Tensor(uninitialized: x.shape)
        defer { withExtendedLifetime((xc, y)) {} }
        let xp = pointer(xc), yp = pointer(y)
        Parallel.forEach(x.count, minimumChunk: 8192) { r in
            let (lo, n) = (r.lowerBound, r.count)
            let s = xp + lo, o = yp + lo
            switch a {
            case .silu:
                if avx512 { dg_silu(s, o, n); return }
                for i in 0..<n { let v = s[i]; o[i] = v / (1 + exp(-v)) }
            case .quickGELU:
                for i in 0..<n { let v = s[i]; o[i] = v / (1 + exp(-1.702 * v)) }
            case .geluTanh:
                for i in 0..<n {
                    let v = s[i]
                    let u = sqrt2OverPi * (v + 0.044715 * v * v * v)
                    o[i] = v / (1 + exp(-2 * u))
                }
            case .geluErf:
                for i in 0..<n { let v = s[i]; o[i] = v * normalCDF(v) }
            }
        }
        return y
    }

    public static func activateBackward(_ gy: Tensor, x: Tensor, _ a: Activation) -> Tensor {
        precondition(gy.shape == x.shape, "activateBackward: shapes \(gy.shape) and \(x.shape) differ")
        let gc = f32(gy), xc = f32(x), dx = Tensor(uninitialized: x.shape)
        defer { withExtendedLifetime((gc, xc, dx)) {} }
        let gp = pointer(gc), xp = pointer(xc), dp = pointer(dx)
        Parallel.forEach(x.count, minimumChunk: 8192) { r in
            let (lo, n) = (r.lowerBound, r.count)
            let s = xp + lo, g = gp + lo, o = dp + lo
            switch a {
            case .silu:   // s (1 + x (1 - s))
                if avx512 { dg_silu_backward(g, s, o, n); return }
                for i in 0..<n {
                    let v = s[i], sg = 1 / (1 + exp(-v))
                    o[i] = g[i] * sg * (1 + v * (1 - sg))
                }
            case .quickGELU:   // s + 1.702 x s (1 - s)
                for i in 0..<n {
                    let v = s[i], sg = 1 / (1 + exp(-1.702 * v))
                    o[i] = g[i] * sg * (1 + 1.702 * v * (1 - sg))
                }
            case .geluTanh:   // y = x s(2u): s + 2 x s (1 - s) u'
                for i in 0..<n {
                    let v = s[i], v2 = v * v
                    let u = sqrt2OverPi * (v + 0.044715 * v2 * v)
                    let du = sqrt2OverPi * (1 + 3 * 0.044715 * v2)
                    let sg = 1 / (1 + exp(-2 * u))
                    o[i] = g[i] * sg * (1 + 2 * v * (1 - sg) * du)
                }
            case .geluErf:
                for i in 0..<n { o[i] = g[i] * geluDerivative(s[i]) }
            }
        }
        return dx
    }

    /// d/dx of the exact (erf) GELU: Phi(x) + x phi(x), with Phi from the same erfc
    /// approximation as the forward pass.
    @inline(__always)
    static func geluDerivative(_ v: Float) -> Float {
        let z = Swift.abs(v) * invSqrt2
        let (t, p) = erfcParts(z)
        let ez = exp(-0.5 * v * v)
        let half = 0.5 * t * ez * exp(p)
        let cdf = v >= 0 ? 1 - half : half
        return cdf + v * invSqrt2Pi * ez
    }
}
