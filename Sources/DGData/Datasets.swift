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

    /// Image and train-id labels, checked to be the same size.
    public func load() throws -> (image: Image, labels: LabelMap) {
        let image = try loadImage(), labels = try loadLabels()
        guard image.width == labels.width, image.height == labels.height else {
            throw FileError(labelPath, "is \(labels.width)x\(labels.height) but its image \(imagePath) is \(image.width)x\(image.height)")
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
    /// The samples under `root`, whose layout is recognised from its folders.
    public static func samples(root: String, split: String = "train") throws -> [Sample] {
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

    /// GTA5 layout. Every image needs a label file and every label file an image; a ready
    /// `NNNNN_labelTrainIds.png` is preferred to `NNNNN.png`.
    public static func gta5(root: String) throws -> [Sample] {
        let imageDir = root + "/images", labelDir = root + "/labels"
        let images = try pngFiles(in: imageDir)
        let labels = Set(try pngFiles(in: labelDir))
        var samples: [Sample] = [], missing: [String] = []
        var used = Set<String>()
        for name in images {
            let stem = String(name.dropLast(4))
            if labels.contains(stem + "_labelTrainIds.png") {
                samples.append(Sample(imagePath: imageDir + "/" + name, labelPath: labelDir + "/" + stem + "_labelTrainIds.png", labelsAreTrainIds: true))
                used.insert(stem + "_labelTrainIds.png")
                used.insert(name)  // a label-id file beside it is an alternative, not an orphan
            } else if labels.contains(name) {
                samples.append(Sample(imagePath: imageDir + "/" + name, labelPath: labelDir + "/" + name, labelsAreTrainIds: false))
                used.insert(name)
            } else {
                missing.append(labelDir + "/" + name)
            }
        }
        if !missing.isEmpty { throw missingError(root, "label file", missing) }
        let orphans = labels.subtracting(used).sorted()
        if !orphans.isEmpty { throw missingError(root, "image for label file", orphans.map { labelDir + "/" + $0 }) }
        guard !samples.isEmpty else { throw FileError(imageDir, "holds no PNG images") }
        return samples
    }

    /// Cityscapes layout, one split. Every image needs a `_gtFine_labelTrainIds.png` (made by
    /// cityscapesScripts' createTrainIdLabelImgs) or a `_gtFine_labelIds.png`.
    public static func cityscapes(root: String, split: String) throws -> [Sample] {
        let imageRoot = root + "/leftImg8bit/" + split, labelRoot = root + "/gtFine/" + split
        guard isDirectory(imageRoot) else { throw FileError(imageRoot, "no such split folder") }
        var samples: [Sample] = [], missing: [String] = []
        for city in try subdirectories(of: imageRoot) {
            for name in try pngFiles(in: imageRoot + "/" + city) where name.hasSuffix("_leftImg8bit.png") {
                let stem = String(name.dropLast("_leftImg8bit.png".count))
                let base = labelRoot + "/" + city + "/" + stem + "_gtFine_"
                let image = imageRoot + "/" + city + "/" + name
                if isFile(base + "labelTrainIds.png") {
                    samples.append(Sample(imagePath: image, labelPath: base + "labelTrainIds.png", labelsAreTrainIds: true))
                } else if isFile(base + "labelIds.png") {
                    samples.append(Sample(imagePath: image, labelPath: base + "labelIds.png", labelsAreTrainIds: false))
                } else {
                    missing.append(base + "labelTrainIds.png")
                }
            }
        }
        if !missing.isEmpty { throw missingError(root, "label file", missing) }
        guard !samples.isEmpty else { throw FileError(imageRoot, "holds no *_leftImg8bit.png images") }
        return samples
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

    private static func missingError(_ root: String, _ what: String, _ paths: [String]) -> FileError {
        let shown = paths.prefix(3).joined(separator: ", ")
        let more = paths.count > 3 ? " and \(paths.count - 3) more" : ""
        return FileError(root, "missing \(what) \(shown)\(more)")
    }
}
