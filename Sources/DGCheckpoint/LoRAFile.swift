import DGBase
import DGTensor
import Foundation

/// The two LoRA file layouts people exchange, both safetensors.
public enum LoRAFormat: String, CaseIterable, Sendable {
    /// diffusers / PEFT (`save_lora_weights`): `unet.<module>.lora_A.weight`, `lora_B.weight`; alpha
    /// in the `lora_adapter_metadata` entry of the header (diffusers >= 0.34), else alpha = rank.
    case diffusers
    /// kohya-ss sd-scripts: `lora_unet_<module with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`.
    case kohya
}

/// One adapted layer: W' = W + scale * (alpha / rank) * up · down.
public struct LoRALayer: Sendable {
    /// "unet" or "text_encoder".
    public var component: String
    /// The adapted layer's diffusers module path ("down_blocks.0.attentions.0.proj_in").
    public var module: String
    /// A (lora_down) [rank, in] or [rank, in, k, k].
    public var down: Tensor
    /// B (lora_up) [out, rank] or [out, rank, 1, 1].
    public var up: Tensor
    /// nil: not stored, which every loader reads as alpha = rank.
    public var alpha: Float?

    public init(component: String, module: String, down: Tensor, up: Tensor, alpha: Float?) {
        (self.component, self.module, self.down, self.up, self.alpha) = (component, module, down, up, alpha)
    }

    public var rank: Int { down.shape[0] }
    /// alpha / rank (PEFT's `scaling`).
    public var scale: Float { (alpha ?? Float(rank)) / Float(rank) }
    public var parameterCount: Int { down.count + up.count }
    /// The weight's shape: [out, in] or [out, in, k, k].
    public var weightShape: [Int] { down.rank == 2 ? [up.shape[0], down.shape[1]] : [up.shape[0]] + Array(down.shape.dropFirst()) }
}

/// A LoRA file, either layout, as one list of adapted layers.
public struct LoRAFile: Sendable {
    public var format: LoRAFormat
    public var layers: [LoRALayer]

    public init(format: LoRAFormat, layers: [LoRALayer]) {
        self.format = format
        self.layers = layers
    }

    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    /// The file name diffusers' `save_lora_weights` writes and `load_lora_weights(folder)` reads.
    public static let diffusersFileName = "pytorch_lora_weights.safetensors"

    /// The layout the tensor names follow, nil if they are no LoRA's.
    public static func format(of names: [String]) -> LoRAFormat? {
        if names.contains(where: { $0.hasSuffix(".lora_down.weight") && $0.hasPrefix("lora_") }) { return .kohya }
        if names.contains(where: { $0.hasSuffix(".lora_A.weight") || $0.hasSuffix(".lora_A.default.weight") }) { return .diffusers }
        return nil
    }

    public static func read(_ path: String) throws -> LoRAFile {
        let source = try openTensorFile(path: path)
        return try read(source, metadata: (source as? SafeTensorsFile)?.metadata)
    }

    /// The adapters of a tensor file. Every tensor must belong to one; LoHa, LoKr, DoRA and
    /// kohya's `lora_mid` (Tucker) tensors are refused by name.
    public static func read(_ source: TensorSource, metadata: [(String, String)]?) throws -> LoRAFile {
        let path = source.path
        guard let format = format(of: source.entries.map(\.name)) else {
            throw FileError(path, "holds no LoRA (neither kohya lora_down/lora_up nor diffusers lora_A/lora_B tensors)")
        }
        var order: [String] = []
        var parts: [String: (component: String, module: String, down: Tensor?, up: Tensor?, alpha: Float?)] = [:]
        for e in source.entries {
            guard let (component, module, part) = try parse(e.name, format: format, path: path) else { continue }
            let key = component + "/" + module
            if parts[key] == nil { order.append(key); parts[key] = (component, module, nil, nil, nil) }
            let t = try source.tensor(e.name)
            switch part {
            case "down": parts[key]!.down = t
            case "up": parts[key]!.up = t
            default:
                guard t.count == 1 else { throw FileError(path, "\(e.name) has shape \(t.shape); an alpha is one number") }
                parts[key]!.alpha = t.converted(to: .f32).floats[0]
            }
        }
        let alphas = format == .diffusers ? try peftAlphas(metadata, path: path) : [:]
        var layers: [LoRALayer] = []
        for key in order {
            let p = parts[key]!
            guard let down = p.down, let up = p.up else {
                throw FileError(path, "the adapter of \(p.component) \(p.module) has no \(p.down == nil ? "down (A)" : "up (B)") matrix")
            }
            let r = down.shape.first ?? 0
            let fits = r > 0 && (down.rank == 2 && up.rank == 2 || down.rank == 4 && up.rank == 4 && up.shape[2] == 1 && up.shape[3] == 1)
            guard fits, up.shape[1] == r else {
                throw FileError(path, "the adapter of \(p.component) \(p.module) has A \(down.shape) and B \(up.shape), which do not make a rank-\(r) product")
            }
            let alpha = p.alpha ?? alphas[p.component]?(p.module)
            // Found by fuzzing: a NaN alpha is no scale at all (and NaN != NaN breaks every
            // comparison made with it later).
            if let alpha, !alpha.isFinite {
                throw FileError(path, "the adapter of \(p.component) \(p.module) has alpha \(alpha), not a finite number")
            }
            layers.append(LoRALayer(component: p.component, module: p.module, down: down, up: up, alpha: alpha))
        }
        return LoRAFile(format: format, layers: layers)
    }

