import Foundation
import XCTest

/// Runs the built `dginstyle` binary as a user would and checks its output and exit status.
final class CommandTests: XCTestCase, CommandRunning {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    /// `inspect --config --json` lists exactly the manifest's names and shapes for all four SD 1.5 models.
    func testInspectConfigListsTheManifest() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/sd15-manifest.json"))) as! [String: Any]
        let configs = manifest["configs"] as! [String: [String: Any]]
        let classes = ["unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "controlnet": "ControlNetModel"]
        for (name, var config) in configs {
            if let cls = classes[name] { config["_class_name"] = cls }
            let path = dir + "/\(name).json"
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
            let r = try run(["inspect", "--config", path, "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let listed = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: [Int]]
            let expected = manifest[name] as! [String: [Int]]
            XCTAssertEqual(Set(listed.keys), Set(expected.keys), name)
            for (k, shape) in expected { XCTAssertEqual(listed[k], shape, "\(name) \(k)") }
        }
    }

    func testInspectDescribesEveryLayout() throws {
        let tiny = Self.fixtures + "/sd-tiny"
        let cases: [(String, String)] = [
            (tiny + "/tiny-sd", "diffusers pipeline folder"),
            (tiny + "/tiny-sd/unet", "diffusers model folder"),
            (tiny + "/tiny-sd/vae/diffusion_pytorch_model.fp16.safetensors", "safetensors file"),
            (tiny + "/tiny-sd-ldm.safetensors", "original LDM single file"),
            (tiny + "/tiny-controlnet-ldm.safetensors", "original ControlNet file"),
        ]
        for (path, layout) in cases {
            let r = try run(["inspect", path])
            XCTAssertEqual(r.status, 0, "\(path): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains(layout), r.stdout)
        }
        let r = try run(["inspect", tiny + "/tiny-sd", "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let components = json["components"] as! [String: [String: Any]]
        XCTAssertEqual(Set(components.keys), ["unet", "vae", "text_encoder"])
        XCTAssertEqual(components["unet"]?["class"] as? String, "UNet2DConditionModel")
    }

    func testConvertRoundTripThroughTheCommandLine() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tiny = Self.fixtures + "/sd-tiny"
        var r = try run(["convert", tiny + "/tiny-sd-ldm.safetensors", dir + "/pipe", "--format", "diffusers", "--config", tiny + "/tiny-sd"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["convert", dir + "/pipe", dir + "/pipe.dginstyle", "--format", "native", "--dtype", "bf16", "--compress"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["inspect", dir + "/pipe.dginstyle"])
        XCTAssertTrue(r.stdout.contains("dginstyle native file"), r.stdout)
        XCTAssertTrue(r.stdout.contains("BF16"), r.stdout)
        // An LDM file whose shapes are not SD 1.5's is refused without --config, before writing.
        r = try run(["convert", tiny + "/tiny-sd-ldm.safetensors", dir + "/bad", "--format", "diffusers"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("--config"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
    }

    /// `parity` on the fixtures, from the diffusers folders and from the LDM single files: every
    /// check of the fixture README passes.
    func testParityPassesOnTheFixtures() throws {
        let r = try run(["parity", Self.fixtures + "/sd-tiny"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        for layout in ["diffusers", "ldm"] {
            for check in ["tokenizer clip.input_ids", "text_encoder clip.last_hidden_state", "unet unet.out",
                          "controlnet controlnet.down.11", "controlnet controlnet.mid", "unet+controlnet unet_with_control.out",
                          "vae vae.moments", "vae vae.decoded", "unet_step_grads loss", "unet_step_grads all 684 gradients",
                          "controlnet_step_grads all 338 gradients", "pipeline pipe.latents_final", "pipeline pipe.image"] {
                XCTAssertTrue(r.stdout.contains("[\(layout)] \(check)"), "missing [\(layout)] \(check)")
            }
        }
        for check in ["sched.alphas_cumprod", "ddpm.noisy", "ddim20.timesteps", "ddim50.timesteps", "ddim20.step.t951"] {
            XCTAssertTrue(r.stdout.contains(check), "missing \(check)")
        }
        XCTAssertFalse(r.stdout.contains("FAIL"))
        XCTAssertTrue(r.stdout.contains(" passed, 0 failed"))
    }

    /// `parity --dtype bf16`: the forwards and the sampling run with bf16 weights against the same
    /// f32 references, at bf16's own stated tolerance; no gradient checks (training keeps f32 masters).
    func testParityInBF16PassesAtItsOwnTolerance() throws {
        let r = try run(["parity", Self.fixtures + "/sd-tiny", "--dtype", "bf16"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        for check in ["text_encoder clip.last_hidden_state", "unet unet.out", "controlnet controlnet.mid",
                      "vae vae.decoded", "pipeline pipe.image"] {
            let line = r.stdout.split(separator: "\n").first { $0.contains("[diffusers] \(check)") }
            XCTAssertNotNil(line, "missing \(check)")
            XCTAssertTrue(line?.contains("(tol 5e-02)  pass") ?? false, String(line ?? ""))
        }
        XCTAssertFalse(r.stdout.contains("step_grads"))
        XCTAssertFalse(r.stdout.contains("FAIL"))
    }

    /// A wrong weight anywhere must make parity fail: the checks can fail.
    func testParityFailsOnAPerturbedModel() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tiny = Self.fixtures + "/sd-tiny"
        for name in ["io.safetensors", "prompts.json", "tiny-controlnet"] {
            try FileManager.default.copyItem(atPath: tiny + "/" + name, toPath: dir + "/" + name)
        }
        try FileManager.default.copyItem(atPath: tiny + "/tiny-sd", toPath: dir + "/tiny-sd")
        // Nudge the first value of one UNet bias in place.
        let unetFile = dir + "/tiny-sd/unet/diffusion_pytorch_model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: unetFile))
        var bytes = [UInt8](data)
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as! [String: Any]
        let entry = header["conv_out.bias"] as! [String: Any]
        let start = 8 + headerLength + (entry["data_offsets"] as! [Int])[0]
        bytes.withUnsafeMutableBytes { p in
            let v = p.loadUnaligned(fromByteOffset: start, as: Float.self)
            p.storeBytes(of: v * 1.01 + 1e-3, toByteOffset: start, as: Float.self)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: unetFile))
        let r = try run(["parity", dir])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stdout.contains("[diffusers] unet unet.out") && r.stdout.contains("FAIL"), r.stdout)
    }

    /// Bad input: one line naming the file and the problem, exit status 1, no output left behind.
    func testBadInputGivesOneLineAndStatusOne() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = dir + "/bad.safetensors"
        var header = Data()
        withUnsafeBytes(of: UInt64(150_000_000).littleEndian) { header.append(contentsOf: $0) }
        header.append(Data("{}".utf8))
        try header.write(to: URL(fileURLWithPath: bad))
        let truncated = dir + "/truncated.safetensors"
        let unet = try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/sd-tiny/tiny-sd/unet/diffusion_pytorch_model.safetensors"))
        try unet.prefix(unet.count - 100).write(to: URL(fileURLWithPath: truncated))
        let pickle = dir + "/model.ckpt"
        try Data("not really".utf8).write(to: URL(fileURLWithPath: pickle))
        for (path, args) in [(bad, ["inspect", bad]), (truncated, ["convert", truncated, dir + "/out.dginstyle", "--format", "native"]),
                             (pickle, ["inspect", pickle]), (dir + "/missing", ["inspect", dir + "/missing"])] {
            let r = try run(args)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(path), r.stderr)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["bad.safetensors", "model.ckpt", "truncated.safetensors"])
    }

    func testBenchSuiteRunsEachWorkloadInItsOwnProcess() throws {
        let r = try run(["bench", "all", "vae-decode:64:1", "--runs", "1", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stdout)
        let object = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        XCTAssertEqual(object?["workload"] as? String, "vae-decode")
        XCTAssertEqual(object?["resolution"] as? Int, 64)
        XCTAssertGreaterThan(object?["peak_rss_mb"] as? Double ?? 0, 0)
        let bad = try run(["bench", "all", "vae-decode:64"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("bad workload 'vae-decode:64'"), bad.stderr)
    }
}
