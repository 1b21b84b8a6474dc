import DGAutograd
import DGBase
import DGCheckpoint
import DGData
import DGEval
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Everything that decides the numbers of a segmentation run; stored in its checkpoints, and a
/// resumed run must agree with it.
public struct SegmentationOptions: Equatable, Sendable, RunOptions {
    public var steps = 600
    public var batchSize = 8
    public var crop = 128
    public var learningRate = 5e-3
    public var weightDecay: Float = 1e-2
    /// Linear warm-up, then a half-cosine to 0 at `steps`.
    public var warmupSteps = 30
    public var flip = true
    public var seed: UInt64 = 0
    /// Weigh each pixel's loss by its class (`SegmentationData.balancedClassWeights`): rare, thin
    /// classes (poles, signs, people) are otherwise never predicted by a small network.
    public var balanceClasses = false
    /// Colour jitter, blur and noise on every training crop (`PhotometricAugmentation`).
    public var photometric = false

    public init() {}

    public func validate() throws {
        guard steps > 0 else { throw TrainingError.badInput("--steps must be positive") }
        guard batchSize > 0 else { throw TrainingError.badInput("--batch-size must be positive") }
        guard crop > 0, crop % 8 == 0 else { throw TrainingError.badInput("--crop must be a positive multiple of 8, not \(crop)") }
        guard learningRate > 0, learningRate.isFinite else { throw TrainingError.badInput("--lr must be positive") }
        guard warmupSteps >= 0 else { throw TrainingError.badInput("warm-up steps must not be negative") }
    }

    public var schedule: LRSchedule { LRSchedule(.cosine, warmupSteps: min(warmupSteps, steps / 2), totalSteps: steps) }

    public var json: JSON {
        var j: JSON = [
            "steps": .int(steps), "batch_size": .int(batchSize), "crop": .int(crop), "learning_rate": .double(learningRate),
            "weight_decay": .double(Double(weightDecay)), "warmup_steps": .int(warmupSteps), "flip": .bool(flip),
            "seed": .string(String(seed)), "schedule": "cosine",
        ]
        // Only when set, so that checkpoints made before the option existed still resume.
        if balanceClasses { j.set("class_weights", "balanced") }
        if photometric { j.set("photometric", .string(PhotometricAugmentation.name)) }
        return j
    }

    /// Keys whose values differ from `saved`.
    public func conflicts(with saved: JSON) -> [String] {
        (json.objectPairs ?? []).compactMap { key, value in saved[key] == value ? nil : "\(key): \(saved[key]?.compact ?? "missing") there, \(value.compact) here" }
    }
}

/// AdamW on a `Segmenter` with cross-entropy over random crops; `TrainingRun` drives it like
/// the diffusion trainers, and the run ends with `segmenter.dginstyle`.
public final class SegmentationTrainer: RunnableTrainer {
    /// The exported model's file name in the run folder.
    public static let modelFile = Segmenter.componentName + ".dginstyle"

    public let model: Segmenter
    public let crops: SegmentationCrops
    public let options: SegmentationOptions
    public let optimizer: AdamW
    /// Per-class loss weights (with `balanceClasses`), from the training labels.
    public let classWeights: [Float]?
    /// Stored with the exported model as segmenter/training.json, beside the options and data.
    public var description: JSON = .object([])
    public private(set) var step = 0
    private let parameters: [(name: String, parameter: Parameter)]

    public init(model: Segmenter, crops: SegmentationCrops, options: SegmentationOptions) throws {
        try options.validate()
        self.model = model
        self.crops = crops
        self.options = options
        classWeights = options.balanceClasses ? try crops.data.balancedClassWeights(classes: model.config.numClasses) : nil
        parameters = model.namedParameters()
        try makeTrainable(parameters)
        optimizer = AdamW(parameters.map(\.parameter), learningRate: options.learningRate, weightDecay: Double(typed: options.weightDecay))
    }

    public var totalSteps: Int { options.steps }
    public var modelName: String { Segmenter.componentName }
    public var currentLearningRate: Double { options.schedule.learningRate(step: step, base: options.learningRate) }

    /// One update on one batch; throws before touching the weights on a non-finite loss or gradient.
    @discardableResult
    public func trainStep() throws -> StepResult {
        let lr = currentLearningRate
        let batch = try crops.batch(firstSample: step * options.batchSize, count: options.batchSize)
        let loss = crossEntropy(model(Var(batch.pixels)), targets: batch.targets, weights: classWeights)
        let value = loss.value.floats[0]
        guard value.isFinite else { throw TrainingError.nonFinite(step: step, what: "the loss is \(value)") }
        Autograd.backward(loss)
        let norm = try clippedGradientNorm(optimizer, maxNorm: nil, step: step)
        applyUpdate(optimizer, learningRate: lr)
        step += 1
        return StepResult(step: step, loss: Double(value), learningRate: lr, gradientNorm: norm)
    }

    public func saveCheckpoint(to path: String, extra: JSON = .object([])) throws {
        try state.save(to: path, step: step, extra: extra)
    }

    @discardableResult
    public func restore(from path: String) throws -> JSON { try state.restore(from: path, step: &step) }

    var state: TrainerState {
        TrainerState(name: Segmenter.componentName, className: SegmenterConfig.className, config: model.config.json, weights: model.namedParameters(),
                     parameters: parameters, optimizer: optimizer, options: options, source: crops)
    }

    /// A native file only: the segmenter is no diffusers model.
    public func export(to path: String, format: OutputFormat) throws {
        guard format == .native else { throw TrainingError.badInput("a segmenter is written as a native file only") }
        var info = description
        info.set("options", options.json)
        info.set("data", crops.data.identity)
        if let w = classWeights { info.set("class_weights", .array(w.map { .double(Double($0)) })) }
        try model.save(to: path, extra: info)
    }
}
