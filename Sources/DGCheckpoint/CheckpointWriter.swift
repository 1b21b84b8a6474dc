import DGBase
import DGTensor
import Foundation

public enum OutputFormat: String, CaseIterable, Sendable {
    /// A diffusers folder: a pipeline folder (model_index.json + one folder per component), or a
    /// model folder (config.json + weights) when the checkpoint holds one model.
    case diffusers
    /// One safetensors file in the original layout: UNet + VAE + CLIP as `model.diffusion_model.*`,
    /// `first_stage_model.*`, `cond_stage_model.transformer.*`, or a ControlNet as `control_model.*`.
    case ldm
    /// One dginstyle native file (docs/FORMAT.md).
    case native
    /// One safetensors file of one model with diffusers names.
    case safetensors
}

public struct WriteOptions {
    /// Floating-point tensors are stored in this type; integers are left alone.
    public var dtype: DType?
    /// Native format only: zstd (byte-split for 16/32-bit elements) per tensor.
    public var compress = false
    public var compressionLevel: Int32 = 3
    /// Which component to write with --format safetensors from a multi-model checkpoint.
    public var component: String?
    /// Replace an existing destination.
    public var overwrite = false
    public var progress = true

    public init(dtype: DType? = nil, compress: Bool = false, component: String? = nil, overwrite: Bool = false, progress: Bool = true) {
        self.dtype = dtype
        self.compress = compress
        self.component = component
        self.overwrite = overwrite
        self.progress = progress
    }
}

