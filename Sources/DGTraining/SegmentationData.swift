import DGBase
import DGData
import DGEval
import DGTensor
import Foundation

/// Random training crops. Sample k of a run (counting every sample of every batch) is drawn
/// from a random stream keyed by (seed, k): a file uniformly from the pooled samples of all
/// folders (so each folder weighs by its number of images), a crop position uniformly among
/// those that fit, and a horizontal flip with probability 1/2 — then, with `photometric`, the
/// image's `PhotometricAugmentation` from the same stream. It needs no state to resume.
public final class SegmentationCrops: CheckpointedData {
    public let data: SegmentationData
    public let crop: Int
    public let seed: UInt64
    public let flip: Bool
    public let photometric: Bool
    /// Decoded samples, kept while they fit in `cacheBytes` (a few hundred small images are
    /// decoded once; a Cityscapes-sized set is read from disk as it goes).
    private var cache: [Int: (Image, LabelMap)] = [:]
    private var cachedBytes = 0
    public var cacheBytes = 1 << 30

    public init(data: SegmentationData, crop: Int, seed: UInt64, flip: Bool = true, photometric: Bool = false) {
        self.data = data
        self.crop = crop
        self.seed = seed
        self.flip = flip
        self.photometric = photometric
    }

    public var identity: JSON { data.identity }
    /// Crops are drawn from streams keyed by the sample index: nothing to save.
    public func saveState() -> JSON { .object([]) }
    public func restoreState(_ state: JSON) throws {}

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
        let window = CropRect.uniform(width: crop, height: crop, boundsWidth: w, boundsHeight: h, r.bits(1), r.bits(2))
        let (x, y) = (window.x, window.y)
        let mirrored = flip && r.bits(3) & 1 == 1
        var outImage = [UInt8](repeating: 128, count: crop * crop * 3)
        var outLabels = [UInt8](repeating: Cityscapes.ignoreLabel, count: crop * crop)
        for cy in 0..<crop {
            let sy = y + cy
            guard sy < image.height else { break }
            for cx in 0..<crop {
                let sx = x + cx
                guard sx < image.width else { break }
                let src = sy * image.width + sx, dst = cy * crop + cx
                outLabels[dst] = labels.ids[src]
                outImage[dst * 3] = image.pixels[src * 3]
                outImage[dst * 3 + 1] = image.pixels[src * 3 + 1]
                outImage[dst * 3 + 2] = image.pixels[src * 3 + 2]
            }
        }
        var (cropImage, cropLabels) = (Image(width: crop, height: crop, channels: 3, pixels: outImage), LabelMap(width: crop, height: crop, ids: outLabels))
        if mirrored { (cropImage, cropLabels) = (cropImage.mirrored(), cropLabels.mirrored()) }
        if photometric { cropImage = PhotometricAugmentation.apply(cropImage, stream: r) }
        return (cropImage, cropLabels)
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
