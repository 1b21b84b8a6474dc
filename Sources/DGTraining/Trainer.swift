import DGAutograd
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Which network learns. The other networks are frozen.
public enum TrainingTarget: String, Sendable {
    /// DreamBooth-style fine-tuning of the UNet (U^P -> U^S).
    case unet
    /// A ControlNet on top of a frozen UNet.
    case controlnet
}

public enum TrainingError: Error, CustomStringConvertible {
    /// A loss or gradient that is NaN or infinite.
    case nonFinite(step: Int, what: String)
    case badInput(String)
    case resume(String)

    public var description: String {
        switch self {
        case .nonFinite(let step, let what): return "stopped at step \(step + 1): \(what)"
        case .badInput(let m), .resume(let m): return m
        }
    }
}

/// Everything that decides the numbers a run produces. Stored in every checkpoint; a resumed
/// run must agree with it (except where noted), or it would not continue the same trajectory.
public struct TrainingOptions: Sendable, RunOptions {
    public var learningRate: Double
    public var schedule: LRSchedule
    public var batchSize = 1
    public var gradientAccumulation = 1
    /// Global gradient-norm clipping (diffusers' max_grad_norm, 1.0 by default); nil: none.
    public var maxGradNorm: Float? = 1
    /// Recompute each UNet/ControlNet block in backward (less memory, ~1.3x the time). Does
    /// not change the trajectory, so a resumed run may switch it.
    public var gradientCheckpointing = false
    public var seed: UInt64 = 0
    public var adamBeta1: Float = 0.9
    public var adamBeta2: Float = 0.999
    public var adamEpsilon: Float = 1e-8
    public var weightDecay: Float = 1e-2
    /// AdamW's moments in f32, or 8-bit blockwise as bitsandbytes' AdamW8bit.
    public var optimizerState: AdamW.StateStorage = .f32
    /// Storage type of the frozen networks' weights (f32, or bf16 / f16 to halve them).
    public var frozenDType: DType = .f32
    /// UNet training: LoRA adapters learn and the whole UNet is frozen; nil: every weight learns.
    public var lora: LoRASettings?
    /// bf16 autocast of the linear layers' and convolutions' forward products (`Autocast`);
    /// gradients, weights and optimizer state stay float32.
    public var mixedPrecisionBF16 = false

    public init(learningRate: Double, schedule: LRSchedule) {
        self.learningRate = learningRate
        self.schedule = schedule
    }

    public var totalSteps: Int { schedule.totalSteps }

    public func validate() throws {
        func bad(_ m: String) -> TrainingError { .badInput(m) }
        guard learningRate > 0, learningRate.isFinite else { throw bad("the learning rate must be positive, not \(learningRate)") }
        guard schedule.totalSteps > 0 else { throw bad("the number of steps must be positive, not \(schedule.totalSteps)") }
        guard schedule.warmupSteps >= 0 else { throw bad("warm-up steps must not be negative") }
        guard batchSize > 0 else { throw bad("the batch size must be positive, not \(batchSize)") }
        guard gradientAccumulation > 0 else { throw bad("gradient accumulation must be positive, not \(gradientAccumulation)") }
        if let m = maxGradNorm, !(m > 0) { throw bad("the clipping norm must be positive, not \(m)") }
        guard [.f32, .bf16, .f16].contains(frozenDType) else { throw bad("frozen weights can be stored as f32, bf16 or f16, not \(frozenDType.name)") }
        if let lora, !(lora.rank > 0 && lora.alpha > 0 && lora.alpha.isFinite) {
            throw bad("a LoRA needs a positive rank and alpha, not rank \(lora.rank), alpha \(lora.alpha)")
        }
        if schedule.kind == .polynomial && schedule.endLearningRate > learningRate {
            throw bad("the polynomial schedule's end rate \(schedule.endLearningRate) exceeds the learning rate \(learningRate)")
        }
    }

