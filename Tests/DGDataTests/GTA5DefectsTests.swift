import DGBase
@testable import DGData
import Foundation
import XCTest

/// A GTA5 tree with the defects of the release as downloaded: frames without a label map (the
/// release numbers 24,966 frames but holds 24,941 pairs), a label map without its frame, a file
/// cut short by an interrupted download, and an image of another size than its label map.
final class GTA5DefectsTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "gta5-defects-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func makeDefectiveTree() throws -> String {
        let root = dir + "/gta5"
        try Synth.writeDataset(to: root, count: 12, width: 128, height: 64, seed: 4, progress: false)
        let fm = FileManager.default
        for id in ["00002", "00003"] { try fm.removeItem(atPath: root + "/labels/\(id).png") }   // frames without labels
        try fm.removeItem(atPath: root + "/images/00005.png")                                   // a label without its frame
        let cut = root + "/labels/00007.png"                                                      // an interrupted download
        let bytes = try Data(contentsOf: URL(fileURLWithPath: cut))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let big = try PNG.read(root + "/images/00009.png").resized(width: 130, height: 66, filter: .bilinear)
        try PNG.write(big, to: root + "/images/00009.png")                                      // a size mismatch
        return root
    }

    func testTheReleaseAsDownloadedIsReadWithWhatWasSkippedNamed() throws {
        let root = try makeDefectiveTree()
        var warnings: [String] = []
        let saved = Dataset.warn
        Dataset.warn = { warnings.append($0) }
        defer { Dataset.warn = saved }

        let samples = try Dataset.samples(root: root)
        XCTAssertEqual(samples.map { URL(fileURLWithPath: $0.imagePath).lastPathComponent },
                       ["00001.png", "00004.png", "00006.png", "00008.png", "00009.png", "00010.png", "00011.png", "00012.png"])
        let skipped = Dataset.skipped(roots: [root])
        XCTAssertEqual(skipped.map { URL(fileURLWithPath: $0.path).lastPathComponent + " " + $0.reason },
                       ["00002.png no label file", "00003.png no label file", "00007.png truncated (no PNG end chunk)", "00005.png no image"])
        XCTAssertEqual(warnings.count, 1, "\(warnings)")
        XCTAssertTrue(warnings[0].contains("8 pairs used, 4 files skipped (1 no image, 2 no label file, 1 truncated (no PNG end chunk)"), warnings[0])
        _ = try Dataset.samples(root: root)
        XCTAssertEqual(warnings.count, 1, "one line per folder and process")

        // The list file, and the mismatched pair resized (named once) rather than dropped or mis-paired.
        XCTAssertTrue(try Dataset.writeSkippedList(to: dir + "/skipped.txt", roots: [root]))
        let list = try String(contentsOfFile: dir + "/skipped.txt", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(list.count, 4)
        XCTAssertTrue(list[0].hasSuffix("images/00002.png\tno label file"), String(list[0]))
        let pair = try samples[4].load()
        XCTAssertEqual([pair.image.width, pair.image.height], [128, 64])
        XCTAssertEqual(warnings.count, 2)
        XCTAssertTrue(warnings[1].contains("00009.png: 130x66, its label map 128x64"), warnings[1])

        // Rare-class statistics and crops run over what is left; the counts are also written in
        // DAFormer's format, and read back from it (not recounted) when our own cache is gone.
        let stats = try ClassStatistics.load(samples, root: root)
        XCTAssertEqual(stats.perFile.count, 8)
        let daformer = try JSON.parse(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: root + "/sample_class_stats.json"))))
        XCTAssertEqual(daformer.array?.count, 8)
        XCTAssertEqual(daformer.array?[0]["file"]?.string, samples[0].labelPath)
        XCTAssertEqual(daformer.array?[0]["0"]?.int, stats.perFile[0].counts[0] > 0 ? stats.perFile[0].counts[0] : nil)
        let withClass = try JSON.parse(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: root + "/samples_with_class.json"))))
        XCTAssertEqual(withClass["0"]?.array?.count, stats.perFile.filter { $0.counts[0] > 0 }.count)
        // samples_with_class.json alone (a copy that kept only it) gives the same counts.
        try FileManager.default.moveItem(atPath: root + "/sample_class_stats.json", toPath: dir + "/stats.json")
        try FileManager.default.removeItem(atPath: ClassStatistics.cachePath(root: root))
        let transposed = try ClassStatistics.readPreprocessed(root: root)
        XCTAssertEqual(samples.map { transposed[ClassStatistics.stem($0.labelPath)] }, stats.perFile.map { $0.counts })
        XCTAssertEqual(try ClassStatistics.load(samples, root: root).perFile, stats.perFile)
        try FileManager.default.moveItem(atPath: dir + "/stats.json", toPath: root + "/sample_class_stats.json")
        try FileManager.default.removeItem(atPath: ClassStatistics.cachePath(root: root))
        // A hand-made DAFormer file (paths from another working directory) is taken as it stands.
        let entries: [JSON] = samples.map { .object([("13", .int(4242)), ("file", .string("data/gta/labels/" + URL(fileURLWithPath: $0.labelPath).deletingPathExtension().lastPathComponent + "_labelTrainIds.png"))]) }
        try Data(JSON.array(entries).pretty.utf8).write(to: URL(fileURLWithPath: root + "/sample_class_stats.json"))
        let read = try ClassStatistics.load(samples, root: root)
        XCTAssertEqual(read.perFile.map { $0.counts[13] }, Array(repeating: 4242, count: 8))
        XCTAssertEqual(read.perFile.map { $0.counts.reduce(0, +) }, Array(repeating: 4242, count: 8))
        XCTAssertEqual(read.perFile[0].width, 128)
        try Data(JSON.array(samples.map { _ in .object([("file", .string("x.png"))]) }).pretty.utf8).write(to: URL(fileURLWithPath: root + "/sample_class_stats.json"))
        try FileManager.default.removeItem(atPath: ClassStatistics.cachePath(root: root))
        XCTAssertEqual(try ClassStatistics.load(samples, root: root).perFile, stats.perFile, "files the list does not name are counted")
        let rcs = try RareClassSampling(statistics: stats)
        var sampler = try CropSampler(samples: samples, cropWidth: 32, cropHeight: 32, rcs: rcs, seed: 1)
        for _ in 0..<16 { XCTAssertEqual(try sampler.next().image.width, 32) }
    }
}

