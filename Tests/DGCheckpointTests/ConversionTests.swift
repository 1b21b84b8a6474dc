import DGTensor
import Foundation
import XCTest
@testable import DGCheckpoint

/// The conversions of the foundation issue, on the fixtures: every path must give back the
/// same tensors, bit for bit, with the same names.
final class ConversionTests: XCTestCase {
    /// component -> name -> (dtype, shape, bytes)
    private func snapshot(_ ck: Checkpoint) throws -> [String: [String: (DType, [Int], [UInt8])]] {
        var out: [String: [String: (DType, [Int], [UInt8])]] = [:]
        for c in ck.components {
            for e in c.source.entries {
                let t = try c.source.tensor(e.name).contiguous()
                out[c.name, default: [:]][e.name] = (t.dtype, t.shape, t.withRawBytes { Array($0) })
            }
        }
        return out
    }

    private func assertSame(_ a: Checkpoint, _ b: Checkpoint, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try snapshot(a), y = try snapshot(b)
        XCTAssertEqual(Set(x.keys), Set(y.keys), "components", file: file, line: line)
        for (component, tensors) in x {
            let other = y[component] ?? [:]
            XCTAssertEqual(Set(tensors.keys), Set(other.keys), "\(component) names", file: file, line: line)
            for (name, (dtype, shape, bytes)) in tensors {
                guard let (d2, s2, b2) = other[name] else { continue }
                XCTAssertEqual(dtype, d2, "\(component) \(name) dtype", file: file, line: line)
                XCTAssertEqual(shape, s2, "\(component) \(name) shape", file: file, line: line)
                XCTAssertTrue(bytes == b2, "\(component) \(name) bytes differ", file: file, line: line)
            }
        }
    }

    private let quiet = WriteOptions(progress: false)

    func testDiffusersToNativeToDiffusersIsBitIdenticalForEveryPrecision() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for variant in [nil, "fp16", "bf16"] as [String?] {
            let original = try Checkpoint.open(Fixtures.tinySD, options: .init(variant: variant))
            let native = dir + "/tiny-\(variant ?? "f32").dginstyle"
            try original.write(to: native, format: .native, options: quiet)
            let fromNative = try Checkpoint.open(native)
            XCTAssertEqual(fromNative.layout, .native)
            try assertSame(original, fromNative)
            let back = dir + "/tiny-\(variant ?? "f32")"
            try fromNative.write(to: back, format: .diffusers, options: quiet)
            let reread = try Checkpoint.open(back)
            XCTAssertEqual(reread.layout, .diffusersPipeline)
            try assertSame(original, reread)
            // Loose files (configs, tokenizer, scheduler, model_index.json) come back byte for byte.
            for f in original.files {
                XCTAssertEqual(FileManager.default.contents(atPath: back + "/" + f.path).map(Array.init), f.bytes, f.path)
            }
            if let v = variant {
                let vae = try XCTUnwrap(reread.component("vae"))
                XCTAssertEqual(vae.source.entries.first?.dtype, v == "fp16" ? .f16 : .bf16)
            }
        }
        // Compressed native files read back the same tensors.
        let original = try Checkpoint.open(Fixtures.tinySD, options: .init(variant: "fp16"))
        var compressed = quiet
        compressed.compress = true
        try original.write(to: dir + "/z.dginstyle", format: .native, options: compressed)
        try assertSame(original, try Checkpoint.open(dir + "/z.dginstyle"))
    }

    func testLDMSingleFileMatchesTheDiffusersFolder() throws {
        let ldm = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: Fixtures.tinySD))
        XCTAssertEqual(ldm.layout, .ldm)
        XCTAssertTrue(ldm.unexpectedKeys.isEmpty, "\(ldm.unexpectedKeys)")
        try assertSame(ldm, try Checkpoint.open(Fixtures.tinySD))

        let cn = try Checkpoint.open(Fixtures.tinyControlNetLDM, options: .init(configDirectory: Fixtures.tinyControlNet))
        XCTAssertEqual(cn.layout, .controlnetLDM)
        try assertSame(cn, try Checkpoint.open(Fixtures.tinyControlNet))
    }

    func testLDMToDiffusersFolderAndBack() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ldm = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: Fixtures.tinySD))
        try ldm.write(to: dir + "/pipe", format: .diffusers, options: quiet)
        try assertSame(try Checkpoint.open(dir + "/pipe"), try Checkpoint.open(Fixtures.tinySD))
    }

    /// diffusers -> LDM must reproduce the original files: the same names, the same bytes.
    func testDiffusersToLDMReproducesTheOriginalFiles() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (source, reference) in [(Fixtures.tinySD, Fixtures.tinyLDM), (Fixtures.tinyControlNet, Fixtures.tinyControlNetLDM)] {
            let out = dir + "/" + URL(fileURLWithPath: reference).lastPathComponent
            try Checkpoint.open(source).write(to: out, format: .ldm, options: quiet)
            let written = try SafeTensorsFile(path: out), expected = try SafeTensorsFile(path: reference)
            XCTAssertEqual(Set(written.entries.map(\.name)), Set(expected.entries.map(\.name)), reference)
            for e in expected.entries {
                guard let w = written.entry(e.name) else { continue }
                XCTAssertEqual(w.shape, e.shape, e.name)
                XCTAssertEqual(w.dtype, e.dtype, e.name)
                let same = try written.withBytes(e.name) { w in try expected.withBytes(e.name) { Array(w) == Array($0) } }
                XCTAssertTrue(same, e.name)
            }
        }
    }

    func testPrecisionConversionRoundsToNearestEven() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f32 = try Checkpoint.open(Fixtures.tinySD + "/vae")
        for (dtype, variant) in [(DType.f16, "fp16"), (.bf16, "bf16")] {
            var options = quiet
            options.dtype = dtype
            try f32.write(to: dir + "/vae-\(variant)", format: .diffusers, options: options)
            // diffusers' own .fp16/.bf16 files are PyTorch's rounding of the same f32 weights.
            try assertSame(try Checkpoint.open(dir + "/vae-\(variant)"), try Checkpoint.open(Fixtures.tinySD + "/vae", options: .init(variant: variant)))
        }
    }

    func testOutputsAreAtomicAndRefuseToClobber() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ck = try Checkpoint.open(Fixtures.tinySD + "/unet")
        try ck.write(to: dir + "/u.safetensors", format: .safetensors, options: quiet)
        XCTAssertThrowsError(try ck.write(to: dir + "/u.safetensors", format: .safetensors, options: quiet)) {
            XCTAssertTrue("\($0)".contains("already exists"))
        }
        var over = quiet
        over.overwrite = true
        try ck.write(to: dir + "/u.safetensors", format: .safetensors, options: over)
        // A failure half way leaves nothing behind: no such component.
        var bad = quiet
        bad.component = "vae"
        XCTAssertThrowsError(try ck.write(to: dir + "/v", format: .diffusers, options: bad))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["u.safetensors"])
    }
}

