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
