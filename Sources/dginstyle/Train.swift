import ArgumentParser
import DGAutograd
import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import DGTraining
import Foundation

extension LRScheduleKind: ExpressibleByArgument {}
extension LoRATargets: ExpressibleByArgument {}

/// What both training commands share: schedule, optimizer, precision, checkpoints.
enum ReportTo: String, ExpressibleByArgument, CaseIterable {
    case tensorboard, none
}

extension AdamW.StateStorage: ExpressibleByArgument {}

enum MixedPrecision: String, ExpressibleByArgument, CaseIterable {
    case no, bf16
}

struct TrainingArguments: ParsableArguments {
    @Option(help: "Stable Diffusion pipeline: a diffusers folder, an LDM single file or a native file.")
    var pipeline: String

    @Option(help: "Run folder: checkpoints/, metrics.jsonl, loss.svg, the trained model.")
    var out: String

    @Option(help: "Optimizer updates.")
    var steps = 1000

    @Option(help: "Side of the square training crops, in pixels (a multiple of 64 for SD 1.5).")
    var resolution = 512

    @Option(help: "Images per micro-batch.")
    var batchSize = 1

    @Option(name: .customLong("grad-accum"), help: "Micro-batches per update (gradient accumulation).")
    var gradAccum = 1

    @Option(help: "Learning-rate schedule: constant, constant_with_warmup, linear, cosine, polynomial.")
    var lrScheduler: LRScheduleKind = .constant

    @Option(help: "Warm-up updates (linear from 0).")
    var lrWarmupSteps = 0

    @Option(help: "cosine: periods of the cosine over the decay (0.5 = one half-cosine to 0).")
    var lrNumCycles = 0.5

    @Option(help: "polynomial: power of the decay.")
    var lrPower = 1.0

    @Option(help: "polynomial: rate at the last step.")
    var lrEnd = 1e-7

    @Option(help: "Clip the global gradient norm to this (0: no clipping).")
    var maxGradNorm: Float = 1

    @Option(help: "AdamW decoupled weight decay.")
    var adamWeightDecay: Float = 1e-2

    @Option(help: ArgumentHelp("adamw, or adamw8bit: AdamW's two moments kept in 8 bits, blockwise, as bitsandbytes' AdamW8bit (diffusers' --use_8bit_adam, kohya's --optimizer_type AdamW8bit).",
                               discussion: "8 bytes of optimizer state per trained weight become 2 (SD 1.5's ControlNet: 2.9 GB -> 0.7 GB; a whole UNet: 6.9 GB -> 1.7 GB). The step is computed in f32; tensors under 4096 elements keep f32 moments."))
    var optimizer: AdamW.StateStorage = .f32

    @Option(help: "AdamW beta1.")
    var adamBeta1: Float = 0.9

    @Option(help: "AdamW beta2.")
    var adamBeta2: Float = 0.999

    @Option(help: "AdamW epsilon.")
    var adamEpsilon: Float = 1e-8

    @Flag(help: "Recompute UNet/ControlNet blocks in backward instead of keeping their activations (less memory, ~30% more time).")
    var gradientCheckpointing = false

    @Option(help: "Storage of the frozen networks' weights: f32, or bf16 / f16 to halve their memory.")
    var frozenDtype: DType = .f32

    @Option(help: ArgumentHelp("no, or bf16: linear layers and convolutions read their weights rounded to bf16 in the forward pass (accelerate's --mixed_precision bf16); gradients, weights and AdamW state stay f32.",
                               discussion: "The products run in bf16 (vdpbf16ps, activations rounded too) where the CPU has AVX512-BF16 and DGINSTYLE_BF16 selects them (auto: where measured faster), else in f32 on the rounded weights. Where they run in bf16, so do the attention's two products."))
    var mixedPrecision: MixedPrecision = .no