/// What published single files carry besides the parameters: EMA weights (selectable) and buffers (ignored).
final class LDMExtrasTests: XCTestCase {
    func testEMAWeightsAreSelectableAndBuffersIgnored() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try SafeTensorsFile(path: Fixtures.tinyLDM)
        var tensors: [(String, Tensor)] = []
        for e in base.entries { tensors.append((e.name, try base.tensor(e.name).copied())) }
        // An EMA copy of every UNet weight, distinguishable from the live one (x2), plus buffers.
        for e in base.entries where e.name.hasPrefix("model.diffusion_model.") {
            let t = try base.tensor(e.name).converted(to: .f32)
            let doubled = Tensor(shape: t.shape, floats: t.floats.map { $0 * 2 })
            tensors.append((LDMKeyMap.emaKey(forLDM: e.name)!, doubled))
        }
        tensors.append(("betas", Tensor(zeros: [1000])))
        tensors.append(("alphas_cumprod", Tensor(zeros: [1000])))
        tensors.append(("model_ema.decay", Tensor(shape: [], floats: [0.9999])))
        tensors.append(("model_ema.num_updates", Tensor(shape: [], floats: [1]).converted(to: .i32)))
        tensors.append(("cond_stage_model.transformer.text_model.embeddings.position_ids",
                        Tensor(shape: [1, 77], floats: (0..<77).map(Float.init)).converted(to: .i64)))
        let path = dir + "/with-ema.safetensors"
        try SafeTensorsWriter.save(path: path, tensors: tensors)

        let live = try Checkpoint.open(path, options: .init(configDirectory: Fixtures.tinySD))
        XCTAssertTrue(live.unexpectedKeys.isEmpty, "\(live.unexpectedKeys)")
        XCTAssertTrue(live.ignoredKeys.contains("betas") && live.ignoredKeys.contains("model_ema.decay"))
        XCTAssertTrue(live.ignoredKeys.contains("cond_stage_model.transformer.text_model.embeddings.position_ids"))
        let ema = try Checkpoint.open(path, options: .init(configDirectory: Fixtures.tinySD, ema: true))
        let name = "conv_in.weight"
        let a = try live.component("unet")!.source.tensor(name).floats
        let b = try ema.component("unet")!.source.tensor(name).floats
        XCTAssertEqual(b, a.map { $0 * 2 })
        // The VAE and text encoder have no EMA copy: the same either way.
        XCTAssertEqual(try live.component("vae")!.source.tensor("encoder.conv_in.weight").floats,
                       try ema.component("vae")!.source.tensor("encoder.conv_in.weight").floats)
        // Asking for EMA weights a file does not have is an error, not a silent fallback.
        XCTAssertThrowsError(try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: Fixtures.tinySD, ema: true))) {
            XCTAssertTrue("\($0)".contains("EMA"), "\($0)")
        }
    }

    func testUnknownKeysAreReportedByName() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try SafeTensorsFile(path: Fixtures.tinyLDM)
        var tensors: [(String, Tensor)] = try base.entries.map { ($0.name, try base.tensor($0.name).copied()) }
        tensors.append(("model.diffusion_model.lora_up.weight", Tensor(zeros: [2])))
        try SafeTensorsWriter.save(path: dir + "/x.safetensors", tensors: tensors)
        let ck = try Checkpoint.open(dir + "/x.safetensors", options: .init(configDirectory: Fixtures.tinySD))
        XCTAssertEqual(ck.unexpectedKeys, ["model.diffusion_model.lora_up.weight"])
    }
}
