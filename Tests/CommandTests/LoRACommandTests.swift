import Foundation
import XCTest

/// The LoRA commands end to end: train one, inspect it, convert it, merge it (UNet and
/// pipeline), extract it back from the merged UNet, and sample with it as a dial.
final class LoRACommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny/tiny-sd"
    static let lora = CommandTests.fixtures + "/lora"

    func testTrainInspectConvertMergeExtract() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/data", "--count", "2", "--size", "256x128"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["finetune-unet", "--pipeline", Self.tiny, "--images", dir + "/data", "--out", dir + "/run", "--lora", "2",
                     "--lora-targets", "attn+ff", "--resolution", "64", "--steps", "2", "--lr", "1e-2", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let trained = dir + "/run/pytorch_lora_weights.safetensors"
        XCTAssertTrue(r.stdout.contains("model: " + trained), r.stdout)

        r = try run(["inspect", trained, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let lora = try XCTUnwrap(json["lora"] as? [String: Any], r.stdout)
        XCTAssertEqual(lora["format"] as? String, "diffusers")
        XCTAssertEqual(lora["targets"] as? [String], ["ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "to_k", "to_out.0", "to_q", "to_v"])
        XCTAssertEqual(lora["layer_count"] as? Int, 16 * 12)

        r = try run(["lora", "convert", trained, dir + "/k.safetensors", "--format", "kohya"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["inspect", dir + "/k.safetensors"])
        XCTAssertTrue(r.stdout.contains("layout: LoRA, kohya-ss format; 192 adapted layers (unet 192)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("rank: 2 (every layer)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("alpha: 2.0 (every layer)"), r.stdout)

        // Merged at scale 1 into the UNet, the LoRA comes back whole from an extraction at its rank.
        r = try run(["lora", "merge", "--base", Self.tiny + "/unet", "--lora", dir + "/k.safetensors", "--out", dir + "/us", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["lora", "extract", "--base", Self.tiny, "--tuned", dir + "/us", "--rank", "2", "--out", dir + "/x.safetensors", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((report["layers"] as? [Any])?.count, 192)
        XCTAssertEqual(try XCTUnwrap(report["kept_energy"] as? Double), 1, accuracy: 1e-5)

        // A pipeline base: the whole pipeline with its UNet merged; scale 0 changes nothing.
        r = try run(["lora", "merge", "--base", Self.tiny, "--lora", trained, "--scale", "0", "--out", dir + "/p0", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["diff", Self.tiny, dir + "/p0", "--fail-on-difference"])
        XCTAssertEqual(r.status, 0, r.stdout)
        // A base without the adapted model: one line, nothing written.
        r = try run(["lora", "merge", "--base", Self.tiny + "/vae", "--lora", trained, "--out", dir + "/bad"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("adapts a unet, which"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
    }

    /// --lora-scale 0 is the UNet as it is (Style Swap), bit for bit; 1 is not.
    func testSampleWithTheLoRAAsADial() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func sample(_ extra: [String], _ name: String) throws -> Data {
            let r = try run(["sample", "--pipeline", Self.tiny, "--prompt", "road", "--width", "64", "--steps", "2", "--out", dir + "/\(name).png"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try Data(contentsOf: URL(fileURLWithPath: dir + "/\(name).png"))
        }
        let plain = try sample([], "plain")
        XCTAssertEqual(try sample(["--unet-lora", Self.lora + "/attn.kohya.safetensors", "--lora-scale", "0"], "s0"), plain)
        XCTAssertNotEqual(try sample(["--unet-lora", Self.lora + "/attn.kohya.safetensors", "--lora-scale", "1"], "s1"), plain)
    }
}
