import DGBase
import Foundation

/// One (image, label map) pair of a dataset on disk.
public struct Sample: Sendable, Codable, Equatable {
    public var imagePath: String
    public var labelPath: String
    /// The label file stores train ids (`*_labelTrainIds.png`); otherwise Cityscapes label ids
    /// (GTA5 `labels/NNNNN.png`, `*_gtFine_labelIds.png`), mapped to train ids on load.
    public var labelsAreTrainIds: Bool

    public init(imagePath: String, labelPath: String, labelsAreTrainIds: Bool) {
        self.imagePath = imagePath
        self.labelPath = labelPath
        self.labelsAreTrainIds = labelsAreTrainIds
    }

    public func loadImage() throws -> Image { try PNG.read(imagePath) }

    /// The label map as train ids.
    public func loadLabels() throws -> LabelMap {
        let raw = try PNG.readLabels(labelPath)
        return labelsAreTrainIds ? raw : Cityscapes.trainIds(fromLabelIds: raw)
    }

    /// Image and train-id labels of one size. A few GTA5 frames ship an image whose size differs
    /// from its label map; the reference pipeline (mmseg's Resize, in DAFormer and DGInStyle)
    /// rescales image and labels to one scale each, so such a pair is used, not dropped. Here
    /// the image is resized to the label map (bilinear, as Pillow) and the label ids are never
    /// interpolated; the pair is named once on standard error.
    public func load() throws -> (image: Image, labels: LabelMap) {
        var image = try loadImage()
        let labels = try loadLabels()
        if image.width != labels.width || image.height != labels.height {
            Dataset.note(resized: self, from: (image.width, image.height), to: (labels.width, labels.height))
            image = image.resized(width: labels.width, height: labels.height, filter: .bilinear)
        }
        return (image, labels)
    }
}

public enum DatasetLayout: String, Sendable, CaseIterable, Codable {
    /// `images/NNNNN.png` + `labels/NNNNN.png` (label ids) or `labels/NNNNN_labelTrainIds.png`.
    case gta5
    /// `leftImg8bit/<split>/<city>/X_leftImg8bit.png` + `gtFine/<split>/<city>/X_gtFine_labelTrainIds.png`
    /// (or `X_gtFine_labelIds.png`).
    case cityscapes
}

public enum Dataset {
    /// The usable samples under `root`, whose layout is recognised from its folders. What was
    /// skipped is said in one line on standard error (once per folder and process) and kept in
    /// `skipped(root:)` for a list file (`writeSkippedList`).
    public static func samples(root: String, split: String = "train") throws -> [Sample] {
        let scan = try self.scan(root: root, split: split)
        scan.report()
        return scan.samples
    }

    public static func scan(root: String, split: String = "train") throws -> DatasetScan {
        switch try layout(of: root) {
        case .gta5: return try gta5(root: root)
        case .cityscapes: return try cityscapes(root: root, split: split)
        }
    }

    public static func layout(of root: String) throws -> DatasetLayout {
        if isDirectory(root + "/images") && isDirectory(root + "/labels") { return .gta5 }
        if isDirectory(root + "/leftImg8bit") && isDirectory(root + "/gtFine") { return .cityscapes }
        guard isDirectory(root) else { throw FileError(root, "no such dataset folder") }
        throw FileError(root, "not a dataset: expected images/ + labels/ (GTA5 layout) or leftImg8bit/ + gtFine/ (Cityscapes layout)")
    }

    /// GTA5 layout as released: pairs by file name; a ready `NNNNN_labelTrainIds.png` is
    /// preferred to `NNNNN.png`. An image without a label file, a label file without an image,
    /// or a file cut short (no PNG end chunk) drops that pair, recorded in `skipped`.
    public static func gta5(root: String) throws -> DatasetScan {
        let imageDir = root + "/images", labelDir = root + "/labels"
        let images = try pngFiles(in: imageDir)
        let labels = Set(try pngFiles(in: labelDir))
        var scan = DatasetScan(root: root)
        var used = Set<String>()
        for name in images {
            let stem = String(name.dropLast(4))
            let image = imageDir + "/" + name
            if labels.contains(stem + "_labelTrainIds.png") {
                scan.add(Sample(imagePath: image, labelPath: labelDir + "/" + stem + "_labelTrainIds.png", labelsAreTrainIds: true))
                used.insert(stem + "_labelTrainIds.png")
                used.insert(name)  // a label-id file beside it is an alternative, not an orphan
            } else if labels.contains(name) {
                scan.add(Sample(imagePath: image, labelPath: labelDir + "/" + name, labelsAreTrainIds: false))
                used.insert(name)
            } else {
                scan.skipped.append((image, "no label file"))
            }
        }
        for orphan in labels.subtracting(used).sorted() { scan.skipped.append((labelDir + "/" + orphan, "no image")) }
        guard !scan.samples.isEmpty else { throw FileError(imageDir, "holds no PNG images with label files") }
        return scan
    }

