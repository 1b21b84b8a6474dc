import DGCheckpoint
import DGData
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Everything that decides the numbers of a segmentation run; stored in its checkpoints, and a
/// resumed run must agree with it.
public struct SegmentationOptions: Equatable, Sendable {
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
        return j
    }

    /// Keys whose values differ from `saved`.
    func conflicts(with saved: JSON) -> [String] {
        (json.objectPairs ?? []).compactMap { key, value in saved[key] == value ? nil : "\(key): \(saved[key]?.compact ?? "missing") there, \(value.compact) here" }
    }
}

/// AdamW on a `Segmenter` with cross-entropy over random crops.
public final class SegmentationTrainer {
    public let model: Segmenter
    public let crops: SegmentationCrops
    public let options: SegmentationOptions
    public let optimizer: AdamW
    /// Per-class loss weights (with `balanceClasses`), from the training labels.
    public let classWeights: [Float]?
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
        optimizer = AdamW(parameters.map(\.parameter), learningRate: Float(options.learningRate), weightDecay: options.weightDecay)
    }

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

    /// The training state of `data` needs no saving: crops are drawn from streams keyed by the
    /// sample index (see `SegmentationCrops`).
    public func saveCheckpoint(to path: String, extra: JSON = .object([])) throws {
        let w = try NativeWriter(path: path, kind: "training-checkpoint")
        do {
            var state: JSON = [
                "format": "dginstyle-segment-checkpoint", "version": 1, "step": .int(step), "optimizer_step": .int(optimizer.step),
                "options": options.json, "data": crops.data.identity, "threads": .int(Parallel.threads),
            ]
            for (k, v) in extra.objectPairs ?? [] { state.set(k, v) }
            try w.addFile("training_state.json", Array((state.pretty + "\n").utf8))
            try w.addFile(Segmenter.componentName + "/config.json", Array((model.config.json.pretty + "\n").utf8))
            w.addComponent(Segmenter.componentName, className: SegmenterConfig.className)
            for (name, p) in parameters {
                let t = p.value!.contiguous()
                try t.withRawBytes { try w.addTensor(component: Segmenter.componentName, entry: TensorEntry(name: name, dtype: t.dtype, shape: t.shape), bytes: $0) }
            }
            w.addComponent("optimizer", className: "AdamW")
            for (i, (name, _)) in parameters.enumerated() {
                for (label, moment) in [("exp_avg", optimizer.firstMoments[i]), ("exp_avg_sq", optimizer.secondMoments[i])] {
                    guard let m = moment?.contiguous() else { continue }
                    try m.withRawBytes {
                        try w.addTensor(component: "optimizer", entry: TensorEntry(name: label + "." + name, dtype: m.dtype, shape: m.shape), bytes: $0)
                    }
                }
            }
            try w.finish()
        } catch {
            w.abort()
            throw error
        }
    }

    /// Restores a checkpoint of `saveCheckpoint`, after checking that it was made with the same
    /// options, data and architecture; changes nothing unless all of it reads back.
    @discardableResult
    public func restore(from path: String) throws -> JSON {
        let file = try NativeFile(path: path)
        let state: JSON
        do { state = try JSON.parse(bytes: try file.file("training_state.json")) } catch let e as CheckpointError { throw e } catch {
            throw CheckpointError(path, "training_state.json: \(error)")
        }
        guard state["format"]?.string == "dginstyle-segment-checkpoint" else { throw CheckpointError(path, "is not a segmentation training checkpoint") }
        let conflicts = options.conflicts(with: state["options"] ?? .null)
        if !conflicts.isEmpty {
            throw TrainingError.resume("\(path) was made with other settings (\(conflicts.joined(separator: ", "))); resume with the same ones or start a new run")
        }
        if let data = state["data"], data != crops.data.identity {
            throw TrainingError.resume("\(path) was made on other data (\(data.compact)); this run reads \(crops.data.identity.compact)")
        }
        guard let savedStep = state["step"]?.int, let optimizerStep = state["optimizer_step"]?.int else {
            throw CheckpointError(path, "training_state.json has no step")
        }
        let saved = try SegmenterConfig(json: JSON.parse(bytes: try file.file(Segmenter.componentName + "/config.json")))
        guard saved == model.config else { throw TrainingError.resume("\(path) holds a segmenter of another shape (\(saved.json.compact))") }
        let weights = file.source(Segmenter.componentName)
        let problems = compareToModel(weights.entries, model)
        guard problems.isEmpty else { throw CheckpointError(path, "does not fit the model: \(problems.prefix(4).joined(separator: "; "))") }
        let moments = file.source("optimizer")
        let byName = Dictionary(uniqueKeysWithValues: moments.entries.map { ($0.name, $0) })
        var values: [Tensor] = [], first: [Tensor?] = [], second: [Tensor?] = []
        for (name, p) in parameters {
            values.append(try weights.tensor(name).converted(to: .f32).copied())
            for label in ["exp_avg", "exp_avg_sq"] {
                var m: Tensor?
                if let e = byName[label + "." + name] {
                    guard e.shape == p.shape, e.dtype == .f32 else { throw CheckpointError(path, "optimizer state \(e.name) has shape \(e.shape) \(e.dtype.name)") }
                    m = try moments.tensor(e.name).copied()
                }
                if label == "exp_avg" { first.append(m) } else { second.append(m) }
            }
        }
        for ((_, p), v) in zip(parameters, values) {
            p.value = v
            p.grad = nil
        }
        optimizer.restore(step: optimizerStep, first: first, second: second)
        step = savedStep
        return state
    }
}