    @Option(help: "Seed of the noise, the timesteps and the data sampler.")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Scale each training crop by a factor drawn uniformly from LO,HI (one number: fixed) (default: finetune-unet 0.5,2 as DGInStyle's DreamBooth; train-controlnet 1).",
                               discussion: "The factor scales the stored image (--data and --images alike): 0.5,1 on 512x256 renders at --resolution 128 gives crops from the 256x128 view to twice as close; below 1 a crop sees more than --resolution pixels of the image, shrunk."))
    var zoom: String?

    @Option(help: "Checkpoint every this many updates (and after the last); 0: only at the end.")
    var checkpointEvery = 500

    @Option(help: "Checkpoints kept (the newest).")
    var keep = 3

    @Flag(help: "Continue from the newest checkpoint in --out (exactly: the same weights as an uninterrupted run).")
    var resume = false

    @Option(help: "Format of the trained model: diffusers (a model folder) or native (one file).")
    var format: OutputFormat = .diffusers

    @Flag(help: "No progress bar.")
    var quiet = false

    @Option(help: "Also log to: tensorboard (event files in OUT/logs: scalars and validation images, for `tensorboard --logdir OUT`) or none.")
    var reportTo: ReportTo = .tensorboard

    func validate() throws {
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard resolution > 0, resolution % 8 == 0 else { throw ValidationError("--resolution must be a positive multiple of 8") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard gradAccum > 0 else { throw ValidationError("--grad-accum must be positive") }
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must not be negative") }
        guard keep > 0 else { throw ValidationError("--keep must be at least 1") }
        guard format == .diffusers || format == .native else { throw ValidationError("--format is diffusers or native") }
        guard maxGradNorm >= 0 else { throw ValidationError("--max-grad-norm must not be negative") }
        _ = try zoomRange(default: "1")
    }

    /// `--zoom`, or the command's own default when it is not given.
    func zoomRange(default fallback: String) throws -> ClosedRange<Double> {
        let zoom = self.zoom ?? fallback
        let parts = zoom.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(parts.count), let lo = parts.first!, let hi = parts.last!, lo > 0, lo <= hi, hi.isFinite else {
            throw ValidationError("--zoom is a positive factor or a range LO,HI with LO <= HI, not \(zoom)")
        }
        return lo...hi
    }

    func options(learningRate: Double) -> TrainingOptions {
        var o = TrainingOptions(learningRate: learningRate, schedule: LRSchedule(
            lrScheduler, warmupSteps: lrWarmupSteps, totalSteps: steps, cycles: lrNumCycles, endLearningRate: lrEnd, power: lrPower))
        o.batchSize = batchSize
        o.gradientAccumulation = gradAccum
        o.maxGradNorm = maxGradNorm > 0 ? maxGradNorm : nil
        o.gradientCheckpointing = gradientCheckpointing
        o.seed = seed
        o.adamBeta1 = adamBeta1
        o.adamBeta2 = adamBeta2
        o.adamEpsilon = adamEpsilon
        o.weightDecay = adamWeightDecay
        o.optimizerState = optimizer
        o.frozenDType = frozenDtype
        o.mixedPrecisionBF16 = mixedPrecision == .bf16
        return o
    }

    func settings(label: String, validateEvery: Int = 0, data: [String] = []) -> RunSettings {
        var s = RunSettings(output: out)
        s.dataRoots = data
        s.checkpointEvery = checkpointEvery
        s.keep = keep
        s.validateEvery = validateEvery
        s.resume = resume
        s.progress = !quiet
        s.label = label
        s.exportFormat = format
        s.tensorboard = reportTo == .tensorboard
        return s
    }

    /// The pipeline's models and noise schedule (the SD 1.5 scheduler when it has none).
    func loadPipeline() throws -> (LoadedPipeline, NoiseSchedule) {
        let ck = try Checkpoint.open(pipeline)
        let models = try LoadedPipeline(ck)
        for (name, present) in [("unet", models.unet != nil), ("vae", models.vae != nil), ("text_encoder", models.textEncoder != nil),
                                ("tokenizer", models.tokenizer != nil)] where !present {
            throw FileError(pipeline, "has no \(name); training needs the UNet, the VAE, the text encoder and the tokenizer")
        }
        let schedulerConfig = ck.file("scheduler/scheduler_config.json") ?? Array(DefaultConfigs.schedulerText.utf8)
        return (models, try NoiseSchedule(config: try JSON.parse(bytes: schedulerConfig)))
    }
}

