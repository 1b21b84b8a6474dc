import Foundation
import XCTest

/// `status` on a sharded run with a finished shard, a failed shard, an unstarted shard and a
/// partial item, then after the missing shard is run.
final class StatusCommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"

    func testStatusCountsDoneFailedMissingPerShard() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/synth", "--count", "2", "--size", "192x144", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let labels = try FileManager.default.contentsOfDirectory(atPath: dir + "/synth/labels").filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(labels.count, 2)
        // Source 2 is a label map cut short after its header: it passes the header check that runs
        // before any model is loaded and fails only when its item is rendered.
        let good = try Data(contentsOf: URL(fileURLWithPath: dir + "/synth/labels/" + labels[0]))
        try good.prefix(120).write(to: URL(fileURLWithPath: dir + "/cut.png"))
        let list = "[" + [dir + "/synth/labels/" + labels[0], dir + "/synth/labels/" + labels[1], dir + "/cut.png"]
            .map { "{\"class\": null, \"file_name\": \"\($0)\"}" }.joined(separator: ",") + "]"
        try list.write(toFile: dir + "/gen.json", atomically: true, encoding: .utf8)
        func generate(_ shard: String) throws -> CommandResult {
            try run(["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet",
                     "--labels", dir + "/gen.json", "--out", dir + "/data", "--count", "6", "--steps", "2", "--resolution", "128",
                     "--no-mrlf", "--quiet", "--shard", shard])
        }
        // Shard 0 (items 0, 3) finishes; shard 2 (items 2, 5: the cut file) fails at item 2;
        // shard 1 (items 1, 4) never runs, but item 4 has a stray image as a killed shard leaves.
        r = try generate("0/3")
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try generate("2/3")
        XCTAssertEqual(r.status, 1)
        let markers = try FileManager.default.contentsOfDirectory(atPath: dir + "/data/failed")
        XCTAssertEqual(markers.count, 1)
        XCTAssertTrue(markers[0].hasPrefix("000002_"), "\(markers)")
        FileManager.default.createFile(atPath: dir + "/data/images/000004_x.png", contents: Data([1]))
        // A marker from an earlier failure of item 1 (named as the item): removed when it is finished.
        var stem = (labels[1] as NSString).deletingPathExtension
        for suffix in ["_labelTrainIds", "_labelIds", "_color"] where stem.hasSuffix(suffix) { stem = String(stem.dropLast(suffix.count)) }
        let oldMarker = dir + "/data/failed/000001_\(stem).json"
        FileManager.default.createFile(atPath: oldMarker, contents: Data("{\"error\": \"old\"}".utf8))

        r = try run(["status", dir + "/data"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("2/6 done, 3 failed, 1 missing (3 shards)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("shard 0/3: 2/2 done, 0 failed, 0 missing\n"), r.stdout)
        XCTAssertTrue(r.stdout.contains("shard 1/3: 0/2 done, 2 failed, 0 missing"), r.stdout)
        XCTAssertTrue(r.stdout.contains("shard 2/3: 0/2 done, 1 failed, 1 missing"), r.stdout)
        XCTAssertTrue(r.stdout.contains("failed item 4 (shard 1): partial output without a record: images/000004_x.png"), r.stdout)
        r = try run(["status", dir + "/data", "--incomplete"])
        XCTAssertEqual(r.stdout, "1,2\n")
        r = try run(["status", dir + "/data", "--json"])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["done"] as? Int, 2)
        XCTAssertEqual(json["failed"] as? Int, 3)
        XCTAssertEqual(json["missing"] as? Int, 1)
        XCTAssertEqual(json["incomplete_shards"] as? [Int], [1, 2])
        XCTAssertEqual((json["per_shard"] as? [[String: Any]])?.count, 3)

        // Shard 1 run: its items are done and the old marker is gone.
        r = try generate("1/3")
        XCTAssertEqual(r.status, 0, r.stderr)
        try FileManager.default.removeItem(atPath: dir + "/data/images/000004_x.png")
        XCTAssertFalse(FileManager.default.fileExists(atPath: oldMarker))
        r = try run(["status", dir + "/data", "--incomplete"])
        XCTAssertEqual(r.stdout, "2\n")
        // Another split of the same items, given on the command line.
        r = try run(["status", dir + "/data", "--shards", "2", "--json"])
        let two = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(two["done"] as? Int, 4)
        XCTAssertEqual(two["incomplete_shards"] as? [Int], [0, 1])

        r = try run(["status", dir + "/nothing"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("no run.json") && r.stderr.split(separator: "\n").count == 1, r.stderr)
        r = try run(["status", dir + "/data", "--shards", "0"])
        XCTAssertEqual(r.status, 1)
    }
}
