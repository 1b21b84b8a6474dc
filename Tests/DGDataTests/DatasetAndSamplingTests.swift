import DGBase
@testable import DGData
import DGTensor
import Foundation
import XCTest

final class DatasetTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = scratchDirectory("datasets") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func mkdir(_ path: String) { try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }

    func testGTA5LayoutPairsAndErrors() throws {
        let root = dir + "/gta"
        mkdir(root + "/images"); mkdir(root + "/labels")
        let image = Image(width: 4, height: 2, channels: 3, pixels: randomBytes(24, seed: 1))
        for name in ["00001", "00002"] { try PNG.write(image, to: root + "/images/\(name).png") }
        // 00001: label ids (road 7, car 26, rail track 10 -> ignore); 00002: ready train ids.
        try PNG.writeIndexed(width: 4, height: 2, indices: [7, 7, 26, 10, 7, 8, 26, 0], palette: Synth.labelIdPalette, to: root + "/labels/00001.png")
        try PNG.write(Image(width: 4, height: 2, channels: 1, pixels: [0, 0, 13, 255, 0, 1, 13, 18]), to: root + "/labels/00002_labelTrainIds.png")
        try PNG.write(Image(width: 4, height: 2, channels: 1, pixels: [0, 0, 0, 0, 0, 0, 0, 0]), to: root + "/labels/00002.png")
        let samples = try Dataset.samples(root: root)
        XCTAssertEqual(try Dataset.layout(of: root), .gta5)
        XCTAssertEqual(samples.map(\.labelsAreTrainIds), [false, true])
        XCTAssertTrue(samples[1].labelPath.hasSuffix("00002_labelTrainIds.png"))
        XCTAssertEqual(try samples[0].loadLabels().ids, [0, 0, 13, 255, 0, 1, 13, 255])
        XCTAssertEqual(try samples[1].loadLabels().ids, [0, 0, 13, 255, 0, 1, 13, 18])
        XCTAssertEqual(try samples[0].load().image, image)

        // As released, GTA5 has unpaired files: such pairs are skipped and recorded; sets that
        // must be complete (a segmenter's) refuse them with the file named.
        try PNG.write(image, to: root + "/images/00003.png")
        var scan = try Dataset.scan(root: root)
        XCTAssertEqual(scan.samples.count, 2)
        XCTAssertEqual(scan.skipped.map(\.path), [root + "/images/00003.png"])
        XCTAssertEqual(scan.skipped.map(\.reason), ["no label file"])
        XCTAssertThrowsError(try scan.complete()) { XCTAssertTrue("\($0)".contains("missing label file for \(root)/images/00003.png"), "\($0)") }
        try FileManager.default.removeItem(atPath: root + "/images/00003.png")
        try PNG.write(image, to: root + "/labels/00004.png")
        scan = try Dataset.scan(root: root)
        XCTAssertEqual(scan.samples.count, 2)
        XCTAssertEqual(scan.skipped.map(\.reason), ["no image"])
        XCTAssertThrowsError(try scan.complete()) { XCTAssertTrue("\($0)".contains("missing image for label file"), "\($0)") }
        try FileManager.default.removeItem(atPath: root + "/labels/00004.png")

        // An image of another size than its label map is resized to it (labels never interpolated).
        try PNG.write(Image(width: 3, height: 2, channels: 1, pixels: [0, 0, 0, 0, 0, 0]), to: root + "/labels/00002_labelTrainIds.png")
        let pair = try Dataset.samples(root: root)[1].load()
        XCTAssertEqual([pair.image.width, pair.image.height, pair.labels.width, pair.labels.height], [3, 2, 3, 2])
        XCTAssertEqual(pair.image, image.resized(width: 3, height: 2, filter: .bilinear))
        XCTAssertThrowsError(try Dataset.samples(root: dir)) { XCTAssertTrue("\($0)".contains("not a dataset"), "\($0)") }
        XCTAssertEqual(try Dataset.imageFiles(in: root).count, 2)
    }

    func testCityscapesLayout() throws {
        let root = dir + "/cs"
        for city in ["aachen", "bochum"] { mkdir(root + "/leftImg8bit/train/\(city)"); mkdir(root + "/gtFine/train/\(city)") }
        let image = Image(width: 2, height: 1, channels: 3, pixels: [1, 2, 3, 4, 5, 6])
        try PNG.write(image, to: root + "/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
        try PNG.write(image, to: root + "/leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png")
        try PNG.write(Image(width: 2, height: 1, channels: 1, pixels: [11, 33]), to: root + "/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
        try PNG.write(Image(width: 2, height: 1, channels: 1, pixels: [2, 18]), to: root + "/gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png")
        try PNG.write(Image(width: 2, height: 1, channels: 1, pixels: [0, 0]), to: root + "/gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png")
        let samples = try Dataset.samples(root: root, split: "train")
        XCTAssertEqual(samples.map(\.labelsAreTrainIds), [false, true])
        XCTAssertEqual(try samples.map { try $0.loadLabels().ids }, [[2, 18], [2, 18]])
        XCTAssertThrowsError(try Dataset.samples(root: root, split: "val")) { XCTAssertTrue("\($0)".contains("no such split"), "\($0)") }
        try PNG.write(image, to: root + "/leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png")
        let scan = try Dataset.scan(root: root)
        XCTAssertEqual(scan.samples.count, 2)
        XCTAssertEqual(scan.skipped.map(\.path), [root + "/leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png"])
        XCTAssertThrowsError(try scan.complete()) { XCTAssertTrue("\($0)".contains("aachen_000001_000019_leftImg8bit.png"), "\($0)") }
    }
}

final class RareClassSamplingTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = scratchDirectory("rcs") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A GTA5-layout dataset of hand-made train-id maps.
    func makeDataset(_ maps: [LabelMap]) throws -> [Sample] {
        let root = dir + "/data"
        try FileManager.default.createDirectory(atPath: root + "/images", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/labels", withIntermediateDirectories: true)
        for (i, m) in maps.enumerated() {
            let name = Synth.fileName(i, count: maps.count)
            try PNG.write(Image(width: m.width, height: m.height, channels: 3, pixels: [UInt8](repeating: UInt8(i * 40), count: m.ids.count * 3)),
                          to: root + "/images/" + name)
            try PNG.write(Image(width: m.width, height: m.height, channels: 1, pixels: m.ids),
                          to: root + "/labels/" + name.replacingOccurrences(of: ".png", with: "_labelTrainIds.png"))
        }
        return try Dataset.samples(root: root)
    }

    func testProbabilitiesAgainstAHandComputation() {
        let f = [0.5, 0.3, 0.15, 0.05]
        let p = RareClassSampling.probabilities(frequencies: f, temperature: 0.01)
        // softmax((1 - f) / 0.01) = softmax([50, 70, 85, 95]): relative to the largest logit.
        let e = [exp(-45.0), exp(-25.0), exp(-10.0), 1.0]
        let sum = e.reduce(0, +)
        for k in 0..<4 { XCTAssertEqual(p[k], e[k] / sum, accuracy: 1e-15) }
        XCTAssertEqual(p[3], 0.9999546, accuracy: 1e-6)
        let eligible = RareClassSampling.probabilities(frequencies: f, temperature: 0.1, eligible: [true, true, false, false])
        XCTAssertEqual(eligible[2], 0)
        XCTAssertEqual(eligible[1], 1 / (1 + exp(-2.0)), accuracy: 1e-12)
    }

    /// f_c over the files, the (scaled) pixel threshold, and what the sampler then draws.
    func testStatisticsThresholdAndDistribution() throws {
        // 100 x 60 maps (6000 px). Absolute threshold 3000: class 2 qualifies in map 0 with
        // exactly 3000 px, class 13 nowhere (2999 px), class 0 in both.
        var a = LabelMap(width: 100, height: 60, fill: 0), b = LabelMap(width: 100, height: 60, fill: 0)
        for p in 0..<3000 { a.ids[p] = 2 }
        for p in 0..<2999 { b.ids[p] = 13 }
        for p in 5990..<6000 { b.ids[p] = 255 }
        let samples = try makeDataset([a, b])
        let stats = try ClassStatistics.compute(samples)
        XCTAssertEqual(stats.perFile[0].counts[2], 3000)
        XCTAssertEqual(stats.totals[0], 3000 + 6000 - 2999 - 10)
        XCTAssertEqual(stats.frequencies[13], 2999.0 / 11990, accuracy: 1e-15)

        let rcs = try RareClassSampling(statistics: stats, temperature: 0.01, minPixels: 3000, referenceArea: nil)
        XCTAssertEqual(rcs.filesWithClass[2], [0])
        XCTAssertEqual(rcs.filesWithClass[13], [])
        XCTAssertEqual(rcs.filesWithClass[0], [0], "map 1 holds 2991 px of class 0")
        XCTAssertEqual(rcs.probabilities[13], 0, "no file qualifies")
        let f = stats.frequencies
        XCTAssertEqual(rcs.probabilities[2], 1 / (1 + exp(((1 - f[0]) - (1 - f[2])) / 0.01)), accuracy: 1e-12)

        // Scaled: 3000 px at 1914 x 1052 is 49 px at 256 x 128, 9 px at 100 x 60.
        XCTAssertEqual(RareClassSampling.threshold(minPixels: 3000, width: 1914, height: 1052, referenceArea: RareClassSampling.referenceArea), 3000)
        XCTAssertEqual(RareClassSampling.threshold(minPixels: 3000, width: 256, height: 128, referenceArea: RareClassSampling.referenceArea), 49)
        XCTAssertEqual(RareClassSampling.threshold(minPixels: 3000, width: 100, height: 60, referenceArea: RareClassSampling.referenceArea), 9)
        let scaled = try RareClassSampling(statistics: stats)
        XCTAssertEqual(scaled.filesWithClass[13], [1])

        // Empirical class draws follow the probabilities.
        let loose = try RareClassSampling(statistics: stats, temperature: 1, referenceArea: nil)
        var rng = SplitMix64(seed: 5)
        var counts = [Int](repeating: 0, count: 19)
        for _ in 0..<20000 { counts[loose.sampleClass(&rng)] += 1 }
        for c in 0..<19 { XCTAssertEqual(Double(counts[c]) / 20000, loose.probabilities[c], accuracy: 0.015, "class \(c)") }
    }

    func testStatisticsCacheIsReusedAndRefreshed() throws {
        var a = LabelMap(width: 20, height: 10, fill: 0)
        for p in 0..<50 { a.ids[p] = 11 }
        let samples = try makeDataset([a, LabelMap(width: 20, height: 10, fill: 8)])
        let cache = ClassStatistics.cachePath(root: dir + "/data")
        let first = try ClassStatistics.load(samples, cache: cache)
        XCTAssertTrue(FileManager.default.fileExists(atPath: cache))
        XCTAssertEqual(first.perFile[0].counts[11], 50)
        // Doctor the cache: a valid entry is believed (proof it is read, not recomputed).
        var entries = ClassStatistics.readCache(cache)
        XCTAssertEqual(entries.count, 2)
        let key = "labels/00001_labelTrainIds.png"
        entries[key]!.pixels.counts[11] = 1234
        try ClassStatistics.writeCache(cache, entries)
        XCTAssertEqual(try ClassStatistics.load(samples, cache: cache).perFile[0].counts[11], 1234)
        // Changing the file (size and time) invalidates its entry only.
        Thread.sleep(forTimeInterval: 0.01)
        for p in 0..<80 { a.ids[p] = 11 }
        try PNG.write(Image(width: 20, height: 10, channels: 1, pixels: a.ids), to: samples[0].labelPath)
        let refreshed = try ClassStatistics.load(samples, cache: cache)
        XCTAssertEqual(refreshed.perFile[0].counts[11], 80)
        XCTAssertEqual(ClassStatistics.readCache(cache)[key]!.pixels.counts[11], 80)
        // A corrupt cache is recomputed.
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: cache))
        XCTAssertEqual(try ClassStatistics.load(samples, cache: cache).perFile[1].counts[8], 200)
    }

    func testCropSamplerCropsContainTheClassAndResumeExactly() throws {
        let root = dir + "/synth"
        try Synth.writeDataset(to: root, count: 12, width: 128, height: 64, seed: 3, progress: false)
        let samples = try Dataset.samples(root: root)
        let stats = try ClassStatistics.load(samples, cache: ClassStatistics.cachePath(root: root))
        let rcs = try RareClassSampling(statistics: stats)
        var sampler = try CropSampler(samples: samples, cropWidth: 64, cropHeight: 64, rcs: rcs, emptyPromptProbability: 0.3, seed: 42)
        var drawnClasses = Set<Int>(), empty = 0
        for _ in 0..<60 {
            let crop = try sampler.next()
            let c = try XCTUnwrap(crop.rareClass)
            drawnClasses.insert(c)
            XCTAssertTrue(crop.labels.ids.contains(UInt8(c)), "crop lacks its class \(c)")
            XCTAssertEqual(crop.image.width, 64)
            XCTAssertEqual(crop.labels.height, 64)
            XCTAssertTrue(rcs.filesWithClass[c].contains(crop.sampleIndex))
            if crop.caption.isEmpty { empty += 1 } else {
                XCTAssertEqual(crop.caption, Cityscapes.caption(classes: Cityscapes.classes(present: crop.labels)))
            }
            let full = try samples[crop.sampleIndex].load()
            XCTAssertEqual(crop.image, full.image.cropped(crop.rect))
        }
        XCTAssertGreaterThan(drawnClasses.count, 8, "rare-class sampling spreads over classes")
        XCTAssertTrue((5...35).contains(empty), "\(empty) empty captions of 60 at p = 0.3")

        // Save the state (as a checkpoint would, through JSON), draw, restore, draw again.
        let saved = try JSONEncoder().encode(sampler.state)
        let expected = try (0..<8).map { _ in try sampler.next() }
        sampler.state = try JSONDecoder().decode(CropSampler.State.self, from: saved)
        let again = try (0..<8).map { _ in try sampler.next() }
        XCTAssertEqual(expected.map(\.rect), again.map(\.rect))
        XCTAssertEqual(expected.map(\.sampleIndex), again.map(\.sampleIndex))
        XCTAssertEqual(expected.map(\.caption), again.map(\.caption))

        // Without RCS: random crops of any file.
        var plain = try CropSampler(samples: samples, cropWidth: 100, cropHeight: 50, seed: 1)
        let crops = try (0..<20).map { _ in try plain.next() }
        XCTAssertTrue(crops.allSatisfy { $0.rareClass == nil && $0.rect.x + 100 <= 128 && $0.rect.y + 50 <= 64 })
        XCTAssertGreaterThan(Set(crops.map(\.rect.x)).count, 5)
        var tooBig = try CropSampler(samples: samples, cropWidth: 512, cropHeight: 512, seed: 1)
        XCTAssertThrowsError(try tooBig.next()) { XCTAssertTrue("\($0)".contains("smaller than the 512x512 crop"), "\($0)") }
        var allEmpty = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, emptyPromptProbability: 1, seed: 1)
        XCTAssertEqual(try allEmpty.next().caption, "")

        // Zoom: a region of crop / factor pixels, resized to the crop; RCS still centres it on the class.
        var zoomed = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, rcs: rcs, zoom: 0.5...2, seed: 3)
        let zc = try (0..<40).map { _ in try zoomed.next() }
        XCTAssertTrue(zc.allSatisfy { $0.image.width == 32 && $0.image.height == 32 && $0.labels.width == 32 && $0.labels.height == 32 })
        let sides = zc.map(\.rect.width)
        XCTAssertTrue(sides.allSatisfy { (16...64).contains($0) }, "\(sides)")
        XCTAssertTrue(sides.contains { $0 < 24 } && sides.contains { $0 > 48 }, "\(sides)")
        XCTAssertTrue(zc.allSatisfy { $0.rect.width == $0.rect.height })
        // The labels are the region's, nearest-resized; the region holds the rare class RCS drew.
        for c in zc.prefix(8) {
            let (_, labels) = try samples[c.sampleIndex].load()
            XCTAssertEqual(labels.cropped(c.rect).resized(width: 32, height: 32).ids, c.labels.ids)
            if let r = c.rareClass { XCTAssertTrue(labels.cropped(c.rect).ids.contains(UInt8(r)), "class \(r) not in \(c.rect)") }
        }
        // A fixed zoom of 1 is the plain sampler (the same sequence: no zoom is drawn).
        var unzoomed = try CropSampler(samples: samples, cropWidth: 100, cropHeight: 50, zoom: 1...1, seed: 1)
        XCTAssertEqual(try (0..<20).map { _ in try unzoomed.next().rect }, crops.map(\.rect))
        var far = try CropSampler(samples: samples, cropWidth: 64, cropHeight: 64, zoom: 0.25...0.25, seed: 1)
        XCTAssertThrowsError(try far.next()) { XCTAssertTrue("\($0)".contains("at zoom 0.250 (a 256x256 region)"), "\($0)") }
        XCTAssertThrowsError(try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, zoom: 0...1, seed: 1))
    }

    func testRareClassCropsForGeneration() {
        // A 10 x 10 block of class 5 (100 px) and stray single pixels of it elsewhere: a 64 x 64
        // crop needs more than 40.96 px, which only crops around the block reach.
        var map = LabelMap(width: 256, height: 128, fill: 0)
        for y in 60..<70 { for x in 200..<210 { map[x, y] = 5 } }
        for k in 0..<300 { map[(k * 37) % 150, (k * 11) % 128] = 5 }
        var rng = SplitMix64(seed: 9)
        var rects = Set<Int>()
        for _ in 0..<50 {
            guard let rect = RareClassCrop.crop(labels: map, classId: 5, width: 64, height: 64, rng: &rng) else { return XCTFail("no crop") }
            let count = map.cropped(rect).ids.filter { $0 == 5 }.count
            XCTAssertGreaterThan(Double(count), 0.01 * 64 * 64)
            XCTAssertTrue(rect.x >= 0 && rect.x + 64 <= 256 && rect.y >= 0 && rect.y + 64 <= 128)
            rects.insert(rect.x)
        }
        XCTAssertGreaterThan(rects.count, 3)
        XCTAssertNil(RareClassCrop.crop(labels: map, classId: 7, width: 64, height: 64, rng: &rng), "class absent")
        var sparse = LabelMap(width: 256, height: 128, fill: 0)
        for k in 0..<20 { sparse[k * 12, k * 6] = 5 }
        XCTAssertNil(RareClassCrop.crop(labels: sparse, classId: 5, width: 64, height: 64, attempts: 30, rng: &rng), "never above 1%")
        XCTAssertNil(RareClassCrop.crop(labels: map, classId: 5, width: 300, height: 64, rng: &rng), "crop larger than the map")
    }

    func testSplitMixIsStableAndUnbiased() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        var rng = SplitMix64(seed: 0)
        XCTAssertEqual(rng.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(rng.next(), 0x6E78_9E6A_A1B9_65F4)
        var r = SplitMix64(seed: 1)
        var hist = [Int](repeating: 0, count: 3)
        for _ in 0..<30000 { hist[r.int(below: 3)] += 1 }
        XCTAssertTrue(hist.allSatisfy { abs($0 - 10000) < 400 }, "\(hist)")
        XCTAssertNotEqual(SplitMix64(seed: 5, stream: 0), SplitMix64(seed: 5, stream: 1))
        XCTAssertEqual(r.permutation(6).sorted(), Array(0..<6))
    }
}
