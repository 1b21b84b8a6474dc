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
        guard !roots.isEmpty else { throw DataError("--data", "no dataset folder given") }
        var samples: [Sample] = [], counts: [Int] = []
        for root in roots {
            let s = try Dataset.samples(root: root, split: split)
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
            throw DataError(sample.labelPath, "holds label \(bad), which is no train id (0...\(classes - 1), or 255 = ignore)")
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
                throw DataError(s.labelPath, "is \(l.width)x\(l.height) but its image \(s.imagePath) is \(i.width)x\(i.height)")
            }
            guard !l.isColor || l.isPalette else { throw DataError(s.labelPath, "is an RGB image; label maps hold one id per pixel (grey or palette PNG)") }
        }
    }
}

/// Random training crops. Sample k of a run (counting every sample of every batch) is drawn
/// from a random stream keyed by (seed, k): a file uniformly from the pooled samples of all
/// folders (so each folder weighs by its number of images), a crop position uniformly among
/// those that fit, and a horizontal flip with probability 1/2. It needs no state to resume.
public final class SegmentationCrops {
    public let data: SegmentationData
    public let crop: Int
    public let seed: UInt64
    public let flip: Bool
    /// Decoded samples, kept while they fit in `cacheBytes` (a few hundred small images are
    /// decoded once; a Cityscapes-sized set is read from disk as it goes).
    private var cache: [Int: (Image, LabelMap)] = [:]
    private var cachedBytes = 0
    public var cacheBytes = 1 << 30

    public init(data: SegmentationData, crop: Int, seed: UInt64, flip: Bool = true) {
        self.data = data
        self.crop = crop
        self.seed = seed
        self.flip = flip
    }

    /// Images [count, 3, crop, crop] in [-1, 1] and their train ids (count x crop x crop).
    public func batch(firstSample: Int, count: Int) throws -> (pixels: Tensor, targets: [UInt8]) {
        var images: [Image] = [], targets: [UInt8] = []
        targets.reserveCapacity(count * crop * crop)
        for k in firstSample..<(firstSample + count) {
            let (image, labels) = try sample(k)
            images.append(image)
            targets += labels.ids
        }
        return (Image.batchTensor(images), targets)
    }

    /// Crop k of the run.
    public func sample(_ k: Int) throws -> (Image, LabelMap) {
        let r = RandomStream(seed: seed, 0x5E6, UInt64(k))
        let index = Int(r.bits(0) % UInt64(data.samples.count))
        let (image, labels) = try load(index)
        // Smaller than the crop: padded with grey and `ignore`, which the loss skips.
        let (w, h) = (max(image.width, crop), max(image.height, crop))
        let x = Int(r.bits(1) % UInt64(w - crop + 1)), y = Int(r.bits(2) % UInt64(h - crop + 1))
        let mirrored = flip && r.bits(3) & 1 == 1
        var outImage = [UInt8](repeating: 128, count: crop * crop * 3)
        var outLabels = [UInt8](repeating: Cityscapes.ignoreLabel, count: crop * crop)
        for cy in 0..<crop {
            let sy = y + cy
            guard sy < image.height else { break }
            for cx in 0..<crop {
                let sx = x + cx
                guard sx < image.width else { break }
                let dx = mirrored ? crop - 1 - cx : cx
                let src = sy * image.width + sx, dst = cy * crop + dx
                outLabels[dst] = labels.ids[src]
                outImage[dst * 3] = image.pixels[src * 3]
                outImage[dst * 3 + 1] = image.pixels[src * 3 + 1]
                outImage[dst * 3 + 2] = image.pixels[src * 3 + 2]
            }
        }
        return (Image(width: crop, height: crop, channels: 3, pixels: outImage), LabelMap(width: crop, height: crop, ids: outLabels))
    }

    private func load(_ index: Int) throws -> (Image, LabelMap) {
        if let hit = cache[index] { return hit }
        let loaded = try SegmentationData.load(data.samples[index])
        let bytes = loaded.image.pixels.count + loaded.labels.ids.count
        if cachedBytes + bytes <= cacheBytes {
            cache[index] = loaded
            cachedBytes += bytes
        }
        return loaded
    }
}
