import DGAutograd
import DGBase
import DGCheckpoint
import DGLayers
import DGTensor

extension Module {
    /// Fills every parameter from `source` (diffusers names), stored as `dtype` (f32, or bf16 for the
    /// bf16 products, which freezes them: see `storeParameters(as:)`; a tensor already stored so is
    /// used as it is). Missing, unexpected and mis-shaped keys are reported by name; nothing is
    /// loaded unless everything matches.
    public func load(from source: TensorSource, dtype: DType = .f32) throws {
        let problems = compareToModel(source.entries, self)
        if !problems.isEmpty {
            throw FileError(source.path, "does not fit the model: \(problems.prefix(6).joined(separator: "; "))\(problems.count > 6 ? "; and \(problems.count - 6) more" : "")")
        }
        let parameters = Dictionary(namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        let shapes = parameters.mapValues(\.shape)
        for e in source.entries {
            guard let p = parameters[canonicalParameterName(e.name, in: shapes)] else { continue }
            let t = try source.tensor(e.name)
            let target = t.dtype.isFloatingPoint ? dtype : .f32
            if t.dtype == target {
                p.value = t
            } else {
                // A converted copy: the file's pages it was read from would otherwise stay resident
                // beside it for as long as the file is open (+1.45 GB for an f32 ControlNet held in bf16).
                p.value = t.converted(to: target)
                source.release(e.name)
            }
        }
        if dtype != .f32 { storeParameters(as: dtype) }
    }
}

/// Builds the model a checkpoint component describes and loads its weights.
public func loadModel(_ component: Component, dtype: DType = .f32) throws -> (ModelKind, Module) {
    guard let config = component.config else {
        throw FileError(component.source.path, "has no config for \(component.name); pass a diffusers folder or --config")
    }
    let (kind, model) = try buildModel(config: config)
    try model.load(from: component.source, dtype: dtype)
    return (kind, model)
}

/// The models of a Stable Diffusion (+ ControlNet) checkpoint, loaded.
public struct LoadedPipeline {
    public var unet: UNet2DConditionModel?
    public var vae: AutoencoderKL?
    public var textEncoder: CLIPTextModel?
    public var controlnet: ControlNetModel?
    public var tokenizer: CLIPTokenizer?

    /// Loads every model component of `checkpoint` (and its tokenizer files, when present), its
    /// parameters stored as `dtype`.
    public init(_ checkpoint: Checkpoint, dtype: DType = .f32) throws {
        for c in checkpoint.components {
            let (_, model) = try loadModel(c, dtype: dtype)
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

/// A model's parameters as a checkpoint source, so that a trained model is saved by the same
/// writers that convert checkpoints (any format, any precision).
public final class ModuleSource: TensorSource {
    public let path: String
    public let entries: [TensorEntry]
    private let parameters: [String: Parameter]

    public init(_ model: Module, name: String) {
        path = "(\(name) in memory)"
        let named = model.namedParameters()
        entries = named.map { TensorEntry(name: $0.name, dtype: $0.parameter.value?.dtype ?? .f32, shape: $0.parameter.shape) }
        parameters = Dictionary(named.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
    }

    public func tensor(_ name: String) throws -> Tensor {
        guard let p = parameters[name] else { throw FileError(path, "has no parameter \(name)") }
        guard let value = p.value else { throw FileError(path, "parameter \(name) has no value (never loaded or initialised)") }
        return value
    }
}

extension Component {
    /// A model of this process as a checkpoint component, named as in a diffusers pipeline.
    public init(model: Module, config: JSON) throws {
        let (kind, _) = try buildModel(config: config)
        let className: String
        switch kind {
        case .unet: className = "UNet2DConditionModel"
        case .controlnet: className = "ControlNetModel"
        case .vae: className = "AutoencoderKL"
        case .textEncoder: className = "CLIPTextModel"
        }
        self.init(name: kind.rawValue, className: className, config: config, source: ModuleSource(model, name: kind.rawValue),
                  metadata: [("format", "pt")])
    }
}
