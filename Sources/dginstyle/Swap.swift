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

    @OptionGroup var lora: UNetLoRAArguments

    @OptionGroup var output: PipelineOutput

    func validate() throws { try output.validate() }

    // `assemble` with a ControlNet: one code path.
    func run() throws {
        try output.write(base: base, unet: unet, vae: nil, textEncoder: nil, controlnet: controlnet, controlnetConfig: controlnetConfig,
                         lora: lora.unetLora.map { ($0, lora.loraScale) })
    }
}
