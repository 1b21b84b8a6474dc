import DGBase
import DGCheckpoint
import DGData
import DGTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One label map to generate from, and the class its crop must show (rare-class crops), if any.
public struct LabelSource: Sendable, Equatable {
    public var file: String
    public var classId: Int?
    public init(file: String, classId: Int? = nil) {
        self.file = file
        self.classId = classId
    }
}

/// The settings of a dataset generation run. Everything that decides an item's content is here,
/// so that any subset of the items (a shard, a resumed run) comes out bit for bit as in one run.
public struct DatasetJob: Sendable {
    public var pipeline: String
    public var controlnet: String?
    public var unet: String?
    /// A LoRA merged into the UNet at `loraScale` (Style Swap as a dial).
    public var unetLoRA: String?
    public var loraScale: Float = 1
    public var labels: String
    public var out: String
    /// Items 0..<count (default: one per label source); item i uses source i mod sources.
    public var count: Int?
    public var seed: UInt64 = 0
    public var sampling = SamplingOptions()
    /// Crop side in pixels; MRLF runs its second pass at twice this.
    public var resolution = 512
    public var mrlf = true
    /// MRLF window stride in latents and large-component area in pixels, both at 512 px; they
    /// scale with the resolution (the area with its square).
    public var strideAt512 = 16
    public var largeAreaAt512 = 30000
    public var anchorNoise = MRLFAnchorNoise.reference
    public var weatherProbability = 0.5
    public var weathers = ["snowy", "rainy", "sunny", "foggy", "night"]
    /// This process renders the items with index % shardCount == shardIndex.
    public var shardIndex = 0
    public var shardCount = 1
    /// Where images and label maps go (vis/, records/ and generation.jsonl are the same in both).
    public var layout: OutputLayout = .gta5
    /// How the weights are held (f32 or bf16; see `ControlNetPipeline.init(pipeline:...)`).
    public var dtype: DType = .f32

    public init(pipeline: String, controlnet: String? = nil, unet: String? = nil, labels: String, out: String) {
        self.pipeline = pipeline
        self.controlnet = controlnet
        self.unet = unet
        self.labels = labels
        self.out = out
    }

    public var mrlfOptions: MRLFOptions {
        var o = MRLFOptions.scaled(resolution: resolution, strideAt512: strideAt512, largeAreaAt512: largeAreaAt512)
        o.anchorNoise = anchorNoise
        return o
    }

    /// What every log line records, and what a resumed run must share with the run it resumes.
    public var settings: JSON {
        var j: JSON = [
            "pipeline": .string(pipeline), "controlnet": controlnet.map { .string($0) } ?? nil, "unet": unet.map { .string($0) } ?? nil,
            "labels": .string(labels), "seed": .string(String(seed)), "steps": .int(sampling.steps),
            "guidance": .double(Double(sampling.guidanceScale)), "conditioning_scale": .double(Double(sampling.conditioningScale)),
            "scheduler": .string(sampling.scheduler.rawValue), "eta": .double(Double(sampling.eta)),
            "negative_prompt": .string(sampling.negativePrompt), "resolution": .int(resolution), "mrlf": .bool(mrlf),
            "stride": .int(strideAt512), "large_area": .int(largeAreaAt512),
            "weather_probability": .double(weatherProbability), "weathers": .array(weathers.map { .string($0) }),
        ]
        // Always with MRLF: its default changed (to the reference's level), so a folder written
        // before, at the other level, must not be continued as if it were the same run.
        if mrlf { j.set("mrlf_anchor_noise", .string(anchorNoise.rawValue)) }
        // Only when not the default, so folders written before the option existed still resume.
        if layout != .gta5 { j.set("layout", .string(layout.rawValue)) }
        if let unetLoRA {
            j.set("unet_lora", .string(unetLoRA))
            j.set("lora_scale", .double(Double(loraScale)))
        }
        if dtype != .f32 { j.set("dtype", .string(dtype.name)) }
        return j
    }
}

/// The folder layouts a generated dataset can have, each the one a segmentation codebase's reader
/// globs without configuration.
public enum OutputLayout: String, Sendable, CaseIterable {
    /// `images/NAME.png` + `labels/NAME_labelTrainIds.png`: mmsegmentation's `GTADataset` (as
    /// DAFormer, HRDA and DGInStyle configure it: img_suffix ".png", seg_map_suffix
    /// "_labelTrainIds.png", img_dir "images", ann_dir "labels").
    case gta5
    /// `leftImg8bit/train/dginstyle/NAME_leftImg8bit.png` +
    /// `gtFine/train/dginstyle/NAME_gtFine_labelTrainIds.png`: mmsegmentation's `CityscapesDataset`
    /// (img_suffix "_leftImg8bit.png", seg_map_suffix "_gtFine_labelTrainIds.png", img_dir
    /// "leftImg8bit/train", ann_dir "gtFine/train", searched recursively), and this program's own
    /// Cityscapes reader.
    case cityscapes

