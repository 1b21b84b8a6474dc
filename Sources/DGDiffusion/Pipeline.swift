import DGBase
import DGCheckpoint
import DGLayers
import DGModels
import DGTensor
import Foundation

/// A clear, one-line problem with the user's models or inputs.
public struct GenerationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The sampling settings of one image.
public struct SamplingOptions: Sendable {
    public var steps = 20
    public var guidanceScale: Float = 7.5
    public var conditioningScale: Float = 1
    public var scheduler: SchedulerKind = .ddim
    /// DDIM only: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
    public var eta: Float = 0
    public var negativePrompt = ""
    public init() {}
}

/// Stable Diffusion with a ControlNet, assembled from any compatible parts (Style Swap: the
/// ControlNet trained on one UNet, attached to another of the same structure).
public final class ControlNetPipeline {
    public let unet: UNet2DConditionModel
    public let controlnet: ControlNetModel?
    public let vae: AutoencoderKL
    public let textEncoder: CLIPTextModel
    public let tokenizer: CLIPTokenizer
    public let schedule: NoiseSchedule

    /// Pixels per latent (8 for SD).
    public var vaeScaleFactor: Int { 1 << (vae.block_out_channels.count - 1) }
    /// Image sides must be multiples of this: the VAE's factor times the UNet's.
    public var sizeMultiple: Int { vaeScaleFactor << unet.num_upsamplers }

    public init(unet: UNet2DConditionModel, controlnet: ControlNetModel?, vae: AutoencoderKL, textEncoder: CLIPTextModel,
                tokenizer: CLIPTokenizer, schedule: NoiseSchedule) throws {
        if let controlnet { try checkCompatible(controlnet: controlnet.config, unet: unet.config) }
        guard unet.cross_attention_dim.allSatisfy({ $0 == textEncoder.hidden_size }) else {
            throw GenerationError("the UNet attends to \(unet.cross_attention_dim.first ?? 0)-wide text features, but the text encoder gives \(textEncoder.hidden_size)")
        }
        guard unet.in_channels == vae.latent_channels else {
            throw GenerationError("the UNet takes \(unet.in_channels) latent channels, but the VAE makes \(vae.latent_channels)")
        }
        self.unet = unet
        self.controlnet = controlnet
        self.vae = vae
        self.textEncoder = textEncoder
        self.tokenizer = tokenizer
        self.schedule = schedule
    }

    /// Loads a Stable Diffusion pipeline (any layout `Checkpoint.open` reads), optionally with a
    /// ControlNet from elsewhere and a UNet from elsewhere (`unet` overrides the pipeline's).
    /// A pipeline that already holds a ControlNet (a `swap` export) uses it unless `controlnet`
    /// is given.
    /// `unetLoRA` is merged (times `loraScale`) into the UNet, and into the text encoder if it
    /// adapts that too: the LoRA as a dial (0: the UNet as it is, 1: the LoRA's style).
    /// `dtype` bf16 keeps the weights in bf16, and their products then run in bf16 where the CPU
    /// has AVX512-BF16 and it pays (`GEMM.bf16`; elsewhere in f32 from the bf16 weights).
    public convenience init(pipeline: String, controlnet controlnetPath: String? = nil, unet unetPath: String? = nil,
                            controlnetConfig: String? = nil, unetLoRA: String? = nil, loraScale: Float = 1,
                            dtype: DType = .f32) throws {
        let ck = try Checkpoint.open(pipeline)
        var models = try LoadedPipeline(ck, dtype: dtype)
        if let unetPath {
            let other = try Checkpoint.open(unetPath, options: .init(configDirectory: pipeline))
            guard let c = other.component("unet") else { throw GenerationError("\(unetPath): holds no UNet (it holds \(other.components.map(\.name).joined(separator: ", ")))") }
            guard let unet = try loadModel(c, dtype: dtype).1 as? UNet2DConditionModel else { throw GenerationError("\(unetPath): its unet is not a UNet2DConditionModel") }
            models.unet = unet
        }
        if let controlnetPath {
            let other = try Checkpoint.open(controlnetPath, options: .init(configDirectory: controlnetConfig))
            guard let c = other.component("controlnet") else {
                throw GenerationError("\(controlnetPath): holds no ControlNet (it holds \(other.components.map(\.name).joined(separator: ", ")))")
            }
            guard let cn = try loadModel(c, dtype: dtype).1 as? ControlNetModel else { throw GenerationError("\(controlnetPath): its controlnet is not a ControlNetModel") }
            models.controlnet = cn
        }
        guard let unet = models.unet, let vae = models.vae, let clip = models.textEncoder else {
            throw GenerationError("\(pipeline): needs a UNet, a VAE and a text encoder (it holds \(ck.components.map(\.name).joined(separator: ", ")))")
        }
        if let unetLoRA { try LoRAFile.read(unetLoRA).merge(into: ["unet": unet, "text_encoder": clip], scale: loraScale, path: unetLoRA) }
        guard let tokenizer = models.tokenizer else { throw GenerationError("\(pipeline): has no tokenizer (tokenizer/vocab.json, merges.txt)") }
        let schedule = try ck.file("scheduler/scheduler_config.json").map { try NoiseSchedule(config: JSON.parse(bytes: $0)) }
            ?? NoiseSchedule.stableDiffusion()
        do {
            try self.init(unet: unet, controlnet: models.controlnet, vae: vae, textEncoder: clip, tokenizer: tokenizer, schedule: schedule)
        } catch let e as GenerationError {
            throw GenerationError("\(controlnetPath ?? pipeline) with \(unetPath ?? pipeline): \(e.description)")
        }
    }

