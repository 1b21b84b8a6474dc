import DGBase
import DGTensor
import Foundation

/// Rare-class sampling (DAFormer, used by DGInStyle for both training and generation crops):
/// draw a class c with probability softmax((1 - f_c) / T), then uniformly a file holding enough
/// pixels of c, then a crop centred on a uniformly drawn pixel of c.
///
/// "Enough" is `minPixels` (3000) at the reference frame size, GTA5's 1914 x 1052, and scales
/// with each file's area, so a 256 x 128 synthetic frame needs 49 pixels: the same share of the
/// frame (0.15%) the original threshold asks of a GTA5 frame. Set `referenceArea` to nil for
/// an absolute threshold. A file qualifies with at least that many pixels (DAFormer's code
/// uses "more than"; the difference is one pixel).
///
/// Classes that no file holds enough of are left out of the distribution (DAFormer asserts
/// instead); f_c still counts their pixels.
public struct RareClassSampling: Sendable {
    public static let referenceArea = 1914 * 1052

    public let temperature: Double
    public let minPixels: Int
    public let referenceArea: Int?
    /// f_c per train id.
    public let frequencies: [Double]
    /// Per train id: the probability of drawing it (0 for classes left out).
    public let probabilities: [Double]
    /// Per train id: indices (into the statistics' samples) of the files that qualify.
    public let filesWithClass: [[Int]]

    public init(statistics: ClassStatistics, temperature: Double = 0.01, minPixels: Int = 3000,
                referenceArea: Int? = RareClassSampling.referenceArea) throws {
        guard temperature > 0 else { throw FileError("rare-class sampling", "the temperature must be positive, not \(temperature)") }
        self.temperature = temperature
        self.minPixels = minPixels
        self.referenceArea = referenceArea
        frequencies = statistics.frequencies
        var files = [[Int]](repeating: [], count: Cityscapes.classCount)
        for (i, f) in statistics.perFile.enumerated() {
            let threshold = RareClassSampling.threshold(minPixels: minPixels, width: f.width, height: f.height, referenceArea: referenceArea)
            for c in 0..<Cityscapes.classCount where f.counts[c] > 0 && f.counts[c] >= threshold { files[c].append(i) }
        }
        filesWithClass = files
        probabilities = RareClassSampling.probabilities(frequencies: frequencies, temperature: temperature,
                                                        eligible: files.map { !$0.isEmpty })
        guard probabilities.contains(where: { $0 > 0 }) else {
            throw FileError("rare-class sampling", "no file holds \(minPixels) pixels (scaled to its size) of any class")
        }
    }

    /// The pixels of a class a `width` x `height` file needs to qualify.
    public static func threshold(minPixels: Int, width: Int, height: Int, referenceArea: Int?) -> Int {
        guard let referenceArea else { return minPixels }
        return max(1, Int((Double(minPixels) * Double(width * height) / Double(referenceArea)).rounded()))
    }

    /// softmax((1 - f_c) / T) over the eligible classes, 0 elsewhere.
    public static func probabilities(frequencies: [Double], temperature: Double, eligible: [Bool]? = nil) -> [Double] {
        let ok = eligible ?? frequencies.map { _ in true }
        let logits = frequencies.map { (1 - $0) / temperature }
        guard let top = zip(logits, ok).filter({ $0.1 }).map(\.0).max() else { return frequencies.map { _ in 0 } }
        let e = zip(logits, ok).map { $0.1 ? exp($0.0 - top) : 0 }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }

    public func sampleClass(_ rng: inout SplitMix64) -> Int { rng.index(weights: probabilities) }

    public func sampleFile(class c: Int, _ rng: inout SplitMix64) -> Int { rng.element(filesWithClass[c]) }
}

/// A crop for training: image, train-id labels and caption.
public struct TrainingCrop: Sendable {
    public var image: Image
    public var labels: LabelMap
    public var caption: String
    public var sampleIndex: Int
    public var rect: CropRect
    /// The class rare-class sampling drew, nil for a random crop.
    public var rareClass: Int?
}

