import Foundation
import XCTest

/// `swap`, `sample` and `generate` as a user runs them (the library behind them is tested in
/// DGDiffusionTests).
final class GenerationCommandTests: XCTestCase {
    static let tiny = CommandTests.fixtures + "/sd-tiny"

    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = Bundle.main.bundleURL.appendingPathComponent("dginstyle")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw XCTSkip("dginstyle binary not found beside the test bundle at \(binary.path)")
        }
        let p = Process()
        p.executableURL = binary
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["DGINSTYLE_NO_PROGRESS"] = "1"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func scratch() -> String {
        let dir = NSTemporaryDirectory() + "dginstyle-gencmd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

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
}
