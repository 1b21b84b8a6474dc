import DGBase
import DGTensor
import Foundation
import XCTest
@testable import DGCheckpoint

/// PyTorch checkpoints (torch.save zip archives) read by our own pickle machine, on the files
/// tools/make-pickle-fixtures.py made with torch.
final class TorchPickleTests: XCTestCase {
    static let dir = Fixtures.root + "/pickle"

    private func bytes(_ t: Tensor) -> [UInt8] { t.contiguous().withRawBytes { Array($0) } }

    /// Every tensor of every component, compared bit for bit.
    private func assertSame(_ a: Checkpoint, _ b: Checkpoint, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(a.components.map(\.name).sorted(), b.components.map(\.name).sorted(), file: file, line: line)
        for c in a.components {
            let other = try XCTUnwrap(b.component(c.name), file: file, line: line)
            XCTAssertEqual(c.source.entries.map(\.name).sorted(), other.source.entries.map(\.name).sorted(), c.name, file: file, line: line)
            for e in c.source.entries {
                guard let o = other.source.entry(e.name) else { continue }
                XCTAssertEqual(e, o, file: file, line: line)
                XCTAssertTrue(bytes(try c.source.tensor(e.name)) == bytes(try other.source.tensor(e.name)), "\(c.name) \(e.name)", file: file, line: line)
            }
        }
    }