    /// Whether `releaseTextEncoder` has run.
    public private(set) var textEncoderReleased = false

    /// [2, 77, D]: the negative prompt's features, then the prompt's.
    public func encodeText(prompt: String, negativePrompt: String = "") -> Tensor {
        precondition(!textEncoderReleased, "encodeText after releaseTextEncoder")
        return encodePrompts([negativePrompt, prompt], tokenizer: tokenizer, textEncoder: textEncoder)
    }

    /// Frees the text encoder's weights once every prompt is encoded (0.49 GB in f32 at SD 1.5
    /// size, 0.25 GB in bf16), so that the denoising steps, where memory peaks, run without them.
    public func releaseTextEncoder() {
        textEncoder.releaseWeights()
        textEncoderReleased = true
    }

    func denoiser(_ options: SamplingOptions) throws -> GuidedDenoiser {
        var d = GuidedDenoiser(unet: unet, controlnet: controlnet,
                               scheduler: try makeScheduler(options.scheduler, schedule, steps: options.steps, eta: options.eta))
        d.guidanceScale = options.guidanceScale
        d.conditioningScale = options.conditioningScale
        return d
    }

    func checkSize(height: Int, width: Int) throws {
        let m = sizeMultiple
        guard height > 0, width > 0, height % m == 0, width % m == 0 else {
            throw GenerationError("image size \(width)x\(height) is not a multiple of \(m) (the VAE's and UNet's downsampling)")
        }
    }

    func checkCondition(_ condition: Tensor?, height: Int, width: Int) throws {
        guard let condition else { return }
        guard let cn = controlnet else { throw GenerationError("a condition was given but the pipeline has no ControlNet") }
        guard condition.shape == [1, cn.conditioning_channels, height, width] else {
            throw GenerationError("the ControlNet takes [1, \(cn.conditioning_channels), \(height), \(width)] conditions, not \(condition.shape)")
        }
    }

    /// Text-to-image (or image-to-image with `initImage` in [0, 1] and `strength` in (0, 1]):
    /// latents [1, 4, h/8, w/8] after the last step and the decoded image [1, 3, h, w] in [0, 1].
    /// Noise comes from `generator` in a fixed order (posterior sample and start noise for
    /// image-to-image, or the start latents; then per-step noise for stochastic samplers).
    public func generate(text: Tensor, condition: Tensor?, height: Int, width: Int, generator: NoiseGenerator,
                         options: SamplingOptions, initImage: Tensor? = nil, strength: Double = 1,
                         onStep: (Int, Tensor) -> Void = { _, _ in }) throws -> (latents: Tensor, image: Tensor) {
        try checkSize(height: height, width: width)
        try checkCondition(condition, height: height, width: width)
        let denoiser = try denoiser(options)
        let latentShape = [1, vae.latent_channels, height / vaeScaleFactor, width / vaeScaleFactor]
        var start = 0
        let latents: Tensor
        if let initImage {
            guard strength > 0 && strength <= 1 else { throw GenerationError("strength must be in (0, 1], not \(strength)") }
            guard initImage.shape == [1, 3, height, width] else {
                throw GenerationError("the initial image is \(initImage.shape.dropFirst().reversed().map(String.init).joined(separator: "x")), not \(width)x\(height)x3")
            }
            start = denoiser.scheduler.startIndex(strength: strength)
            guard start < options.steps else { throw GenerationError("strength \(strength) leaves no step of \(options.steps) to run") }
            let encoded = vae.encodeToLatents(initImage, generator: generator)
            latents = denoiser.scheduler.addNoise(encoded, noise: generator.normal(latentShape), index: start)
        } else {
            latents = generator.normal(latentShape)
        }
        let out = denoiser.denoise(latents, text: text, condition: condition, from: start, noise: generator, onStep: onStep)
        return (out, vae.decodeToImage(out))
    }
}

/// Whether a ControlNet's residuals fit a UNet: the blocks that make its skip connections must
/// have the same structure (input channels, widths, layers per block, block types) and both must
/// attend to text features of one width.
public func checkCompatible(controlnet: JSON, unet: JSON) throws {
    // diffusers' defaults, for configs that leave a key out.
    let defaults: [String: JSON] = [
        "in_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "cross_attention_dim": 1280, "transformer_layers_per_block": 1,
    ]
    func normalised(_ config: JSON, _ key: String, blocks: Int) -> JSON? {
        guard let v = config[key].flatMap({ $0.isNull ? nil : $0 }) ?? defaults[key] else { return nil }
        if let i = v.int { return .array([JSON](repeating: .int(i), count: blocks)) }
        return v
    }
    let blocks = unet["block_out_channels"]?.array?.count ?? 4
    var problems: [String] = []
    for key in ["in_channels", "block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim", "transformer_layers_per_block"] {
        let a = normalised(controlnet, key, blocks: blocks), b = normalised(unet, key, blocks: blocks)
        if a != b { problems.append("\(key) \(a?.compact ?? "unset") vs \(b?.compact ?? "unset")") }
    }
    if !problems.isEmpty {
        throw GenerationError("the ControlNet does not fit the UNet (ControlNet vs UNet: \(problems.joined(separator: "; ")))")
    }
}
