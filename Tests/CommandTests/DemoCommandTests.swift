import DGBase
import DGData
import DGEval
import Foundation
import XCTest

/// `demo` and `measure` as a user runs them.
final class DemoCommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"

    /// PNG width and height from the IHDR chunk.
    func pngSize(_ path: String) throws -> (Int, Int) {
        let d = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func be(_ i: Int) -> Int { d[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) } }
        return (be(16), be(20))
    }

    /// The demo on the fixture models: three dataset folders of the same items, and a contact
    /// sheet of one row per item and four columns under a title strip; a rerun reuses everything;
    /// other settings in the same folder are refused without touching it; missing shipped models
    /// are named with what makes them.
    func testDemoOnFixtureModels() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let models = ["--pipeline", Self.tiny + "/tiny-sd", "--unet-source", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet"]
        let args = ["demo", "--out", dir + "/demo", "--count", "2", "--steps", "2", "--resolution", "64", "--mask-size", "128x64"] + models
        var r = try run(args)
        XCTAssertEqual(r.status, 0, r.stderr)
        for folder in ["a-source-unet", "b-style-swap", "c-style-swap-mrlf"] {
            let images = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/demo/\(folder)/images").sorted()
            XCTAssertEqual(images, ["000000_00001.png", "000001_00002.png"], folder)
            let log = try String(contentsOfFile: "\(dir)/demo/\(folder)/generation.jsonl", encoding: .utf8)
            XCTAssertEqual(log.split(separator: "\n").count, 2, folder)
            XCTAssertTrue(log.contains("\"mrlf\":\(folder.hasSuffix("mrlf"))"), folder)
        }
        // Same crops and prompts in every variant: the columns differ only by the generator.
        func records(_ folder: String) throws -> [String] {
            try String(contentsOfFile: "\(dir)/demo/\(folder)/generation.jsonl", encoding: .utf8).split(separator: "\n").map { line in
                let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\(o["crop"]!) \(o["prompt"]!) \(o["seed"]!)"
            }
        }
        XCTAssertEqual(try records("a-source-unet"), try records("c-style-swap-mrlf"))
        let (w, h) = try pngSize(dir + "/demo/contact-sheet.png")
        // 4 columns of 64 px with 2-px gaps; an 11-px title strip and 2 rows of 64 px, each under a 2-px gap.
        XCTAssertEqual(w, 4 * 64 + 3 * 2)
        XCTAssertEqual(h, 11 + 2 * (64 + 2))
        XCTAssertTrue(r.stdout.contains("mask R²"), r.stdout)

        r = try run(args)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.components(separatedBy: "0 generated, 2 reused").count - 1, 3, r.stdout)

        let sheet = try Data(contentsOf: URL(fileURLWithPath: dir + "/demo/contact-sheet.png"))
        r = try run(args + ["--seed", "5"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("--overwrite") && r.stderr.split(separator: "\n").count == 1, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/demo/contact-sheet.png")), sheet)

        // The shipped defaults are relative to the working directory: from an empty one, none exists.
        r = try run(["demo", "--out", dir + "/none"], in: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("weights/tiny-sd.dginstyle: not found") && r.stderr.contains("recipes/"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        r = try run(["demo", "--out", dir + "/none", "--pipeline", Self.tiny + "/tiny-sd", "--unet-source", Self.tiny + "/tiny-sd"], in: dir)
        XCTAssertTrue(r.stderr.contains("weights/tiny-controlnet.dginstyle: not found"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/none"))
    }

    /// `measure style` tells synth photo renders from game renders on images it never saw, and
    /// `measure masks` finds game renders (flat colours per object) closer to their masks than
    /// photo renders of the same scenes (light, texture, weather).
    func testMeasureStyleAndMasksOnSynth() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, style, seed) in [("photo", "photo", "1"), ("game", "game", "2"), ("photo-test", "photo", "3"), ("game-test", "game", "3")] {
            let r = try run(["synth", "--out", "\(dir)/\(name)", "--count", name.hasSuffix("test") ? "8" : "24", "--size", "128x64", "--style", style, "--seed", seed])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        var r = try run(["measure", "style", "--photo", dir + "/photo", "--game", dir + "/game", "--images", dir + "/photo-test",
                         "--images", dir + "/game-test", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let classifier = o["classifier"] as! [String: Any]
        XCTAssertGreaterThanOrEqual(classifier["held_out_accuracy"] as! Double, 0.9)
        let sets = o["sets"] as! [[String: Any]]
        XCTAssertEqual(sets.map { $0["name"] as! String }, ["photo-test", "game-test"])
        XCTAssertGreaterThan(sets[0]["mean_p_photo"] as! Double, 0.8)
        XCTAssertLessThan(sets[1]["mean_p_photo"] as! Double, 0.2)
        XCTAssertGreaterThan(sets[0]["photo_closeness"] as! Double, sets[1]["photo_closeness"] as! Double)

        r = try run(["measure", "masks", "--images", dir + "/game-test", "--images", dir + "/photo-test", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let masks = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        XCTAssertEqual(masks.map { $0["count"] as! Int }, [8, 8])
        XCTAssertGreaterThan(masks[0]["mean"] as! Double, masks[1]["mean"] as! Double)

        r = try run(["measure", "masks", "--images", dir + "/nothing"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("nothing") && r.stderr.split(separator: "\n").count == 1, r.stderr)
        r = try run(["measure", "style", "--photo", dir + "/photo", "--game", dir + "/nothing", "--images", dir + "/photo"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("nothing: no such folder"), r.stderr)
    }

    /// `measure vae` writes each image as the VAE reconstructs it beside its unchanged label, and
    /// reports the error those files have; a folder without labelled images is a one-line error.
    func testMeasureVAEWritesADatasetOfReconstructions() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/photo", "--count", "3", "--size", "128x64", "--style", "photo", "--seed", "4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["measure", "vae", "--pipeline", Self.tiny + "/tiny-sd", "--data", dir + "/photo", "--out", dir + "/vae", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(o["count"] as? Int, 3)
        var absSum = 0.0, squaredSum = 0.0, count = 0.0
        for name in ["00001.png", "00002.png", "00003.png"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/vae/labels/\(name)")),
                           try Data(contentsOf: URL(fileURLWithPath: "\(dir)/photo/labels/\(name)")))
            let original = try PNG.read("\(dir)/photo/images/\(name)").rgb(), rebuilt = try PNG.read("\(dir)/vae/images/\(name)").rgb()
            XCTAssertEqual([rebuilt.width, rebuilt.height], [128, 64])
            XCTAssertNotEqual(rebuilt.pixels, original.pixels)
            for (a, b) in zip(original.pixels, rebuilt.pixels) {
                absSum += abs(Double(a) - Double(b)); squaredSum += (Double(a) - Double(b)) * (Double(a) - Double(b)); count += 1
            }
        }
        XCTAssertEqual(o["mean_abs_error"] as! Double, absSum / count, accuracy: 1e-5)
        XCTAssertEqual(o["psnr_db"] as! Double, 10 * log10(255 * 255 / (squaredSum / count)), accuracy: 1e-5)

        // A Cityscapes-layout folder (as released: leftImg8bit/ + gtFine/ per split and city) comes out in
        // the GTA5 layout, each label named by its image so that the pairs hold.
        let fm = FileManager.default
        for sub in ["leftImg8bit/val/aachen", "gtFine/val/aachen"] { try fm.createDirectory(atPath: "\(dir)/cs/\(sub)", withIntermediateDirectories: true) }
        try fm.copyItem(atPath: dir + "/photo/images/00001.png", toPath: dir + "/cs/leftImg8bit/val/aachen/aachen_000001_000019_leftImg8bit.png")
        try fm.copyItem(atPath: dir + "/photo/labels/00001.png", toPath: dir + "/cs/gtFine/val/aachen/aachen_000001_000019_gtFine_labelTrainIds.png")
        r = try run(["measure", "vae", "--pipeline", Self.tiny + "/tiny-sd", "--data", dir + "/cs", "--out", dir + "/cs-vae", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/cs-vae/labels/aachen_000001_000019_leftImg8bit_labelTrainIds.png")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/photo/labels/00001.png")))
        r = try run(["measure", "masks", "--images", dir + "/cs-vae", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["count"] as? Int, 1)

        r = try run(["measure", "vae", "--pipeline", Self.tiny + "/tiny-sd", "--data", dir + "/nothing", "--out", dir + "/vae2"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("nothing") && r.stderr.split(separator: "\n").count == 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/vae2"))
    }

    /// `measure report` turns results.json into the three claims' tables, and says which
    /// sections did not run.
    func testMeasureReport() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func eval(_ miou: Double, _ pole: Double?, poleHits: [Int]? = nil) -> String {
            // Per image: 10 pole pixels (train id 5), `hits` of them predicted pole, the rest road.
            let perImage = poleHits.map { hits in
                ", \"per_image\": [" + hits.enumerated().map { i, hit in
                    var counts = [Int](repeating: 0, count: 19 * 19)
                    counts[5 * 19 + 5] = hit
                    counts[5 * 19 + 0] = 10 - hit
                    counts[0] = 50
                    return "{\"image\": \"\(i).png\", \"counts\": \(counts)}"
                }.joined(separator: ", ") + "]"
            } ?? ""
            return "{\"miou\": \(miou), \"pixel_accuracy\": 0.8, \"iou\": {\"road\": 0.9, \"pole\": \(pole.map { "\($0)" } ?? "null"), \"person\": 0.25}\(perImage)}"
        }
        let results = """
        {"settings": {"quick": true},
         "provenance": {"command": "tools/run-experiment.sh", "finished": "2026-12-05T10:00:00Z", "wall_s": 7200, "outputs_made": 30,
                        "outputs_reused": 13, "machine": "Intel Xeon, 2 cores", "commit": "abc"},
         "invocations": [{"started": "2026-12-04T17:19:48Z", "commit": "abc", "machine": "AMD EPYC, 2 cores", "command": "tools/run-experiment.sh"},
                         {"started": "2026-12-05T08:00:00Z", "commit": "abc", "machine": "Intel Xeon, 2 cores", "command": "tools/run-experiment.sh"},
                         {"started": "2026-12-05T08:00:00Z", "finished": "2026-12-05T10:00:00Z", "wall_s": 7200, "outputs_made": 30, "outputs_reused": 13}],
         "style": {"classifier": {"held_out_accuracy": 0.95, "held_out": 20, "train": 60},
                   "sets": [{"name": "a-source-unet", "count": 10, "mean_p_photo": 0.2, "photo_share": 0.1, "photo_closeness": 0.3},
                            {"name": "b-style-swap", "count": 10, "mean_p_photo": 0.7, "photo_share": 0.8, "photo_closeness": 0.6}]},
         "masks": {"a-source-unet": {"count": 10, "mean": 0.41, "median": 0.4}, "b-style-swap": {"count": 10, "mean": 0.39, "median": 0.38}},
         "mrlf": {"oracle": \(eval(0.6, 0.3)), "oracle_vae": \(eval(0.48, 0.2)), "without": \(eval(0.3, 0.1, poleHits: [2, 4, 3])), "with": \(eval(0.35, 0.15, poleHits: [6, 8, 7]))},
         "ablation": {"rows": [
            {"name": "source", "runs": [{"seg_seed": "1", "eval": \(eval(0.2, nil, poleHits: [2, 4, 3]))},
                                        {"seg_seed": "2", "eval": \(eval(0.3, nil, poleHits: [3, 4, 3]))}]},
            {"name": "c", "runs": [{"seg_seed": "1", "gen_seed": "8501", "eval": \(eval(0.3, nil, poleHits: [6, 8, 7]))},
                                   {"seg_seed": "2", "gen_seed": "8501", "eval": \(eval(0.4, nil, poleHits: [7, 8, 7]))},
                                   {"seg_seed": "1", "gen_seed": "8502", "eval": \(eval(0.3, nil, poleHits: [6, 8, 6]))},
                                   {"seg_seed": "2", "gen_seed": "8502", "eval": \(eval(0.5, nil, poleHits: [7, 9, 7]))}]}]}}
        """
        try results.write(toFile: dir + "/results.json", atomically: true, encoding: .utf8)
        var r = try run(["measure", "report", dir + "/results.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("| (b) Style Swap: ControlNet on U^P | 10 | 0.700 | 80.0% | 0.600 | 0.390 | 0.380 |"), r.stdout)
        XCTAssertTrue(r.stdout.contains("| pole | 0.300 | 0.100 | 0.150 | +0.050 |"), r.stdout)
        XCTAssertTrue(r.stdout.contains("| traffic light | – | – | – | – |"), r.stdout)
        // From the per-image matrices: pole IoU 9/30 = 0.3 without, 21/30 = 0.7 with, on every resample above 0.
        XCTAssertTrue(r.stdout.contains("+0.400, 95% bootstrap interval [+0."), r.stdout)
        XCTAssertTrue(r.stdout.contains("over the 3 images"), r.stdout)
        XCTAssertTrue(r.stdout.contains("held-out photo renders: 0.600; on Style-Swapped images (b) 0.300, 50% of it; on the same photo renders "
                                        + "through the pipeline's VAE (encode, decode: the ceiling of generated images) 0.480, 80% of it."), r.stdout)
        XCTAssertTrue(r.stdout.contains("| game source only | 2 | 0.250 ± 0.071 |  |  |"), r.stdout)
        // The interval comes from the per-image matrices (road and pole), pairing each generated run
        // with the source run of its segmenter seed; every pairing gains on pole, so all of it is above 0.
        XCTAssertTrue(r.stdout.contains("| source + (c) Style Swap + MRLF | 4 | 0.375 ± 0.096 | +0."), r.stdout)
        XCTAssertFalse(r.stdout.contains("| source + (c) Style Swap + MRLF | 4 | 0.375 ± 0.096 | +0.000 [-"), r.stdout)
        XCTAssertTrue(r.stdout.contains("held-out accuracy 0.950"), r.stdout)
        // A run continued across two invocations says so.
        XCTAssertTrue(r.stdout.contains("Provenance: `tools/run-experiment.sh` at commit abc on Intel Xeon, 2 cores, finished "
                                        + "2026-12-05T10:00:00Z after 7200 s; outputs made 30, reused 13."), r.stdout)
        XCTAssertTrue(r.stdout.contains("Invocations on this output folder: 2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("1. started 2026-12-04T17:19:48Z at commit abc on AMD EPYC, 2 cores: did not finish"), r.stdout)
        XCTAssertTrue(r.stdout.contains("2. started 2026-12-05T08:00:00Z at commit abc on Intel Xeon, 2 cores: finished 2026-12-05T10:00:00Z "
                                        + "after 7200 s, outputs made 30, reused 13"), r.stdout)

        try "{\"style\": {\"sets\": []}}".write(toFile: dir + "/partial.json", atomically: true, encoding: .utf8)
        r = try run(["measure", "report", dir + "/partial.json", "--out", dir + "/partial.md"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOfFile: dir + "/partial.md", encoding: .utf8).components(separatedBy: "Not run.").count - 1, 3)
        try "{".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        r = try run(["measure", "report", dir + "/bad.json"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("bad.json: invalid JSON"), r.stderr)
    }
}
