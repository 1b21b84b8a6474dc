import DGBase
import DGTensor
import Foundation

/// Pixels of each train class in one label file.
public struct ClassPixels: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// 19 counts, train id order.
    public var counts: [Int]

    public init(width: Int, height: Int, counts: [Int]) {
        self.width = width
        self.height = height
        self.counts = counts
    }

    public init(_ labels: LabelMap) {
        self.init(width: labels.width, height: labels.height, counts: Array(labels.histogram()[0..<Cityscapes.classCount]))
    }
}

/// Per-file class pixel counts of a dataset, the input of rare-class sampling. Reading every
/// label file of GTA5 takes minutes, so the counts are cached in a JSON file next to the data
/// (`<root>/rcs_stats.json`) and recounted only for files whose size or modification time changed.
public struct ClassStatistics: Sendable {
    public var samples: [Sample]
    public var perFile: [ClassPixels]

    public init(samples: [Sample], perFile: [ClassPixels]) {
        self.samples = samples
        self.perFile = perFile
    }

    public static func cachePath(root: String) -> String { root + "/rcs_stats.json" }

    /// Counts for a dataset folder, cached in `<root>/rcs_stats.json`.
    public static func load(_ samples: [Sample], root: String) throws -> ClassStatistics {
        try load(samples, cache: cachePath(root: root))
    }

    /// Counts every file (no cache), in parallel.
    public static func compute(_ samples: [Sample]) throws -> ClassStatistics {
        ClassStatistics(samples: samples, perFile: try count(samples))
    }

    /// Counts from the cache where still valid, the rest from the files; rewrites the cache when
    /// anything was recounted. A cache that cannot be read is recomputed; one that cannot be
    /// written (read-only data) is skipped.
    public static func load(_ samples: [Sample], cache: String) throws -> ClassStatistics {
        let root = URL(fileURLWithPath: cache).deletingLastPathComponent().path
        var entries = readCache(cache)
        var perFile = [ClassPixels?](repeating: nil, count: samples.count)
        var stamps: [FileStamp] = []
        for (i, s) in samples.enumerated() {
            let stamp = try FileStamp(s.labelPath, trainIds: s.labelsAreTrainIds)
            stamps.append(stamp)
            if let e = entries[relative(s.labelPath, to: root)], e.stamp == stamp { perFile[i] = e.pixels }
        }
        // A dataset preprocessed by DAFormer / DGInStyle's tools and never seen here: their counts,
        // not a recount (with a cache of ours, the files' stamps decide instead).
        let ownFiles = readWroteDAFormerFiles(cache)
        let preprocessed = entries.isEmpty ? try readPreprocessed(root: root) : [:]
        for i in perFile.indices where perFile[i] == nil {
            guard let counts = preprocessed[stem(samples[i].labelPath)] else { continue }
            let h = try PNG.header(samples[i].labelPath)
            perFile[i] = ClassPixels(width: h.width, height: h.height, counts: counts)
            entries[relative(samples[i].labelPath, to: root)] = CacheEntry(stamp: stamps[i], pixels: perFile[i]!)
        }
        let stale = perFile.indices.filter { perFile[$0] == nil }
        guard !stale.isEmpty else {
            if !preprocessed.isEmpty { try? writeCache(cache, entries, wroteDAFormerFiles: false) }
            return ClassStatistics(samples: samples, perFile: perFile.map { $0! })
        }
        let fresh = try count(stale.map { samples[$0] })
        for (k, i) in stale.enumerated() {
            perFile[i] = fresh[k]
            entries[relative(samples[i].labelPath, to: root)] = CacheEntry(stamp: stamps[i], pixels: fresh[k])
        }
        // Entries of files that no longer exist are dropped; other splits' entries are kept.
        entries = entries.filter { Dataset.isFile($0.key.hasPrefix("/") ? $0.key : root + "/" + $0.key) }
        let result = ClassStatistics(samples: samples, perFile: perFile.map { $0! })
        // DAFormer's files are written when absent, and rewritten when this program wrote them.
        let wrote = preprocessed.isEmpty && ((try? result.writePreprocessed(root: root, replace: ownFiles)) ?? false)
        try? writeCache(cache, entries, wroteDAFormerFiles: wrote || (ownFiles && preprocessed.isEmpty))
        return result
    }

    // MARK: DAFormer's files

