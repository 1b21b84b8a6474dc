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
        let stale = perFile.indices.filter { perFile[$0] == nil }
        guard !stale.isEmpty else { return ClassStatistics(samples: samples, perFile: perFile.map { $0! }) }
        let fresh = try count(stale.map { samples[$0] })
        for (k, i) in stale.enumerated() {
            perFile[i] = fresh[k]
            entries[relative(samples[i].labelPath, to: root)] = CacheEntry(stamp: stamps[i], pixels: fresh[k])
        }
        // Entries of files that no longer exist are dropped; other splits' entries are kept.
        entries = entries.filter { Dataset.isFile($0.key.hasPrefix("/") ? $0.key : root + "/" + $0.key) }
        try? writeCache(cache, entries)
        return ClassStatistics(samples: samples, perFile: perFile.map { $0! })
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

    static func writeCache(_ path: String, _ entries: [String: CacheEntry]) throws {
        let files: [JSON] = entries.keys.sorted().map { key in
            let e = entries[key]!
            return .object([
                ("label", .string(key)), ("size", .int(e.stamp.size)), ("modified", .double(e.stamp.modified)),
                ("train_ids", .bool(e.stamp.trainIds)), ("width", .int(e.pixels.width)), ("height", .int(e.pixels.height)),
                ("pixels", .array(e.pixels.counts.map { .int($0) })),
            ])
        }
        let json = JSON.object([("version", .int(cacheVersion)), ("classes", .array(Cityscapes.classNames.map { .string($0) })), ("files", .array(files))])
        try writeFileAtomically(path, Array(json.compact.utf8))
    }
}