func runTraining(_ run: TrainingRun, quiet: Bool) throws {
    run.log = { if !quiet { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } }
    let summary = try run.run()
    var line = "trained steps \(summary.startStep + 1)-\(summary.endStep) of \(run.trainer.totalSteps)"
    line += String(format: " in %.1f s", summary.seconds)
    if let l = summary.recentLoss { line += String(format: ", recent loss %.5f", l) }
    if let m = summary.model { line += "; model: \(m)" }
    if summary.startStep == summary.endStep { line = "already trained (\(summary.endStep) steps); model: \(summary.model ?? "-")" }
    emit(line)
}

struct FinetuneUNet: ParsableCommand {
    /// DGInStyle's DreamBooth resize ratios of the native image (0.5 to 2), as a --zoom range.
    static let referenceZoom = "0.5,2"

    static let configuration = CommandConfiguration(
        commandName: "finetune-unet",
        abstract: "DreamBooth-style fine-tuning of the UNet on all source images (U^P -> U^S).",
        discussion: """
        Every image of --images (DIR/images/*.png if that folder exists, else DIR/*.png) is resized by a \
        factor drawn from --zoom (default 0.5,2: DGInStyle's DreamBooth ratios of the native frame, zooming \
        out as well as in) and cropped to a random --resolution square, in a new random order each epoch. The \
        VAE and the text encoder are frozen; latents are the VAE posterior's sample x scaling_factor, the \
        objective is the noise (epsilon) at timesteps uniform in [0, 1000), the caption is --prompt (the \
        paper: empty). The fine-tuned UNet is written to OUT/unet (a diffusers model folder, or \
        OUT/unet.dginstyle with --format native); pass it to train-controlnet --unet.

        With --lora RANK only LoRA adapters learn (PEFT's initialisation: A Kaiming-uniform, B zero; \
        scaling --lora-alpha / RANK) on the layers --lora-targets names, the UNet frozen (--frozen-dtype \
        bf16 halves it); the run writes OUT/pytorch_lora_weights.safetensors (diffusers' LoRA layout, \
        which pipe.load_lora_weights(OUT) reads), for train-controlnet --lora-unet, sample/generate \
        --unet-lora, or lora merge. Checkpoints hold only the adapters and their AdamW moments.

        With --data instead of --images this is text-to-image training (how the miniature's base UNet \
        U^P is made): random crops of a labelled dataset, each captioned with the classes of its label \
        map as ControlNet training does ("road sidewalk building sky car"); with --weather-prob P that \
        caption becomes "A city street scene with <classes>, in <weather> weather." with the image's true \
        weather from DATA/synth.json, and with --empty-prompt-prob Q it is "" (for classifier-free guidance).
        """)

    @OptionGroup var common: TrainingArguments

    @Option(help: "Folder of source-domain images (GTA5 layout or plain), all captioned with --prompt.")
    var images: String?

    @Option(help: "Labelled dataset (GTA5 or Cityscapes layout): crops captioned with their classes (text-to-image training).")
    var data: String?

    @Option(help: "Instance prompt (--images).")
    var prompt = ""

    @Option(help: "--data: probability of the weather sentence in a caption (the image's weather, from DATA/synth.json).")
    var weatherProb = 0.0

    @Option(help: "--data: probability of training a crop with the empty caption.")
    var emptyPromptProb = 0.0

    @Option(help: "Learning rate (default: DGInStyle's 2e-6; with --lora, 1e-4 as diffusers' DreamBooth-LoRA script).")
    var lr: Double?

    @Option(help: "Train LoRA adapters of this rank instead of every weight (the UNet stays frozen).")
    var lora: Int?

    @Option(help: "LoRA alpha (scaling alpha/rank); default: the rank.")
    var loraAlpha: Float?

    @Option(help: "Layers that get adapters: attn (to_q, to_k, to_v, to_out.0, proj_in, proj_out), attn+ff, all-linear, all (convolutions too).")
    var loraTargets: LoRATargets = .attn