    /// DAFormer's tools/convert_datasets (which DGInStyle's preprocessing runs) write, beside the
    /// data: `sample_class_stats.json`, a list of {"file": label path, "<train id>": pixels, ...}
    /// (classes with pixels only), and `samples_with_class.json`, per train id a list of
    /// [file, pixels]. Files are matched by name, so paths written from another working directory
    /// still match.
    public static let preprocessedFiles = ["sample_class_stats.json", "samples_with_class.json"]

    /// Counts by label stem from `<root>/sample_class_stats.json`, else from
    /// `<root>/samples_with_class.json` (the same counts by class; a file without any labelled
    /// class is absent there, so it is counted afresh); empty when neither exists.
    static func readPreprocessed(root: String) throws -> [String: [Int]] {
        let path = root + "/sample_class_stats.json"
        guard Dataset.isFile(path) else { return try readSamplesWithClass(root + "/samples_with_class.json") }
        guard let json = try? JSON.parse(bytes: try readFile(path)), let list = json.array else {
            throw FileError(path, "is not a list of DAFormer class statistics")
        }
        var out: [String: [Int]] = [:]
        for (i, e) in list.enumerated() {
            guard let file = e["file"]?.string, let pairs = e.objectPairs else { throw FileError(path, "entry \(i) has no \"file\"") }
            var counts = [Int](repeating: 0, count: Cityscapes.classCount)
            for (key, value) in pairs where key != "file" {
                guard let c = Int(key), (0..<Cityscapes.classCount).contains(c), let n = value.int, n >= 0 else {
                    throw FileError(path, "entry \(i): \"\(key)\": \(value.compact) is not a train id with a pixel count")
                }
                counts[c] = n
            }
            out[stem(file)] = counts
        }
        return out
    }

    static func readSamplesWithClass(_ path: String) throws -> [String: [Int]] {
        guard Dataset.isFile(path) else { return [:] }
        guard let json = try? JSON.parse(bytes: try readFile(path)), let byClass = json.objectPairs else {
            throw FileError(path, "is not DAFormer's samples_with_class (an object of train id -> [[file, pixels], ...])")
        }
        var out: [String: [Int]] = [:]
        for (key, list) in byClass {
            guard let c = Int(key), (0..<Cityscapes.classCount).contains(c), let entries = list.array else {
                throw FileError(path, "\"\(key)\" is not a train id with a list of [file, pixels]")
            }
            for (i, e) in entries.enumerated() {
                guard let pair = e.array, pair.count == 2, let file = pair[0].string, let n = pair[1].int, n >= 0 else {
                    throw FileError(path, "class \(c), entry \(i): \(e.compact) is not [file, pixels]")
                }
                out[stem(file), default: [Int](repeating: 0, count: Cityscapes.classCount)][c] = n
            }
        }
        return out
    }

    /// Writes DAFormer's two files into `root` when neither exists (a user's own preprocessing is
    /// never overwritten), so DAFormer / DGInStyle code can use the counts computed here.
    @discardableResult
    public func writePreprocessed(root: String, replace: Bool = false) throws -> Bool {
        guard replace || !Self.preprocessedFiles.contains(where: { Dataset.isFile(root + "/" + $0) }) else { return false }
        var stats: [JSON] = [], withClass = [[JSON]](repeating: [], count: Cityscapes.classCount)
        for (s, f) in zip(samples, perFile) {
            var entry: [(String, JSON)] = []
            for c in 0..<Cityscapes.classCount where f.counts[c] > 0 {
                entry.append((String(c), .int(f.counts[c])))
                withClass[c].append(.array([.string(s.labelPath), .int(f.counts[c])]))
            }
            entry.append(("file", .string(s.labelPath)))
            stats.append(.object(entry))
        }
        let byClass = JSON.object(withClass.enumerated().filter { !$0.1.isEmpty }.map { (String($0.0), JSON.array($0.1)) })
        try writeFileAtomically(root + "/sample_class_stats.json", Array(JSON.array(stats).pretty.utf8))
        try writeFileAtomically(root + "/samples_with_class.json", Array(byClass.pretty.utf8))
        return true
    }

    /// A label file's name without its label suffix: `00001` for `labels/00001_labelTrainIds.png`
    /// and `labels/00001.png`, `aachen_000000_000019` for Cityscapes' `_gtFine_*` files.
    static func stem(_ path: String) -> String {
        var name = URL(fileURLWithPath: path).lastPathComponent
        for suffix in ["_gtFine_labelTrainIds.png", "_gtFine_labelIds.png", "_labelTrainIds.png", ".png"] where name.hasSuffix(suffix) {
            name = String(name.dropLast(suffix.count))
            break
        }
        return name
    }

