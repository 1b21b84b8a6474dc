import Foundation
import XCTest

/// PyTorch checkpoints through the command line: read when safe, refused with one line, exit
/// status 1 and nothing written (nor run) when not.
final class PickleCommandTests: XCTestCase, CommandRunning {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static let pickles = fixtures + "/pickle"

    func testMaliciousAndBrokenCheckpointsAreRefusedWithoutSideEffects() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let markers = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.pickles + "/markers.json"))) as! [String: String]
        for m in markers.values { try? FileManager.default.removeItem(atPath: m) }
        let cases: [(String, String)] = [
            ("evil-os-system.pt", "refused global posix.system"),
            ("evil-eval.pt", "refused global __builtin__.eval"),
            ("evil-popen.pt", "refused global subprocess.Popen"),
            ("unknown-class.pt", "refused global __main__.Model"),
            ("placeholder-with-tensor.ckpt", "is not on the weights allow-list"),
            ("missing-storage.pt", "missing from the archive"),
            ("view-past-end.pt", "reaches element 4"),
            ("truncated-pickle.pt", "truncated"),
            ("truncated.ckpt", "corrupt zip archive"),
            ("legacy.pt", "legacy serialization format"),
        ]
        for (name, message) in cases {
            let path = Self.pickles + "/" + name
            for args in [["inspect", path], ["convert", path, dir + "/out", "--format", "diffusers"],
                         ["convert", path, dir + "/out.dginstyle", "--format", "native"]] {
                let r = try run(args)
                XCTAssertEqual(r.status, 1, "\(args): \(r.stdout) \(r.stderr)")
                let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
                XCTAssertEqual(lines.count, 1, r.stderr)
                XCTAssertTrue(r.stderr.contains(path) && r.stderr.contains(message), "\(name): \(r.stderr)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
        for m in markers.values { XCTAssertFalse(FileManager.default.fileExists(atPath: m), "\(m) was created: a pickle ran") }
    }

    func testCheckpointConvertsAndInspects() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tiny = Self.fixtures + "/sd-tiny"
        var r = try run(["inspect", Self.pickles + "/tiny-sd-ldm.ckpt", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("original LDM single file"), r.stdout)
        XCTAssertTrue(r.stderr.contains("warning:") && r.stderr.contains("argparse.Namespace"), r.stderr)
        r = try run(["convert", Self.pickles + "/tiny-sd-ldm.ckpt", dir + "/pipe", "--format", "diffusers", "--config", tiny + "/tiny-sd"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["convert", Self.pickles + "/tiny-controlnet.pth", dir + "/cn.dginstyle", "--format", "native", "--config", tiny + "/tiny-controlnet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["inspect", Self.pickles + "/tiny-vae-bin"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("AutoencoderKL"), r.stdout)
    }

    /// `parity` on a copy of the fixtures whose single files are a .ckpt and a .pth.
    func testParityAcceptsPickledSingleFiles() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tiny = Self.fixtures + "/sd-tiny"
        for name in try FileManager.default.contentsOfDirectory(atPath: tiny) where !name.hasSuffix("-ldm.safetensors") {
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + name, withDestinationPath: tiny + "/" + name)
        }
        try FileManager.default.createSymbolicLink(atPath: dir + "/tiny-sd-ldm.ckpt", withDestinationPath: Self.pickles + "/tiny-sd-ldm.ckpt")
        try FileManager.default.createSymbolicLink(atPath: dir + "/tiny-controlnet.pth", withDestinationPath: Self.pickles + "/tiny-controlnet.pth")
        let r = try run(["parity", dir])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        for check in ["[ldm] unet unet.out", "[ldm] controlnet controlnet.mid", "[ldm] vae vae.decoded",
                      "[ldm] controlnet_step_grads all 338 gradients", "[ldm] pipeline pipe.image"] {
            XCTAssertTrue(r.stdout.contains(check), "missing \(check)")
        }
        XCTAssertFalse(r.stdout.contains("FAIL"))
    }
}