    func testLightningLDMCheckpointConvertsToDiffusersExactlyAsTheSafetensorsFile() throws {
        var warnings: [String] = []
        let saved = TorchCheckpointFile.warn
        TorchCheckpointFile.warn = { warnings.append($0) }
        defer { TorchCheckpointFile.warn = saved }

        let ckpt = try Checkpoint.open(Self.dir + "/tiny-sd-ldm.ckpt", options: .init(configDirectory: Fixtures.tinySD))
        XCTAssertEqual(ckpt.layout, .ldm)
        XCTAssertTrue(ckpt.unexpectedKeys.isEmpty, "\(ckpt.unexpectedKeys)")
        // The placeholder rule's accepting side: Lightning's objects beside the weights, named.
        XCTAssertEqual(warnings.count, 1)
        for name in ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", "pytorch_lightning.utilities.parsing.AttributeDict", "argparse.Namespace"] {
            XCTAssertTrue(warnings[0].contains(name), warnings[0])
        }
        let st = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: Fixtures.tinySD))
        try assertSame(ckpt, st)

        // Both written as diffusers folders: every tensor file identical, tensor by tensor.
        let out = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: out) }
        try ckpt.write(to: out + "/from-ckpt", format: .diffusers, options: WriteOptions(progress: false))
        try st.write(to: out + "/from-safetensors", format: .diffusers, options: WriteOptions(progress: false))
        try assertSame(try Checkpoint.open(out + "/from-ckpt"), try Checkpoint.open(out + "/from-safetensors"))
        try assertSame(try Checkpoint.open(out + "/from-ckpt"), try Checkpoint.open(Fixtures.tinySD))

        // --ema reads model_ema.* (here sharing the live weights' storages).
        let ema = try Checkpoint.open(Self.dir + "/tiny-sd-ldm.ckpt", options: .init(configDirectory: Fixtures.tinySD, ema: true))
        try assertSame(ema, st)
        let file = try TorchCheckpointFile(path: Self.dir + "/tiny-sd-ldm.ckpt")
        XCTAssertEqual(file.stateDictPath, ["state_dict"])
        XCTAssertEqual(file.entry("model_ema.num_updates")?.dtype, .i32)
        XCTAssertEqual(file.entry("model_ema.decay")?.shape, [])
    }

    func testViewsSharedStoragesAndEveryDTypeEqualTorchs() throws {
        let file = try TorchCheckpointFile(path: Self.dir + "/fp16-views.ckpt")
        XCTAssertEqual(file.stateDictPath, ["model"])
        let expected = try SafeTensorsFile(path: Self.dir + "/fp16-views.expected.safetensors")
        XCTAssertEqual(Set(file.entries.map(\.name)), Set(expected.entries.map(\.name)))
        for e in expected.entries {
            let ours = try XCTUnwrap(file.entry(e.name), e.name)
            XCTAssertEqual(ours, e, e.name)
            let t = try file.tensor(e.name)
            XCTAssertTrue(t.isContiguous, e.name)
            XCTAssertEqual(bytes(t), try expected.withBytes(e.name) { Array($0) }, e.name)
        }
        // Contiguous views of the map are not copied: the rows share the base's storage.
        let base = try file.tensor("base"), rows = try file.tensor("rows")
        XCTAssertEqual(base.storage.base, rows.storage.base)
        XCTAssertEqual(rows.offset, 16)
    }

    func testControlNetPthAndBinFolderOpen() throws {
        let cn = try Checkpoint.open(Self.dir + "/tiny-controlnet.pth", options: .init(configDirectory: Fixtures.tinyControlNet))
        XCTAssertEqual(cn.layout, .controlnetLDM)
        try assertSame(cn, try Checkpoint.open(Fixtures.tinyControlNet))
        // Without --config the conditioning channels are read off the weights, as for safetensors.
        let plain = try Checkpoint.open(Self.dir + "/tiny-controlnet.pth")
        XCTAssertEqual(plain.component("controlnet")?.config?["conditioning_channels"]?.int, 20)

        let vae = try Checkpoint.open(Self.dir + "/tiny-vae-bin")
        XCTAssertEqual(vae.layout, .diffusersModel)
        try assertSame(vae, try Checkpoint.open(Fixtures.tinySD + "/vae"))
        // A pipeline folder whose VAE holds only .bin weights opens too.
        let pipe = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: pipe) }
        for sub in ["model_index.json", "scheduler", "tokenizer", "text_encoder", "unet"] {
            try FileManager.default.copyItem(atPath: Fixtures.tinySD + "/" + sub, toPath: pipe + "/" + sub)
        }
        try FileManager.default.copyItem(atPath: Self.dir + "/tiny-vae-bin", toPath: pipe + "/vae")
        try assertSame(try Checkpoint.open(pipe), try Checkpoint.open(Fixtures.tinySD))
    }

    /// Malicious and broken files: one line naming the problem, and nothing run.
    func testMaliciousAndBrokenFilesAreRefused() throws {
        let markers = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.dir + "/markers.json"))) as! [String: String]
        for m in markers.values { try? FileManager.default.removeItem(atPath: m) }
        let cases: [(String, String)] = [
            ("evil-os-system.pt", "refused global posix.system"),
            ("evil-eval.pt", "refused global __builtin__.eval"),
            ("evil-popen.pt", "refused global subprocess.Popen"),
            ("unknown-class.pt", "refused global __main__.Model"),
            ("placeholder-with-tensor.ckpt", "a tensor is handed to pytorch_lightning.utilities.parsing.AttributeDict"),
            ("missing-storage.pt", "storage 0 is missing from the archive"),
            ("view-past-end.pt", "reaches element 4 of storage 0, which has 4"),
            ("short-storage.pt", "should hold 4 F32 elements but the archive has 8 bytes"),
            ("truncated-pickle.pt", "pickle: truncated"),
            ("huge-string.pt", "exceeds the"),
            ("bad-memo.pt", "memo index 2147483647"),
            ("deep-nesting.pt", "holds no dict at its top"),
            ("copy-bomb.pt", "asks for more copying than a pickle of"),
            ("deflated.pt", "is deflate-compressed"),
            ("truncated.ckpt", "corrupt zip archive"),
            ("legacy.pt", "legacy serialization format"),
        ]
        for (name, message) in cases {
            XCTAssertThrowsError(try Checkpoint.open(Self.dir + "/" + name), name) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(message), "\(name): \(text)")
                XCTAssertFalse(text.contains("\n"), "\(name): \(text)")
                XCTAssertTrue(error is FileError, name)
            }
        }
        for m in markers.values { XCTAssertFalse(FileManager.default.fileExists(atPath: m), m) }
    }

    /// Hand-made pickles for what the fixtures do not reach: every byte of a valid file cut
    /// short, and random corruption, each an error and never a crash.
    func testEveryTruncationAndCorruptionIsAnError() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/fp16-views.ckpt"))
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/x.ckpt"
        for cut in stride(from: 0, to: original.count, by: 37) {
            try original.prefix(cut).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try TorchCheckpointFile(path: path), "cut at \(cut)")
        }
        var rng = SystemRandomNumberGenerator()
        var opened = 0
        for _ in 0..<300 {
            var bytes = [UInt8](original)
            for _ in 0..<4 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            if let f = try? TorchCheckpointFile(path: path) {
                opened += 1
                for e in f.entries { _ = try? f.tensor(e.name) }
            }
        }
        XCTAssertLessThanOrEqual(opened, 300)
    }
}