    /// Image and label paths of an item, relative to the output folder.
    public func paths(_ name: String) -> (image: String, label: String) {
        switch self {
        case .gta5: return ("images/\(name).png", "labels/\(name)_labelTrainIds.png")
        case .cityscapes: return ("leftImg8bit/train/dginstyle/\(name)_leftImg8bit.png", "gtFine/train/dginstyle/\(name)_gtFine_labelTrainIds.png")
        }
    }

    var folders: [String] {
        let (image, label) = paths("x")
        return [image, label].map { ($0 as NSString).deletingLastPathComponent }
    }
}

/// What one item is, decided from its index alone before anything heavy runs.
public struct PlannedItem: Sendable {
    public let index: Int
    public let source: LabelSource
    public let seed: UInt64
    /// Output stem: zero-padded index, then the label file's stem.
    public let name: String
}

/// The DGInStyle dataset writer: for each item, a crop of a label map (centred on the requested
/// class, or random), a caption of the classes present (half of the time a street-scene sentence
/// with a weather), an image generated for it (MRLF or one pass), and the files
/// images/NAME.png, labels/NAME_labelTrainIds.png (the crop exactly), vis/NAME.png (image |
/// colours | 50% overlay) and records/NAME.json (written last: an item is done when its record
/// exists; failed/NAME.json holds the error of an item that threw until a rerun finishes it).
/// generation.jsonl collects the records in index order at the end of every run.
public final class DatasetGenerator {
    public let job: DatasetJob
    public let sources: [LabelSource]

    public init(_ job: DatasetJob) throws {
        guard job.shardCount > 0, (0..<job.shardCount).contains(job.shardIndex) else {
            throw GenerationError("--shard \(job.shardIndex)/\(job.shardCount): the index must be in 0..<count")
        }
        guard job.resolution > 0, job.resolution % 64 == 0 else {
            throw GenerationError("--resolution \(job.resolution) is not a positive multiple of 64")
        }
        guard job.sampling.steps > 0 else { throw GenerationError("--steps must be positive") }
        guard job.strideAt512 > 0, job.largeAreaAt512 >= 0 else { throw GenerationError("--stride must be positive and --large-area non-negative") }
        if let count = job.count, count < 0 { throw GenerationError("--count must be non-negative") }
        self.job = job
        sources = try DatasetGenerator.labelSources(job.labels)
        if sources.isEmpty { throw GenerationError("\(job.labels): no label maps (*_labelTrainIds.png, *.png colour masks, or gen_file.json)") }
    }

