import DGBase
import DGCheckpoint
import DGData
import DGTensor
import Foundation
import XCTest
@testable import DGDiffusion

/// `generate` on the tiny fixture models at 128 px: outputs, reproducibility, shards, resumption.
final class GenerationTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = scratchDirectory("generate")
        // Two label maps larger than the crop: a train-id map and the same street as a colour mask,
        // listed in a gen_file.json with the class each crop must centre on.
        let a = LabelMap(width: 192, height: 160, ids: streetLabels(width: 192, height: 160))
        try FileManager.default.createDirectory(atPath: dir + "/labels", withIntermediateDirectories: true)
        try PNG.write(Image(width: a.width, height: a.height, channels: 1, pixels: a.ids), to: dir + "/labels/a_labelTrainIds.png")
        let b = LabelMap(width: 144, height: 128, ids: streetLabels(width: 144, height: 128).map { $0 == 13 ? 11 : $0 })
        try PNG.write(Cityscapes.colorize(b), to: dir + "/labels/b_color.png")
        let list = #"[{"class": 5, "file_name": "labels/a_labelTrainIds.png"}, {"class": "person", "file_name": "labels/b_color.png"}, {"class": null, "file_name": "labels/a_labelTrainIds.png"}]"#
        try Data(list.utf8).write(to: URL(fileURLWithPath: dir + "/gen_file.json"))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func job(_ out: String, mrlf: Bool = false, count: Int? = nil, shard: (Int, Int) = (0, 1)) -> DatasetJob {
        var j = DatasetJob(pipeline: Fixture.tinySD, controlnet: Fixture.tinyControlNet, labels: dir + "/gen_file.json", out: dir + "/" + out)
        j.count = count
        j.seed = 11
        j.sampling.steps = 2
        j.resolution = 128
        j.mrlf = mrlf
        // 64 latents at 512 = 16 at 128: 2 x 2 windows over the 32 x 32 high-resolution latents.
        j.strideAt512 = 64
        j.shardIndex = shard.0
        j.shardCount = shard.1
        return j
    }

    /// Every file under `root` (relative path -> bytes).
    func files(_ root: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let e = FileManager.default.enumerator(atPath: root)!
        while let p = e.nextObject() as? String {
            var isDir: ObjCBool = false
            FileManager.default.fileExists(atPath: root + "/" + p, isDirectory: &isDir)
            if !isDir.boolValue { out[p] = try Data(contentsOf: URL(fileURLWithPath: root + "/" + p)) }
        }
        return out
    }

    func testGenerateWritesTheDataset() throws {
        let g = try DatasetGenerator(job("run", count: 4))
        let summary = try g.run(progress: false)
        XCTAssertEqual(summary.generated, 4)
        let out = try files(dir + "/run")
        let names = (0..<4).map { g.plan($0).name }
        XCTAssertEqual(names, ["000000_a", "000001_b", "000002_a", "000003_a"])
        for n in names {
            for f in ["images/\(n).png", "labels/\(n)_labelTrainIds.png", "vis/\(n).png", "records/\(n).json"] { XCTAssertNotNil(out[f], f) }
            let image = try PNG.read(dir + "/run/images/\(n).png")
            XCTAssertEqual([image.width, image.height, image.channels], [128, 128, 3])
            let vis = try PNG.read(dir + "/run/vis/\(n).png")
            XCTAssertEqual([vis.width, vis.height], [384, 128])
        }
        let lines = String(decoding: out["generation.jsonl"]!, as: UTF8.self).split(separator: "\n").map { try! JSON.parse(String($0)) }
        XCTAssertEqual(lines.map { $0["index"]?.int }, [0, 1, 2, 3])
        // The label file is exactly the crop of the source map the record names.
        for (i, line) in lines.enumerated() {
            let crop = line["crop"]!.array!.map { $0.int! }
            let source = try DatasetGenerator.loadLabels(line["file"]!.string!)
            let expected = source.cropped(CropRect(x: crop[0], y: crop[1], width: crop[2], height: crop[3]))
            XCTAssertEqual(try PNG.readLabels(dir + "/run/labels/\(names[i])_labelTrainIds.png"), expected)
            let prompt = line["prompt"]!.string!
            let caption = Cityscapes.caption(classes: Cityscapes.classes(present: expected))
            if let weather = line["weather"]?.string {
                XCTAssertEqual(prompt, "A city street scene with \(caption), in \(weather) weather.")
            } else {
                XCTAssertEqual(prompt, caption)
            }
            XCTAssertEqual(line["seed"]?.string, String(itemSeed(base: 11, index: i)))
            XCTAssertEqual(line["settings"]?["mrlf"], false)
        }
        XCTAssertEqual(lines[0]["class"]?.string, "pole")
        XCTAssertEqual(lines[1]["class"]?.string, "person")
        XCTAssertTrue(lines[2]["class"]?.isNull ?? false)
        // Rare-class crops show their class on more than 1% of the crop.
        for i in [0, 1, 3] where lines[i]["class_id"]?.int != nil {
            let c = UInt8(lines[i]["class_id"]!.int!)
            let ids = try PNG.readLabels(dir + "/run/labels/\(names[i])_labelTrainIds.png").ids
            XCTAssertGreaterThan(ids.filter { $0 == c }.count, 128 * 128 / 100)
        }
    }

    /// One seed, one result: a second run is bit for bit the first; shards 0/2 and 1/2, into one
    /// folder or two, give exactly the files of one run; a rerun skips what is done and redoes
    /// (identically) an item whose record is missing, as after a kill.
    /// The Cityscapes layout holds the same images and label maps as the GTA5 layout, where
    /// mmsegmentation's CityscapesDataset and this program's own Cityscapes reader find them.
    func testCityscapesLayoutHoldsTheSameItems() throws {
        try DatasetGenerator(job("gta", count: 2)).run(progress: false)
        var j = job("cs", count: 2)
        j.layout = .cityscapes
        try DatasetGenerator(j).run(progress: false)
        let gta = try files(dir + "/gta"), cs = try files(dir + "/cs")
        for name in ["000000_a", "000001_b"] {
            XCTAssertEqual(cs["leftImg8bit/train/dginstyle/\(name)_leftImg8bit.png"], gta["images/\(name).png"])
            XCTAssertEqual(cs["gtFine/train/dginstyle/\(name)_gtFine_labelTrainIds.png"], gta["labels/\(name)_labelTrainIds.png"])
        }
        XCTAssertNil(cs["images/000000_a.png"])
        let samples = try Dataset.samples(root: dir + "/cs", split: "train")
        XCTAssertEqual(samples.count, 2)
        XCTAssertTrue(samples.allSatisfy(\.labelsAreTrainIds))
        // A resumed run must keep its layout.
        var other = job("cs", count: 3)
        other.layout = .gta5
        XCTAssertThrowsError(try DatasetGenerator(other).run(progress: false))
    }

    func testReproducibleShardedAndResumable() throws {
        _ = try DatasetGenerator(job("full", count: 5)).run(progress: false)
        _ = try DatasetGenerator(job("again", count: 5)).run(progress: false)
        let full = try files(dir + "/full")
        // 4 files an item; run.json, generation.jsonl, shards.json and the log's lock file.
        XCTAssertEqual(full.count, 5 * 4 + 4)
        XCTAssertEqual(try files(dir + "/again"), full)
        // shards.json names the split (for `status`); everything else is the same for any split.
        func items(_ f: [String: Data]) -> [String: Data] { f.filter { $0.key != "shards.json" } }

        let s0 = try DatasetGenerator(job("sharded", count: 5, shard: (0, 2))).run(progress: false)
        let s1 = try DatasetGenerator(job("sharded", count: 5, shard: (1, 2))).run(progress: false)
        XCTAssertEqual([s0.generated, s1.generated], [3, 2])
        XCTAssertEqual(items(try files(dir + "/sharded")), items(full))
        _ = try DatasetGenerator(job("apart0", count: 5, shard: (0, 2))).run(progress: false)
        _ = try DatasetGenerator(job("apart1", count: 5, shard: (1, 2))).run(progress: false)
        var union = try files(dir + "/apart0")
        for (k, v) in try files(dir + "/apart1") where k != "generation.jsonl" {
            if let existing = union[k] { XCTAssertEqual(existing, v, "\(k) is in both shards' folders and differs") }
            union[k] = v
        }
        let log0 = String(decoding: union["generation.jsonl"]!, as: UTF8.self), log1 = String(decoding: try files(dir + "/apart1")["generation.jsonl"]!, as: UTF8.self)
        union["generation.jsonl"] = Data((log0 + log1).split(separator: "\n").sorted().map { $0 + "\n" }.joined().utf8)
        XCTAssertEqual(items(union), items(full))

        let rerun = try DatasetGenerator(job("full", count: 5)).run(progress: false)
        XCTAssertEqual([rerun.generated, rerun.skipped], [0, 5])
        let name = try DatasetGenerator(job("full", count: 5)).plan(3).name
        try FileManager.default.removeItem(atPath: dir + "/full/records/\(name).json")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/full/images/\(name).png"))
        let resumed = try DatasetGenerator(job("full", count: 5)).run(progress: false)
        XCTAssertEqual([resumed.generated, resumed.skipped], [1, 4])
        XCTAssertEqual(try files(dir + "/full"), full)
        // More items later: the first five stay, the new ones follow.
        let more = try DatasetGenerator(job("full", count: 6)).run(progress: false)
        XCTAssertEqual([more.generated, more.skipped], [1, 5])
    }

    /// MRLF through the dataset writer: runs, is reproducible, and differs from one pass.
    func testGenerateWithMRLF() throws {
        _ = try DatasetGenerator(job("mrlf", mrlf: true, count: 1)).run(progress: false)
        _ = try DatasetGenerator(job("mrlf2", mrlf: true, count: 1)).run(progress: false)
        _ = try DatasetGenerator(job("plain", count: 1)).run(progress: false)
        let a = try files(dir + "/mrlf")
        XCTAssertEqual(try files(dir + "/mrlf2"), a)
        let plain = try files(dir + "/plain")
        XCTAssertEqual(a["labels/000000_a_labelTrainIds.png"], plain["labels/000000_a_labelTrainIds.png"], "the same crop")
        XCTAssertNotEqual(a["images/000000_a.png"], plain["images/000000_a.png"])
    }

    /// Bad input stops with one line before anything is written; a rerun with other settings is
    /// refused.
    func testBadInputs() throws {
        XCTAssertThrowsError(try DatasetGenerator(DatasetJob(pipeline: Fixture.tinySD, labels: dir + "/missing", out: dir + "/x")))
        var bad = job("bad")
        bad.resolution = 100
        XCTAssertThrowsError(try DatasetGenerator(bad)) { XCTAssertTrue("\($0)".contains("multiple of 64")) }
        try Data(#"[{"class": 42, "file_name": "labels/a_labelTrainIds.png"}]"#.utf8).write(to: URL(fileURLWithPath: dir + "/bad.json"))
        var badClass = job("bad")
        badClass.labels = dir + "/bad.json"
        XCTAssertThrowsError(try DatasetGenerator(badClass)) { XCTAssertTrue("\($0)".contains("entry 0 has class 42"), "\($0)") }
        try Data(#"[{"class": "train", "file_name": "labels/a_labelTrainIds.png"}]"#.utf8).write(to: URL(fileURLWithPath: dir + "/absent.json"))
        var absent = job("absent")
        absent.labels = dir + "/absent.json"
        XCTAssertThrowsError(try DatasetGenerator(absent).run(progress: false)) { XCTAssertTrue("\($0)".contains("has no pixel of class 16"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/absent/images/000000_a.png"))
        var noControl = job("nocn")
        noControl.controlnet = nil
        XCTAssertThrowsError(try DatasetGenerator(noControl).run(progress: false)) { XCTAssertTrue("\($0)".contains("no ControlNet"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x"))

        _ = try DatasetGenerator(job("settings", count: 1)).run(progress: false)
        var other = job("settings", count: 1)
        other.sampling.guidanceScale = 3
        XCTAssertThrowsError(try DatasetGenerator(other).run(progress: false)) { XCTAssertTrue("\($0)".contains("other settings"), "\($0)") }
    }
}
