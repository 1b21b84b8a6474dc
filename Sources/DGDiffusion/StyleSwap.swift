import DGBase
import DGCheckpoint
import DGModels
import Foundation

/// Style Swap as a file: a base Stable Diffusion pipeline (its UNet optionally replaced) with a
/// ControlNet attached, laid out as diffusers' `StableDiffusionControlNetPipeline` saves itself,
/// so that `from_pretrained` loads it unchanged. Tensors stream from their sources when written.
public enum StyleSwap {
    public static func pipeline(base: Checkpoint, controlnet: Checkpoint, unet: Checkpoint? = nil) throws -> Checkpoint {
        try PipelineAssembly.compose(base: base, parts: PipelineAssembly.Parts(unet: unet, controlnet: controlnet))
    }
}

/// A Stable Diffusion pipeline composed of parts: the base pipeline's tokenizer, scheduler and
/// every model not replaced, plus the models taken from other checkpoints (each the component
/// of that name, or the checkpoint's only model of the right class). With a ControlNet the
/// result is laid out as diffusers' `StableDiffusionControlNetPipeline` saves itself (Style
/// Swap), otherwise as a `StableDiffusionPipeline`; `from_pretrained` loads either unchanged.
/// Tensors stream from their sources when written.
public enum PipelineAssembly {
    public struct Parts {
        public var unet: Checkpoint?
        public var vae: Checkpoint?
        public var textEncoder: Checkpoint?
        public var controlnet: Checkpoint?

        public init(unet: Checkpoint? = nil, vae: Checkpoint? = nil, textEncoder: Checkpoint? = nil, controlnet: Checkpoint? = nil) {
            self.unet = unet
            self.vae = vae
            self.textEncoder = textEncoder
            self.controlnet = controlnet
        }
    }

    static let classNames = ["unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
                             "controlnet": "ControlNetModel"]

    /// The model `name` of a part: its component of that name, or its only component of the class.
    static func model(_ name: String, in ck: Checkpoint) throws -> Component {
        if let c = ck.component(name) { return c }
        let fitting = ck.components.filter { $0.className == classNames[name] }
        guard fitting.count == 1 else {
            throw GenerationError("\(ck.path): holds no \(name == "controlnet" ? "ControlNet" : name) (it holds \(ck.components.map(\.name).joined(separator: ", ")))")
        }
        return fitting[0]
    }

    public static func compose(base: Checkpoint, parts: Parts) throws -> Checkpoint {
        guard base.isPipeline, let index = base.file("model_index.json") else {
            throw GenerationError("\(base.path): is not a Stable Diffusion pipeline (no model_index.json)")
        }
        guard base.file("tokenizer/vocab.json") != nil, base.file("tokenizer/merges.txt") != nil else {
            throw GenerationError("\(base.path): has no tokenizer (tokenizer/vocab.json, merges.txt), which diffusers needs")
        }
        // Where each model comes from; a base pipeline with a ControlNet keeps it unless replaced.
        var sources: [(name: String, ck: Checkpoint)] = []
        for (name, part) in [("text_encoder", parts.textEncoder), ("unet", parts.unet), ("vae", parts.vae), ("controlnet", parts.controlnet)] {
            if let part { sources.append((name, part)) } else if name != "controlnet" || base.component("controlnet") != nil { sources.append((name, base)) }
        }
        var components: [Component] = []
        for (name, ck) in sources {
            var c = try model(name, in: ck)
            guard c.className == classNames[name] else { throw GenerationError("\(ck.path): its \(name) is a \(c.className), not a \(classNames[name]!)") }
            c.name = name
            components.append(c)
        }
        func config(_ name: String) -> JSON? { components.first { $0.name == name }?.config }
        func path(_ name: String) -> String { sources.first { $0.name == name }!.ck.path }
        guard let unetConfig = config("unet") else { throw GenerationError("\(path("unet")): its UNet has no config") }
        if let cn = components.first(where: { $0.name == "controlnet" }) {
            guard let cnConfig = cn.config else { throw GenerationError("the ControlNet and the UNet need their configs") }
            do { try checkCompatible(controlnet: cnConfig, unet: unetConfig) } catch let e as GenerationError {
                throw GenerationError("\(path("controlnet")) with \(path("unet")): \(e.description)")
            }
        }
        // The latents and the text features must have the widths the UNet expects.
        if let latent = config("vae")?["latent_channels"]?.int ?? (config("vae") != nil ? 4 : nil),
           let inChannels = unetConfig["in_channels"]?.int ?? 4 as Int?, latent != inChannels {
            throw GenerationError("\(path("vae")): its VAE has \(latent) latent channels, the UNet of \(path("unet")) takes \(inChannels)")
        }
        if let hidden = config("text_encoder")?["hidden_size"]?.int, let cross = unetConfig["cross_attention_dim"]?.int, hidden != cross {
            throw GenerationError("\(path("text_encoder")): its text encoder is \(hidden) wide, the UNet of \(path("unet")) attends to \(cross)")
        }

        // Each model's loose files (config.json) come from the checkpoint its weights come from.
        let replaced = Set(sources.filter { $0.ck !== base }.map(\.name) + ["controlnet"])
        var files: [(String, [UInt8])] = base.files.filter { f in
            f.path != "model_index.json" && !replaced.contains(where: { f.path.hasPrefix($0 + "/") })
        }.map { ($0.path, $0.bytes) }
        for (name, ck) in sources where ck !== base || name == "controlnet" {
            files += ck.files.filter { $0.path.hasPrefix(name + "/") }.map { ($0.path, $0.bytes) }
        }

        let baseIndex = try JSON.parse(bytes: index)
        let hasControlNet = components.contains { $0.name == "controlnet" }
        var pairs: [(String, JSON)] = [("_class_name", .string(hasControlNet ? "StableDiffusionControlNetPipeline" : "StableDiffusionPipeline"))]
        if let v = baseIndex["_diffusers_version"] { pairs.append(("_diffusers_version", v)) }
        if hasControlNet { pairs.append(("controlnet", ["diffusers", "ControlNetModel"])) }
        pairs += [
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
        return Checkpoint(inMemory: components, files: files)
    }
}