    /// The options as stored in checkpoints (and compared on resume).
    public var json: JSON {
        [
            "learning_rate": .double(learningRate), "lr_scheduler": .string(schedule.kind.rawValue),
            "lr_warmup_steps": .int(schedule.warmupSteps), "max_train_steps": .int(schedule.totalSteps),
            "lr_num_cycles": .double(schedule.cycles), "lr_end": .double(schedule.endLearningRate), "lr_power": .double(schedule.power),
            "train_batch_size": .int(batchSize), "gradient_accumulation_steps": .int(gradientAccumulation),
            "max_grad_norm": maxGradNorm.map { .double(Double($0)) } ?? .null,
            "gradient_checkpointing": .bool(gradientCheckpointing), "seed": .string(String(seed)),
            "adam_beta1": .double(Double(adamBeta1)), "adam_beta2": .double(Double(adamBeta2)),
            "adam_epsilon": .double(Double(adamEpsilon)), "adam_weight_decay": .double(Double(weightDecay)),
            "frozen_dtype": .string(frozenDType.name),
            "lora": lora.map { ["rank": .int($0.rank), "alpha": .double(Double($0.alpha)), "targets": .string($0.targets.rawValue)] } ?? .null,
            "mixed_precision": .string(mixedPrecisionBF16 ? "bf16" : "no"),
            "optimizer": .string(optimizerState.rawValue),
        ]
    }

    /// The AdamW these options describe, over `parameters`.
    public func makeOptimizer(_ parameters: [(name: String, parameter: Parameter)]) -> AdamW {
        AdamW(parameters.map(\.parameter), learningRate: learningRate, beta1: Double(typed: adamBeta1), beta2: Double(typed: adamBeta2),
              eps: Double(typed: adamEpsilon), weightDecay: Double(typed: weightDecay), stateStorage: optimizerState)
    }

    /// The differences with a checkpoint's options that would change the trajectory.
    public func conflicts(with stored: JSON) -> [String] {
        var free: Set<String> = ["gradient_checkpointing"]
        if !schedule.dependsOnTotal { free.insert("max_train_steps") }
        var out: [String] = []
        // Checkpoints written before an option existed ran with its default.
        let defaults: [String: JSON] = ["mixed_precision": "no", "optimizer": .string(AdamW.StateStorage.f32.rawValue)]
        for (key, value) in json.objectPairs ?? [] where !free.contains(key) {
            let old = stored[key] ?? defaults[key] ?? .null
            if old != value { out.append("\(key) \(old.compact) -> \(value.compact)") }
        }
        return out
    }
}

/// The adapters a LoRA run trains (PEFT's LoraConfig: r, lora_alpha, target_modules).
public struct LoRASettings: Sendable {
    public var rank: Int
    public var alpha: Float
    public var targets: LoRATargets

    public init(rank: Int, alpha: Float, targets: LoRATargets) {
        (self.rank, self.alpha, self.targets) = (rank, alpha, targets)
    }
}

/// One optimizer update's numbers.
public struct StepResult: Sendable {
    /// Optimizer updates done after this one (1-based step number).
    public var step: Int
    /// Mean loss over the accumulated micro-batches.
    public var loss: Double
    public var learningRate: Double
    /// Global gradient norm before clipping.
    public var gradientNorm: Float
    /// Parts of the loss and other numbers worth logging (the autoencoder's terms).
    public var terms: [(String, Double)] = []
}

/// The training loop of diffusers' train_controlnet.py / train_dreambooth.py, one optimizer
/// update at a time: latents from the frozen VAE's sampled posterior x scaling_factor,
/// Gaussian noise, timesteps uniform in [0, T), noisy latents by the forward process, the
/// (ControlNet-steered) UNet's noise prediction, MSE against the noise (epsilon objective),
/// backward (divided by the accumulation count), clipping, AdamW, the learning-rate schedule.
///
/// Randomness is counter-based: the noise, posterior sample and timestep of the run's sample
/// s are pure functions of (seed, s). Together with a deterministic batch source and
/// deterministic kernels, the weights after step k depend only on the options and the data,
/// not on how many times the run was stopped and resumed.
public final class DiffusionTrainer: ComponentTrainer {
    public let target: TrainingTarget
    public let options: TrainingOptions
    public let unet: UNet2DConditionModel
    public let controlnet: ControlNetModel?
    public let vae: AutoencoderKL
    public let textEncoder: CLIPTextModel
    public let tokenizer: CLIPTokenizer
    public let noiseSchedule: NoiseSchedule
    public let source: TrainingBatchSource
    /// Forward, backward, clipping and AdamW on prepared inputs.
    public let update: DiffusionUpdate
    public var optimizer: AdamW { update.optimizer }
    /// Optimizer updates done.
    public private(set) var step = 0
    /// The network that learns (the ControlNet, or the UNet).
    public var trainable: Module { controlnet ?? unet }
    var trainableParameters: [(name: String, parameter: Parameter)] { update.trainableParameters }
    private var textCache: [String: Tensor] = [:]