    /// Cityscapes layout, one split. Every image needs a `_gtFine_labelTrainIds.png` (made by
    /// cityscapesScripts' createTrainIdLabelImgs) or a `_gtFine_labelIds.png`; images without
    /// one, and files cut short, are skipped and recorded.
    public static func cityscapes(root: String, split: String) throws -> DatasetScan {
        let imageRoot = root + "/leftImg8bit/" + split, labelRoot = root + "/gtFine/" + split
        guard isDirectory(imageRoot) else { throw FileError(imageRoot, "no such split folder") }
        var scan = DatasetScan(root: root)
        for city in try subdirectories(of: imageRoot) {
            for name in try pngFiles(in: imageRoot + "/" + city) where name.hasSuffix("_leftImg8bit.png") {
                let stem = String(name.dropLast("_leftImg8bit.png".count))
                let base = labelRoot + "/" + city + "/" + stem + "_gtFine_"
                let image = imageRoot + "/" + city + "/" + name
                if isFile(base + "labelTrainIds.png") {
                    scan.add(Sample(imagePath: image, labelPath: base + "labelTrainIds.png", labelsAreTrainIds: true))
                } else if isFile(base + "labelIds.png") {
                    scan.add(Sample(imagePath: image, labelPath: base + "labelIds.png", labelsAreTrainIds: false))
                } else {
                    scan.skipped.append((image, "no label file"))
                }
            }
        }
        guard !scan.samples.isEmpty else { throw FileError(imageRoot, "holds no *_leftImg8bit.png images with label files") }
        return scan
    }

    /// Images without labels (DreamBooth fine-tuning): `DIR/images/*.png` when that folder
    /// exists, else `DIR/*.png`, sorted by name.
    public static func imageFiles(in dir: String) throws -> [String] {
        let folder = isDirectory(dir + "/images") ? dir + "/images" : dir
        let names = try pngFiles(in: folder)
        guard !names.isEmpty else { throw FileError(folder, "holds no PNG images") }
        return names.map { folder + "/" + $0 }
    }

    // MARK: file system

    static func pngFiles(in dir: String) throws -> [String] {
        guard isDirectory(dir) else { throw FileError(dir, "no such folder") }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
            throw FileError(dir, "cannot list: \(error.localizedDescription)")
        }
        return names.filter { $0.hasSuffix(".png") && !$0.hasPrefix(".") }.sorted()
    }

    static func subdirectories(of dir: String) throws -> [String] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
            throw FileError(dir, "cannot list: \(error.localizedDescription)")
        }
        return names.filter { !$0.hasPrefix(".") && isDirectory(dir + "/" + $0) }.sorted()
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    static func isFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
    }

    // MARK: what was skipped

    /// Where warnings go (standard error; tests may capture them).
    nonisolated(unsafe) public static var warn: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    private static let lock = NSLock()
    nonisolated(unsafe) private static var reported: [String: [(path: String, reason: String)]] = [:]

    /// What the scans of this process skipped in the dataset folders `roots` (and the pairs
    /// whose image was resized to its label map).
    public static func skipped(roots: [String]) -> [(path: String, reason: String)] {
        lock.lock(); defer { lock.unlock() }
        return reported.keys.sorted().filter { key in roots.contains { key == $0 || key.hasPrefix($0 + "/") } }.flatMap { reported[$0]! }
    }

    /// Writes what was skipped in `roots`, one `path<TAB>reason` line each, to `path`
    /// (atomically); nothing when nothing was skipped. Returns whether it wrote.
    @discardableResult
    public static func writeSkippedList(to path: String, roots: [String]) throws -> Bool {
        let list = skipped(roots: roots)
        guard !list.isEmpty else { return false }
        try writeFileAtomically(path, Array(list.map { "\($0.path)\t\($0.reason)\n" }.joined().utf8))
        return true
    }

    static func record(_ scan: DatasetScan) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard reported[scan.root] == nil else { return false }
        reported[scan.root] = scan.skipped
        return true
    }

    static func note(resized sample: Sample, from: (Int, Int), to: (Int, Int)) {
        lock.lock()
        let first = reported[sample.imagePath] == nil
        if first { reported[sample.imagePath] = [(sample.imagePath, "image \(from.0)x\(from.1) resized to its label map's \(to.0)x\(to.1)")] }
        lock.unlock()
        if first { warn("\(sample.imagePath): \(from.0)x\(from.1), its label map \(to.0)x\(to.1): image resized to the label map") }
    }
}

/// The pairs of a dataset folder and what could not be paired or read.
public struct DatasetScan {
    public let root: String
    public var samples: [Sample] = []
    /// Files left out and why ("no label file", "no image", "truncated (no PNG end chunk)").
    public var skipped: [(path: String, reason: String)] = []

    public init(root: String) { self.root = root }

    /// Adds the pair unless one of its files is cut short: a download that stopped midway
    /// leaves a PNG without its IEND chunk, which is cheap to check for every file up front.
    mutating func add(_ sample: Sample) {
        for path in [sample.imagePath, sample.labelPath] where !PNG.endsComplete(path) {
            skipped.append((path, "truncated (no PNG end chunk)"))
            return
        }
        samples.append(sample)
    }

    /// The samples, or an error naming what could not be used: for sets whose every file counts
    /// (a segmenter's training and evaluation sets, where a dropped image changes the numbers).
    public func complete() throws -> [Sample] {
        guard let first = skipped.first else { return samples }
        let what = ["no label file": "missing label file for", "no image": "missing image for label file"][first.reason] ?? first.reason + ":"
        let more = skipped.count > 1 ? " and \(skipped.count - 1) more" : ""
        throw FileError(root, "\(what) \(first.path)\(more)")
    }

    /// One line on standard error when anything was skipped (once per root and process).
    func report() {
        guard !skipped.isEmpty, Dataset.record(self) else { return }
        var reasons: [String: Int] = [:]
        for s in skipped { reasons[s.reason, default: 0] += 1 }
        let parts = reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let shown = skipped.prefix(3).map { URL(fileURLWithPath: $0.path).lastPathComponent }.joined(separator: ", ")
        Dataset.warn("\(root): \(samples.count) pairs used, \(skipped.count) files skipped (\(parts); e.g. \(shown))")
    }
}