final class GenerationListTests: XCTestCase {
    /// The classes a rare-class list draws follow the RCS probabilities: with N draws each
    /// class's share lies within 4 standard errors (sqrt(p(1-p)/N)) of its probability, and every
    /// entry's file holds enough of its class. Without RCS the files are uniform.
    func testRareClassListFollowsTheProbabilities() throws {
        let root = NSTemporaryDirectory() + "genlist-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Synth.writeDataset(to: root, count: 20, width: 128, height: 64, seed: 2, progress: false)
        let samples = try Dataset.samples(root: root)
        let rcs = try RareClassSampling(statistics: try ClassStatistics.load(samples, root: root))
        let n = 20_000
        let entries = GenerationList.draw(count: n, samples: samples.count, rcs: rcs, seed: 7)
        var counts = [Int](repeating: 0, count: Cityscapes.classCount)
        for e in entries {
            let c = try XCTUnwrap(e.classId)
            counts[c] += 1
            XCTAssertTrue(rcs.filesWithClass[c].contains(e.sample))
        }
        for (c, p) in rcs.probabilities.enumerated() {
            let share = Double(counts[c]) / Double(n), tolerance = 4 * (p * (1 - p) / Double(n)).squareRoot()
            XCTAssertEqual(share, p, accuracy: max(tolerance, 1e-12), "class \(c)")
        }
        XCTAssertGreaterThan(rcs.probabilities.filter { $0 > 0.01 }.count, 3, "the test needs several drawn classes")
        // Deterministic, and a prefix of a longer list.
        XCTAssertEqual(GenerationList.draw(count: 100, samples: samples.count, rcs: rcs, seed: 7), Array(entries.prefix(100)))

        let uniform = GenerationList.draw(count: n, samples: samples.count, rcs: nil, seed: 7)
        var perFile = [Int](repeating: 0, count: samples.count)
        for e in uniform { XCTAssertNil(e.classId); perFile[e.sample] += 1 }
        let p = 1 / Double(samples.count)
        for k in perFile { XCTAssertEqual(Double(k) / Double(n), p, accuracy: 4 * (p * (1 - p) / Double(n)).squareRoot()) }

        let json = GenerationList.json(Array(entries.prefix(2)), samples: samples, listPath: root + "/gen_file.json")
        XCTAssertEqual(json.array?.count, 2)
        XCTAssertTrue(json.array?[0]["file_name"]?.string?.hasPrefix("labels/") == true, json.compact)
    }
}
