import DGBase
import DGCheckpoint
import DGData
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Renders validation images during a run; returns what it wrote and numbers to log.
public protocol TrainingValidator: AnyObject {
    func validate(step: Int, trainer: RunnableTrainer, directory: String) throws -> (path: String, metrics: JSON)
}

public struct RunSettings {
    /// The run's folder: checkpoints/, metrics.jsonl, loss.svg, validation/, the final model.
    public var output: String
    /// Save a checkpoint every this many updates (and always after the last); 0: only at the end.
    public var checkpointEvery = 500
    /// Checkpoints kept (the newest).
    public var keep = 3
    /// Render validation images every this many updates (and after the last); 0: never.
    public var validateEvery = 0
    /// Continue from the newest checkpoint in `output`.
    public var resume = false
    public var progress = true
    /// Shown on the progress bar and the plot.
    public var label = "train"
    /// How the final model is written: a diffusers model folder, or one native file.
    public var exportFormat: OutputFormat = .diffusers
    /// Stop after this many updates in this process without exporting, as if killed right
    /// after a checkpoint (tests of resuming).
    public var stopAfter: Int?
    /// The dataset folders the run reads: what their scans skipped is listed in
    /// skipped_samples.txt in the run folder.
    public var dataRoots: [String] = []
    /// TensorBoard event files in `output`/logs beside metrics.jsonl (`--report-to tensorboard`).
    public var tensorboard = true

    public init(output: String) { self.output = output }
}

public struct RunSummary {
    public var startStep: Int
    public var endStep: Int
    public var finished: Bool
    /// Mean loss of the last (up to) 10% of the updates this process made.
    public var recentLoss: Double?
    /// The exported model (diffusers folder or native file), once finished.
    public var model: String?
    public var seconds: Double
}

/// Drives a trainer through a whole run: resuming, checkpoints (atomic, rotated), metrics,
/// the loss plot, validation images, the final export. Every file it writes appears whole or
/// not at all, so the process may be killed at any moment and resumed with `resume`.
public final class TrainingRun {
    public let trainer: RunnableTrainer
    public let settings: RunSettings
    public let validator: TrainingValidator?
    public let store: CheckpointStore
    public let metrics: MetricsLog
    private var tensorboard: TensorBoardLog?
    /// Lines for the user (resumed from, checkpoints written); the command prints them.
    public var log: (String) -> Void = { _ in }

    public init(trainer: RunnableTrainer, settings: RunSettings, validator: TrainingValidator? = nil) {
        self.trainer = trainer
        self.settings = settings
        self.validator = validator
        store = CheckpointStore(directory: settings.output + "/checkpoints")
        metrics = MetricsLog(path: settings.output + "/metrics.jsonl")
    }

    public var modelPath: String {
        settings.output + "/" + trainer.modelFileName(format: settings.exportFormat)
    }

    public func run() throws -> RunSummary {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        } catch {
            throw FileError(settings.output, "cannot create the run folder: \(error.localizedDescription)")
        }
        let abandoned = store.removeAbandonedWrites() + removeAbandonedExports()
        if abandoned > 0 { log("removed \(abandoned) temporary file(s) or folder(s) left in \(settings.output) by a killed run") }
        if try Dataset.writeSkippedList(to: settings.output + "/skipped_samples.txt", roots: settings.dataRoots) {
            log("files the data folders could not pair or read are listed in \(settings.output)/skipped_samples.txt")
        }
        var elapsedBefore = 0.0
        if settings.resume {
            if let state = try restoreNewest() {
                elapsedBefore = state["elapsed_s"]?.double ?? 0
                log("resumed from step \(trainer.step) of \(trainer.totalSteps)")
                if let threads = state["threads"]?.int, threads != Parallel.threads {
                    log("warning: the checkpoint was made with \(threads) threads, this run uses \(Parallel.threads) (DGINSTYLE_THREADS): it continues the same run to float rounding, not bit for bit")
                }
            } else {
                log("no checkpoint in \(store.directory): starting from step 0")
            }
        } else if let last = store.list().last {
            throw TrainingError.resume("\(settings.output) already holds checkpoints (the newest: step \(last.step)); pass --resume to continue that run, or choose another output folder")
        }
        // Records up to the checkpoint's step are its history; later ones (a killed run's
        // lost steps) are about to be redone. Step 0's validation belongs to no checkpoint.
        try metrics.truncate(afterStep: trainer.step == 0 ? -1 : trainer.step)
        defer { metrics.close() }
        if settings.tensorboard { tensorboard = try TensorBoardLog(directory: settings.output + "/logs", startStep: trainer.step) }
        defer { tensorboard?.close(); tensorboard = nil }
        if trainer.step == 0 { try validate(step: 0) }

