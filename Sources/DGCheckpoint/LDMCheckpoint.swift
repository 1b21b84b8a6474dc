import DGBase
import DGTensor
import Foundation

/// Presents a source's tensors under other names, and reshaped where the layouts disagree
/// (the VAE attention's 1x1 convolutions vs linear layers): a view, nothing is copied.
final class RenamedSource: TensorSource {
    let base: TensorSource
    let entries: [TensorEntry]
    private let baseNames: [String: String]

    init(base: TensorSource, mapping: [(entry: TensorEntry, baseName: String)]) {
        self.base = base
        entries = mapping.map(\.entry)
        baseNames = Dictionary(mapping.map { ($0.entry.name, $0.baseName) }, uniquingKeysWith: { a, _ in a })
    }

    var path: String { base.path }

    func tensor(_ name: String) throws -> Tensor {
        guard let baseName = baseNames[name], let e = entry(name) else { throw FileError(path, "has no tensor \(name)") }
        let t = try base.tensor(baseName)
        return t.shape == e.shape ? t : t.reshaped(e.shape)
    }

    func release(_ name: String) {
        if let baseName = baseNames[name] { base.release(baseName) }
    }
}

extension Checkpoint {
    static func openLDM(_ source: TensorSource, layout: Layout, options: Options) throws -> Checkpoint {
        let wanted = layout == .ldm ? ["unet", "vae", "text_encoder"] : ["controlnet"]
        var configs: [String: JSON] = [:]
        var files: [(String, [UInt8])] = []
        for name in wanted {
            let (config, configFiles) = try config(for: name, near: source.path, options: options)
            configs[name] = config
            files += configFiles
        }
        if layout == .controlnetLDM, var cn = configs["controlnet"], options.configDirectory == nil {
            adaptControlNetConfig(&cn, to: source)
            configs["controlnet"] = cn
        }
        let map = try LDMKeyMap(unetConfig: configs["unet"], vaeConfig: configs["vae"],
                                textEncoderConfig: configs["text_encoder"], controlnetConfig: configs["controlnet"])
        let present = Set(source.entries.map(\.name))
        if options.ema && layout == .ldm && !present.contains(where: { $0.hasPrefix("model_ema.") }) {
            throw FileError(source.path, "holds no EMA weights (model_ema.*), but --ema asked for them")
        }

        var mapped: [String: [(entry: TensorEntry, baseName: String)]] = [:]
        var ignored: [String] = [], unexpected: [String] = []
        for e in source.entries {
            guard case .parameter(let m) = map.classify(e.name) else {
                if map.classify(e.name) == .unknown { unexpected.append(e.name) } else { ignored.append(e.name) }
                continue
            }
            guard let shape = m.diffusersShape(fromLDM: e.shape) else {
                throw FileError(source.path, "\(e.name) has shape \(e.shape), which \(m.diffusers) cannot take")
            }
            var baseName = e.name
            if options.ema && m.component == .unet {
                guard let ema = LDMKeyMap.emaKey(forLDM: m.ldm), present.contains(ema) else {
                    throw FileError(source.path, "has no EMA weight for \(e.name)")
                }
                baseName = ema
            }
            mapped[m.component.rawValue, default: []].append((TensorEntry(name: m.diffusers, dtype: e.dtype, shape: shape), baseName))
        }
        let components = wanted.compactMap { name -> Component? in
            guard let mapping = mapped[name] else { return nil }
            return Component(name: name, className: componentToClass[name]!, config: configs[name],
                             source: RenamedSource(base: source, mapping: mapping), metadata: nil)
        }
        guard !components.isEmpty else { throw FileError(source.path, "holds no tensor of a known model") }

        files += try pipelineFiles(for: components, options: options)
        let ck = Checkpoint(path: source.path, layout: layout, components: components, files: files)
        ck.ignoredKeys = ignored
        ck.unexpectedKeys = unexpected
        return ck
    }

