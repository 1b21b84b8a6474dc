import DGBase
import DGCheckpoint
import Foundation
import XCTest

extension CommandTests {
    /// `segment train` mixes folders and writes segmenter.dginstyle; `segment eval --json` prints
    /// one object with miou, pixel_accuracy and iou by class name; bad input is refused with one
    /// line, a non-zero status and no report or predictions.
    func testSegmentTrainAndEval() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, seed) in [("a", "1"), ("b", "2"), ("val", "3")] {
            XCTAssertEqual(try run(["synth", "--out", dir + "/" + name, "--count", "2", "--size", "64x32", "--seed", seed]).status, 0)
        }
        let train = try run(["segment", "train", "--data", dir + "/a", "--data", dir + "/b", "--out", dir + "/m", "--steps", "3",
                             "--crop", "32", "--batch-size", "2", "--channels", "8,16,16", "--seed", "4"])
        XCTAssertEqual(train.status, 0, train.stderr)
        let model = dir + "/m/segmenter.dginstyle"
        XCTAssertTrue(FileManager.default.fileExists(atPath: model), train.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/m/metrics.jsonl"))

        let eval = try run(["segment", "eval", "--model", model, "--data", dir + "/val", "--json", "--out", dir + "/report.json",
                            "--pred-dir", dir + "/pred"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        XCTAssertEqual(eval.stdout.split(separator: "\n").count, 1, eval.stdout)
        let json = try JSON.parse(eval.stdout)
        let miou = try XCTUnwrap(json["miou"]?.double)
        XCTAssertTrue((0...1).contains(miou))
        XCTAssertTrue((0...1).contains(try XCTUnwrap(json["pixel_accuracy"]?.double)))
        let iou = try XCTUnwrap(json["iou"]?.objectPairs)
        XCTAssertEqual(iou.count, 19)
        XCTAssertEqual(iou.first?.0, "road")
        XCTAssertEqual(try JSON.parse(bytes: Array(FileManager.default.contents(atPath: dir + "/report.json")!)), json)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/pred").sorted(), ["00001.png", "00002.png"])

        // A label file missing, then a label map of another size: one line, status 1, nothing written.
        try FileManager.default.removeItem(atPath: dir + "/b/labels/00002.png")
        let small = try run(["synth", "--out", dir + "/small", "--count", "1", "--size", "32x32"])
        XCTAssertEqual(small.status, 0)
        try FileManager.default.removeItem(atPath: dir + "/val/labels/00002.png")
        try FileManager.default.copyItem(atPath: dir + "/small/labels/00001.png", toPath: dir + "/val/labels/00002.png")
        for (data, expected) in [(dir + "/b", "missing label file"), (dir + "/val", "is 32x32 but its image")] {
            let bad = try run(["segment", "eval", "--model", model, "--data", data, "--json", "--out", dir + "/bad.json", "--pred-dir", dir + "/badpred"])
            XCTAssertEqual(bad.status, 1, bad.stdout)
            XCTAssertEqual(bad.stdout, "")
            let lines = bad.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, bad.stderr)
            XCTAssertTrue(bad.stderr.contains(expected), bad.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.json"))
            XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: dir + "/badpred"))?.count ?? 0, 0)
        }
        let noModel = try run(["segment", "eval", "--model", dir + "/nothing.dginstyle", "--data", dir + "/a", "--json"])
        XCTAssertEqual(noModel.status, 1)
        XCTAssertEqual(noModel.stderr.split(separator: "\n").count, 1, noModel.stderr)
        // Train refuses what it cannot use before writing anything.
        let badCrop = try run(["segment", "train", "--data", dir + "/a", "--out", dir + "/m2", "--crop", "30"])
        XCTAssertNotEqual(badCrop.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m2"))
    }
}
