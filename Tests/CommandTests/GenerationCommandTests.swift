import Foundation
import XCTest

/// `swap`, `sample` and `generate` as a user runs them (the library behind them is tested in
/// DGDiffusionTests).
final class GenerationCommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"

    /// swap writes a ControlNet pipeline that inspect reads and sample and generate use without
    /// --controlnet; a ControlNet that does not fit is refused with one line and nothing written.
    func testSwapThenSampleAndGenerate() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["swap", "--base", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet", "--out", dir + "/swapped", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["inspect", dir + "/swapped"])
        XCTAssertTrue(r.stdout.contains("controlnet: ControlNetModel"), r.stdout)
        r = try run(["sample", "--pipeline", dir + "/swapped", "--prompt", "road", "--width", "128", "--steps", "2", "--out", dir + "/one.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/one.png"))

        // Synthetic street scenes (GTA5 layout, label ids) drive generate.
        r = try run(["synth", "--out", dir + "/synth", "--count", "2", "--size", "192x144", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let args = ["generate", "--pipeline", dir + "/swapped", "--labels", dir + "/synth", "--out", dir + "/data",
                    "--count", "3", "--steps", "2", "--resolution", "128", "--no-mrlf", "--quiet"]
        r = try run(args)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("3 generated, 0 already done"), r.stdout)
        let log = try String(contentsOfFile: dir + "/data/generation.jsonl", encoding: .utf8)
        XCTAssertEqual(log.split(separator: "\n").count, 3)
        XCTAssertTrue(log.contains("road"), "captions name the classes of the synthetic scenes")
        r = try run(args)
        XCTAssertTrue(r.stdout.contains("0 generated, 3 already done"), r.stdout)
        // The sampled RGB image, read as a palette mask, is all ignore label: still a valid run.
        r = try run(["generate", "--pipeline", dir + "/swapped", "--labels", dir + "/one.png", "--out", dir + "/ignored",
                     "--count", "1", "--steps", "2", "--resolution", "128", "--no-mrlf", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)

        r = try run(["swap", "--base", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet-ldm.safetensors", "--out", dir + "/bad"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("does not fit the UNet") && r.stderr.split(separator: "\n").count == 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
        r = try run(["generate", "--pipeline", Self.tiny + "/tiny-sd", "--labels", dir + "/nothing", "--out", dir + "/none"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("nothing: no such file or folder"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/none"))
    }

    /// A generation killed with SIGKILL part way and run again ends with exactly the files of an
    /// uninterrupted run: finished items are neither redone nor damaged.
    func testKilledGenerationResumes() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/synth", "--count", "3", "--size", "192x144", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        func args(_ out: String) -> [String] {
            ["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet",
             "--labels", dir + "/synth", "--out", out, "--count", "8", "--steps", "3", "--resolution", "128", "--no-mrlf", "--quiet"]
        }
        r = try run(args(dir + "/straight"))
        XCTAssertEqual(r.status, 0, r.stderr)

        // Start the same job, kill it as soon as some (not all) items are finished.
        let p = try process(args(dir + "/killed"))
        try p.run()
        let records = dir + "/killed/records"
        let deadline = Date().addingTimeInterval(120)
        var finished = 0
        while p.isRunning, Date() < deadline {
            finished = (try? FileManager.default.contentsOfDirectory(atPath: records))?.filter { $0.hasSuffix(".json") }.count ?? 0
            if finished >= 2 { break }
            usleep(2_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal, "the job ended before it could be killed")
        r = try run(args(dir + "/killed"))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains(" 0 already done"), "the rerun redid everything: \(r.stdout)")

        for sub in ["images", "labels", "vis"] {
            let a = try FileManager.default.contentsOfDirectory(atPath: dir + "/straight/" + sub).sorted()
            let b = try FileManager.default.contentsOfDirectory(atPath: dir + "/killed/" + sub).sorted()
            XCTAssertEqual(a, b, sub)
            for name in a {
                let x = FileManager.default.contents(atPath: dir + "/straight/\(sub)/\(name)")
                let y = FileManager.default.contents(atPath: dir + "/killed/\(sub)/\(name)")
                XCTAssertTrue(x == y, "\(sub)/\(name) differs after kill and resume")
            }
        }
        let lines = { (path: String) in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").sorted() }
        XCTAssertEqual(try lines(dir + "/straight/generation.jsonl"), try lines(dir + "/killed/generation.jsonl"))
    }
}
