import DGBase
import Foundation
import XCTest

extension CommandTests {
    /// `gen-file` writes a list `generate --labels` reads, the same for the same seed.
    func testGenFileDrawsARareClassList() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(try run(["synth", "--out", dir + "/gta", "--count", "6", "--size", "128x64", "--seed", "3"]).status, 0)
        let r = try run(["gen-file", "--data", dir + "/gta", "--count", "12", "--rcs", "--seed", "4", "--out", dir + "/gta/gen_file.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("12 entries from 6 label files; classes:"), r.stdout)
        let list = try JSON.parse(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/gta/gen_file.json"))))
        XCTAssertEqual(list.array?.count, 12)
        for e in list.array ?? [] {
            XCTAssertNotNil(e["class"]?.int)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/gta/" + (e["file_name"]?.string ?? "?")))
        }
        XCTAssertEqual(try run(["gen-file", "--data", dir + "/gta", "--count", "12", "--rcs", "--seed", "4", "--out", dir + "/again.json"]).status, 0)
        let again = try JSON.parse(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/again.json"))))
        XCTAssertEqual(again.array?.map { $0["class"] }, list.array?.map { $0["class"] })

        let bad = try run(["gen-file", "--data", dir + "/nothing", "--count", "3", "--out", dir + "/x.json"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.json"))
    }
}