/// Drives a `SegmentationTrainer` through a run the way `TrainingRun` drives diffusion
/// training (and with its pieces: checkpoint store, metrics log, loss plot): atomic rotated
/// checkpoints, `resume`, metrics.jsonl, loss.svg, and `segmenter.dginstyle` at the end.
public final class SegmentationRun {
    public static let modelName = "segmenter.dginstyle"

    public let trainer: SegmentationTrainer
    public let settings: RunSettings
    public let store: CheckpointStore
    public let metrics: MetricsLog
    public var log: (String) -> Void = { _ in }
    /// Stored with the model as segmenter/training.json.
    public var description: JSON = .object([])

    public init(trainer: SegmentationTrainer, settings: RunSettings) {
        self.trainer = trainer
        self.settings = settings
        store = CheckpointStore(directory: settings.output + "/checkpoints")
        metrics = MetricsLog(path: settings.output + "/metrics.jsonl")
    }

    public var modelPath: String { settings.output + "/" + Self.modelName }

    public func run() throws -> RunSummary {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(settings.output, "cannot create the run folder: \(error.localizedDescription)")
        }
        store.removeAbandonedWrites()
        var elapsedBefore = 0.0
        if settings.resume {
            if let state = try restoreNewest() {
                elapsedBefore = state["elapsed_s"]?.double ?? 0
                log("resumed from step \(trainer.step) of \(trainer.options.steps)")
            } else {
                log("no checkpoint in \(store.directory): starting from step 0")
            }
        } else if let last = store.list().last {
            throw TrainingError.resume("\(settings.output) already holds checkpoints (the newest: step \(last.step)); pass --resume to continue that run, or choose another output folder")
        }
        // Records after the checkpoint's step belong to a killed run's lost steps, about to be redone.
        try metrics.truncate(afterStep: trainer.step)
        defer { metrics.close() }

