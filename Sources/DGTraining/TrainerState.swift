import DGAutograd
import DGBase
import DGCheckpoint
import DGLayers
import DGModels
import DGTensor
import Foundation

/// What `TrainingRun` drives: one network learning by AdamW from a batch source, with
/// checkpoints it can continue from exactly.
public protocol RunnableTrainer: AnyObject {
    /// Optimizer updates done.
    var step: Int { get }
    /// Optimizer updates of the whole run.
    var totalSteps: Int { get }
    /// The trained model's component name ("unet", "controlnet", "vae", "segmenter"): the
    /// checkpoint component and the exported model's file or folder name.
    var modelName: String { get }
    @discardableResult func trainStep() throws -> StepResult
    func saveCheckpoint(to path: String, extra: JSON) throws
    @discardableResult func restore(from path: String) throws -> JSON
    /// Writes the trained model, atomically, as it stands at the end of the run.
    func export(to path: String, format: OutputFormat) throws
    /// The exported model's file or folder name in the run folder.
    func modelFileName(format: OutputFormat) -> String
}

extension RunnableTrainer {
    public func modelFileName(format: OutputFormat) -> String { defaultModelFileName(format: format) }

    /// `modelName`, with `.dginstyle` for a native file.
    public func defaultModelFileName(format: OutputFormat) -> String { modelName + (format == .native ? ".dginstyle" : "") }
}

/// The diffusers-model trainers export one component (a diffusers model folder or a native file).
protocol ComponentTrainer: RunnableTrainer {
    func exportComponent() throws -> Component
}

extension ComponentTrainer {
    public func export(to path: String, format: OutputFormat) throws { try exportComponent(to: path, format: format) }

    func exportComponent(to path: String, format: OutputFormat) throws {
        try Checkpoint(inMemory: [try exportComponent()]).write(to: path, format: format,
                                                                 options: WriteOptions(dtype: .f32, overwrite: true, progress: false))
    }
}

/// The settings a checkpoint records; a resumed run must agree with them.
public protocol RunOptions {
    var json: JSON { get }
    /// The differences with a checkpoint's options that would change the trajectory.
    func conflicts(with stored: JSON) -> [String]
}

/// Where a run's samples come from, as a checkpoint records it.
public protocol CheckpointedData: AnyObject {
    /// What the data is (folder, file count, sampling mode): a resumed run must see the same.
    var identity: JSON { get }
    /// Everything needed to continue from here (sampler position, generator state).
    func saveState() -> JSON
    func restoreState(_ state: JSON) throws
}

/// The checkpoint file every trainer writes: the trained network's weights (a component loadable
/// as a model; for a LoRA, its adapters), the AdamW moments, and `training_state.json` (step, options, data-source state,
/// `extra`). One implementation, so that every kind of training resumes the same way.
struct TrainerState {
    let name: String
    let className: String
    let config: JSON
    /// What the checkpoint's component holds: the network's parameters (frozen ones too, so that
    /// it loads as a model), or a LoRA's adapters.
    let weights: [(name: String, parameter: Parameter)]
    let parameters: [(name: String, parameter: Parameter)]
    let optimizer: AdamW
    let options: RunOptions
    let source: CheckpointedData

    /// One native file, written atomically.
    func save(to path: String, step: Int, extra: JSON) throws {
        let w = try NativeWriter(path: path, kind: "training-checkpoint")
        do {
            var state: JSON = [
                "format": "dginstyle-training-checkpoint", "version": 1, "target": .string(name),
                "step": .int(step), "optimizer_step": .int(optimizer.step), "options": options.json,
                "data": source.identity, "data_state": source.saveState(),
                // Sums split by thread count: another count continues only to float rounding.
                "threads": .int(Parallel.threads),
            ]
            for (k, v) in extra.objectPairs ?? [] { state.set(k, v) }
            try w.addFile("training_state.json", Array((state.pretty + "\n").utf8))
            try w.addFile(name + "/config.json", Array((config.pretty + "\n").utf8))
            w.addComponent(name, className: className)
            for (pname, p) in weights {
                let t = p.value!.contiguous()
                try t.withRawBytes { try w.addTensor(component: name, entry: TensorEntry(name: pname, dtype: t.dtype, shape: t.shape), bytes: $0) }
            }
            w.addComponent("optimizer", className: optimizer.stateStorage == .blockwise8bit ? "AdamW8bit" : "AdamW")
            for (i, (pname, _)) in parameters.enumerated() {
                for (label, moment) in [("exp_avg", optimizer.firstMoments[i]), ("exp_avg_sq", optimizer.secondMoments[i]),
                                        ("exp_avg_absmax", optimizer.firstScales[i]), ("exp_avg_sq_absmax", optimizer.secondScales[i])] {
                    guard let m = moment?.contiguous() else { continue }
                    try m.withRawBytes {
                        try w.addTensor(component: "optimizer", entry: TensorEntry(name: label + "." + pname, dtype: m.dtype, shape: m.shape), bytes: $0)
                    }
                }
            }
            try w.finish()
        } catch {
            w.abort()
            throw error
        }
    }