    func validate() throws {
        guard (images == nil) != (data == nil) else { throw ValidationError("give exactly one of --images and --data") }
        guard (0...1).contains(weatherProb) else { throw ValidationError("--weather-prob must lie in [0, 1]") }
        guard (0...1).contains(emptyPromptProb) else { throw ValidationError("--empty-prompt-prob must lie in [0, 1]") }
        if images != nil, weatherProb > 0 || emptyPromptProb > 0 {
            throw ValidationError("--weather-prob and --empty-prompt-prob need --data (--images uses one --prompt)")
        }
        if let lora, lora <= 0 { throw ValidationError("--lora is a positive rank") }
        if lora == nil, loraAlpha != nil { throw ValidationError("--lora-alpha needs --lora RANK") }
        if lora != nil, common.format == .native {
            throw ValidationError("--lora exports a LoRA file (pytorch_lora_weights.safetensors, diffusers layout); --format native does not apply")
        }
    }

    func run() throws {
        let (models, schedule) = try common.loadPipeline()
        let source: TrainingBatchSource
        if let data {
            source = try DatasetBatchSource(root: data, resolution: common.resolution, rareClassSampling: false,
                                            emptyPromptProbability: emptyPromptProb, weatherProbability: weatherProb,
                                            zoom: try common.zoomRange(default: FinetuneUNet.referenceZoom), seed: common.seed)
        } else {
            source = try ImageFolderSource(folder: images!, resolution: common.resolution, prompt: prompt, zoom: try common.zoomRange(default: FinetuneUNet.referenceZoom),
                                           seed: common.seed)
        }
        var options = common.options(learningRate: lr ?? (lora == nil ? 2e-6 : 1e-4))
        options.lora = lora.map { LoRASettings(rank: $0, alpha: loraAlpha ?? Float($0), targets: loraTargets) }
        let trainer = try DiffusionTrainer(target: .unet, unet: models.unet!, controlnet: nil, vae: models.vae!,
                                           textEncoder: models.textEncoder!, tokenizer: models.tokenizer!,
                                           noiseSchedule: schedule, source: source, options: options)
        try runTraining(TrainingRun(trainer: trainer, settings: common.settings(label: "finetune-unet", data: data.map { [$0] } ?? [])), quiet: common.quiet)
    }
}

