import Foundation
import XCTest

/// Checkpoints as people have them: a single file converted to a pipeline samples offline,
/// files of no known model are described, and two checkpoints are compared.
final class InspectDiffCommandTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"
    static let other = CommandTests.fixtures + "/other"
    static let weights = URL(fileURLWithPath: CommandTests.fixtures).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("weights").path

    /// The tiny models' configs without any tokenizer: the single file's pipeline must get the
    /// shipped one.
    private func configsOnly(_ dir: String) throws -> String {
        for c in ["unet", "vae", "text_encoder"] {
            try FileManager.default.createDirectory(atPath: dir + "/configs/" + c, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Self.tiny + "/tiny-sd/\(c)/config.json", toPath: dir + "/configs/\(c)/config.json")
        }
        return dir + "/configs"
    }

    func testSingleFileConvertsToAPipelineThatSamples() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let configs = try configsOnly(dir)
        for format in ["native", "diffusers"] {
            let out = dir + "/pipe-" + format
            var r = try run(["convert", Self.tiny + "/tiny-sd-ldm.safetensors", out, "--format", format, "--config", configs, "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(r.stderr.contains("no tokenizer"), r.stderr)
            r = try run(["sample", "--pipeline", out, "--prompt", "a city street", "--width", "64", "--steps", "2", "--out", dir + "/\(format).png"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/\(format).png"))
        }
        for f in ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"] {
            XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir + "/pipe-diffusers/tokenizer/" + f, andPath: Self.tiny + "/tiny-sd/tokenizer/" + f)
                          || f.hasSuffix("config.json"), f)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/pipe-diffusers/scheduler/scheduler_config.json"))
        // The native pipeline holds the same weights as the single file.
        let r = try run(["diff", Self.tiny + "/tiny-sd-ldm.safetensors", dir + "/pipe-native", "--fail-on-difference"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    func testInspectDescribesFilesOfNoKnownModel() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["inspect", Self.other + "/lora-kohya.safetensors", "--tensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("layout: LoRA, kohya-ss format; 4 adapted layers (text_encoder 1, unet 3)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("targets: proj_in, proj_out, q_proj, to_k"), r.stdout)
        XCTAssertTrue(r.stdout.contains("    unet mid_block.attentions.0.proj_out  rank 4  alpha 2.0  weight [64, 64, 1, 1]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("    text_encoder text_model.encoder.layers.0.self_attn.q_proj  rank 4"), r.stdout)
        XCTAssertTrue(r.stdout.contains("12 tensors, "), r.stdout)
        XCTAssertTrue(r.stdout.contains("ss_network_dim: 4"), r.stdout)
        XCTAssertTrue(r.stdout.contains("lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"), r.stdout)
        XCTAssertTrue(r.stdout.contains("F16     [64, 4, 1, 1] 512 bytes"), r.stdout)
        let alpha = r.stdout.split(separator: "\n").first { $0.contains("lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha ") }
        XCTAssertTrue(alpha?.hasSuffix("F16     [] 2 bytes") ?? false, r.stdout)

        r = try run(["inspect", Self.other + "/embedding.safetensors", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["layout"] as? String, "unknown")
        XCTAssertNotNil(json["unknown_layout_reason"] as? String)
        let component = (json["components"] as! [String: [String: Any]])["tensors"]!
        XCTAssertEqual(component["tensor_count"] as? Int, 1)
        XCTAssertEqual(component["parameters"] as? Int, 1536)
        XCTAssertEqual(component["bytes"] as? Int, 6144)
        XCTAssertEqual((component["metadata"] as? [String: String])?["name"], "game-style")
        let emb = (component["tensors"] as! [String: [String: Any]])["emb_params"]!
        XCTAssertEqual(emb["dtype"] as? String, "F32")
        XCTAssertEqual(emb["shape"] as? [Int], [2, 768])
        XCTAssertEqual(emb["bytes"] as? Int, 6144)

        // convert still refuses it, with one line naming the file, and writes nothing.
        r = try run(["convert", Self.other + "/lora-kohya.safetensors", dir + "/out", "--format", "native"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("lora-kohya.safetensors: holds no UNet, VAE, CLIP text encoder or ControlNet"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"))
        // A known layout keeps its description (and gains the byte counts in JSON).
        r = try run(["inspect", Self.tiny + "/tiny-sd/unet", "--json"])
        let unet = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(unet["layout"] as? String, "diffusers model folder")
    }

    func testDiffLDMFileAgainstItsDiffusersFolderIsIdentical() throws {
        let r = try run(["diff", Self.tiny + "/tiny-sd-ldm.safetensors", Self.tiny + "/tiny-sd", "--fail-on-difference"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("identical: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("(original LDM single file)"), r.stdout)
        XCTAssertFalse(r.stdout.contains("changed blocks, largest"), r.stdout)
        XCTAssertTrue(r.stdout.contains("unchanged blocks: 94 of 94"), r.stdout)
    }

    /// U^P (the base pipeline) against U^S (DreamBooth on game-style scenes): only the UNet moved.
    func testDiffBaseAgainstDreamBoothUNet() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = Self.weights + "/tiny-sd.dginstyle", unet = Self.weights + "/tiny-unet-source.dginstyle"
        guard FileManager.default.fileExists(atPath: a), FileManager.default.fileExists(atPath: unet) else { throw XCTSkip("weights/ not present") }
        // The shipped U^S is a UNet alone: against the pipeline, the other models are on one side only.
        var r = try run(["diff", a, unet, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("only in A: vae (all 244 tensors; the other checkpoint has no vae)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("different: 684 of 684 common tensors changed, 280 only in A"), r.stdout)
        // The U^S pipeline, as DreamBooth leaves it: same VAE and text encoder.
        let b = dir + "/us.dginstyle"
        r = try run(["assemble", "--base", a, "--unet", unet, "--out", b])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["diff", a, b])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("different: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("changed blocks, largest relative change first:"), r.stdout)
        r = try run(["diff", a, b, "--fail-on-difference", "--quiet"])
        XCTAssertEqual(r.status, 3, r.stderr)

        r = try run(["diff", a, b, "--json", "--by", "block"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["identical"] as? Bool, false)
        let blocks = json["blocks"] as! [[String: Any]]
        let changed = blocks.filter { ($0["differing_values"] as! Int) > 0 }
        XCTAssertFalse(changed.isEmpty)
        XCTAssertTrue(changed.allSatisfy { ($0["name"] as! String).hasPrefix("unet/") }, "\(changed.map { $0["name"]! })")
        let unchangedOthers = blocks.filter { !($0["name"] as! String).hasPrefix("unet/") }
        XCTAssertTrue(unchangedOthers.allSatisfy { ($0["relative"] as? Double) == 0 && ($0["max_abs"] as? Double) == 0 })
        // Sorted by relative change, largest first.
        let relatives = changed.map { $0["relative"] as! Double }
        XCTAssertEqual(relatives, relatives.sorted(by: >))
        XCTAssertGreaterThan(relatives[0], 0)
        XCTAssertEqual(json["only_in_a"] as? [String], [])
        XCTAssertEqual(json["only_in_b"] as? [String], [])

        r = try run(["diff", a, b, "--json", "--by", "tensor", "--component", "vae"])
        let vae = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(vae["identical"] as? Bool, true)
        XCTAssertEqual((vae["tensors"] as! [[String: Any]]).count, vae["compared_tensors"] as? Int)
    }

    func testDiffOfFilesOfNoKnownModelAndErrors() throws {
        var r = try run(["diff", Self.other + "/lora-kohya.safetensors", Self.other + "/lora-kohya-trained.safetensors", "--by", "tensor"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        let first = try XCTUnwrap(lines.firstIndex { $0.contains("changed tensors, largest relative change first") })
        XCTAssertTrue(lines[first + 2].hasSuffix("tensors/lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"), r.stdout)
        XCTAssertTrue(r.stdout.contains("unchanged tensors: 11 of 12"), r.stdout)

        r = try run(["diff", Self.tiny + "/tiny-sd", CommandTests.fixtures + "/nowhere.safetensors"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("nowhere.safetensors: no such file or directory"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        // Different models: reported as tensors on one side only, not an error.
        r = try run(["diff", Self.tiny + "/tiny-sd", Self.tiny + "/tiny-controlnet", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("only in A: unet (all "), r.stdout)
        XCTAssertTrue(r.stdout.contains("only in B: controlnet (all "), r.stdout)
    }
}
