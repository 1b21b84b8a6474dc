import DGCheckpoint
import DGLayers

extension Module {
    /// Fills every parameter from `source` (diffusers names), as float32. Missing, unexpected
    /// and mis-shaped keys are reported by name; nothing is loaded unless everything matches.
    public func load(from source: TensorSource) throws {
        let problems = compareToModel(source.entries, self)
        if !problems.isEmpty {
            throw CheckpointError(source.path, "does not fit the model: \(problems.prefix(6).joined(separator: "; "))\(problems.count > 6 ? "; and \(problems.count - 6) more" : "")")
        }
        let parameters = Dictionary(namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        let shapes = parameters.mapValues(\.shape)
        for e in source.entries {
            guard let p = parameters[canonicalParameterName(e.name, in: shapes)] else { continue }
            let t = try source.tensor(e.name)
            p.value = t.dtype == .f32 ? t : t.converted(to: .f32)
        }
    }
}

/// Builds the model a checkpoint component describes and loads its weights.
public func loadModel(_ component: Component) throws -> (ModelKind, Module) {
    guard let config = component.config else {
        throw CheckpointError(component.source.path, "has no config for \(component.name); pass a diffusers folder or --config")
    }
    let (kind, model) = try buildModel(config: config)
    try model.load(from: component.source)
    return (kind, model)
}

/// The models of a Stable Diffusion (+ ControlNet) checkpoint, loaded.
public struct LoadedPipeline {
    public var unet: UNet2DConditionModel?
    public var vae: AutoencoderKL?
    public var textEncoder: CLIPTextModel?
    public var controlnet: ControlNetModel?
    public var tokenizer: CLIPTokenizer?

    /// Loads every model component of `checkpoint` (and its tokenizer files, when present).
    public init(_ checkpoint: Checkpoint) throws {
        for c in checkpoint.components {
            let (_, model) = try loadModel(c)
            switch model {
            case let m as UNet2DConditionModel: unet = m
            case let m as AutoencoderKL: vae = m
            case let m as CLIPTextModel: textEncoder = m
            case let m as ControlNetModel: controlnet = m
            default: break
            }
        }
        if let vocab = checkpoint.file("tokenizer/vocab.json"), let merges = checkpoint.file("tokenizer/merges.txt") {
            tokenizer = try CLIPTokenizer(vocab: vocab, merges: merges)
        }
    }
}