    /// (component, module, "down" | "up" | "alpha") of a tensor name.
    static func parse(_ name: String, format: LoRAFormat, path: String) throws -> (String, String, String)? {
        func refuse() -> FileError {
            FileError(path, "\(name) is no plain LoRA tensor (LoHa, LoKr, DoRA and Tucker-decomposed convolutions are not supported)")
        }
        switch format {
        case .kohya:
            let suffixes = [(".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha")]
            guard let (suffix, part) = suffixes.first(where: { name.hasSuffix($0.0) }) else { throw refuse() }
            let stem = String(name.dropLast(suffix.count))
            for (prefix, component) in [("lora_unet_", "unet"), ("lora_te_", "text_encoder")] where stem.hasPrefix(prefix) {
                guard let module = dotted(String(stem.dropFirst(prefix.count))) else {
                    throw FileError(path, "\(name): \(stem) names no layer of an SD 1.x UNet or CLIP text encoder")
                }
                return (component, module, part)
            }
            throw FileError(path, "\(name): only lora_unet_ and lora_te_ (SD 1.x) adapters are supported")
        case .diffusers:
            let suffixes = [(".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora_A.default.weight", "down"),
                            (".lora_B.default.weight", "up")]
            guard let (suffix, part) = suffixes.first(where: { name.hasSuffix($0.0) }) else {
                if name.hasSuffix(".alpha") { return nil }  // some converters store alphas too; the metadata is authoritative
                throw refuse()
            }
            var stem = String(name.dropLast(suffix.count))
            if stem.hasPrefix("base_model.model.") { stem = String(stem.dropFirst("base_model.model.".count)) }
            for component in ["unet", "text_encoder"] where stem.hasPrefix(component + ".") {
                return (component, String(stem.dropFirst(component.count + 1)), part)
            }
            return ("unet", stem, part)
        }
    }

    /// The per-component alpha of each module from diffusers' `lora_adapter_metadata` (a PEFT
    /// LoraConfig per component, keys prefixed with the component): `alpha_pattern`, else
    /// `lora_alpha`. No metadata: alpha = rank, as diffusers assumes.
    static func peftAlphas(_ metadata: [(String, String)]?, path: String) throws -> [String: (String) -> Float?] {
        guard let text = metadata?.first(where: { $0.0 == "lora_adapter_metadata" })?.1 else { return [:] }
        let json: JSON
        do { json = try JSON.parse(text) } catch { throw FileError(path, "lora_adapter_metadata is not JSON: \(error)") }
        var out: [String: (String) -> Float?] = [:]
        for component in ["unet", "text_encoder"] {
            let alpha = json[component + ".lora_alpha"]?.double.map(Float.init)
            let pattern = (json[component + ".alpha_pattern"]?.objectPairs ?? []).compactMap { k, v in v.double.map { (k, Float($0)) } }
            guard alpha != nil || !pattern.isEmpty else { continue }
            out[component] = { module in
                pattern.first(where: { module == $0.0 || module.hasSuffix("." + $0.0) })?.1 ?? alpha
            }
        }
        return out
    }

    // MARK: kohya names