    /// Builds the trainer: freezes the other networks (no gradients, optionally 16-bit
    /// storage), and prepares AdamW over the trainable network's parameters.
    public init(target: TrainingTarget, unet: UNet2DConditionModel, controlnet: ControlNetModel?, vae: AutoencoderKL,
                textEncoder: CLIPTextModel, tokenizer: CLIPTokenizer, noiseSchedule: NoiseSchedule,
                source: TrainingBatchSource, options: TrainingOptions) throws {
        try options.validate()
        if target == .controlnet && controlnet == nil { throw TrainingError.badInput("ControlNet training needs a ControlNet") }
        if target == .controlnet && options.lora != nil { throw TrainingError.badInput("LoRA adapters train on the UNet, not on a ControlNet") }
        self.target = target
        self.options = options
        self.unet = unet
        self.controlnet = target == .controlnet ? controlnet : nil
        self.vae = vae
        self.textEncoder = textEncoder
        self.tokenizer = tokenizer
        self.noiseSchedule = noiseSchedule
        self.source = source
        for m in [vae, textEncoder] as [Module] { freeze(m, storage: options.frozenDType) }
        update = try DiffusionUpdate(unet: unet, controlnet: self.controlnet, options: options)
    }

    /// The rate the next update uses.
    public var currentLearningRate: Double { options.schedule.learningRate(step: step, base: options.learningRate) }

    /// One optimizer update over `gradientAccumulation` micro-batches. On a non-finite loss or
    /// gradient it throws before touching the weights; the trainer should then be discarded
    /// (its data source has moved on) and the run resumed from a checkpoint if at all.
    @discardableResult
    public func trainStep() throws -> StepResult {
        let lr = currentLearningRate
        let (loss, norm) = try accumulateGradients()
        update.apply(learningRate: lr)
        step += 1
        return StepResult(step: step, loss: loss, learningRate: lr, gradientNorm: norm)
    }

    /// The gradient phase of an update: forward and backward of every micro-batch, then
    /// clipping. Returns the mean loss and the norm before clipping.
    func accumulateGradients() throws -> (loss: Double, norm: Float) {
        let accumulation = options.gradientAccumulation
        var lossSum = 0.0
        for a in 0..<accumulation {
            let batch = try source.next(options.batchSize)
            let firstSample = (step * accumulation + a) * options.batchSize
            try check(batch)
            let loss = update.accumulate(prepare(batch, firstSample: firstSample), scale: 1 / Float(accumulation))
            guard loss.isFinite else {
                optimizer.zeroGrad()
                throw TrainingError.nonFinite(step: step, what: "the loss is \(loss)")
            }
            lossSum += Double(loss)
        }
        return (lossSum / Double(accumulation), try update.clippedNorm(step: step))
    }

    /// The diffusion inputs of a batch: noisy latents, the noise, the timesteps. Sample s of the
    /// run (counting every sample of every micro-batch) draws its posterior sample, noise and
    /// timestep from streams keyed by s, so they do not depend on how samples are grouped
    /// into batches or on where a run was resumed.
    public func diffusionInputs(_ pixels: Tensor, firstSample: Int) -> (noisy: Tensor, noise: Tensor, timesteps: [Int]) {
        Autograd.noGrad {
            let posterior = DiagonalGaussian(moments: vae.encodeMoments(Var(pixels)).value)
            let shape = posterior.mean.shape
            let per = posterior.mean.count / shape[0]
            let seed = options.seed
            var sampleNoise: [Float] = [], noise: [Float] = [], timesteps: [Int] = []
            for b in 0..<shape[0] {
                let s = UInt64(firstSample + b)
                sampleNoise += RandomStream(seed: seed, 1, s).normals(per)
                noise += RandomStream(seed: seed, 2, s).normals(per)
                timesteps += RandomStream(seed: seed, 3, s).integers(1, below: noiseSchedule.trainTimesteps)
            }
            let latents = Kernels.scale(posterior.sample(noise: Tensor(shape: shape, floats: sampleNoise)), vae.scaling_factor)
            let eps = Tensor(shape: shape, floats: noise)
            return (noiseSchedule.addNoise(latents, noise: eps, timesteps: timesteps), eps, timesteps)
        }
    }

    /// A batch as the networks take it: text features, noisy latents, the noise, timesteps.
    public func prepare(_ batch: TrainingBatch, firstSample: Int) -> DiffusionInputs {
        let text = encode(batch.captions)
        let (noisy, noise, t) = diffusionInputs(batch.pixels, firstSample: firstSample)
        return DiffusionInputs(noisy: noisy, noise: noise, timesteps: t.map(Float.init), text: text,
                               condition: controlnet == nil ? nil : batch.condition)
    }