/// Draws training crops, with or without rare-class sampling. Its whole state is the
/// generator and a counter (`state`), so a checkpoint that saves it resumes the exact sequence.
public struct CropSampler: Sendable {
    public struct State: Codable, Sendable, Equatable {
        public var rng: SplitMix64
        public var drawn: Int
    }

    public let samples: [Sample]
    public let cropWidth: Int
    public let cropHeight: Int
    public let rcs: RareClassSampling?
    /// Probability of replacing a caption by "" (diffusers' `--proportion_empty_prompts`), so
    /// the model also learns the unconditional case classifier-free guidance needs.
    public let emptyPromptProbability: Double
    public var state: State
    /// Each sample's weather word (nil: unknown), and the probability that a caption becomes
    /// "A city street scene with <classes>, in <weather> weather." as at generation time.
    public let weathers: [String?]
    public let weatherProbability: Double
    /// Scale of each crop: the image is taken as if resized by a factor drawn uniformly from this
    /// range (a region of crop / factor pixels, resized to the crop; antialiased bilinear for the
    /// image, nearest for the labels). Above 1 the crop sees a smaller part of the scene, enlarged,
    /// as MRLF's high-resolution windows show it to the models.
    public let zoom: ClosedRange<Double>

    public init(samples: [Sample], cropWidth: Int, cropHeight: Int, rcs: RareClassSampling? = nil,
                emptyPromptProbability: Double = 0, weathers: [String?] = [], weatherProbability: Double = 0,
                zoom: ClosedRange<Double> = 1...1, seed: UInt64) throws {
        guard zoom.lowerBound > 0, zoom.upperBound.isFinite else {
            throw FileError("crop sampler", "the zoom range must be positive and finite, not \(zoom)")
        }
        self.zoom = zoom
        guard (0...1).contains(weatherProbability) else {
            throw FileError("crop sampler", "the weather-caption probability must lie in [0, 1], not \(weatherProbability)")
        }
        guard weatherProbability == 0 || weathers.count == samples.count else {
            throw FileError("crop sampler", "weather captions need a weather per sample (\(weathers.count) for \(samples.count) samples)")
        }
        self.weathers = weathers
        self.weatherProbability = weatherProbability
        guard !samples.isEmpty else { throw FileError("crop sampler", "no samples") }
        guard cropWidth > 0, cropHeight > 0 else { throw FileError("crop sampler", "crop size \(cropWidth)x\(cropHeight) is empty") }
        guard (0...1).contains(emptyPromptProbability) else {
            throw FileError("crop sampler", "the empty-prompt probability must lie in [0, 1], not \(emptyPromptProbability)")
        }
        if let rcs, rcs.filesWithClass.flatMap({ $0 }).contains(where: { $0 >= samples.count }) {
            throw FileError("crop sampler", "the rare-class statistics describe other samples")
        }
        self.samples = samples
        self.cropWidth = cropWidth
        self.cropHeight = cropHeight
        self.rcs = rcs
        self.emptyPromptProbability = emptyPromptProbability
        state = State(rng: SplitMix64(seed: seed), drawn: 0)
    }

