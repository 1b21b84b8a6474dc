import ArgumentParser
import DGBase
import DGCheckpoint
import DGModels
import DGTensor
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint (tensors, parameter counts, layout, model kind), or the parameters a config defines.",
        discussion: """
        PATH may be a diffusers pipeline or model folder (safetensors or .bin weights), a safetensors file \
        or a PyTorch checkpoint (.ckpt, .pt, .pth, .bin; diffusers names, the original LDM single-file layout \
        or the original ControlNet layout), a sharded *.safetensors.index.json, or a dginstyle native file.
        \(pickleFormatsHelp)
        With --config, describes the model a diffusers config.json builds, without \
        allocating it.
        """)

    @Argument(help: "The checkpoint to describe.")
    var path: String?

    @Option(help: "A diffusers/transformers config.json: list the parameter names and shapes of the model it describes.")
    var config: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Flag(help: "Print the EMA weights of an LDM file instead of its live weights.")
    var ema = false

    @Option(help: "Weight variant of a diffusers folder (fp16, bf16).")
    var variant: String?

    @Flag(help: "List every tensor (text output lists only the per-component summary otherwise).")
    var tensors = false

    func validate() throws {
        if (path == nil) == (config == nil) { throw ValidationError("give either PATH or --config CONFIG.json") }
    }

    func run() throws {
        if let config { return try inspectConfig(config) }
        // Any valid file is described: tensors of no known model are listed as layout "unknown".
        let ck = try Checkpoint.openAny(path!, options: .init(ema: ema, variant: variant))
        let lora = ck.layout == .unknown ? ck.components.first.flatMap { c in
            LoRAFile.format(of: c.source.entries.map(\.name)) == nil ? nil : Result { try LoRAFile.read(c.source, metadata: c.metadata) }
        } : nil
        if json {
            var out = describeJSON(ck)
            switch lora {
            case .success(let l)?: out.set("lora", describeLoRA(l))
            case .failure(let e)?: out.set("lora_error", .string("\(e)"))
            case nil: break
            }
            emit(out.pretty)
        } else if case .success(let l)? = lora {
            emit(describeLoRAText(l, ck))
        } else {
            if case .failure(let e)? = lora { warn("not a LoRA this program reads: \(e)") }
            emit(describeText(ck))
        }
    }

    private func inspectConfig(_ path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read") }
        let config: JSON
        do { config = try JSON.parse(bytes: Array(data)) } catch { throw FileError(path, "\(error)") }
        let (kind, model) = try buildModel(config: config)
        let params = model.namedParameters()
        if json {
            emit(JSON.object(params.map { ($0.name, .array($0.parameter.shape.map { .int($0) })) }).pretty)
        } else {
            var lines = ["\(path): \(kind.rawValue), \(params.count) tensors, \(formatCount(params.reduce(0) { $0 + $1.parameter.count })) parameters"]
            for (name, p) in params { lines.append("  \(name) \(p.shape)") }
            emit(lines.joined(separator: "\n"))
        }
    }

    private func describeText(_ ck: Checkpoint) -> String {
        if ck.layout == .unknown { return describeUnknownText(ck) }
        var lines = ["\(ck.path)", "  layout: \(ck.layout.rawValue)"]
        for c in ck.components {
            let entries = c.source.entries
            let params = entries.reduce(0) { $0 + $1.count }
            let bytes = entries.reduce(0) { $0 + $1.byteCount }
            let dtypes = Set(entries.map(\.dtype.name)).sorted().joined(separator: "+")
            lines.append("  \(c.name): \(c.className), \(entries.count) tensors, \(formatCount(params)) parameters, \(dtypes), \(ProgressBar.bytes(Double(bytes)))")
            if tensors {
                for e in entries { lines.append("    \(e.name) \(e.dtype.name) \(e.shape)") }
            }
        }
        if !ck.files.isEmpty { lines.append("  files: " + ck.files.map(\.path).joined(separator: ", ")) }
        if !ck.ignoredKeys.isEmpty {
            lines.append("  ignored non-parameter keys: \(ck.ignoredKeys.count) (\(ck.ignoredKeys.prefix(5).joined(separator: ", "))\(ck.ignoredKeys.count > 5 ? ", ..." : ""))")
        }
        if !ck.unexpectedKeys.isEmpty {
            lines.append("  unexpected keys: \(ck.unexpectedKeys.count) (\(ck.unexpectedKeys.prefix(10).joined(separator: ", ")))")
        }
        return lines.joined(separator: "\n")
    }

    private func describeJSON(_ ck: Checkpoint) -> JSON {
        var components: [(String, JSON)] = []
        for c in ck.components {
            let tensors = c.source.entries.map { e -> (String, JSON) in
                (e.name, ["dtype": .string(e.dtype.name), "shape": .array(e.shape.map { .int($0) }), "bytes": .int(e.byteCount)])
            }
            var component: JSON = [
                "class": .string(c.className),
                "tensor_count": .int(c.source.entries.count),
                "parameters": .int(c.source.entries.reduce(0) { $0 + $1.count }),
                "bytes": .int(c.source.entries.reduce(0) { $0 + $1.byteCount }),
                "tensors": .object(tensors),
            ]
            if let metadata = c.metadata { component.set("metadata", .object(metadata.map { ($0.0, .string($0.1)) })) }
            components.append((c.name, component))
        }
        var out: JSON = [
            "path": .string(ck.path), "layout": .string(ck.layout.rawValue), "components": .object(components),
            "files": .array(ck.files.map { .string($0.path) }),
            "ignored_keys": .array(ck.ignoredKeys.map { .string($0) }),
            "unexpected_keys": .array(ck.unexpectedKeys.map { .string($0) }),
        ]
        if let reason = ck.unknownLayoutReason { out.set("unknown_layout_reason", .string(reason)) }
        return out
    }

    /// A file of no known model: every tensor (a LoRA or an embedding has few), the totals and
    /// the safetensors `__metadata__` (training settings of LoRAs live there).
    private func describeUnknownText(_ ck: Checkpoint) -> String {
        (["\(ck.path)", "  layout: unknown (\(ck.unknownLayoutReason ?? "no model recognised"))"] + tensorFileLines(ck, tensors: true))
            .joined(separator: "\n")
    }

    /// The totals, the `__metadata__` and (with `tensors`) every tensor of a file of raw tensors.
    func tensorFileLines(_ ck: Checkpoint, tensors: Bool) -> [String] {
        var lines: [String] = []
        for c in ck.components {
            let entries = c.source.entries
            let dtypes = Set(entries.map(\.dtype.name)).sorted().joined(separator: "+")
            let bytes = entries.reduce(0) { $0 + $1.byteCount }
            lines.append("  \(entries.count) tensor\(entries.count == 1 ? "" : "s"), \(formatCount(entries.reduce(0) { $0 + $1.count })) values, \(dtypes.isEmpty ? "-" : dtypes), \(ProgressBar.bytes(Double(bytes))) (\(formatCount(bytes)) bytes)")
            if let metadata = c.metadata, !metadata.isEmpty {
                lines.append("  metadata (\(metadata.count) entries):")
                for (key, value) in metadata {
                    // Some trainers store whole JSON documents here (kohya's tag frequencies).
                    let shown = value.count > 160 ? String(value.prefix(160)) + "... (\(value.count) characters; --json prints all)" : value
                    lines.append("    \(key): \(shown.replacingOccurrences(of: "\n", with: " "))")
                }
            }
            let nameWidth = min(entries.map(\.name.count).max() ?? 0, 100)
            for e in entries.sorted(by: { $0.name < $1.name }) where tensors {
                let name = e.name.padding(toLength: max(nameWidth, e.name.count), withPad: " ", startingAt: 0)
                lines.append("    \(name)  \(e.dtype.name.padding(toLength: 7, withPad: " ", startingAt: 0)) \(e.shape) \(formatCount(e.byteCount)) bytes")
            }
        }
        return lines
    }
}