    /// Label maps from a gen_file.json list of {class, file_name} (class: a train id, as a number
    /// or string, or a class name; file names relative to the list's folder or the working
    /// directory), a dataset root in the GTA5 or Cityscapes layout (its label files), a folder
    /// (its *.png files, sorted; *_labelTrainIds.png only when there are any), or one PNG file.
    public static func labelSources(_ path: String) throws -> [LabelSource] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw GenerationError("\(path): no such file or folder") }
        if isDir.boolValue {
            if (try? Dataset.layout(of: path)) != nil {
                do { return try Dataset.samples(root: path).map { LabelSource(file: $0.labelPath) } } catch { throw GenerationError("\(error)") }
            }
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.lowercased().hasSuffix(".png") }.sorted()
            let trainIds = names.filter { $0.hasSuffix("_labelTrainIds.png") }
            return (trainIds.isEmpty ? names : trainIds).map { LabelSource(file: path + "/" + $0) }
        }
        if path.lowercased().hasSuffix(".json") {
            guard let data = FileManager.default.contents(atPath: path) else { throw GenerationError("\(path): cannot read") }
            let json: JSON
            do { json = try JSON.parse(bytes: Array(data)) } catch { throw GenerationError("\(path): \(error)") }
            guard let entries = json.array else { throw GenerationError("\(path): expected a list of {\"class\", \"file_name\"}") }
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            return try entries.enumerated().map { i, e in
                guard let file = e["file_name"]?.string else { throw GenerationError("\(path): entry \(i) has no file_name") }
                var classId: Int?
                if let c = e["class"], !c.isNull {
                    guard let id = c.int ?? c.string.flatMap(Int.init) ?? c.string.flatMap({ Cityscapes.classNames.firstIndex(of: $0) }),
                          (0..<Cityscapes.classCount).contains(id) else {
                        throw GenerationError("\(path): entry \(i) has class \(c.compact), not a train id 0...18 or a class name")
                    }
                    classId = id
                }
                // Relative names: beside the list, else from the working directory (as the
                // reference's example list names them).
                let besideList = folder + "/" + file
                let resolved = file.hasPrefix("/") || !FileManager.default.fileExists(atPath: besideList) ? file : besideList
                return LabelSource(file: resolved, classId: classId)
            }
        }
        guard path.lowercased().hasSuffix(".png") else { throw GenerationError("\(path): expected a folder, a .png label map or a gen_file.json") }
        return [LabelSource(file: path)]
    }

    /// A label map as train ids. `*_labelTrainIds.png` hold train ids and `*_labelIds.png`
    /// Cityscapes label ids; otherwise the format decides: a palette PNG holds label ids (as GTA5's
    /// label files), an RGB PNG is a mask in the train-id palette, a grey PNG holds train ids.
    public static func loadLabels(_ path: String) throws -> LabelMap {
        let header = try PNG.header(path)
        if path.hasSuffix("_labelTrainIds.png") { return try PNG.readLabels(path) }
        if path.hasSuffix("_labelIds.png") || header.isPalette { return Cityscapes.trainIds(fromLabelIds: try PNG.readLabels(path)) }
        if header.isColor { return try Cityscapes.labels(fromColors: PNG.read(path)) }
        return try PNG.readLabels(path)
    }

    public var itemCount: Int { job.count ?? sources.count }

    public func plan(_ index: Int) -> PlannedItem {
        let source = sources[index % sources.count]
        var stem = URL(fileURLWithPath: source.file).deletingPathExtension().lastPathComponent
        for suffix in ["_labelTrainIds", "_labelIds", "_color"] where stem.hasSuffix(suffix) { stem = String(stem.dropLast(suffix.count)) }
        let name = String(format: "%06d", index) + "_" + stem.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? String($0) : "_" }.joined()
        return PlannedItem(index: index, source: source, seed: itemSeed(base: job.seed, index: index), name: name)
    }

    /// This shard's items.
    public var shardItems: [PlannedItem] {
        Swift.stride(from: job.shardIndex, to: itemCount, by: job.shardCount).map(plan)
    }

    func path(_ folder: String, _ name: String, _ suffix: String = ".png") -> String { job.out + "/" + folder + "/" + name + suffix }

    public func isDone(_ item: PlannedItem) -> Bool { FileManager.default.fileExists(atPath: path("records", item.name, ".json")) }

    /// The crop, its caption and the weather of an item: the item's own generator draws the crop
    /// position, then the weather coin, then the weather.
    public func prepare(_ item: PlannedItem) throws -> (labels: LabelMap, rect: CropRect, prompt: String, weather: String?) {
        var rng = SplitMix64(seed: item.seed)
        var map = try DatasetGenerator.loadLabels(item.source.file)
        let side = job.resolution
        // Maps smaller than the crop are enlarged (nearest) until the crop fits.
        if map.width < side || map.height < side {
            let scale = Double(side) / Double(min(map.width, map.height))
            map = map.resized(width: max(side, Int((Double(map.width) * scale).rounded(.up))),
                              height: max(side, Int((Double(map.height) * scale).rounded(.up))))
        }
        let rect: CropRect
        if let c = item.source.classId {
            guard map.ids.contains(UInt8(c)) else {
                throw GenerationError("\(item.source.file): has no pixel of class \(c) (\(Cityscapes.classNames[c])) to centre a crop on")
            }
            if let r = RareClassCrop.crop(labels: map, classId: c, width: side, height: side, rng: &rng) {
                rect = r
            } else {
                // No attempt reached 1%: as the reference, keep a crop centred on the class anyway.
                let pixels = map.ids.indices.filter { map.ids[$0] == UInt8(c) }
                let p = pixels[rng.int(below: pixels.count)]
                rect = CropRect.centred(on: p % map.width, p / map.width, width: side, height: side, boundsWidth: map.width, boundsHeight: map.height)
            }
        } else {
            rect = CropRect(x: rng.int(below: map.width - side + 1), y: rng.int(below: map.height - side + 1), width: side, height: side)
        }
        let crop = map.cropped(rect)
        var prompt = Cityscapes.caption(classes: Cityscapes.classes(present: crop))
        var weather: String?
        if rng.uniform() < job.weatherProbability && !job.weathers.isEmpty {
            let w = job.weathers[rng.int(below: job.weathers.count)]
            weather = w
            prompt = prompt.isEmpty ? "A city street scene, in \(w) weather." : "A city street scene with \(prompt), in \(w) weather."
        }
        return (crop, rect, prompt, weather)
    }

    public struct Summary: Sendable {
        public var generated = 0
        public var skipped = 0
    }

    /// Renders this shard's unfinished items, then rewrites generation.jsonl. Inputs, models and
    /// the settings of an existing output folder are checked before anything is written.
    /// `loaded`, when given, is the job's pipeline already assembled from the job's paths (a caller
    /// running several jobs on the same models loads them once); `progressLabel` names the bar.
    @discardableResult
    public func run(progress: Bool = true, progressLabel: String = "generate", loaded: ControlNetPipeline? = nil,
                    log: (String) -> Void = { _ in }) throws -> Summary {
        let fm = FileManager.default
        var isFolder: ObjCBool = false
        if fm.fileExists(atPath: job.out, isDirectory: &isFolder), !isFolder.boolValue {
            throw GenerationError("\(job.out): exists and is not a folder")
        }
        let existing = try runSettingsMatch()
        let items = shardItems
        let pending = items.filter { !isDone($0) }
        var summary = Summary(generated: 0, skipped: items.count - pending.count)
        for file in Set(pending.map(\.source.file)).sorted() {
            do { _ = try PNG.header(file) } catch { throw GenerationError("\(error)") }
        }
        var pipe: ControlNetPipeline?
        if !pending.isEmpty {
            let p = try loaded ?? ControlNetPipeline(pipeline: job.pipeline, controlnet: job.controlnet, unet: job.unet,
                                                        unetLoRA: job.unetLoRA, loraScale: job.loraScale, dtype: job.dtype)
            guard let cn = p.controlnet else { throw GenerationError("\(job.pipeline): has no ControlNet; pass --controlnet") }
            guard cn.conditioning_channels == Cityscapes.classCount + 1 else {
                throw GenerationError("\(job.controlnet ?? job.pipeline): the ControlNet takes \(cn.conditioning_channels) condition channels, not the \(Cityscapes.classCount + 1) of one-hot Cityscapes labels")
            }
            try p.checkSize(height: job.resolution, width: job.resolution)
            pipe = p
        }
        do {
            for folder in job.layout.folders + ["vis", "records"] {
                try fm.createDirectory(atPath: job.out + "/" + folder, withIntermediateDirectories: true)
            }
        } catch {
            throw GenerationError("\(job.out): cannot create: \(error.localizedDescription)")
        }
        if !existing { try writeFileAtomically(job.out + "/run.json", Array((job.settings.pretty + "\n").utf8)) }
        // Not in run.json: a rerun may change --count (a longer list starts with a shorter one) or
        // the shard count; `status` reads the latest from here.
        let shardsJSON: JSON = ["count": .int(itemCount), "shards": .int(job.shardCount)]
        let shardsPath = job.out + "/" + DatasetGenerator.shardsFile
        if fm.contents(atPath: shardsPath).flatMap({ try? JSON.parse(bytes: Array($0)) }) != shardsJSON {
            try writeFileAtomically(shardsPath, Array((shardsJSON.compact + "\n").utf8))
        }
        // A dataset root with unpaired or cut-short files: the list of what was left out.
        try Dataset.writeSkippedList(to: job.out + "/skipped_samples.txt", roots: [job.labels])
        if let pipe {
            let bar = ProgressBar(progressLabel, total: Double(pending.count), unit: " img", enabled: progress)
            for (k, item) in pending.enumerated() {
                let marker = path(DatasetGenerator.failedFolder, item.name, ".json")
                do {
                    try render(item, pipe) { fraction in bar.update(Double(k) + fraction) }
                } catch {
                    // Left for `status` (and whoever reads the folder) until a rerun finishes the item.
                    try? fm.createDirectory(atPath: job.out + "/" + DatasetGenerator.failedFolder, withIntermediateDirectories: true)
                    let note: JSON = ["index": .int(item.index), "error": .string("\(error)")]
                    try? writeFileAtomically(marker, Array((note.compact + "\n").utf8))
                    throw error
                }
                if fm.fileExists(atPath: marker) { try? fm.removeItem(atPath: marker) }
                summary.generated += 1
                bar.update(Double(k + 1))
            }
            bar.finish()
        }
        try writeLog()
        log("\(summary.generated) generated, \(summary.skipped) already done (shard \(job.shardIndex)/\(job.shardCount), \(items.count) items) in \(job.out)")
        if Profiler.enabled && summary.generated > 0 { log("per image:\n" + Profiler.report(runs: summary.generated)) }
        return summary
    }

    /// Whether the output folder already holds a run.json; throws when its settings differ.
    func runSettingsMatch() throws -> Bool {
        guard let data = FileManager.default.contents(atPath: job.out + "/run.json") else { return false }
        guard (try? JSON.parse(bytes: Array(data))) == job.settings else {
            throw GenerationError("\(job.out): holds a run with other settings (run.json); use another --out or the same settings")
        }
        return true
    }

    func render(_ item: PlannedItem, _ pipe: ControlNetPipeline, progress: (Double) -> Void) throws {
        let (crop, rect, prompt, weather) = try prepare(item)
        let generator = NoiseGenerator(seed: item.seed)
        let text = pipe.encodeText(prompt: prompt, negativePrompt: job.sampling.negativePrompt)
        let side = job.resolution
        let image01: Tensor
        if job.mrlf {
            image01 = try pipe.generateMRLF(text: text, labels: crop.ids, height: side, width: side, generator: generator,
                                            options: job.sampling, mrlf: job.mrlfOptions,
                                            onStep: { i, n in progress(Double(i + 1) / Double(n)) }).image
        } else {
            let condition = SemanticCondition.oneHot(ids: crop.ids, width: side, height: side)
            image01 = try pipe.generate(text: text, condition: condition, height: side, width: side, generator: generator,
                                        options: job.sampling, onStep: { i, _ in progress(Double(i + 1) / Double(job.sampling.steps)) }).image
        }
        let image = Image(tensor: Resize.toSigned(image01))
        let colours = Cityscapes.colorize(crop)
        let (imagePath, labelPath) = job.layout.paths(item.name)
        try PNG.write(image, to: job.out + "/" + imagePath)
        try PNG.write(Image(width: crop.width, height: crop.height, channels: 1, pixels: crop.ids), to: job.out + "/" + labelPath)
        try PNG.write(Image.sideBySide([image, colours, image.blended(with: colours, alpha: 0.5)]), to: path("vis", item.name))
        let record: JSON = [
            "index": .int(item.index), "image": .string(imagePath), "label": .string(labelPath),
            "vis": .string("vis/\(item.name).png"), "file": .string(item.source.file),
            "class": item.source.classId.map { .string(Cityscapes.classNames[$0]) } ?? nil,
            "class_id": item.source.classId.map { .int($0) } ?? nil,
            "crop": [.int(rect.x), .int(rect.y), .int(rect.width), .int(rect.height)],
            "prompt": .string(prompt), "weather": weather.map { .string($0) } ?? nil,
            "seed": .string(String(item.seed)), "settings": job.settings,
        ]
        try writeFileAtomically(path("records", item.name, ".json"), Array((record.compact + "\n").utf8))
    }

    /// The count and shard count of the latest run, for `status`.
    public static let shardsFile = "shards.json"
    /// failed/NAME.json: an item whose rendering threw (its error), removed when a rerun finishes it.
    public static let failedFolder = "failed"

    /// generation.jsonl: every finished item's record in the folder (all shards that wrote
    /// here), in index order.
    func writeLog() throws {
        let dir = job.out + "/records"
        // Shards ending together would otherwise race: one lists the records before another's last
        // record lands, then renames its log over the other's complete one. Under the lock, the
        // last shard to write lists every record written before any other shard took the lock.
        let lockFD = open(job.out + "/.generation.lock", O_CREAT | O_RDWR, 0o644)
        if lockFD >= 0 { _ = flock(lockFD, LOCK_EX) }
        defer { if lockFD >= 0 { close(lockFD) } }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
        guard !names.isEmpty else { return }
        var text = ""
        for name in names {
            guard let data = FileManager.default.contents(atPath: dir + "/" + name) else { continue }
            text += String(decoding: data, as: UTF8.self)
        }
        try writeFileAtomically(job.out + "/generation.jsonl", Array(text.utf8))
    }
}
