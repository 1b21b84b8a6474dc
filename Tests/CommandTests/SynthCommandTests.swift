import Foundation
import XCTest

extension CommandTests {
    /// `synth` writes the GTA5 layout, is reproducible from the command line, and refuses bad
    /// input with one line and exit status 1, leaving nothing behind.
    func testSynthWritesAReproducibleDataset() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try run(["synth", "--out", dir + "/a", "--count", "4", "--size", "64x32", "--style", "photo", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("4 photo images 64x32, seed 5"), r.stdout)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/a/labels").sorted()
        XCTAssertEqual(names, ["00001.png", "00002.png", "00003.png", "00004.png"])
        XCTAssertEqual(try run(["synth", "--out", dir + "/b", "--count", "4", "--size", "64x32", "--style", "photo", "--seed", "5"]).status, 0)
        for sub in ["images", "labels"] {
            for name in names {
                XCTAssertEqual(FileManager.default.contents(atPath: "\(dir)/a/\(sub)/\(name)"), FileManager.default.contents(atPath: "\(dir)/b/\(sub)/\(name)"))
            }
        }
        for args in [["--size", "64"], ["--size", "4x4"], ["--count", "0"], ["--style", "cartoon"]] {
            var full = ["synth", "--out", dir + "/bad", "--count", "2"]
            full += args
            let bad = try run(full)
            XCTAssertNotEqual(bad.status, 0, "\(args)")
            XCTAssertEqual(bad.stderr.split(separator: "\n").filter { $0.contains("rror") }.count, 1, bad.stderr)
        }
        let again = try run(["synth", "--out", dir + "/a", "--count", "1"])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("--overwrite"), again.stderr)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir)), ["a", "b"])
    }
}