extension Inspect {
    /// What people ask of a LoRA: its layout, which layers it adapts (by kind), each layer's rank
    /// and alpha, and its size.
    func describeLoRA(_ l: LoRAFile) -> JSON {
        [
            "format": .string(l.format.rawValue), "parameters": .int(l.parameterCount), "layer_count": .int(l.layers.count),
            "targets": .array(Self.targetKinds(l).map { .string($0) }),
            "layers": .array(l.layers.map { layer in
                ["component": .string(layer.component), "module": .string(layer.module), "rank": .int(layer.rank),
                 "alpha": layer.alpha.map { .double(Double($0)) } ?? .null, "scaling": .double(Double(layer.scale)),
                 "weight_shape": .array(layer.weightShape.map { .int($0) })]
            }),
        ]
    }

    func describeLoRAText(_ l: LoRAFile, _ ck: Checkpoint) -> String {
        let components = Dictionary(grouping: l.layers, by: \.component).map { "\($0.key) \($0.value.count)" }.sorted()
        func range<T: Comparable & CustomStringConvertible>(_ xs: [T]) -> String {
            let (lo, hi) = (xs.min()!, xs.max()!)
            return lo == hi ? "\(lo) (every layer)" : "\(lo)-\(hi) (per layer below)"
        }
 var lines = ["\(ck.path)", "  layout: LoRA, \(l.format == .kohya ? "kohya-ss" : "diffusers/PEFT") format; \(l.layers.count) adapted layers (\(components.joined(separator: ", ")))",
                     "  rank: \(range(l.layers.map(\.rank)))",
                     "  alpha: " + (l.layers.allSatisfy { $0.alpha == nil } ? "not stored (= rank, scaling 1)" : range(l.layers.map { $0.alpha ?? Float($0.rank) }.map { Double($0) })),
                     "  targets: \(Self.targetKinds(l).joined(separator: ", "))",
                     "  parameters: \(formatCount(l.parameterCount))"] + tensorFileLines(ck, tensors: tensors)
        lines.append("  layers:")
        for layer in l.layers {
            let alpha = layer.alpha.map { JSON.double(Double($0)).compact } ?? "-"
            lines.append("    \(layer.component) \(layer.module)  rank \(layer.rank)  alpha \(alpha)  weight \(layer.weightShape)")
        }
        return lines.joined(separator: "\n")
    }

    /// The kinds of layer adapted, by the end of their names (`to_q`, `to_out.0`, `ff.net.2`, ...).
    static func targetKinds(_ l: LoRAFile) -> [String] {
        Set(l.layers.map { layer -> String in
            for kind in ["to_out.0", "ff.net.0.proj", "ff.net.2"] where layer.module.hasSuffix(kind) { return kind }
            return String(layer.module.split(separator: ".").last ?? "")
        }).sorted()
    }
}

func formatCount(_ n: Int) -> String {
    let s = String(n)
    var out = ""
    for (i, c) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}
