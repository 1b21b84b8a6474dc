import Foundation
import XCTest

/// The commands on a GTA5 tree with the release's defects (frames without labels, a label
/// without its frame, a file cut short, an image of another size than its label map): training,
/// rare-class statistics, gen-file and generation run over the usable pairs, say once what they
/// skipped and list it in skipped_samples.txt (DGDataTests/GTA5DefectsTests checks the reader).
final class GTA5DefectsCommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"

    func defectiveTree(_ dir: String) throws -> String {
        let root = dir + "/gta5", fm = FileManager.default
        XCTAssertEqual(try run(["synth", "--out", root, "--count", "12", "--size", "128x64", "--seed", "4"]).status, 0)
        XCTAssertEqual(try run(["synth", "--out", dir + "/other", "--count", "1", "--size", "130x66", "--seed", "9"]).status, 0)
        for id in ["00002", "00003"] { try fm.removeItem(atPath: root + "/labels/\(id).png") }
        try fm.removeItem(atPath: root + "/images/00005.png")
        let cut = root + "/labels/00007.png"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: cut))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        try fm.removeItem(atPath: root + "/images/00009.png")
        try fm.copyItem(atPath: dir + "/other/images/00001.png", toPath: root + "/images/00009.png")
        return root
    }

    func skippedList(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    func testTrainingStatisticsGenFileAndGenerationSkipWhatTheReleaseLacks() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = try defectiveTree(dir)
        let summary = "8 pairs used, 4 files skipped (1 no image, 2 no label file, 1 truncated (no PNG end chunk)"

        var r = try run(["train-controlnet", "--pipeline", Self.tiny + "/tiny-sd", "--data", root, "--out", dir + "/run",
                         "--resolution", "64", "--steps", "2", "--rcs", "--seed", "3", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains(summary), r.stderr)
        let skipped = try skippedList(dir + "/run/skipped_samples.txt")
        XCTAssertEqual(skipped.count, 4, "\(skipped)")
        XCTAssertTrue(skipped.contains { $0.hasSuffix("labels/00007.png\ttruncated (no PNG end chunk)") }, "\(skipped)")
        // The rare-class statistics were computed over the 8 pairs and written in DAFormer's format.
        let stats = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/sample_class_stats.json")))
        XCTAssertEqual((stats as? [Any])?.count, 8)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/samples_with_class.json"))

        r = try run(["gen-file", "--data", root, "--count", "6", "--rcs", "--seed", "1", "--out", dir + "/gen_file.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let list = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/gen_file.json"))) as? [[String: Any]]
        XCTAssertEqual(list?.count, 6)
        for e in list ?? [] {
            let name = try XCTUnwrap(e["file_name"] as? String)
            for missing in ["00002", "00003", "00005", "00007"] { XCTAssertFalse(name.contains(missing), name) }
        }

        r = try run(["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet",
                     "--labels", root, "--out", dir + "/gen", "--count", "3", "--steps", "2", "--resolution", "128",
                     "--no-mrlf", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains(summary), r.stderr)
        XCTAssertEqual(try skippedList(dir + "/gen/skipped_samples.txt").count, 4)
        r = try run(["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet",
                     "--labels", dir + "/gen_file.json", "--out", dir + "/gen-rcs", "--count", "6", "--steps", "2",
                     "--resolution", "128", "--no-mrlf", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("6 generated"), r.stdout)
    }
}