    /// The loss on `batch` with the noise of samples `firstSample...`, without training:
    /// a fixed yardstick (held-out batch, fixed noise) for comparing weights.
    public func evaluateLoss(_ batch: TrainingBatch, firstSample: Int) throws -> Double {
        try check(batch)
        let inputs = prepare(batch, firstSample: firstSample)
        return Double(Autograd.noGrad { update.loss(inputs) }.value.floats[0])
    }

    func check(_ batch: TrainingBatch) throws {
        let s = batch.pixels.shape
        guard s.count == 4, s[0] > 0, s[1] == vae.in_channels else {
            throw TrainingError.badInput("the data gives pixel batches of shape \(s), expected [B, \(vae.in_channels), H, W]")
        }
        let multiple = 8 << unet.num_upsamplers
        guard s[2] % multiple == 0, s[3] % multiple == 0 else {
            throw TrainingError.badInput("images of \(s[3])x\(s[2]) pixels: both sides must be multiples of \(multiple) for this UNet")
        }
        guard batch.captions.count == s[0] else { throw TrainingError.badInput("the data gives \(batch.captions.count) captions for \(s[0]) images") }
        if let controlnet {
            guard let c = batch.condition else { throw TrainingError.badInput("ControlNet training needs label maps, the data gives none") }
            guard c.shape == [s[0], controlnet.conditioning_channels, s[2], s[3]] else {
                throw TrainingError.badInput("the condition has shape \(c.shape), expected [\(s[0]), \(controlnet.conditioning_channels), \(s[2]), \(s[3])]")
            }
        }
    }

    /// Text features of the captions; a caption's features are computed once (the encoder is frozen).
    func encode(_ captions: [String]) -> Tensor {
        let rows = captions.map { caption -> Tensor in
            if let hit = textCache[caption] { return hit }
            let t = encodePrompts([caption], tokenizer: tokenizer, textEncoder: textEncoder)
            if textCache.count >= 4096 { textCache.removeAll() }
            textCache[caption] = t
            return t
        }
        return rows.count == 1 ? rows[0] : Kernels.concat(rows, axis: 0)
    }

    // MARK: checkpoints

    /// Writes everything needed to continue exactly from here into one native file,
    /// atomically (see `TrainerState.save`).
    public func saveCheckpoint(to path: String, extra: JSON = .object([])) throws {
        try state.save(to: path, step: step, extra: extra)
    }

    /// Restores a checkpoint written by `saveCheckpoint`; returns its training state. Checks
    /// that the options and the data agree with it first, and changes nothing unless all of
    /// the checkpoint reads back intact.
    @discardableResult
    public func restore(from path: String) throws -> JSON { try state.restore(from: path, step: &step) }

    var state: TrainerState {
        // A LoRA run's checkpoints hold the adapters only; the UNet's config still identifies the
        // base they belong to.
        TrainerState(name: modelName, className: options.lora != nil ? "LoRA" : target == .controlnet ? "ControlNetModel" : "UNet2DConditionModel",
                     config: target == .controlnet ? controlnet!.config : unet.config,
                     weights: options.lora != nil ? trainableParameters : trainable.namedParameters(),
                     parameters: trainableParameters, optimizer: optimizer, options: options, source: source)
    }

    public var modelName: String { options.lora != nil ? "unet_lora" : target.rawValue }

    public var totalSteps: Int { options.totalSteps }

    /// A LoRA run exports diffusers' `pytorch_lora_weights.safetensors`, the name
    /// `load_lora_weights(OUT)` looks for.
    public func modelFileName(format: OutputFormat) -> String {
        options.lora != nil ? LoRAFile.diffusersFileName : defaultModelFileName(format: format)
    }

    public func exportComponent() throws -> Component {
        try Component(model: trainable, config: target == .controlnet ? controlnet!.config : unet.config)
    }

    public func export(to path: String, format: OutputFormat) throws {
        guard let lora = options.lora else { return try exportComponent(to: path, format: format) }
        try LoRAFile(format: .diffusers, layers: unet.loraFileLayers(component: "unet", alpha: lora.alpha)).write(to: path, format: .diffusers)
    }
}

/// Freezes a network: no gradients, and weights stored as `storage` (16-bit types are widened
/// to float32 at each use; see `Parameter.v`).
public func freeze(_ model: Module, storage: DType = .f32) {
    for (_, p) in model.namedParameters() {
        p.requiresGrad = false
        p.grad = nil
        if let v = p.value, v.dtype != storage, v.dtype.isFloatingPoint { p.value = v.converted(to: storage) }
    }
}