    /// Published ControlNets differ from SD 1.5's in the conditioning input (3 channels for an
    /// RGB hint, 20 for our one-hot labels): read those numbers off the tensors.
    static func adaptControlNetConfig(_ config: inout JSON, to source: TensorSource) {
        let hint = source.entries.filter { $0.name.hasPrefix("control_model.input_hint_block.") && $0.name.hasSuffix(".weight") }
        guard let first = hint.first(where: { $0.name == "control_model.input_hint_block.0.weight" }), first.shape.count == 4 else { return }
        config.set("conditioning_channels", .int(first.shape[1]))
        // input_hint_block = conv_in, then pairs of convs per channel step, then conv_out.
        let convs = hint.sorted { Int($0.name.split(separator: ".")[2])! < Int($1.name.split(separator: ".")[2])! }
        var channels: [Int] = []
        for (i, c) in convs.dropLast().enumerated() where i == 0 || i % 2 == 0 { channels.append(c.shape[0]) }
        if !channels.isEmpty { config.set("conditioning_embedding_out_channels", .array(channels.map { .int($0) })) }
    }

    /// The non-weight files a diffusers pipeline folder needs: from --config DIR when it is a
    /// pipeline folder, else generated configs for what is present; the shipped CLIP tokenizer
    /// where neither gives one and the text encoder has CLIP's vocabulary (SD1PipelineFiles).
    static func pipelineFiles(for components: [Component], options: Options) throws -> [(String, [UInt8])] {
        var out = try configuredPipelineFiles(for: components, options: options)
        let textEncoder = components.first { $0.name == "text_encoder" }
        if let textEncoder, !out.contains(where: { $0.0 == "tokenizer/vocab.json" }),
           SD1PipelineFiles.tokenizerFits(textEncoderConfig: textEncoder.config) {
            out = dedupe(out.filter { !$0.0.hasPrefix("tokenizer/") } + SD1PipelineFiles.tokenizerFiles().map { ($0.path, $0.bytes) })
        }
        return out
    }

    private static func configuredPipelineFiles(for components: [Component], options: Options) throws -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        if let dir = options.configDirectory, FileManager.default.fileExists(atPath: dir + "/model_index.json") {
            out.append(("model_index.json", try readFile(dir + "/model_index.json")))
            for sub in ["scheduler", "tokenizer"] where FileManager.default.fileExists(atPath: dir + "/" + sub) {
                out += try looseFiles(in: dir + "/" + sub, prefix: sub + "/")
            }
            for c in components where FileManager.default.fileExists(atPath: dir + "/" + c.name + "/config.json") {
                out.append((c.name + "/config.json", try readFile(dir + "/" + c.name + "/config.json")))
            }
            return dedupe(out)
        }
        for c in components {
            if let config = c.config { out.append((c.name + "/config.json", Array((config.pretty + "\n").utf8))) }
        }
        if components.contains(where: { $0.name == "unet" }) {
            out.append(("scheduler/scheduler_config.json", Array((defaultConfig("scheduler")!.pretty + "\n").utf8)))
            var index: JSON = ["_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"]
            index.set("feature_extractor", [nil, nil])
            index.set("requires_safety_checker", false)
            index.set("safety_checker", [nil, nil])
            index.set("scheduler", ["diffusers", "PNDMScheduler"])
            index.set("text_encoder", ["transformers", "CLIPTextModel"])
            index.set("tokenizer", ["transformers", "CLIPTokenizer"])
            index.set("unet", ["diffusers", "UNet2DConditionModel"])
            index.set("vae", ["diffusers", "AutoencoderKL"])
            out.append(("model_index.json", Array((index.pretty + "\n").utf8)))
        }
        return dedupe(out)
    }

    private static func dedupe(_ files: [(String, [UInt8])]) -> [(String, [UInt8])] {
        var seen = Set<String>()
        return files.filter { seen.insert($0.0).inserted }
    }
}