    public mutating func next() throws -> TrainingCrop {
        var rng = state.rng
        let rareClass = rcs.map { $0.sampleClass(&rng) }
        let index = rareClass.map { rcs!.sampleFile(class: $0, &rng) } ?? rng.int(below: samples.count)
        let sample = samples[index]
        let (image, labels) = try sample.load()
        let factor = drawZoom(zoom) { rng.uniform() }
        let (width, height) = factor == 1 ? (cropWidth, cropHeight)
            : (Int((Double(cropWidth) / factor).rounded()), Int((Double(cropHeight) / factor).rounded()))
        guard image.width >= width, image.height >= height else {
            throw FileError(sample.imagePath, "is \(image.width)x\(image.height), smaller than the \(cropWidth)x\(cropHeight) crop"
                            + (factor == 1 ? "" : String(format: " at zoom %.3f (a %dx%d region)", factor, width, height)))
        }
        let rect: CropRect
        if let c = rareClass {
            guard let (x, y) = randomPixel(of: c, in: labels, &rng) else {
                throw FileError(sample.labelPath, "holds no pixel of \(Cityscapes.classNames[c]) any more; its statistics are stale")
            }
            rect = .centred(on: x, y, width: width, height: height, boundsWidth: image.width, boundsHeight: image.height)
        } else {
            rect = CropRect(x: rng.int(below: image.width - width + 1), y: rng.int(below: image.height - height + 1),
                            width: width, height: height)
        }
        var cropImage = image.cropped(rect), cropLabels = labels.cropped(rect)
        if width != cropWidth || height != cropHeight {
            cropImage = cropImage.resized(width: cropWidth, height: cropHeight, filter: .bilinear)
            cropLabels = cropLabels.resized(width: cropWidth, height: cropHeight)
        }
        var caption = Cityscapes.caption(classes: Cityscapes.classes(present: cropLabels))
        // Only drawn when weather captions are on, so older runs keep their sequences.
        if weatherProbability > 0, rng.uniform() < weatherProbability, let w = weathers[index] {
            caption = caption.isEmpty ? "A city street scene, in \(w) weather." : "A city street scene with \(caption), in \(w) weather."
        }
        // Drawn whatever the probability, so the sequence does not depend on it.
        if rng.uniform() < emptyPromptProbability { caption = "" }
        state.rng = rng
        state.drawn += 1
        return TrainingCrop(image: cropImage, labels: cropLabels, caption: caption, sampleIndex: index, rect: rect, rareClass: rareClass)
    }
}

/// A zoom factor uniform in `range`; `uniform` (a draw in [0, 1)) is called only for a range of
/// more than one value, so a sampler with a fixed zoom keeps the random sequence it had without one.
public func drawZoom(_ range: ClosedRange<Double>, _ uniform: () -> Double) -> Double {
    range.lowerBound == range.upperBound ? range.lowerBound : range.lowerBound + (range.upperBound - range.lowerBound) * uniform()
}

/// A uniformly drawn pixel of class `c`, nil when there is none.
func randomPixel(of c: Int, in labels: LabelMap, _ rng: inout SplitMix64) -> (Int, Int)? {
    let positions = pixels(of: c, in: labels)
    guard !positions.isEmpty else { return nil }
    let p = Int(positions[rng.int(below: positions.count)])
    return (p % labels.width, p / labels.width)
}

/// Indices of the pixels of class `c`, in raster order.
func pixels(of c: Int, in labels: LabelMap) -> [Int32] {
    guard (0..<256).contains(c) else { return [] }
    let id = UInt8(c)
    var out: [Int32] = []
    labels.ids.withUnsafeBufferPointer { ids in
        for p in 0..<ids.count where ids[p] == id { out.append(Int32(p)) }
    }
    return out
}

/// Rare-class crops for generation: a crop centred on a random pixel of the class,
/// clamped to the image, redrawn until the class covers more than `minimumFraction` of it.
public enum RareClassCrop {
    /// nil when the map has no pixel of the class, is smaller than the crop, or no attempt
    /// reached the fraction.
    public static func crop(labels: LabelMap, classId: Int, width: Int, height: Int, minimumFraction: Double = 0.01,
                            attempts: Int = 100, rng: inout SplitMix64) -> CropRect? {
        guard width > 0, height > 0, labels.width >= width, labels.height >= height else { return nil }
        let positions = pixels(of: classId, in: labels)
        guard !positions.isEmpty else { return nil }
        let id = UInt8(classId)
        for _ in 0..<max(1, attempts) {
            let p = Int(positions[rng.int(below: positions.count)])
            let rect = CropRect.centred(on: p % labels.width, p / labels.width, width: width, height: height,
                                        boundsWidth: labels.width, boundsHeight: labels.height)
            var count = 0
            for row in rect.y..<(rect.y + height) {
                let base = row * labels.width
                for col in rect.x..<(rect.x + width) where labels.ids[base + col] == id { count += 1 }
            }
            if Double(count) > minimumFraction * Double(width * height) { return rect }
        }
        return nil
    }
}