struct TrainControlNet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-controlnet",
        abstract: "Train a semantic ControlNet (20-channel one-hot labels) on a frozen (fine-tuned) UNet.",
        discussion: """
        The ControlNet is initialised from the UNet (--unet U^S, else the pipeline's U^P) as diffusers' \
        ControlNetModel.from_unet does, with a 20-channel conditioning embedding; the UNet, VAE and text \
        encoder are frozen. Crops of --resolution are drawn from --data (GTA5 or Cityscapes layout) at \
        random or by rare-class sampling (--rcs); the caption lists the crop's classes. Loss: MSE between \
        the predicted and the true noise; AdamW. With --validate-every, OUT/validation/step-N.png shows \
        fixed masks generated with the ControlNet on U^S and, with --unet, on the base U^P (Style Swap), \
        and metrics.jsonl logs how well each follows its mask. The trained ControlNet is written to \
        OUT/controlnet. Stop at any time (even kill -9) and continue with --resume.
        """)

    @OptionGroup var common: TrainingArguments

    @Option(help: "The fine-tuned UNet U^S (a diffusers UNet folder or file); default: the pipeline's UNet.")
    var unet: String?

    @Option(help: "U^S as a LoRA (kohya or diffusers file), merged into the UNet the ControlNet trains on (--unet, else the pipeline's).")
    var loraUnet: String?

    @Option(help: "Multiplier of --lora-unet.")
    var loraScale: Float = 1

    @Option(help: "Labelled training data (GTA5 layout: images/ + labels/; or Cityscapes layout).")
    var data: String

    @Option(help: "Learning rate.")
    var lr = 1e-5

    @Flag(help: "Rare-class sampling (class statistics cached in DATA/rcs_stats.json).")
    var rcs = false

    @Option(help: "Probability of training a crop with the empty caption.")
    var emptyPromptProb = 0.0

    @Option(help: "Validation images every this many updates (and at the start and end); 0: none.")
    var validateEvery = 0

    @Option(help: "Validation masks per image.")
    var validationCount = 2

    @Option(help: "DDIM steps of the validation images.")
    var validationSteps = 20

    @Option(help: "Classifier-free guidance scale of the validation images.")
    var guidanceScale: Float = 7.5

    func validate() throws {
        guard validateEvery >= 0 else { throw ValidationError("--validate-every must not be negative") }
        guard validationCount > 0 else { throw ValidationError("--validation-count must be positive") }
        guard (0...1).contains(emptyPromptProb) else { throw ValidationError("--empty-prompt-prob must lie in [0, 1]") }
    }

    func run() throws {
        var (models, schedule) = try common.loadPipeline()
        var baseUNet: UNet2DConditionModel?
        var trainUNet = models.unet!
        if let unet {
            let ck = try Checkpoint.open(unet)
            guard let c = ck.component("unet") ?? (ck.components.count == 1 ? ck.components[0] : nil), c.className == "UNet2DConditionModel" else {
                throw FileError(unet, "holds no UNet2DConditionModel")
            }
            let (_, model) = try loadModel(c)
            trainUNet = model as! UNet2DConditionModel
            if trainUNet.config["block_out_channels"] != models.unet!.config["block_out_channels"] {
                warn("\(unet): its UNet is shaped unlike the pipeline's; Style Swap needs the same architecture")
            }
            // U^P is only needed to draw the Style Swap half of the validation images.
            baseUNet = validateEvery > 0 ? models.unet : nil
            if baseUNet != nil { freeze(baseUNet!, storage: common.frozenDtype) }
            models.unet = nil
        }
        if let loraUnet {
            if unet == nil && validateEvery > 0 {
                // The merge changes the pipeline's UNet in place: the Style Swap half of the
                // validation images needs U^P as it was.
                let ck = try Checkpoint.open(common.pipeline)
                guard let c = ck.component("unet"), let up = try loadModel(c).1 as? UNet2DConditionModel else { throw FileError(common.pipeline, "holds no UNet") }
                freeze(up, storage: common.frozenDtype)
                baseUNet = up
            }
            try LoRAFile.read(loraUnet).merge(into: ["unet": trainUNet, "text_encoder": models.textEncoder!], scale: loraScale, path: loraUnet)
        }
        let source = try DatasetBatchSource(root: data, resolution: common.resolution, rareClassSampling: rcs,
                                            emptyPromptProbability: emptyPromptProb, zoom: try common.zoomRange(default: "1"), seed: common.seed)
        let controlnet = try ControlNetModel.initialized(from: trainUNet, conditioningChannels: Cityscapes.classCount + 1,
                                                         seed: common.seed)
        let trainer = try DiffusionTrainer(target: .controlnet, unet: trainUNet, controlnet: controlnet, vae: models.vae!,
                                           textEncoder: models.textEncoder!, tokenizer: models.tokenizer!,
                                           noiseSchedule: schedule, source: source, options: common.options(learningRate: lr))
        var validator: StyleSwapValidator?
        if validateEvery > 0, let samples = try source.validationBatch(validationCount) {
            let v = StyleSwapValidator(baseUNet: baseUNet, samples: samples, scheduler: try DDIMScheduler(schedule, steps: validationSteps),
                                       seed: common.seed, compose: { try StyleSwapValidator.writePNG($0, to: $1) })
            v.guidanceScale = guidanceScale
            validator = v
        }
        try runTraining(TrainingRun(trainer: trainer, settings: common.settings(label: "train-controlnet", validateEvery: validateEvery, data: [data]),
                                    validator: validator), quiet: common.quiet)
    }
}

