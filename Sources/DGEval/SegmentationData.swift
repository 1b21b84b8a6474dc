import DGBase
import DGCheckpoint
import DGData
import DGTensor
import Foundation

/// Labelled images from one or more dataset folders (GTA5 layout: `images/` + `labels/`, as
/// `synth` and `generate` write them; or Cityscapes layout), pooled into one list: the folders'
/// samples in the order given, each folder's sorted by name.
public struct SegmentationData {
    public let roots: [String]
    public let samples: [Sample]
    /// Samples per folder, in `roots` order.
    public let counts: [Int]

    public init(roots: [String], split: String = "train") throws {
        guard !roots.isEmpty else { throw FileError("--data", "no dataset folder given") }
        var samples: [Sample] = [], counts: [Int] = []
        for root in roots {
            let s = try Dataset.scan(root: root, split: split).complete()
            samples += s
            counts.append(s.count)
        }
        self.roots = roots
        self.samples = samples
        self.counts = counts
    }

    /// What a checkpoint records to refuse resuming on other data.
    public var identity: JSON {
        .array(zip(roots, counts).map { ["root": .string(URL(fileURLWithPath: $0.0).standardizedFileURL.path), "images": .int($0.1)] })
    }

    /// Image (RGB) and train-id labels of one sample, checked: same size, and every label a
    /// train id (0...18) or 255.
    public static func load(_ sample: Sample, classes: Int = Cityscapes.classCount) throws -> (image: Image, labels: LabelMap) {
        let (image, labels) = try sample.load()
        let h = labels.histogram()
        if let bad = (classes..<255).first(where: { h[$0] > 0 }) {
            throw FileError(sample.labelPath, "holds label \(bad), which is no train id (0...\(classes - 1), or 255 = ignore)")
        }
        return (image.rgb(), labels)
    }

    /// Checks, from the PNG headers alone, that every image has a label map of its size: the
    /// whole set is known to be readable before anything is computed or written.
    /// Pixels of each class over all label maps (255 and other non-classes not counted).
    public func classPixels(classes: Int = Cityscapes.classCount) throws -> [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for sample in samples {
            let h = try Self.load(sample, classes: classes).labels.histogram()
            for c in 0..<classes { counts[c] += h[c] }
        }
        return counts
    }

    /// ENet's class weights, 1 / ln(1.02 + f) for a class holding the fraction f of the labelled
    /// pixels: 1.4 for a class covering half the pixels, ~50 for the rarest; bounded, unlike the
    /// inverse frequency.
    public func balancedClassWeights(classes: Int = Cityscapes.classCount) throws -> [Float] {
        let counts = try classPixels(classes: classes)
        let total = Double(max(1, counts.reduce(0, +)))
        return counts.map { Float(1 / Foundation.log(1.02 + Double($0) / total)) }
    }

    public func checkSizes() throws {
        for s in samples {
            let i = try PNG.header(s.imagePath), l = try PNG.header(s.labelPath)
            guard i.width == l.width, i.height == l.height else {
                throw FileError(s.labelPath, "is \(l.width)x\(l.height) but its image \(s.imagePath) is \(i.width)x\(i.height)")
            }
            guard !l.isColor || l.isPalette else { throw FileError(s.labelPath, "is an RGB image; label maps hold one id per pixel (grey or palette PNG)") }
        }
    }
}
