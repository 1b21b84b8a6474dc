import DGTensor
import Foundation

@inline(__always)
func mix64(_ x: UInt64) -> UInt64 { SplitMix64.mix(x) }

/// Counter-based random numbers: value i of the stream (seed, keys...) is a pure function of
/// them. Training draws its noise and timesteps from streams keyed by the sample index, so a
/// resumed run needs no generator state at all to draw exactly what an uninterrupted run draws.
public struct RandomStream: Sendable {
    let base: UInt64

    public init(seed: UInt64, _ keys: UInt64...) {
        var b = mix64(seed)
        for k in keys { b = mix64(b ^ mix64(k &+ 0x632B_E59B_D9B4_E019)) }
        base = b
    }

    @inline(__always)
    public func bits(_ i: Int) -> UInt64 { mix64(base &+ UInt64(truncatingIfNeeded: i) &* 0xD1B5_4A32_D192_ED03) }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public func uniform(_ i: Int) -> Double { Double(bits(i) >> 11) / 9_007_199_254_740_992 }

    /// `count` standard normal values (Box-Muller on pairs of uniforms, in double precision).
    public func normals(_ count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let u1 = (Double(bits(i) >> 11) + 1) / 9_007_199_254_740_992   // (0, 1]: log is finite
            let u2 = uniform(i + 1)
            let r = (-2 * log(u1)).squareRoot(), a = 2 * Double.pi * u2
            out[i] = Float(r * cos(a))
            if i + 1 < count { out[i + 1] = Float(r * sin(a)) }
            i += 2
        }
        return out
    }

    /// `count` integers uniform in 0..<bound (bias below 2^-40 for any bound we use).
    public func integers(_ count: Int, below bound: Int) -> [Int] {
        (0..<count).map { Int((bits($0) >> 11) % UInt64(bound)) }
    }
}