struct TrainVAE: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-vae",
        abstract: "Train the pipeline's AutoencoderKL (encoder, decoder, quant convs) on image crops.",
        discussion: """
        Square crops of --resolution (any multiple of 8: the autoencoder is fully convolutional, so it may \
        train on crops smaller than the images it will code) are drawn at random from every image of every \
        --data folder (GTA5 layout or plain) and flipped left-right with probability 1/2. Loss: mean L1 \
        between the image and the decoded reparameterised posterior sample, plus --kl-weight x the mean KL \
        divergence of the posterior from N(0, I); AdamW. LDM's perceptual and adversarial terms are not used. \
        With --validate-every, OUT/validation/step-N.png shows fixed crops beside their reconstructions and \
        metrics.jsonl logs their L1 error. The trained VAE is written to OUT/vae (or OUT/vae.dginstyle), \
        with scaling_factor set to 1 / the standard deviation of the latents of 16 fixed crops (how SD's \
        0.18215 was chosen), unless --keep-scaling-factor. With --decoder-only the encoder and quant_conv stay \
        frozen and only the decoder and post_quant_conv learn (L1 alone; latents and scaling_factor unchanged), \
        so a VAE whose latents other models were trained on can be sharpened afterwards.
        """)

    @OptionGroup var common: TrainingArguments

    @Option(help: "Image folder (GTA5 layout or plain); repeat for several.")
    var data: [String] = []

    @Option(help: "Learning rate.")
    var lr = 1e-4

    @Option(help: "Weight of the mean KL term.")
    var klWeight: Float = 1e-4

    @Option(parsing: .unconditional, help: "Set the log-variance half of quant_conv's bias to this before training (a fresh VAE: -6 starts the posterior narrow).")
    var initialLogvar: Float?

    @Flag(help: "Keep the config's scaling_factor instead of measuring it at export.")
    var keepScalingFactor = false

    @Flag(help: "Train only the decoder and post_quant_conv; the encoder's latents stay as they are.")
    var decoderOnly = false

    @Option(help: "Validation reconstructions every this many updates (and at the start and end); 0: none.")
    var validateEvery = 0

    @Option(help: "Validation crops.")
    var validationCount = 4

    func validate() throws {
        guard !data.isEmpty else { throw ValidationError("give at least one --data folder") }
        guard klWeight >= 0 else { throw ValidationError("--kl-weight must not be negative") }
        guard validateEvery >= 0 else { throw ValidationError("--validate-every must not be negative") }
        guard validationCount > 0 else { throw ValidationError("--validation-count must be positive") }
    }

    func run() throws {
        let ck = try Checkpoint.open(common.pipeline)
        guard let c = ck.component("vae") ?? (ck.components.count == 1 ? ck.components[0] : nil), c.className == "AutoencoderKL" else {
            throw FileError(common.pipeline, "holds no AutoencoderKL")
        }
        let vae = try loadModel(c).1 as! AutoencoderKL
        if let initialLogvar {
            guard !decoderOnly else { throw ValidationError("--initial-logvar changes the encoder's posterior; it cannot go with --decoder-only") }
            // A fresh encoder's posterior has std ~1 while its means are small, so the decoder sees
            // mostly noise and learns a grey blur for hundreds of steps; a narrow start avoids that.
            // (Restoring a checkpoint on --resume overwrites this.)
            guard let bias = vae.quant_conv?.bias, let v = bias.value else {
                throw ValidationError("--initial-logvar needs a VAE with quant_conv (use_quant_conv)")
            }
            var b = v.converted(to: .f32).floats
            for i in (b.count / 2)..<b.count { b[i] = initialLogvar }
            bias.value = Tensor(shape: v.shape, floats: b)
        }
        let source = try ImageCropSource(folders: data, resolution: common.resolution, seed: common.seed)
        let trainer = try VAETrainer(vae: vae, source: source, klWeight: klWeight, decoderOnly: decoderOnly,
                                     options: common.options(learningRate: lr))
        if !keepScalingFactor && !decoderOnly { trainer.scalingSamples = try source.validationBatch(16)?.pixels }
        var validator: VAEReconstructionValidator?
        if validateEvery > 0, let samples = try source.validationBatch(validationCount) { validator = VAEReconstructionValidator(samples: samples.pixels) }
        try runTraining(TrainingRun(trainer: trainer, settings: common.settings(label: "train-vae", validateEvery: validateEvery),
                                    validator: validator), quiet: common.quiet)
    }
}
