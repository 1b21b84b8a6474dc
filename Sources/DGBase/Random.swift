import Foundation

/// SplitMix64 (Steele, Lea, Flood): the project's one seedable generator. Small state that can
/// be saved and restored exactly (training resume), and `mix` gives counter-based streams:
/// value i of stream s is a pure function of (seed, s, i), independent of thread count.
public struct SplitMix64: RandomNumberGenerator, Codable, Sendable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.finalize(state)
    }

    /// The output function alone: a good 64-bit hash of `x`.
    @inline(__always)
    public static func finalize(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One step of the generator from an arbitrary position: for counter-based use.
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 { finalize(x &+ 0x9E37_79B9_7F4A_7C15) }
}

/// Sampling helpers of our own rather than the standard library's `random(in:using:)`, whose
/// algorithm may change between Swift releases: ours fix every sequence for good.
extension SplitMix64 {
    /// An independent generator for item `stream` of a run seeded with `seed` (per-image seeds
    /// that do not depend on which thread or shard renders the item).
    public init(seed: UInt64, stream: UInt64) {
        var a = SplitMix64(seed: seed)
        var b = SplitMix64(seed: stream &* 0xD1B5_4A32_D192_ED03 &+ 0x8CB9_2BA7_2F3D_8DD7)
        state = a.next() ^ b.next()
    }

    /// Uniform in [0, 1), 53 random bits.
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in [a, b).
    public mutating func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * uniform() }

    /// Uniform in 0..<n without modulo bias (Lemire's multiply-and-reject); 0 when n <= 1.
    public mutating func int(below n: Int) -> Int {
        guard n > 1 else { return 0 }
        let bound = UInt64(n)
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return Int(m.high)
    }

    /// Uniform in the closed range.
    public mutating func int(in range: ClosedRange<Int>) -> Int { range.lowerBound + int(below: range.count) }

    public mutating func chance(_ p: Double) -> Bool { uniform() < p }

    /// An index drawn with probability proportional to `weights` (non-negative, not all zero).
    public mutating func index(weights: [Double]) -> Int {
        let total = weights.reduce(0, +)
        var u = uniform() * total
        for (i, w) in weights.enumerated() {
            if u < w { return i }
            u -= w
        }
        return weights.lastIndex { $0 > 0 } ?? 0
    }

    public mutating func element<T>(_ items: [T]) -> T { items[int(below: items.count)] }

    /// Standard normal (Box-Muller, one of the pair).
    public mutating func gaussian() -> Double {
        let u1 = max(uniform(), 0x1p-53)
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// Box-Muller on two 64-bit draws: u1 in (0, 1] from `a` (so the logarithm stays finite), u2 in
/// [0, 1) from `b`, both with 53 random bits; the pair of normals in double precision.
@inline(__always)
public func boxMuller(_ a: UInt64, _ b: UInt64) -> (Double, Double) {
    let u1 = (Double(a >> 11) + 1) * 0x1p-53
    let u2 = Double(b >> 11) * 0x1p-53
    let r = (-2 * Foundation.log(u1)).squareRoot(), angle = 2 * Double.pi * u2
    return (r * Foundation.cos(angle), r * Foundation.sin(angle))
}

/// Counter-based random numbers: value i of the stream (seed, keys...) is a pure function of
/// them. Training draws its noise and timesteps from streams keyed by the sample index, so a
/// resumed run needs no generator state at all to draw exactly what an uninterrupted run draws.
public struct RandomStream: Sendable {
    let base: UInt64

    public init(seed: UInt64, _ keys: UInt64...) {
        var b = SplitMix64.mix(seed)
        for k in keys { b = SplitMix64.mix(b ^ SplitMix64.mix(k &+ 0x632B_E59B_D9B4_E019)) }
        base = b
    }

    @inline(__always)
    public func bits(_ i: Int) -> UInt64 { SplitMix64.mix(base &+ UInt64(truncatingIfNeeded: i) &* 0xD1B5_4A32_D192_ED03) }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public func uniform(_ i: Int) -> Double { Double(bits(i) >> 11) * 0x1p-53 }

    /// `count` standard normal values (Box-Muller on pairs of draws, in double precision).
    public func normals(_ count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let (z0, z1) = boxMuller(bits(i), bits(i + 1))
            out[i] = Float(z0)
            if i + 1 < count { out[i + 1] = Float(z1) }
            i += 2
        }
        return out
    }

    /// `count` integers uniform in 0..<bound (bias below 2^-40 for any bound we use).
    public func integers(_ count: Int, below bound: Int) -> [Int] {
        (0..<count).map { Int((bits($0) >> 11) % UInt64(bound)) }
    }
}