        let total = trainer.totalSteps
        let startStep = trainer.step
        let started = Date()
        let bar = ProgressBar(settings.label, total: Double(total), unit: "it", enabled: settings.progress, initial: Double(startStep))
        var losses: [Double] = []
        var smoothed: Double?
        var lastGood: String? = store.list().last?.path
        while trainer.step < total {
            if let stop = settings.stopAfter, trainer.step - startStep >= stop { break }
            let result: StepResult
            let stepStart = Date()
            do {
                result = try trainer.trainStep()
            } catch let TrainingError.nonFinite(step, what) {
                let record: JSON = ["step": .int(step + 1), "error": .string("non-finite: \(what)")]
                try? metrics.append(record)
                writePlot()
                let advice = lastGood.map { "the last good checkpoint is \($0) (weights of step \(checkpointStep($0))); lower the learning rate or check the data, then --resume" }
                    ?? "no checkpoint was written yet"
                throw TrainingError.nonFinite(step: step, what: "\(what); \(advice)")
            }
            let now = Date()
            // The update alone: validation and checkpoint writes are not part of it.
            let stepSeconds = now.timeIntervalSince(stepStart)
            losses.append(result.loss)
            smoothed = smoothed.map { 0.95 * $0 + 0.05 * result.loss } ?? result.loss
            let elapsed = elapsedBefore + now.timeIntervalSince(started)
            var record: JSON = [
                "step": .int(result.step), "loss": .double(result.loss), "lr": .double(result.learningRate),
                "grad_norm": .double(Double(result.gradientNorm)), "step_s": .double(round(stepSeconds * 1e4) / 1e4),
                "it_per_s": .double(round(1 / max(stepSeconds, 1e-9) * 1e4) / 1e4), "elapsed_s": .double(round(elapsed * 1e3) / 1e3),
            ] as JSON
            for (k, v) in result.terms { record.set(k, .double(v)) }
            try metrics.append(record)
            try tensorboard?.scalars(record, prefix: "train")
            bar.update(Double(result.step), note: String(format: "loss %.4f (avg %.4f) lr %.2e", result.loss, smoothed!, result.learningRate))
            let step = result.step
            let last = step == total
            if settings.validateEvery > 0, step % settings.validateEvery == 0 || last { try validate(step: step) }
            if (settings.checkpointEvery > 0 && step % settings.checkpointEvery == 0) || last {
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
            try export()
            writePlot()
        }
        let tail = losses.suffix(max(1, losses.count / 10))
        return RunSummary(startStep: startStep, endStep: trainer.step, finished: finished,
                          recentLoss: tail.isEmpty ? nil : tail.reduce(0, +) / Double(tail.count),
                          model: finished ? modelPath : nil, seconds: Date().timeIntervalSince(started))
    }

    /// Validation images of the current weights (step 0: the untrained baseline).
    func validate(step: Int) throws {
        guard settings.validateEvery > 0, let validator else { return }
        let dir = settings.output + "/validation"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (path, numbers) = try validator.validate(step: step, trainer: trainer, directory: dir)
        var record: JSON = ["step": .int(step), "validation": .string(URL(fileURLWithPath: path).lastPathComponent)]
        for (k, v) in numbers.objectPairs ?? [] { record.set(k, v) }
        try metrics.append(record)
        if let tensorboard {
            try tensorboard.scalars(record, prefix: "validation")
            if path.hasSuffix(".png"), let header = try? PNG.header(path), let png = FileManager.default.contents(atPath: path) {
                try tensorboard.image("validation", png: [UInt8](png), width: header.width, height: header.height, step: step)
            }
        }
        log("validation at step \(step): \(path)\(numbers.objectPairs.map { $0.isEmpty ? "" : " " + $0.map { "\($0.0) \($0.1.compact)" }.joined(separator: ", ") } ?? "")")
    }

    func checkpointStep(_ path: String) -> Int {
        store.list().first { $0.path == path }?.step ?? -1
    }

    func restoreNewest() throws -> JSON? { try store.restoreNewest(log: log, trainer.restore(from:)) }

    func writePlot() { metrics.writeLossPlot(to: settings.output + "/loss.svg", title: "\(settings.label): training loss") }

    /// What an export killed midway leaves: its staging folder or file, and the previous
    /// model it was replacing (the export is redone on resume).
    func removeAbandonedExports() -> Int {
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        var n = 0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: settings.output)) ?? []
        where entry.hasPrefix("." + name + ".tmp-") {
            if (try? FileManager.default.removeItem(atPath: settings.output + "/" + entry)) != nil { n += 1 }
        }
        return n
    }

    /// The trained network, as a diffusers model folder or a native file.
    public func export() throws {
        try trainer.export(to: modelPath, format: settings.exportFormat)
        log("wrote \(modelPath)")
    }
}