    /// The identifiers of SD 1.x UNet and CLIP module paths that contain underscores themselves:
    /// kohya joins a path's parts with "_", so these are matched whole (longest first).
    static let identifiers: Set<String> = [
        "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in", "proj_out",
        "conv_shortcut", "time_emb_proj", "time_embedding", "linear_1", "linear_2", "conv_in", "conv_out", "conv_norm_out",
        "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm", "layer_norm1", "layer_norm2",
    ]

    /// "down_blocks_0_attentions_0_proj_in" -> "down_blocks.0.attentions.0.proj_in"; nil if some part
    /// is neither a number, a known identifier nor a plain word.
    static func dotted(_ underscored: String) -> String? {
        let tokens = underscored.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        var parts: [String] = []
        var i = 0
        while i < tokens.count {
            var taken = 0
            for n in stride(from: min(4, tokens.count - i), through: 2, by: -1)
            where identifiers.contains(tokens[i..<(i + n)].joined(separator: "_")) {
                taken = n
                break
            }
            if taken == 0 {
                guard !tokens[i].isEmpty else { return nil }
                taken = 1
            }
            parts.append(tokens[i..<(i + taken)].joined(separator: "_"))
            i += taken
        }
        return parts.joined(separator: ".")
    }

    static func kohyaStem(_ layer: LoRALayer) -> String {
        (layer.component == "unet" ? "lora_unet_" : "lora_te_") + layer.module.replacingOccurrences(of: ".", with: "_")
    }

    // MARK: writing

    /// Writes the layers in `format` (atomically: a reader never sees half a file).
    public func write(to path: String, format: LoRAFormat) throws {
        var tensors: [(String, Tensor)] = []
        var metadata: [(String, String)] = [("format", "pt")]
        switch format {
        case .kohya:
            for l in layers {
                let stem = Self.kohyaStem(l)
                tensors += [(stem + ".alpha", Tensor(shape: [], floats: [l.alpha ?? Float(l.rank)])),
                            (stem + ".lora_down.weight", l.down), (stem + ".lora_up.weight", l.up)]
            }
            if let r = mostCommon(layers.map(\.rank)) {
                metadata += [("ss_network_module", "networks.lora"), ("ss_network_dim", String(r)),
                             ("ss_network_alpha", JSON.double(Double(mostCommon(layers.map { $0.alpha ?? Float($0.rank) })!)).compact)]
            }
        case .diffusers:
            for l in layers {
                let stem = l.component + "." + l.module
                tensors += [(stem + ".lora_A.weight", l.down), (stem + ".lora_B.weight", l.up)]
            }
            metadata.append(("lora_adapter_metadata", peftMetadata().pretty))
        }
        try SafeTensorsWriter.save(path: path, tensors: tensors, metadata: metadata)
    }

    /// diffusers' `lora_adapter_metadata`: per component a LoraConfig (the most common rank and
    /// alpha, patterns for the layers that differ, the adapted modules by full name).
    func peftMetadata() -> JSON {
        var pairs: [(String, JSON)] = []
        for component in ["text_encoder", "unet"] {
            let ls = layers.filter { $0.component == component }
            guard let r = mostCommon(ls.map(\.rank)) else { continue }
            let alpha = mostCommon(ls.map { $0.alpha ?? Float($0.rank) })!
            let rankPattern = ls.filter { $0.rank != r }.map { ($0.module, JSON.int($0.rank)) }
            let alphaPattern = ls.filter { ($0.alpha ?? Float($0.rank)) != alpha }.map { ($0.module, JSON.double(Double($0.alpha ?? Float($0.rank)))) }
            let config: [(String, JSON)] = [
                ("r", .int(r)), ("lora_alpha", .double(Double(alpha))), ("rank_pattern", .object(rankPattern)),
                ("alpha_pattern", .object(alphaPattern)), ("target_modules", .array(ls.map(\.module).sorted().map { .string($0) })),
                ("lora_dropout", .double(0)), ("bias", "none"), ("init_lora_weights", .bool(true)), ("use_dora", .bool(false)),
            ]
            pairs += config.map { (component + "." + $0.0, $0.1) }
        }
        return .object(pairs.sorted { $0.0 < $1.0 })
    }
}

/// The value that occurs most often (the first of equals), nil for none.
func mostCommon<T: Hashable>(_ values: [T]) -> T? {
    var counts: [T: Int] = [:]
    for v in values { counts[v, default: 0] += 1 }
    return values.max { counts[$0, default: 0] < counts[$1, default: 0] }
}