        let total = trainer.options.steps, startStep = trainer.step
        let started = Date()
        let bar = ProgressBar(settings.label, total: Double(total), unit: "it", enabled: settings.progress, initial: Double(startStep))
        var losses: [Double] = []
        var smoothed: Double?
        var lastGood: String? = store.list().last?.path
        while trainer.step < total {
            if let stop = settings.stopAfter, trainer.step - startStep >= stop { break }
            let stepStart = Date()
            let result: StepResult
            do {
                result = try trainer.trainStep()
            } catch let TrainingError.nonFinite(step, what) {
                try? metrics.append(["step": .int(step + 1), "error": .string("non-finite: \(what)")])
                writePlot()
                throw TrainingError.nonFinite(step: step, what: "\(what); " + (lastGood.map { "the last good checkpoint is \($0); lower --lr, then --resume" } ?? "no checkpoint was written yet"))
            }
            let now = Date()
            let stepSeconds = now.timeIntervalSince(stepStart)
            losses.append(result.loss)
            smoothed = smoothed.map { 0.95 * $0 + 0.05 * result.loss } ?? result.loss
            let elapsed = elapsedBefore + now.timeIntervalSince(started)
            try metrics.append([
                "step": .int(result.step), "loss": .double(result.loss), "lr": .double(result.learningRate),
                "grad_norm": .double(Double(result.gradientNorm)), "step_s": .double((stepSeconds * 1e4).rounded() / 1e4),
                "it_per_s": .double((1 / max(stepSeconds, 1e-9) * 1e4).rounded() / 1e4), "elapsed_s": .double((elapsed * 1e3).rounded() / 1e3),
            ])
            bar.update(Double(result.step), note: String(format: "loss %.4f (avg %.4f) lr %.2e", result.loss, smoothed!, result.learningRate))
            let step = result.step
            if (settings.checkpointEvery > 0 && step % settings.checkpointEvery == 0) || step == total {
                let path = store.path(step: step)
                try trainer.saveCheckpoint(to: path, extra: ["elapsed_s": .double(elapsed)])
                lastGood = path
                store.rotate(keep: max(settings.keep, 1))
                writePlot()
            }
        }
        let finished = trainer.step >= total
        if finished {
            bar.finish()
            var info = description
            info.set("options", trainer.options.json)
            info.set("data", trainer.crops.data.identity)
            if let w = trainer.classWeights { info.set("class_weights", .array(w.map { .double(Double($0)) })) }
            try trainer.model.save(to: modelPath, extra: info)
            log("wrote \(modelPath)")
            writePlot()
        }
        let tail = losses.suffix(max(1, losses.count / 10))
        return RunSummary(startStep: startStep, endStep: trainer.step, finished: finished,
                          recentLoss: tail.isEmpty ? nil : tail.reduce(0, +) / Double(tail.count),
                          model: finished ? modelPath : nil, seconds: Date().timeIntervalSince(started))
    }

    func restoreNewest() throws -> JSON? { try store.restoreNewest(log: log, trainer.restore(from:)) }

    func writePlot() { metrics.writeLossPlot(to: settings.output + "/loss.svg", title: "\(settings.label): cross-entropy") }
}

/// Runs a segmenter over a labelled set, image by image at full size, and counts the confusion.
public enum SegmentationEvaluation {
    /// `predictions`: a folder for each image's predicted classes in palette colours
    /// (`<image name>.png`), written only after every input has been checked.
    /// `perImage`: also each image's own matrix, named like the image.
    public static func evaluate(_ model: Segmenter, data: SegmentationData, predictions: String? = nil, perImage: Bool = false,
                                progress: Bool = false) throws -> (confusion: ConfusionMatrix, images: Int,
                                                                   perImage: [(name: String, confusion: ConfusionMatrix)]) {
        try data.checkSizes()
        if let predictions {
            do { try FileManager.default.createDirectory(atPath: predictions, withIntermediateDirectories: true) } catch {
                throw DataError(predictions, "cannot create: \(error.localizedDescription)")
            }
        }
        var confusion = ConfusionMatrix(classes: model.config.numClasses)
        var images: [(name: String, confusion: ConfusionMatrix)] = []
        let bar = ProgressBar("segment eval", total: Double(data.samples.count), unit: "img", enabled: progress)
        // A failure midway (a label id out of range) takes back the predictions already written.
        var written: [String] = []
        func removeWritten() { for p in written { unlink(p) } }
        for (i, sample) in data.samples.enumerated() {
            let image: Image, labels: LabelMap
            do { (image, labels) = try SegmentationData.load(sample, classes: model.config.numClasses) } catch {
                removeWritten()
                throw error
            }
            let predicted = model.predict(image.tensor())
            var own = ConfusionMatrix(classes: model.config.numClasses)
            own.add(truth: labels.ids, predicted: predicted)
            confusion.add(own)
            if perImage { images.append((URL(fileURLWithPath: sample.imagePath).lastPathComponent, own)) }
            if let predictions {
                let name = URL(fileURLWithPath: sample.imagePath).lastPathComponent
                let colours = Cityscapes.colorize(LabelMap(width: image.width, height: image.height, ids: predicted))
                do { try PNG.write(colours, to: predictions + "/" + name, fast: true, durable: false) } catch {
                    removeWritten()
                    throw error
                }
                written.append(predictions + "/" + name)
            }
            bar.update(Double(i + 1))
        }
        bar.finish()
        return (confusion, data.samples.count, images)
    }
}
