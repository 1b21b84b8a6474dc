import DGBase
import DGCheckpoint
import DGTensor

/// One micro-batch of training data.
public struct TrainingBatch {
    /// [B, 3, H, W], values in [-1, 1].
    public var pixels: Tensor
    /// [B, classes + 1, H, W] one-hot label maps (ControlNet training), or nil.
    public var condition: Tensor?
    /// One caption per sample ("" for the unconditional / DreamBooth empty prompt).
    public var captions: [String]

    public init(pixels: Tensor, condition: Tensor?, captions: [String]) {
        self.pixels = pixels
        self.condition = condition
        self.captions = captions
    }

    public var count: Int { pixels.shape[0] }
}

/// Where training batches come from. A source must be deterministic given its seed and
/// state: restoring a saved state and drawing again yields exactly the batches an
/// uninterrupted source would have yielded, which is what makes resumed runs bit-identical.
public protocol TrainingBatchSource: CheckpointedData {
    /// The next `count` samples; advances the source.
    func next(_ count: Int) throws -> TrainingBatch
    /// Fixed samples for validation images; drawing them does not advance the source.
    func validationBatch(_ count: Int) throws -> TrainingBatch?
}

extension TrainingBatchSource {
    public func validationBatch(_ count: Int) throws -> TrainingBatch? { nil }
}

/// A fixed list of samples drawn uniformly with replacement by a seeded generator: the
/// source for tests and for tiny in-memory experiments.
public final class InMemoryBatchSource: TrainingBatchSource {
    public struct Sample {
        /// [3, H, W] in [-1, 1].
        public var pixels: Tensor
        /// [classes + 1, H, W] one-hot, or nil.
        public var condition: Tensor?
        public var caption: String

        public init(pixels: Tensor, condition: Tensor?, caption: String) {
            self.pixels = pixels
            self.condition = condition
            self.caption = caption
        }
    }

    public let samples: [Sample]
    private(set) var rng: SplitMix64
    public let name: String

    public init(_ samples: [Sample], seed: UInt64, name: String = "in-memory") {
        precondition(!samples.isEmpty, "an in-memory source needs samples")
        self.samples = samples
        rng = SplitMix64(seed: seed)
        self.name = name
    }

    public func next(_ count: Int) throws -> TrainingBatch {
        let picked = (0..<count).map { _ in samples[Int(rng.next() % UInt64(samples.count))] }
        return Self.batch(picked)
    }

    static func batch(_ picked: [Sample]) -> TrainingBatch {
        let pixels = Kernels.concat(picked.map { $0.pixels.reshaped([1] + $0.pixels.shape) }, axis: 0)
        let condition = picked[0].condition == nil ? nil
            : Kernels.concat(picked.map { $0.condition!.reshaped([1] + $0.condition!.shape) }, axis: 0)
        return TrainingBatch(pixels: pixels, condition: condition, captions: picked.map(\.caption))
    }

    // As text: JSON numbers cannot hold every UInt64 exactly.
    public func saveState() -> JSON { ["rng": .string(String(rng.state, radix: 16))] }

    public func restoreState(_ state: JSON) throws {
        guard let s = state["rng"]?.string, let r = UInt64(s, radix: 16) else {
            throw TrainingError.resume("the checkpoint's data-source state is not an in-memory source's")
        }
        rng = SplitMix64(seed: r)
    }

    public var identity: JSON {
        ["source": .string(name), "samples": .int(samples.count), "shape": .array(samples[0].pixels.shape.map { .int($0) })]
    }

    public func validationBatch(_ count: Int) throws -> TrainingBatch? {
        Self.batch((0..<count).map { samples[$0 % samples.count] })
    }
}
