import DGBase
import DGTensor
import Foundation

/// One model of a checkpoint, with diffusers parameter names whatever layout it came from.
public struct Component {
    /// "unet", "vae", "text_encoder" or "controlnet" — the diffusers pipeline folder name.
    public var name: String
    /// The diffusers / transformers class ("UNet2DConditionModel", "CLIPTextModel", ...).
    public var className: String
    public var config: JSON?
    public var source: TensorSource
    public var metadata: [(String, String)]?

    public init(name: String, className: String, config: JSON?, source: TensorSource, metadata: [(String, String)]? = nil) {
        self.name = name
        self.className = className
        self.config = config
        self.source = source
        self.metadata = metadata
    }
}

/// Any supported checkpoint, opened: the components it holds and its loose files (configs,
/// tokenizer, scheduler, model_index.json), by their path inside a diffusers pipeline folder.
public final class Checkpoint {
    public enum Layout: String {
        case diffusersPipeline = "diffusers pipeline folder"
        case diffusersModel = "diffusers model folder"
        case safetensors = "safetensors file (diffusers names)"
        case ldm = "original LDM single file"
        case controlnetLDM = "original ControlNet file"
        case native = "dginstyle native file"
        case memory = "models in memory"
        /// Valid tensors of no model we recognise (a LoRA, an embedding, another architecture):
        /// described by `inspect`, compared by `diff`, never converted (UnknownLayout.swift).
        case unknown = "unknown"
    }

    public struct Options {
        /// A diffusers folder to take configs (and tokenizer / scheduler files) from.
        public var configDirectory: String?
        /// Read the UNet's `model_ema.*` weights of an LDM file instead of its live weights.
        public var ema = false
        /// Weight-file variant of a diffusers folder ("fp16", "bf16"); nil prefers the plain file.
        public var variant: String?
        /// Open a file of unrecognised tensors as `.unknown` instead of refusing it.
        public var allowUnknownLayout = false
        public init(configDirectory: String? = nil, ema: Bool = false, variant: String? = nil) {
            self.configDirectory = configDirectory
            self.ema = ema
            self.variant = variant
        }
    }

    public let path: String
    public let layout: Layout
    public private(set) var components: [Component]
    public private(set) var files: [(path: String, bytes: [UInt8])]
    /// Keys of the source that hold no parameter (LDM buffers such as `alphas_cumprod`).
    public internal(set) var ignoredKeys: [String] = []
    /// Keys nobody knows: reported, never silently dropped.
    public internal(set) var unexpectedKeys: [String] = []
    /// Why a file's layout is `.unknown`.
    public internal(set) var unknownLayoutReason: String?

    /// Models built in this process (for saving): each component's source reads its parameters.
    public convenience init(inMemory components: [Component], files: [(String, [UInt8])] = []) {
        self.init(path: "(in memory)", layout: .memory, components: components, files: files)
    }

    init(path: String, layout: Layout, components: [Component], files: [(String, [UInt8])]) {
        self.path = path
        self.layout = layout
        self.components = components
        self.files = files
    }

    public func component(_ name: String) -> Component? { components.first { $0.name == name } }

    public func file(_ path: String) -> [UInt8]? { files.first { $0.path == path }?.bytes }

    public var isPipeline: Bool { layout == .diffusersPipeline || file("model_index.json") != nil }

    // MARK: opening

