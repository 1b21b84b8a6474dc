import DGBase
import DGTensor
import Foundation

/// Seeded standard-normal noise that is the same on every machine with IEEE doubles and for any
/// thread count. Each value is a pure function of (seed, position in the stream): the stream is
/// SplitMix64 evaluated at a counter (so any range of it can be computed independently, in
/// parallel, in any chunking), and pairs of uniforms become pairs of normals by Box–Muller.
/// Draws consume the stream in order, like a torch.Generator: the same sequence of calls on the
/// same seed gives the same tensors.
public final class NoiseGenerator {
    public let seed: UInt64
    /// Pairs of normals used so far.
    public private(set) var offset: UInt64 = 0
    private let key: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        key = SplitMix64.finalize(seed ^ 0x6A09_E667_F3BC_C909)
    }

    /// The two normals of pair `p` of the stream.
    @inline(__always)
    func pair(_ p: UInt64) -> (Float, Float) {
        let (z0, z1) = boxMuller(SplitMix64.finalize(key &+ (2 &* p &+ 1) &* 0x9E37_79B9_7F4A_7C15),
                                 SplitMix64.finalize(key &+ (2 &* p &+ 2) &* 0x9E37_79B9_7F4A_7C15))
        return (Float(z0), Float(z1))
    }

    /// A tensor of `shape` filled with the next values of the stream.
    public func normal(_ shape: [Int]) -> Tensor {
        let out = Tensor(zeros: shape)
        let n = out.count
        let pairs = (n + 1) / 2
        let start = offset
        out.withMutableFloats { buffer in
            let o = buffer
            Parallel.forEach(pairs, minimumChunk: 8192) { range in
                for p in range {
                    let (z0, z1) = pair(start &+ UInt64(p))
                    o[2 * p] = z0
                    if 2 * p + 1 < n { o[2 * p + 1] = z1 }
                }
            }
        }
        offset &+= UInt64(pairs)
        return out
    }
}

/// Seeds of independent items of one run: a pure function of the run's seed and the item's
/// index, so that any subset of the items (a shard, a rerun) gets exactly the seeds that a full
/// run gives them.
public func itemSeed(base: UInt64, index: Int) -> UInt64 {
    SplitMix64.finalize(SplitMix64.mix(base) ^ UInt64(index) &* 0xD1B5_4A32_D192_ED03)
}
