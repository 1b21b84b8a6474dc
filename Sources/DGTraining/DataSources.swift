import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGTensor
import Foundation

/// Training crops of a labelled dataset (GTA5 or Cityscapes layout) through the data layer's
/// crop sampler: random crops, or rare-class sampling with the per-file class statistics
/// cached beside the data; captions from the crop's classes, replaced by "" with the
/// empty-prompt probability. The sampler's state is a generator and a counter, saved in
/// every checkpoint.
public final class DatasetBatchSource: TrainingBatchSource {
    public let root: String
    public let resolution: Int
    public let rareClassSampling: Bool
    public let emptyPromptProbability: Double
    public let weatherProbability: Double
    public let samples: [Sample]
    var sampler: CropSampler
    let seed: UInt64

    /// `zoom`: each crop sees the image resized by a factor drawn from this range (`CropSampler.zoom`).
    public init(root: String, resolution: Int, rareClassSampling: Bool, emptyPromptProbability: Double,
                weatherProbability: Double = 0, zoom: ClosedRange<Double> = 1...1, seed: UInt64) throws {
        self.root = root
        self.weatherProbability = weatherProbability
        self.resolution = resolution
        self.rareClassSampling = rareClassSampling
        self.emptyPromptProbability = emptyPromptProbability
        self.seed = seed
        samples = try Dataset.samples(root: root)
        let rcs = rareClassSampling
            ? try RareClassSampling(statistics: try ClassStatistics.load(samples, root: root))
            : nil
        let weathers = weatherProbability > 0 ? try Self.weathers(root: root, samples: samples) : []
        sampler = try CropSampler(samples: samples, cropWidth: resolution, cropHeight: resolution, rcs: rcs,
                                  emptyPromptProbability: emptyPromptProbability, weathers: weathers,
                                  weatherProbability: weatherProbability, zoom: zoom, seed: seed)
    }

    /// Each sample's weather word, from the per-image weather `dginstyle synth` records in
    /// ROOT/synth.json.
    static func weathers(root: String, samples: [Sample]) throws -> [String?] {
        let path = root + "/synth.json"
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw TrainingError.badInput("\(path): missing; weather captions need the per-image weather of a `dginstyle synth` dataset")
        }
        guard let table = try JSON.parse(bytes: Array(bytes))["weather"] else {
            throw TrainingError.badInput("\(path): records no per-image weather (made by an older dginstyle synth?)")
        }
        return try samples.map { s in
            let name = URL(fileURLWithPath: s.imagePath).lastPathComponent
            guard let w = table[name]?.string else { throw TrainingError.badInput("\(path): no weather for \(name)") }
            return Synth.promptWeather(w)
        }
    }

    public func next(_ count: Int) throws -> TrainingBatch {
        var crops: [TrainingCrop] = []
        for _ in 0..<count { crops.append(try sampler.next()) }
        return Self.batch(crops)
    }

    static func batch(_ crops: [TrainingCrop]) -> TrainingBatch {
        TrainingBatch(pixels: Image.batchTensor(crops.map { $0.image.rgb() }),
                      condition: SemanticCondition.oneHot(LabelMap.batchTensor(crops.map(\.labels))),
                      captions: crops.map(\.caption))
    }

    // The generator's state as text: JSON numbers cannot hold every UInt64 exactly.
    public func saveState() -> JSON {
        ["rng": .string(String(sampler.state.rng.state, radix: 16)), "drawn": .int(sampler.state.drawn)]
    }

    public func restoreState(_ state: JSON) throws {
        guard let s = state["rng"]?.string, let r = UInt64(s, radix: 16), let drawn = state["drawn"]?.int else {
            throw TrainingError.resume("the checkpoint's data-sampler state is not a dataset sampler's")
        }
        sampler.state.rng.state = r
        sampler.state.drawn = drawn
    }

    /// The folder's name rather than its path, so that a moved dataset still resumes.
    public var identity: JSON {
        var id: JSON = ["dataset": .string(URL(fileURLWithPath: root).lastPathComponent), "files": .int(samples.count),
                        "resolution": .int(resolution), "rcs": .bool(rareClassSampling), "empty_prompt_prob": .double(emptyPromptProbability)]
        if weatherProbability > 0 { id.set("weather_prob", .double(weatherProbability)) }
        if let z = zoomIdentity(sampler.zoom) { id.set("zoom", z) }
        return id
    }

    /// Crops from a sampler of their own (fixed seed, full captions, the smallest zoom), so
    /// validation shows the same masks at every step and takes nothing from the training sequence.
    public func validationBatch(_ count: Int) throws -> TrainingBatch? {
        var own = try CropSampler(samples: samples, cropWidth: resolution, cropHeight: resolution, rcs: sampler.rcs,
                                  emptyPromptProbability: 0, weathers: sampler.weathers, weatherProbability: sampler.weatherProbability,
                                  zoom: sampler.zoom.lowerBound...sampler.zoom.lowerBound, seed: seed ^ 0x5EED_7A11)
        var crops: [TrainingCrop] = []
        for _ in 0..<count { crops.append(try own.next()) }
        return Self.batch(crops)
    }
}

/// A zoom range in a source's identity (nil for the default 1...1, so older runs still resume).
func zoomIdentity(_ zoom: ClosedRange<Double>) -> JSON? {
    zoom == 1...1 ? nil : .array([.double(zoom.lowerBound), .double(zoom.upperBound)])
}