    public static func open(_ path: String, options: Options = Options()) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FileError(path, "no such file or directory")
        }
        if isDirectory.boolValue { return try openFolder(path, options: options) }
        if try isNative(path) { return try openNative(path) }
        // .ckpt / .pt / .pth / .bin: read by our own pickle machine, which runs nothing (TorchPickle).
        let source = try openTensorFile(path: path)
        let names = source.entries.map(\.name)
        if names.contains(where: { $0.hasPrefix("model.diffusion_model.") || $0.hasPrefix("first_stage_model.") || $0.hasPrefix("cond_stage_model.") }) {
            return try openLDM(source, layout: .ldm, options: options)
        }
        if names.contains(where: { $0.hasPrefix("control_model.") }) {
            return try openLDM(source, layout: .controlnetLDM, options: options)
        }
        return try openPlain(source, options: options)
    }

    static func isNative(_ path: String) throws -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { throw FileError(path, "cannot open for reading") }
        defer { try? h.close() }
        let head = h.readData(ofLength: 8)
        return Array(head) == NativeFormat.magic
    }

    static let classToComponent = [
        "UNet2DConditionModel": "unet", "ControlNetModel": "controlnet", "AutoencoderKL": "vae", "CLIPTextModel": "text_encoder",
    ]
    static let componentToClass = Dictionary(uniqueKeysWithValues: classToComponent.map { ($1, $0) })

    /// The class a config describes: diffusers' `_class_name` or transformers' `architectures`.
    static func className(of config: JSON) -> String? {
        config["_class_name"]?.string ?? config["architectures"]?.array?.first?.string
    }

    private static func openNative(_ path: String) throws -> Checkpoint {
        let file = try NativeFile(path: path)
        var files: [(String, [UInt8])] = []
        for blob in file.files { files.append((blob.path, try file.file(blob.path))) }
        let components = try file.components.map { c -> Component in
            let configBytes = files.first { $0.0 == c.name + "/config.json" }?.1
            let config = try configBytes.map { try parseConfig($0, path: path + ":" + c.name + "/config.json") }
            return Component(name: c.name, className: c.className, config: config, source: file.source(c.name), metadata: c.metadata)
        }
        return Checkpoint(path: path, layout: .native, components: components, files: files)
    }

    static func parseConfig(_ bytes: [UInt8], path: String) throws -> JSON {
        do {
            let json = try JSON.parse(bytes: bytes)
            guard json.objectPairs != nil else { throw FileError(path, "config is not a JSON object") }
            return json
        } catch let e as JSON.ParseError {
            throw FileError(path, "\(e)")
        }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read") }
        return Array(data)
    }

    /// The weights of one diffusers model folder: a variant if asked for, else the plain file,
    /// else the only variant there is; sharded indexes too.
    static func weightsFile(in dir: String, variant: String?) throws -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let stems = ["diffusion_pytorch_model", "model"]
        var candidates: [String] = []
        for stem in stems {
            if let variant {
                candidates += ["\(stem).\(variant).safetensors", "\(stem).safetensors.index.\(variant).json"]
            }
            candidates += ["\(stem).safetensors", "\(stem).safetensors.index.json"]
        }
        if let hit = candidates.first(where: names.contains) { return dir + "/" + hit }
        let variants = names.filter { n in stems.contains { n.hasPrefix($0 + ".") } && n.hasSuffix(".safetensors") }.sorted()
        if let only = variants.first, variants.count == 1 { return dir + "/" + only }
        if variants.count > 1 {
            throw FileError(dir, "holds several weight variants (\(variants.joined(separator: ", "))); choose one with --variant")
        }
        // Older repositories hold only torch.save weights; safetensors are preferred when both exist.
        var bins: [String] = []
        for stem in ["diffusion_pytorch_model", "pytorch_model"] {
            if let variant { bins.append("\(stem).\(variant).bin") }
            bins.append("\(stem).bin")
        }
        if let hit = bins.first(where: names.contains) { return dir + "/" + hit }
        if names.contains(where: { $0.hasSuffix(".bin.index.json") }) {
            throw FileError(dir, "holds sharded PyTorch .bin weights (*.bin.index.json), which are not read; convert them to safetensors")
        }
        return nil
    }

    private static func isWeightFile(_ name: String) -> Bool {
        name.hasSuffix(".safetensors") || name.hasSuffix(".bin") || name.hasSuffix(".ckpt") || name.hasSuffix(".pt") || name.hasSuffix(".pth")
            || (name.contains(".safetensors.index") && name.hasSuffix(".json"))
    }

    static func looseFiles(in dir: String, prefix: String) throws -> [(String, [UInt8])] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        var out: [(String, [UInt8])] = []
        for name in names where !name.hasPrefix(".") && !isWeightFile(name) {
            var isDir: ObjCBool = false
            FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDir)
            if !isDir.boolValue { out.append((prefix + name, try readFile(dir + "/" + name))) }
        }
        return out
    }

    private static func openFolder(_ path: String, options: Options) throws -> Checkpoint {
        let fm = FileManager.default
        if fm.fileExists(atPath: path + "/model_index.json") {
            let index = try parseConfig(try readFile(path + "/model_index.json"), path: path + "/model_index.json")
            var files: [(String, [UInt8])] = [("model_index.json", try readFile(path + "/model_index.json"))]
            var components: [Component] = []
            for (name, value) in index.objectPairs ?? [] where !name.hasPrefix("_") {
                guard let pair = value.array, pair.count == 2, let cls = pair[1].string else { continue }
                let dir = path + "/" + name
                guard fm.fileExists(atPath: dir) else { continue }
                files += try looseFiles(in: dir, prefix: name + "/")
                guard let weights = try weightsFile(in: dir, variant: options.variant) else { continue }
                let config = try (files.first { $0.0 == name + "/config.json" }?.1).map {
                    try parseConfig($0, path: dir + "/config.json")
                }
                let source = try openTensorFile(path: weights)
                components.append(Component(name: name, className: cls, config: config, source: source,
                                            metadata: (source as? SafeTensorsFile)?.metadata))
            }
            guard !components.isEmpty else { throw FileError(path, "model_index.json names no component with weights (safetensors or .bin)") }
            return Checkpoint(path: path, layout: .diffusersPipeline, components: components, files: files)
        }
        if fm.fileExists(atPath: path + "/config.json") {
            let config = try parseConfig(try readFile(path + "/config.json"), path: path + "/config.json")
            guard let cls = className(of: config), let name = classToComponent[cls] else {
                throw FileError(path + "/config.json", "describes no model this program knows (_class_name / architectures)")
            }
            guard let weights = try weightsFile(in: path, variant: options.variant) else {
                throw FileError(path, "holds a config.json but no weights (safetensors or .bin)")
            }
            let source = try openTensorFile(path: weights)
            let files = try looseFiles(in: path, prefix: name + "/")
            return Checkpoint(path: path, layout: .diffusersModel,
                              components: [Component(name: name, className: cls, config: config, source: source,
                                                     metadata: (source as? SafeTensorsFile)?.metadata)],
                              files: files)
        }
        throw FileError(path, "is not a diffusers folder (no model_index.json or config.json)")
    }

    /// Which model a file of diffusers-named tensors holds, from its names.
    static func guessComponent(_ names: [String]) -> String? {
        if names.contains(where: { $0.hasPrefix("controlnet_cond_embedding.") }) { return "controlnet" }
        if names.contains(where: { $0.contains("embeddings.token_embedding.") }) { return "text_encoder" }
        if names.contains(where: { $0.hasPrefix("encoder.down_blocks.") }) { return "vae" }
        if names.contains("conv_in.weight") && names.contains(where: { $0.hasPrefix("up_blocks.") }) { return "unet" }
        return nil
    }

    /// The config for `component`: from --config DIR, else a config.json beside the file, else SD 1.5's.
    static func config(for component: String, near path: String, options: Options) throws -> (JSON?, [(String, [UInt8])]) {
        var candidates: [String] = []
        if let dir = options.configDirectory { candidates += [dir + "/" + component + "/config.json", dir + "/config.json"] }
        candidates.append(URL(fileURLWithPath: path).deletingLastPathComponent().path + "/config.json")
        for c in candidates where FileManager.default.fileExists(atPath: c) {
            let bytes = try readFile(c)
            let json = try parseConfig(bytes, path: c)
            if let cls = className(of: json), classToComponent[cls] == component {
                return (json, [(component + "/config.json", bytes)])
            }
        }
        return (defaultConfig(component), [])
    }

    public static func defaultConfig(_ component: String) -> JSON? {
        let text: String
        switch component {
        case "unet": text = DefaultConfigs.unetText
        case "vae": text = DefaultConfigs.vaeText
        case "text_encoder": text = DefaultConfigs.textEncoderText
        case "controlnet": text = DefaultConfigs.controlnetText
        case "scheduler": text = DefaultConfigs.schedulerText
        default: return nil
        }
        return try? JSON.parse(text)
    }

    private static func openPlain(_ source: TensorSource, options: Options) throws -> Checkpoint {
        guard let name = guessComponent(source.entries.map(\.name)) else {
            if options.allowUnknownLayout { return unknownLayout(source, reason: unrecognised) }
            throw FileError(source.path, unrecognised + " (`dginstyle inspect` lists its tensors)")
        }
        let (config, files) = try config(for: name, near: source.path, options: options)
        let cls = componentToClass[name]!
        return Checkpoint(path: source.path, layout: .safetensors,
                          components: [Component(name: name, className: cls, config: config, source: source,
                                                 metadata: (source as? SafeTensorsFile)?.metadata)],
                          files: files)
    }
}
