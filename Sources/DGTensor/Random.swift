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