/// DreamBooth's instance images: every image of a folder, in a fresh random order each epoch
/// (as a shuffled DataLoader), resized by a factor drawn from `zoom` (antialiased bilinear) and
/// cropped to a random `resolution` square, all with one caption. As DGInStyle's DreamBooth
/// (dreambooth/train_dreambooth.py, whose ratios 0.5-2 apply to the native GTA frame): the
/// factor scales the stored image itself, not a resize of it to the resolution, so below 1 a
/// crop sees more of the scene than the resolution's worth of pixels, shrunk (no padding); an
/// image too small for the crop at the drawn factor is an error, where the reference's crop
/// would fail too.
/// Position k of the run fixes the epoch, the image and the crop through counter-based
/// streams, so the whole state is k.
public final class ImageFolderSource: TrainingBatchSource {
    public let folder: String
    public let files: [String]
    public let resolution: Int
    public let prompt: String
    public let zoom: ClosedRange<Double>
    let seed: UInt64
    public private(set) var drawn = 0

    public init(folder: String, resolution: Int, prompt: String, zoom: ClosedRange<Double> = 1...1, seed: UInt64) throws {
        guard zoom.lowerBound > 0, zoom.upperBound.isFinite else {
            throw TrainingError.badInput("the zoom range must be positive and finite, not \(zoom)")
        }
        self.zoom = zoom
        self.folder = folder
        files = try Dataset.imageFiles(in: folder)
        self.resolution = resolution
        self.prompt = prompt
        self.seed = seed
    }

    /// The image index at run position k: a Fisher-Yates shuffle per epoch.
    func fileIndex(_ k: Int) -> Int {
        let n = files.count, epoch = k / n
        let stream = RandomStream(seed: seed, 0xE90C, UInt64(epoch))
        var order = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(stream.bits(i) % UInt64(i + 1))) }
        return order[k % n]
    }

    func crop(_ k: Int) throws -> Image {
        let path = files[fileIndex(k)]
        var image = try PNG.read(path).rgb()
        let stream = RandomStream(seed: seed, 0xC209, UInt64(k))
        let factor = drawZoom(zoom) { stream.uniform(2) }
        let w = Int((Double(image.width) * factor).rounded()), h = Int((Double(image.height) * factor).rounded())
        guard w >= resolution, h >= resolution else {
            let least = (Double(resolution) / Double(min(image.width, image.height)) * 1000).rounded(.up) / 1000
            throw TrainingError.badInput("\(path): \(image.width)x\(image.height) at zoom " + String(format: "%.3f", factor)
                                         + " is \(w)x\(h), smaller than the \(resolution)x\(resolution) crop; --zoom needs a lower bound of at least "
                                         + String(format: "%.3f", least) + " for it")
        }
        if factor != 1 { image = image.resized(width: w, height: h, filter: .bilinear) }
        return image.cropped(.uniform(width: resolution, height: resolution, boundsWidth: w, boundsHeight: h, stream.bits(0), stream.bits(1)))
    }

    public func next(_ count: Int) throws -> TrainingBatch {
        var images: [Image] = []
        for _ in 0..<count {
            images.append(try crop(drawn))
            drawn += 1
        }
        return TrainingBatch(pixels: Image.batchTensor(images), condition: nil, captions: Array(repeating: prompt, count: count))
    }

    public func saveState() -> JSON { ["drawn": .int(drawn)] }

    public func restoreState(_ state: JSON) throws {
        guard let d = state["drawn"]?.int, d >= 0 else { throw TrainingError.resume("the checkpoint's data state is not an image folder's") }
        drawn = d
    }

    public var identity: JSON {
        // "scale": the zoom applies to the stored image; runs from before, which resized the
        // shorter side to the resolution first, crop differently and must not be resumed.
        var id: JSON = ["images": .string(URL(fileURLWithPath: folder).lastPathComponent), "files": .int(files.count),
                        "resolution": .int(resolution), "prompt": .string(prompt), "scale": "stored image"]
        if let z = zoomIdentity(zoom) { id.set("zoom", z) }
        return id
    }
}

extension StyleSwapValidator {
    /// One PNG: a row per validation mask — coloured mask | source crop | generated on U^S |
    /// generated on U^P (when there is a base UNet).
    public static func writePNG(_ rows: [ValidationRow], to path: String) throws {
        let lines = rows.map { r -> Image in
            let mask = Cityscapes.colorize(LabelMap(width: r.width, height: r.height, ids: r.labels))
            // Image(tensor:) reads [-1, 1]; the rows hold [0, 1].
            func picture(_ t: Tensor) -> Image { Image(tensor: Tensor(shape: t.shape, floats: t.floats.map { $0 * 2 - 1 })) }
            return Image.sideBySide([mask, picture(r.source)] + r.generated.map { picture($0.image) })
        }
        guard let width = lines.map(\.width).max() else { return }
        var pixels: [UInt8] = []
        for line in lines {
            for y in 0..<line.height {
                pixels += line.pixels[(y * line.width * 3)..<((y + 1) * line.width * 3)]
                pixels += [UInt8](repeating: 0, count: (width - line.width) * 3)
            }
        }
        try PNG.write(Image(width: width, height: pixels.count / (width * 3), channels: 3, pixels: pixels), to: path)
    }
}
