import DGCheckpoint
import DGModels
import Foundation

/// Style Swap as a file: a base Stable Diffusion pipeline (its UNet optionally replaced) with a
/// ControlNet attached, laid out as diffusers' `StableDiffusionControlNetPipeline` saves itself,
/// so that `from_pretrained` loads it unchanged. Tensors stream from their sources when written.
public enum StyleSwap {
    public static func pipeline(base: Checkpoint, controlnet: Checkpoint, unet: Checkpoint? = nil) throws -> Checkpoint {
        guard base.isPipeline, let index = base.file("model_index.json") else {
            throw GenerationError("\(base.path): is not a Stable Diffusion pipeline (no model_index.json)")
        }
        for name in ["text_encoder", "vae"] where base.component(name) == nil {
            throw GenerationError("\(base.path): has no \(name)")
        }
        guard base.file("tokenizer/vocab.json") != nil, base.file("tokenizer/merges.txt") != nil else {
            throw GenerationError("\(base.path): has no tokenizer (tokenizer/vocab.json, merges.txt), which diffusers needs")
        }
        guard let cn = controlnet.component("controlnet") else {
            throw GenerationError("\(controlnet.path): holds no ControlNet (it holds \(controlnet.components.map(\.name).joined(separator: ", ")))")
        }
        let unetSource = unet ?? base
        guard let u = unetSource.component("unet") else { throw GenerationError("\(unetSource.path): holds no UNet") }
        guard let cnConfig = cn.config, let unetConfig = u.config else { throw GenerationError("the ControlNet and the UNet need their configs") }
        do { try checkCompatible(controlnet: cnConfig, unet: unetConfig) } catch let e as GenerationError {
            throw GenerationError("\(controlnet.path) with \(unetSource.path): \(e.description)")
        }

        // Each model's loose files (config.json) come from the checkpoint its weights come from.
        func filesOf(_ ck: Checkpoint, _ name: String) -> [(String, [UInt8])] {
            ck.files.filter { $0.path.hasPrefix(name + "/") }.map { ($0.path, $0.bytes) }
        }
        var files: [(String, [UInt8])] = base.files.filter { f in
            f.path != "model_index.json" && !f.path.hasPrefix("controlnet/") && !f.path.hasPrefix("unet/")
        }.map { ($0.path, $0.bytes) }
        files += filesOf(unetSource, "unet") + filesOf(controlnet, "controlnet")

        let baseIndex = try JSON.parse(bytes: index)
        var pairs: [(String, JSON)] = [("_class_name", "StableDiffusionControlNetPipeline")]
        if let v = baseIndex["_diffusers_version"] { pairs.append(("_diffusers_version", v)) }
        pairs += [
            ("controlnet", ["diffusers", "ControlNetModel"]),
            ("feature_extractor", [nil, nil]),
            ("image_encoder", [nil, nil]),
            ("requires_safety_checker", false),
            ("safety_checker", [nil, nil]),
            ("scheduler", baseIndex["scheduler"] ?? ["diffusers", "DDIMScheduler"]),
            ("text_encoder", baseIndex["text_encoder"] ?? ["transformers", "CLIPTextModel"]),
            ("tokenizer", baseIndex["tokenizer"] ?? ["transformers", "CLIPTokenizer"]),
            ("unet", ["diffusers", "UNet2DConditionModel"]),
            ("vae", ["diffusers", "AutoencoderKL"]),
        ]
        files.insert(("model_index.json", Array((JSON.object(pairs).pretty + "\n").utf8)), at: 0)

        var components: [Component] = []
        for name in ["text_encoder", "unet", "vae", "controlnet"] {
            var c = name == "unet" ? u : name == "controlnet" ? cn : base.component(name)!
            c.name = name
            components.append(c)
        }
        return Checkpoint(inMemory: components, files: files)
    }
}
