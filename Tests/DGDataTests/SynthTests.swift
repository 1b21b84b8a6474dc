@testable import DGData
import DGTensor
import Foundation
import XCTest

final class SynthTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = scratchDirectory("synth") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func files(_ root: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for sub in ["images", "labels"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/" + sub) {
                out[sub + "/" + name] = try Data(contentsOf: URL(fileURLWithPath: root + "/" + sub + "/" + name))
            }
        }
        out["synth.json"] = try Data(contentsOf: URL(fileURLWithPath: root + "/synth.json"))
        return out
    }

    /// Same seed -> identical bytes, whatever the thread count; another seed -> other scenes.
    func testDatasetsAreReproducible() throws {
        let threads = Parallel.threads
        defer { Parallel.setThreads(threads) }
        try Synth.writeDataset(to: dir + "/a", count: 12, width: 96, height: 48, style: .photo, seed: 7, progress: false)
        Parallel.setThreads(1)
        try Synth.writeDataset(to: dir + "/b", count: 12, width: 96, height: 48, style: .photo, seed: 7, progress: false)
        Parallel.setThreads(threads)
        try Synth.writeDataset(to: dir + "/c", count: 12, width: 96, height: 48, style: .photo, seed: 8, progress: false)
        let (a, b, c) = (try files(dir + "/a"), try files(dir + "/b"), try files(dir + "/c"))
        XCTAssertEqual(a.count, 25)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a["images/00001.png"], c["images/00001.png"])
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir)), ["a", "b", "c"], "no staging folders left")
    }

    /// synth.json records each photo's true weather, and captions can say it.
    func testRecordsEachImagesWeatherForCaptions() throws {
        let out = dir + "/photo"
        try Synth.writeDataset(to: out, count: 12, width: 64, height: 32, style: .photo, seed: 3, progress: false)
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/synth.json"))) as! [String: Any]
        let table = meta["weather"] as! [String: String]
        let truth = (0..<12).map { Synth.frame(index: $0, width: 64, height: 32, style: .photo, seed: 3).weather }
        XCTAssertEqual((0..<12).map { table[Synth.fileName($0, count: 12)] }, truth)
        XCTAssertGreaterThan(Set(truth).count, 1, "twelve photos should not all share one weather")
        XCTAssertEqual(Synth.frame(index: 0, style: .game, seed: 3).weather, "clear")

        let samples = try Dataset.samples(root: out)
        let words = truth.map(Synth.promptWeather)
        var always = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, weathers: words, weatherProbability: 1, seed: 1)
        for _ in 0..<6 {
            let crop = try always.next()
            XCTAssertTrue(crop.caption.hasPrefix("A city street scene"), crop.caption)
            XCTAssertTrue(crop.caption.hasSuffix(", in \(words[crop.sampleIndex]) weather."), crop.caption)
        }
        // Off, the sampler draws what it always drew (older runs keep their sequences).
        var plain = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, seed: 1)
        var zero = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, weathers: words, weatherProbability: 0, seed: 1)
        for _ in 0..<4 { XCTAssertEqual(try plain.next().caption, try zero.next().caption) }
        XCTAssertThrowsError(try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, weathers: [], weatherProbability: 0.5, seed: 1))
    }

    func testWritesTheGTA5LayoutAndRefusesToClobber() throws {
        let out = dir + "/gta"
        let summary = try Synth.writeDataset(to: out, count: 3, width: 64, height: 32, seed: 1, progress: false)
        XCTAssertEqual(summary.classPixels.reduce(0, +) > 0, true)
        let samples = try Dataset.samples(root: out)
        XCTAssertEqual(samples.map { URL(fileURLWithPath: $0.imagePath).lastPathComponent }, ["00001.png", "00002.png", "00003.png"])
        XCTAssertFalse(samples[0].labelsAreTrainIds)
        XCTAssertEqual(try PNG.header(samples[0].labelPath).colorType, 3, "labels are palette PNGs of label ids, as in GTA5")
        let (image, labels) = try samples[0].load()
        XCTAssertEqual(image.width, 64)
        XCTAssertEqual(labels.ids, Synth.frame(index: 0, width: 64, height: 32, seed: 1).trainIds.ids)
        XCTAssertTrue(labels.ids.allSatisfy { $0 < 19 || $0 == 255 })

        XCTAssertThrowsError(try Synth.writeDataset(to: out, count: 2, width: 64, height: 32, seed: 2, progress: false)) {
            XCTAssertTrue("\($0)".contains("--overwrite"), "\($0)")
        }
        try Synth.writeDataset(to: out, count: 2, width: 64, height: 32, seed: 2, overwrite: true, progress: false)
        XCTAssertEqual(try Dataset.samples(root: out).count, 2, "replaced, not merged")
        XCTAssertThrowsError(try Synth.writeDataset(to: dir + "/bad", count: 0, progress: false))
        XCTAssertThrowsError(try Synth.writeDataset(to: dir + "/bad", count: 1, width: 4, height: 4, progress: false))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
    }

    /// The requirement: all 19 classes over a modest dataset (20 images at 256x128),
    /// in both styles, for a few seeds.
    func testAllClassesOccurInTwentyImages() {
        for seed: UInt64 in [0, 1, 2] {
            var pixels = [Int](repeating: 0, count: 19)
            for i in 0..<20 {
                let h = Synth.frame(index: i, style: .game, seed: seed).trainIds.histogram()
                for c in 0..<19 { pixels[c] += h[c] }
            }
            let missing = (0..<19).filter { pixels[$0] == 0 }.map { Cityscapes.classNames[$0] }
            XCTAssertEqual(missing, [], "seed \(seed)")
        }
    }

    /// Labels are exact: (1) the scanline rasteriser agrees, pixel for pixel, with a brute-force
    /// "last shape whose inside test holds at the pixel centre"; (2) the label of every pixel
    /// is the class of that shape; (3) in the game style every colour belongs to exactly one
    /// class, and every pixel's colour is one of its label's colours.
    func testLabelsAreExact() {
        var colorClass: [UInt32: UInt8] = [:]
        for (label, colors) in Palette.game {
            for c in colors {
                let key = UInt32(c.0) << 16 | UInt32(c.1) << 8 | UInt32(c.2)
                XCTAssertNil(colorClass[key], "game colour \(c) used by two classes")
                colorClass[key] = label
            }
        }
        for index in 0..<3 {
            let frame = Synth.frame(index: index, width: 128, height: 64, style: .game, seed: 11)
            let (w, h) = (128, 64)
            var mismatches = 0
            for y in 0..<h {
                for x in 0..<w {
                    let top = frame.items.lastIndex { $0.shape.contains(Double(x) + 0.5, Double(y) + 0.5) }.map { Int32($0) } ?? -1
                    if top != frame.itemBuffer[y * w + x] { mismatches += 1 }
                }
            }
            XCTAssertEqual(mismatches, 0, "frame \(index): rasteriser and inside test disagree")
            for p in 0..<(w * h) {
                let item = frame.items[Int(frame.itemBuffer[p])]
                XCTAssertEqual(frame.labelIds.ids[p], item.label)
                let key = UInt32(frame.image.pixels[p * 3]) << 16 | UInt32(frame.image.pixels[p * 3 + 1]) << 8 | UInt32(frame.image.pixels[p * 3 + 2])
                XCTAssertEqual(colorClass[key], frame.labelIds.ids[p], "pixel \(p) of frame \(index)")
            }
        }
    }

    /// Game and photo renderings of a seed share their scenes: same label maps, different looks.
    func testStylesShareScenesButNotLooks() {
        var meanDifference = 0.0
        for index in 0..<6 {
            let game = Synth.frame(index: index, width: 128, height: 64, style: .game, seed: 3)
            let photo = Synth.frame(index: index, width: 128, height: 64, style: .photo, seed: 3)
            XCTAssertEqual(game.labelIds, photo.labelIds)
            meanDifference += zip(game.image.pixels, photo.image.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(game.image.pixels.count)
        }
        XCTAssertGreaterThan(meanDifference / 6, 20)
        let weathers = Set((0..<40).map { Synth.frame(index: $0, width: 32, height: 16, style: .photo, seed: 3).weather })
        XCTAssertEqual(weathers, Set(Weather.allCases.map(\.rawValue)))
    }

    /// Driving footage is full of small, far objects: count instances of cars and persons
    /// smaller than 30 pixels (the objects MRLF and RCS exist for).
    func testManySmallInstances() {
        var small = 0, total = 0
        for index in 0..<5 {
            let frame = Synth.frame(index: index, seed: 4)
            var sizes: [Int32: Int] = [:]
            for (p, k) in frame.itemBuffer.enumerated() where [LID.car, LID.person].contains(frame.labelIds.ids[p]) {
                sizes[frame.items[Int(k)].object, default: 0] += 1
            }
            small += sizes.values.filter { $0 < 30 }.count
            total += sizes.count
        }
        XCTAssertGreaterThan(small, 15, "\(small) of \(total) car and person instances are small")
    }
}