    /// Checks that the options, the model's config and the data agree with the checkpoint,
    /// then restores weights, moments, the data source and `step`; changes nothing unless all
    /// of it reads back intact. Returns the training state.
    func restore(from path: String, step: inout Int) throws -> JSON {
        let file = try NativeFile(path: path)
        let state: JSON
        do { state = try JSON.parse(bytes: try file.file("training_state.json")) } catch let e as FileError { throw e } catch {
            throw FileError(path, "training_state.json: \(error)")
        }
        guard state["format"]?.string == "dginstyle-training-checkpoint" else { throw FileError(path, "is not a training checkpoint") }
        guard state["target"]?.string == name else {
            throw TrainingError.resume("\(path) is a checkpoint of \(state["target"]?.string ?? "?") training, not \(name)")
        }
        let conflicts = options.conflicts(with: state["options"] ?? .null)
        if !conflicts.isEmpty {
            throw TrainingError.resume("\(path) was made with other settings (\(conflicts.joined(separator: ", "))); resume with the same ones or start a new run")
        }
        if let data = state["data"], data != source.identity {
            throw TrainingError.resume("\(path) was made on other data (\(data.compact)); this run reads \(source.identity.compact)")
        }
        guard let savedStep = state["step"]?.int, let optimizerStep = state["optimizer_step"]?.int else {
            throw FileError(path, "training_state.json has no step")
        }
        // Both sides through the same printer and parser, so equal configs compare equal.
        let saved = try JSON.parse(bytes: try file.file(name + "/config.json"))
        guard saved == (try JSON.parse(config.pretty)) else {
            throw TrainingError.resume("\(path) holds a \(name) of another configuration (\(saved.compact))")
        }
        let stored = file.source(name)
        let problems = compareToParameters(stored.entries, weights)
        guard problems.isEmpty else { throw FileError(path, "does not fit the model: \(problems.prefix(4).joined(separator: "; "))") }
        let moments = file.source("optimizer")
        let byName = Dictionary(uniqueKeysWithValues: moments.entries.map { ($0.name, $0) })
        var values: [Tensor] = [], moment: [[Tensor?]] = Array(repeating: [], count: 4)
        for (i, (pname, p)) in parameters.enumerated() {
            values.append(try stored.tensor(pname).converted(to: .f32).copied())
            // 8-bit state: U8 codes of the parameter's shape and one f32 scale per 256 elements.
            let quantized = optimizer.quantizesState(of: i)
            let blocks = optimizer.stateBlocks(of: i)
            let expected: [(String, [Int], DType)] = [("exp_avg", p.shape, quantized ? .u8 : .f32), ("exp_avg_sq", p.shape, quantized ? .u8 : .f32),
                                                      ("exp_avg_absmax", [blocks], .f32), ("exp_avg_sq_absmax", [blocks], .f32)]
            for (k, (label, shape, dtype)) in expected.enumerated() {
                var m: Tensor?
                if let e = byName[label + "." + pname] {
                    guard e.shape == shape, e.dtype == dtype, quantized || k < 2 else {
                        throw FileError(path, "optimizer state \(e.name) has shape \(e.shape) \(e.dtype.name), not \(shape) \(dtype.name)")
                    }
                    m = try moments.tensor(e.name).copied()
                }
                moment[k].append(m)
            }
            if quantized, (0..<2).contains(where: { (moment[$0].last! == nil) != (moment[$0 + 2].last! == nil) }) {
                throw FileError(path, "optimizer state of \(pname) has 8-bit moments without their block scales")
            }
        }
        try source.restoreState(state["data_state"] ?? .null)
        for ((_, p), v) in zip(parameters, values) {
            p.value = v
            p.grad = nil
        }
        optimizer.restore(step: optimizerStep, first: moment[0], second: moment[1], firstScales: moment[2], secondScales: moment[3])
        step = savedStep
        return state
    }
}

/// Makes parameters trainable: float32 values (updated in place by the optimizer), gradients
/// on, none accumulated yet.
func makeTrainable(_ parameters: [(name: String, parameter: Parameter)]) throws {
    for (name, p) in parameters {
        guard let v = p.value else { throw TrainingError.badInput("trainable parameter \(name) has no value") }
        if v.dtype != .f32 { p.value = v.converted(to: .f32) }
        p.requiresGrad = true
        p.grad = nil
    }
}

/// The global gradient norm, gradients clipped to `maxNorm` first; a non-finite norm clears the
/// gradients and stops the run before any weight changes.
func clippedGradientNorm(_ optimizer: AdamW, maxNorm: Float?, step: Int) throws -> Float {
    let norm = clipGradientNorm(optimizer.parameters, maxNorm: maxNorm ?? .infinity)
    guard norm.isFinite else {
        optimizer.zeroGrad()
        throw TrainingError.nonFinite(step: step, what: "the gradient norm is \(norm)")
    }
    return norm
}

/// One optimizer update at `learningRate`, then the gradients cleared for the next step.
func applyUpdate(_ optimizer: AdamW, learningRate: Double) {
    optimizer.learningRate = learningRate
    optimizer.update()
    optimizer.zeroGrad()
}

extension Double {
    /// The number a Float option was typed as (0.999, not 0.99900001287): PyTorch's optimizers take
    /// their hyperparameters as Python doubles.
    init(typed x: Float) { self = Double(x.description) ?? Double(x) }
}