/// The inputs of one diffusion training micro-batch, ready for the networks.
public struct DiffusionInputs {
    public var noisy: Tensor
    /// The target (epsilon objective).
    public var noise: Tensor
    public var timesteps: [Float]
    /// Text features [B, 77, cross_attention_dim].
    public var text: Tensor
    /// One-hot label maps [B, C, H, W] for the ControlNet; nil when the UNet trains alone.
    public var condition: Tensor?

    public init(noisy: Tensor, noise: Tensor, timesteps: [Float], text: Tensor, condition: Tensor?) {
        self.noisy = noisy
        self.noise = noise
        self.timesteps = timesteps
        self.text = text
        self.condition = condition
    }
}

/// The part of a training step that costs: the (ControlNet-steered) UNet's noise prediction,
/// MSE against the noise, backward, clipping and AdamW. `DiffusionTrainer` runs it on encoded
/// batches and the training benchmarks on random inputs at SD 1.5 scale, so what the benchmarks
/// time is what a user's run executes.
public final class DiffusionUpdate {
    public let unet: UNet2DConditionModel
    /// The network that learns when given; the UNet is then frozen under it.
    public let controlnet: ControlNetModel?
    public let optimizer: AdamW
    public let trainableParameters: [(name: String, parameter: Parameter)]
    let gradientCheckpointing: Bool
    let maxGradNorm: Float?
    let mixedPrecisionBF16: Bool

    public init(unet: UNet2DConditionModel, controlnet: ControlNetModel?, options: TrainingOptions) throws {
        self.unet = unet
        self.controlnet = controlnet
        if controlnet != nil || options.lora != nil { freeze(unet, storage: options.frozenDType) }
        if controlnet == nil, let lora = options.lora {
            // Frozen first: the adapters attached now stay float32 and trainable.
            unet.attachLoRA(rank: lora.rank, alpha: lora.alpha, targets: lora.targets, seed: options.seed)
            trainableParameters = unet.loraParameters()
            guard !trainableParameters.isEmpty else { throw TrainingError.badInput("--lora-targets \(lora.targets.rawValue) selects no layer of this UNet") }
        } else {
            trainableParameters = (controlnet ?? unet).namedParameters()
        }
        try makeTrainable(trainableParameters)
        optimizer = options.makeOptimizer(trainableParameters)
        gradientCheckpointing = options.gradientCheckpointing
        maxGradNorm = options.maxGradNorm
        mixedPrecisionBF16 = options.mixedPrecisionBF16
    }

    /// The loss graph of one micro-batch.
    public func loss(_ inputs: DiffusionInputs) -> Var {
        Autocast.bf16(mixedPrecisionBF16) { lossGraph(inputs) }
    }

    func lossGraph(_ inputs: DiffusionInputs) -> Var {
        let gc = gradientCheckpointing
        let text = Var(inputs.text), sample = Var(inputs.noisy)
        var control: ControlResiduals?
        if let controlnet, let condition = inputs.condition {
            control = controlnet(sample, timesteps: inputs.timesteps, text: text, condition: Var(condition), checkpoint: gc)
        }
        let prediction = unet(sample, timesteps: inputs.timesteps, text: text, control: control, checkpoint: gc)
        return mseLoss(prediction, Var(inputs.noise))
    }

    /// Forward and backward of one micro-batch (gradients accumulate into the trainable
    /// parameters, scaled by `scale`); returns the unscaled loss.
    public func accumulate(_ inputs: DiffusionInputs, scale: Float = 1) -> Float {
        let loss = loss(inputs)
        let value = loss.value.floats[0]
        // A non-finite loss would only spread NaN through every gradient: stop before backward.
        guard value.isFinite else { return value }
        Profiler.measure("(backward pass)") { Autograd.backward(scale == 1 ? loss : loss * scale) }
        return value
    }

    /// The global gradient norm before clipping (gradients clipped to the options' maximum);
    /// throws on a non-finite norm before any weight changes.
    public func clippedNorm(step: Int) throws -> Float {
        try clippedGradientNorm(optimizer, maxNorm: maxGradNorm, step: step)
    }

    /// AdamW at `learningRate`, gradients cleared.
    public func apply(learningRate: Double) {
        Profiler.measure("(optimizer)") { applyUpdate(optimizer, learningRate: learningRate) }
    }
}