    /// Pixels per class over all files.
    public var totals: [Int] {
        perFile.reduce(into: [Int](repeating: 0, count: Cityscapes.classCount)) { t, f in
            for c in 0..<Cityscapes.classCount { t[c] += f.counts[c] }
        }
    }

    /// f_c: each class's share of all labelled (non-ignore) pixels.
    public var frequencies: [Double] {
        let t = totals
        let all = Double(t.reduce(0, +))
        return t.map { all > 0 ? Double($0) / all : 0 }
    }

    // MARK: counting

    private static func count(_ samples: [Sample]) throws -> [ClassPixels] {
        var results = [Result<ClassPixels, Error>?](repeating: nil, count: samples.count)
        let bar = samples.count >= 200 ? ProgressBar("class statistics", total: Double(samples.count), unit: " files") : nil
        // Batches keep the progress bar on this thread and the work deterministic.
        let batch = 64
        try results.withUnsafeMutableBufferPointer { buffer in
            let out = buffer
            for start in stride(from: 0, to: samples.count, by: batch) {
                let range = start..<min(samples.count, start + batch)
                Parallel.forEach(range.count, minimumChunk: 1) { part in
                    for k in part {
                        let i = range.lowerBound + k
                        out[i] = Result { ClassPixels(try samples[i].loadLabels()) }
                    }
                }
                bar?.update(Double(range.upperBound))
                for i in range { if case .failure(let e) = out[i]! { throw e } }
            }
        }
        bar?.finish()
        return results.map { try! $0!.get() }
    }

    // MARK: cache

    struct FileStamp: Equatable {
        var size: Int
        var modified: Double
        var trainIds: Bool

        init(size: Int, modified: Double, trainIds: Bool) {
            self.size = size
            self.modified = modified
            self.trainIds = trainIds
        }

        init(_ path: String, trainIds: Bool) throws {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                  let size = (attributes[.size] as? NSNumber)?.intValue,
                  let date = attributes[.modificationDate] as? Date else {
                throw FileError(path, "cannot read the label file's size and modification time")
            }
            self.init(size: size, modified: date.timeIntervalSince1970, trainIds: trainIds)
        }
    }

    struct CacheEntry {
        var stamp: FileStamp
        var pixels: ClassPixels
    }

    static let cacheVersion = 1

    private static func relative(_ path: String, to root: String) -> String {
        path.hasPrefix(root + "/") ? String(path.dropFirst(root.count + 1)) : path
    }

    static func readCache(_ path: String) -> [String: CacheEntry] {
        guard let bytes = try? readFile(path), let json = try? JSON.parse(bytes: bytes),
              json["version"]?.int == cacheVersion, let files = json["files"]?.array else { return [:] }
        var entries: [String: CacheEntry] = [:]
        for f in files {
            guard let label = f["label"]?.string, let size = f["size"]?.int, let modified = f["modified"]?.double,
                  let trainIds = f["train_ids"]?.bool, let w = f["width"]?.int, let h = f["height"]?.int,
                  let counts = f["pixels"]?.array?.compactMap(\.int), counts.count == Cityscapes.classCount else { continue }
            entries[label] = CacheEntry(stamp: FileStamp(size: size, modified: modified, trainIds: trainIds),
                                        pixels: ClassPixels(width: w, height: h, counts: counts))
        }
        return entries
    }

    /// Whether the cache records that this program wrote DAFormer's files (so they may be redone).
    static func readWroteDAFormerFiles(_ path: String) -> Bool {
        guard let bytes = try? readFile(path), let json = try? JSON.parse(bytes: bytes) else { return false }
        return json["wrote_daformer_files"]?.bool ?? false
    }

    static func writeCache(_ path: String, _ entries: [String: CacheEntry], wroteDAFormerFiles: Bool = false) throws {
        let files: [JSON] = entries.keys.sorted().map { key in
            let e = entries[key]!
            return .object([
                ("label", .string(key)), ("size", .int(e.stamp.size)), ("modified", .double(e.stamp.modified)),
                ("train_ids", .bool(e.stamp.trainIds)), ("width", .int(e.pixels.width)), ("height", .int(e.pixels.height)),
                ("pixels", .array(e.pixels.counts.map { .int($0) })),
            ])
        }
        let json = JSON.object([("version", .int(cacheVersion)), ("classes", .array(Cityscapes.classNames.map { .string($0) })),
                                ("wrote_daformer_files", .bool(wroteDAFormerFiles)), ("files", .array(files))])
        try writeFileAtomically(path, Array(json.compact.utf8))
    }
}
