import ArgumentParser
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation

struct InitPipeline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-pipeline",
        abstract: "A Stable Diffusion pipeline with every model freshly initialised from a seed.",
        discussion: """
        --configs is a diffusers pipeline folder without weights: model_index.json, unet/, vae/ and \
        text_encoder/config.json, tokenizer/ (vocab.json, merges.txt, ...) and scheduler/scheduler_config.json \
        (recipes/configs/tiny is the miniature's). The UNet and the VAE get PyTorch's default initialisation \
        (what diffusers' models start from: Linear and Conv2d uniform in +-1/sqrt(fan_in), norms 1 and 0); the \
        CLIP text encoder gets transformers' (normal, std initializer_range, default 0.02). Each model draws \
        from its own seed derived from --seed, so the same seed gives the same file, bit for bit.
        """)

    @Option(help: "Folder of the pipeline's configs, tokenizer and scheduler config.")
    var configs: String

    @Option(help: "Seed of the initial weights.")
    var seed: UInt64 = 0

    @Option(help: "Output folder (diffusers) or file (native).")
    var out: String

    @Option(help: "diffusers or native.")
    var format: OutputFormat = .native

    @Option(help: "Store floating-point tensors as f32, f16 or bf16.")
    var dtype: DType = .f32

    @Flag(help: "Replace the output if it exists.")
    var overwrite = false

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    func validate() throws {
        guard [.diffusers, .native].contains(format) else { throw ValidationError("--format must be diffusers or native") }
    }

    func run() throws {
        let ck = try InitPipeline.pipeline(configs: configs, seed: seed)
        try ck.write(to: out, format: format, options: WriteOptions(dtype: dtype, overwrite: overwrite, progress: !quiet))
        if !quiet { emit("wrote \(out): \(ck.components.map(\.name).joined(separator: ", ")) initialised with seed \(seed) (\(format.rawValue))") }
    }

    static let models = ["text_encoder", "unet", "vae"]

    static func pipeline(configs: String, seed: UInt64) throws -> Checkpoint {
        let fm = FileManager.default
        func read(_ rel: String) throws -> [UInt8] {
            guard let d = fm.contents(atPath: configs + "/" + rel) else { throw FileError(configs, "has no \(rel)") }
            return Array(d)
        }
        var files: [(String, [UInt8])] = [("model_index.json", try read("model_index.json"))]
        for rel in ["tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"] { files.append((rel, try read(rel))) }
        for name in ["tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"] where fm.fileExists(atPath: configs + "/" + name) {
            files.append((name, try read(name)))
        }
        var components: [Component] = []
        for (k, name) in models.enumerated() {
            let bytes = try read(name + "/config.json")
            let config: JSON
            do { config = try JSON.parse(bytes: bytes) } catch { throw FileError(configs + "/" + name + "/config.json", "\(error)") }
            let (_, model) = try buildModel(config: config)
            let modelSeed = SplitMix64.mix(seed &+ UInt64(k + 1) &* 0x9E37_79B9_7F4A_7C15)
            if name == "text_encoder" {
                model.initializeNormal(std: Float(config["initializer_range"]?.double ?? 0.02), seed: modelSeed)
            } else {
                model.initializeParameters(seed: modelSeed)
            }
            files.append((name + "/config.json", bytes))
            components.append(try Component(model: model, config: config))
        }
        return Checkpoint(inMemory: components, files: files)
    }
}

struct Assemble: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compose a pipeline from parts: a base pipeline with some of its models replaced.",
        discussion: """
        Writes the base pipeline (tokenizer, scheduler and every model not replaced) with the UNet, VAE, text \
        encoder and ControlNet taken from the checkpoints given (each that checkpoint's model of that name, or \
        its only model of the right class: a training run's output, a diffusers folder, a native file). With \
        --controlnet the result is a StableDiffusionControlNetPipeline (what `swap` writes), else a \
        StableDiffusionPipeline. The parts must fit: ControlNet and UNet of one architecture, VAE latent \
        channels = UNet input channels, text encoder width = UNet cross-attention width; otherwise nothing is \
        written.
        """)

    @Option(help: "The base Stable Diffusion pipeline (diffusers folder or native file).")
    var base: String

    @Option(help: "The UNet to use instead of the base's.")
    var unet: String?

    @Option(help: "The VAE to use instead of the base's.")
    var vae: String?

    @Option(help: "The text encoder to use instead of the base's.")
    var textEncoder: String?

    @Option(help: "A ControlNet to attach.")
    var controlnet: String?

    @Option(help: "A diffusers folder with the ControlNet's config.json, for a single-file ControlNet that is not SD 1.5-sized.")
    var controlnetConfig: String?

    @OptionGroup var output: PipelineOutput

    func validate() throws { try output.validate() }

    func run() throws {
        try output.write(base: base, unet: unet, vae: vae, textEncoder: textEncoder, controlnet: controlnet,
                         controlnetConfig: controlnetConfig)
    }
}

/// How `assemble` and `swap` write what they compose.
struct PipelineOutput: ParsableArguments {
    @Option(help: "Output folder (diffusers) or file (native).")
    var out: String

    @Option(help: "diffusers or native.")
    var format: OutputFormat = .diffusers

    @Option(help: "Store floating-point tensors as f32, f16 or bf16.")
    var dtype: DType?

    @Flag(help: "Native format: zstd-compress the tensors.")
    var compress = false

    @Flag(help: "Replace the output if it exists.")
    var overwrite = false

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    func validate() throws {
        guard [.diffusers, .native].contains(format) else { throw ValidationError("--format must be diffusers or native") }
        guard !compress || format == .native else { throw ValidationError("--compress needs --format native") }
    }

    /// `lora` (path, scale) is merged into the UNet (and the text encoder, if it adapts it).
    func write(base: String, unet: String?, vae: String?, textEncoder: String?, controlnet: String?, controlnetConfig: String?,
               lora: (path: String, scale: Float)? = nil) throws {
        let baseCk = try Checkpoint.open(base)
        func part(_ path: String?) throws -> Checkpoint? { try path.map { try Checkpoint.open($0, options: .init(configDirectory: base)) } }
        var parts = PipelineAssembly.Parts(
            unet: try part(unet), vae: try part(vae), textEncoder: try part(textEncoder),
            controlnet: try controlnet.map { try Checkpoint.open($0, options: .init(configDirectory: controlnetConfig)) })
        if let lora {
            let merged = try mergeLoRA(lora.path, scale: lora.scale, into: ["unet": parts.unet ?? baseCk, "text_encoder": parts.textEncoder ?? baseCk])
            (parts.unet, parts.textEncoder) = (merged["unet"] ?? parts.unet, merged["text_encoder"] ?? parts.textEncoder)
        }
        let composed = try PipelineAssembly.compose(base: baseCk, parts: parts)
        try composed.write(to: out, format: format, options: WriteOptions(dtype: dtype, compress: compress, overwrite: overwrite, progress: !quiet))
        if !quiet {
            let replaced = [("UNet", unet), ("VAE", vae), ("text encoder", textEncoder)].compactMap { p in p.1.map { "the \(p.0) of \($0)" } }
            var line = "wrote \(out): \(base)"
            if !replaced.isEmpty { line += " with " + replaced.joined(separator: ", ") }
            if let lora { line += " + LoRA \(lora.path) at scale \(lora.scale)" }
            if let controlnet { line += " + ControlNet \(controlnet)" }
            emit(line + " (\(format.rawValue))")
        }
    }
}