extension Checkpoint {
    /// Writes this checkpoint in `format`, streaming one tensor at a time: peak memory stays
    /// near the largest tensor, and the destination appears only once complete.
    public func write(to destination: String, format: OutputFormat, options: WriteOptions = WriteOptions()) throws {
        var isFolder: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: destination, isDirectory: &isFolder)
        if exists && !options.overwrite {
            throw FileError(destination, "already exists (pass --overwrite to replace it)")
        }
        // Checked before any work: --overwrite replaces like with like, never a user's folder by a file.
        if exists && isFolder.boolValue != (format == .diffusers) {
            throw FileError(destination, isFolder.boolValue ? "is a folder; --format \(format.rawValue) writes a file"
                                                          : "is a file; --format diffusers writes a folder")
        }
        let selected = try componentsToWrite(format: format, options: options)
        let parent = URL(fileURLWithPath: destination).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw FileError(destination, "cannot create the directory \(parent): \(error.localizedDescription)")
        }
        let total = selected.reduce(0) { $0 + $1.source.entries.reduce(0) { $0 + outputEntry($1, options).byteCount } }
        let progress = ProgressBar("convert", total: Double(total), unit: "B", enabled: options.progress)
        defer { progress.finish() }
        // Streaming: each buffer is used once, so none is kept for reuse (peak memory stays
        // near the largest tensor).
        let pooled = BlockPool.shared.capacity
        BlockPool.shared.capacity = 0
        defer { BlockPool.shared.capacity = pooled }
        switch format {
        case .native: try writeNative(destination, selected, options, progress)
        case .safetensors: try writeSafeTensors(destination, selected[0], options, progress)
        case .ldm: try writeLDM(destination, selected, options, progress)
        case .diffusers: try writeDiffusers(destination, selected, options, progress, replacing: exists)
        }
    }

    private func componentsToWrite(format: OutputFormat, options: WriteOptions) throws -> [Component] {
        if let name = options.component {
            guard let c = component(name) else {
                throw FileError(path, "has no component \(name) (it holds \(components.map(\.name).joined(separator: ", ")))")
            }
            return [c]
        }
        if format == .safetensors && components.count > 1 {
            throw FileError(path, "holds \(components.count) models (\(components.map(\.name).joined(separator: ", "))); choose one with --component")
        }
        if format == .ldm {
            let known = components.filter { ["unet", "vae", "text_encoder", "controlnet"].contains($0.name) }
            if known.contains(where: { $0.name == "controlnet" }) && known.count > 1 {
                throw FileError(path, "the original layouts keep a ControlNet in its own file; write it with --component controlnet")
            }
            return known
        }
        return components
    }

    func outputEntry(_ e: TensorEntry, _ options: WriteOptions) -> TensorEntry {
        guard let target = options.dtype, e.dtype.isFloatingPoint, e.dtype.isConvertible, target.isFloatingPoint else { return e }
        return TensorEntry(name: e.name, dtype: target, shape: e.shape)
    }

    /// Reads each tensor of `component` in storage order, converts it, hands it to `body`, lets go.
    func stream(_ component: Component, only names: Set<String>? = nil, _ options: WriteOptions, _ progress: ProgressBar,
                _ body: (TensorEntry, UnsafeRawBufferPointer) throws -> Void) throws {
        for e in component.source.entries where names?.contains(e.name) ?? true {
            let out = outputEntry(e, options)
            var t = try component.source.tensor(e.name)
            if out.dtype != t.dtype { t = t.converted(to: out.dtype) } else { t = t.contiguous() }
            try t.withRawBytes { try body(out, $0) }
            component.source.release(e.name)
            progress.advance(by: Double(out.byteCount))
        }
    }

    private func writeNative(_ dst: String, _ selected: [Component], _ options: WriteOptions, _ progress: ProgressBar) throws {
        let w = try NativeWriter(path: dst, kind: isPipeline && options.component == nil ? "pipeline" : "model")
        for f in files where options.component.map({ f.path.hasPrefix($0 + "/") }) ?? true {
            try w.addFile(f.path, f.bytes)
        }
        for c in selected {
            w.addComponent(c.name, className: c.className, metadata: c.metadata)
            if c.config != nil && !files.contains(where: { $0.path == c.name + "/config.json" }) {
                try w.addFile(c.name + "/config.json", Array((c.config!.pretty + "\n").utf8))
            }
            try stream(c, options, progress) { entry, bytes in
                try w.addTensor(component: c.name, entry: entry, bytes: bytes,
                                compression: options.compress ? Compression.preferred(for: entry.dtype.byteSize) : .none,
                                level: options.compressionLevel)
            }
        }
        try w.finish()
    }

    private func writeSafeTensors(_ dst: String, _ c: Component, _ options: WriteOptions, _ progress: ProgressBar) throws {
        let w = try SafeTensorsWriter(path: dst, entries: c.source.entries.map { outputEntry($0, options) },
                                      metadata: c.metadata ?? [("format", "pt")])
        try stream(c, options, progress) { _, bytes in try w.write(bytes) }
        try w.finish()
    }

    private func writeLDM(_ dst: String, _ selected: [Component], _ options: WriteOptions, _ progress: ProgressBar) throws {
        // Text-encoder keys follow the source's spelling: transformers 4 names (`text_model.`)
        // become the published SD 1.5 form `cond_stage_model.transformer.text_model.*`.
        let prefixed = component("text_encoder")?.source.entries.first?.name.hasPrefix("text_model.") ?? false
        let map = try LDMKeyMap(unetConfig: component("unet")?.config, vaeConfig: component("vae")?.config,
                                textEncoderConfig: component("text_encoder")?.config,
                                controlnetConfig: component("controlnet")?.config, clipTextModelPrefix: prefixed)
        var entries: [TensorEntry] = []
        var kept: [String: Set<String>] = [:]
        for c in selected {
            guard let kind = LDMComponent(rawValue: c.name) else { continue }
            for e in c.source.entries where !LDMKeyMap.isIgnoredDiffusersName(e.name, component: kind) {
                kept[c.name, default: []].insert(e.name)
                guard let m = map.mapping(component: kind, diffusersName: e.name), let shape = m.ldmShape(fromDiffusers: e.shape) else {
                    throw FileError(path, "\(c.name) tensor \(e.name) \(e.shape) has no place in the original layout")
                }
                entries.append(outputEntry(TensorEntry(name: m.ldm, dtype: e.dtype, shape: shape), options))
            }
        }
        let w = try SafeTensorsWriter(path: dst, entries: entries, metadata: nil)
        for c in selected where LDMComponent(rawValue: c.name) != nil {
            try stream(c, only: kept[c.name] ?? [], options, progress) { _, bytes in try w.write(bytes) }
        }
        try w.finish()
    }

    private func writeDiffusers(_ dst: String, _ selected: [Component], _ options: WriteOptions, _ progress: ProgressBar,
                                replacing: Bool) throws {
        let fm = FileManager.default
        let parent = URL(fileURLWithPath: dst).deletingLastPathComponent().path
        guard fm.fileExists(atPath: parent) else { throw FileError(dst, "the directory \(parent) does not exist") }
        // Built beside the destination and renamed into place when complete.
        AbandonedTemporaries.removeOnce(in: parent)
        let staging = parent + "/" + temporaryName(for: URL(fileURLWithPath: dst).lastPathComponent)
        guard mkdir(staging, 0o755) == 0 else {
            throw writeError("cannot create a folder in \(parent)", path: dst, errno: errno, failed: false)
        }
        do {
            let asPipeline = isPipeline && options.component == nil
            for f in files {
                var rel = f.path
                if !asPipeline {
                    // A model folder holds its own component's files at the top.
                    guard let c = selected.first, rel.hasPrefix(c.name + "/") else { continue }
                    rel = String(rel.dropFirst(c.name.count + 1))
                }
                let target = staging + "/" + rel
                try fm.createDirectory(atPath: URL(fileURLWithPath: target).deletingLastPathComponent().path, withIntermediateDirectories: true)
                try writeFileAtomically(target, f.bytes)
            }
            for c in selected {
                let dir = asPipeline ? staging + "/" + c.name : staging
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                if !fm.fileExists(atPath: dir + "/config.json") {
                    guard let config = c.config else {
                        throw FileError(path, "has no config for \(c.name); pass --config DIR with a diffusers folder")
                    }
                    try writeFileAtomically(dir + "/config.json", Array((config.pretty + "\n").utf8))
                }
                let weights = c.name == "text_encoder" ? "model.safetensors" : "diffusion_pytorch_model.safetensors"
                try writeSafeTensors(dir + "/" + weights, c, options, progress)
            }
            if replacing { try replaceAtomically(dst, with: staging) } else { try moveIntoPlace(dst, from: staging) }
        } catch {
            try? fm.removeItem(atPath: staging)
            // A file inside the staging folder failed (a full disk, say): name the destination the
            // user asked for, not our temporary.
            if let e = error as? FileError { throw destinationError(e, staging: staging, destination: dst) }
            throw error
        }
    }
}
