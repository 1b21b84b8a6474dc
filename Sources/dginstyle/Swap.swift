import ArgumentParser
import DGCheckpoint
import DGDiffusion
import DGTensor
import Foundation

struct Swap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Style Swap: export a base pipeline with a ControlNet attached (StableDiffusionControlNetPipeline).",
        discussion: """
        Writes the base pipeline (text encoder, tokenizer, VAE, scheduler, and its UNet or the one given with \
        --unet) together with the ControlNet, with a model_index.json naming StableDiffusionControlNetPipeline, \
        so that diffusers' StableDiffusionControlNetPipeline.from_pretrained(OUT) loads it unchanged and \
        `dginstyle generate --pipeline OUT` needs no --controlnet. The ControlNet must fit the UNet (same input \
        channels, widths, layers per block, block types and text width); otherwise nothing is written.
        """)

    @Option(help: "The base Stable Diffusion pipeline (diffusers folder or native file) whose style the images take.")
    var base: String

    @Option(help: "The ControlNet (diffusers folder, safetensors file of any layout, or native file).")
    var controlnet: String

    @Option(help: "A diffusers folder with the ControlNet's config.json, for a single-file ControlNet that is not SD 1.5-sized.")
    var controlnetConfig: String?

    @Option(help: "A UNet to use instead of the base pipeline's (any checkpoint holding one).")
    var unet: String?

    @Option(help: "Output folder (diffusers) or file (native).")
    var out: String

    @Option(help: "diffusers or native.")
    var format: OutputFormat = .diffusers

    @Option(help: "Store floating-point tensors as f32, f16 or bf16.")
    var dtype: DType?

    @Flag(help: "Replace the output if it exists.")
    var overwrite = false

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    func validate() throws {
        guard [.diffusers, .native].contains(format) else { throw ValidationError("--format must be diffusers or native") }
    }

    func run() throws {
        let baseCk = try Checkpoint.open(base)
        let cn = try Checkpoint.open(controlnet, options: .init(configDirectory: controlnetConfig))
        let u = try unet.map { try Checkpoint.open($0, options: .init(configDirectory: base)) }
        let swapped = try StyleSwap.pipeline(base: baseCk, controlnet: cn, unet: u)
        try swapped.write(to: out, format: format, options: WriteOptions(dtype: dtype, overwrite: overwrite, progress: !quiet))
        if !quiet { emit("wrote \(out): \(base)\(unet.map { " with the UNet of \($0)" } ?? "") + ControlNet \(controlnet) (\(format.rawValue))") }
    }
}
