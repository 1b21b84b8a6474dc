import DGBase
import DGCheckpoint
import DGLayers

/// The four models of a Stable Diffusion + ControlNet pipeline; raw values are diffusers'
/// folder names.
public enum ModelKind: String, Sendable, CaseIterable {
    case unet, controlnet, vae
    case textEncoder = "text_encoder"
}

/// Builds the module tree (names and shapes, no weights) that a `config.json` describes.
/// diffusers configs name their class in `_class_name`; transformers configs give
/// `architectures` and `model_type`.
public func buildModel(config: JSON) throws -> (ModelKind, Module) {
    if let name = config["_class_name"]?.string {
        switch name {
        case "UNet2DConditionModel": return (.unet, try UNet2DConditionModel(config: config))
        case "ControlNetModel": return (.controlnet, try ControlNetModel(config: config))
        case "AutoencoderKL": return (.vae, try AutoencoderKL(config: config))
        default:
            throw ModelConfigError(model: "model", key: "_class_name",
                                   problem: "= \"\(name)\" is not supported (only UNet2DConditionModel, ControlNetModel, AutoencoderKL)")
        }
    }
    let architectures = config["architectures"]?.array?.compactMap(\.string) ?? []
    if let other = architectures.first(where: { $0 != "CLIPTextModel" }) {
        throw ModelConfigError(model: "model", key: "architectures",
                               problem: "= \"\(other)\" is not supported (only CLIPTextModel)")
    }
    let modelType = config["model_type"]?.string
    if architectures.contains("CLIPTextModel") || modelType == "clip_text_model" {
        if let modelType, modelType != "clip_text_model" {
            throw ModelConfigError(model: "CLIPTextModel", key: "model_type",
                                   problem: "= \"\(modelType)\" is not supported (only clip_text_model)")
        }
        return (.textEncoder, try CLIPTextModel(config: config))
    }
    if let modelType {
        throw ModelConfigError(model: "model", key: "model_type",
                               problem: "= \"\(modelType)\" is not supported (only clip_text_model)")
    }
    throw ModelConfigError(model: "model", key: "_class_name",
                           problem: "is missing, and neither architectures nor model_type names a CLIP text model")
}
