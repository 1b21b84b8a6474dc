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
