import DGBase
import Foundation
import XCTest
@testable import DGCheckpoint

/// Files of no model we recognise (Tests/Fixtures/other, tools/make-unknown-layout-fixtures.py).
final class UnknownLayoutTests: XCTestCase {
    func testUnknownLayoutOpensOnlyWhenAllowed() throws {
        let lora = Fixtures.root + "/other/lora-kohya.safetensors"
        XCTAssertThrowsError(try Checkpoint.open(lora)) { error in
            XCTAssertEqual((error as? FileError)?.path, lora)
            XCTAssertTrue("\(error)".contains("recognises"), "\(error)")
        }
        let ck = try Checkpoint.openAny(lora)
        XCTAssertEqual(ck.layout, .unknown)
        XCTAssertEqual(ck.components.map(\.name), [Checkpoint.unknownComponentName])
        XCTAssertEqual(ck.components[0].source.entries.count, 12)
        XCTAssertEqual(ck.components[0].metadata?.first { $0.0 == "ss_network_dim" }?.1, "4")
        XCTAssertEqual(ck.components[0].source.entries.first { $0.name.hasSuffix(".alpha") }?.shape, [])
        // Writing it anywhere is refused by `convert`'s path, which opens without the permission;
        // a malformed file is still an error, not an unknown layout.
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/junk.safetensors"))
        XCTAssertThrowsError(try Checkpoint.openAny(dir + "/junk.safetensors"))
        XCTAssertThrowsError(try Checkpoint.openAny(dir + "/missing.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
    }

    /// A known prefix is not enough: tensors that no SD 1.x model takes (here an LDM-prefixed
    /// name the key map does not know) still describe as unknown, with the reason.
    func testFilesThatNoLayoutAcceptsAreUnknownWithTheReason() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/other-architecture.safetensors"
        let entries = [TensorEntry(name: "model.diffusion_model.label_emb.0.0.weight", dtype: .f32, shape: [2])]
        let w = try SafeTensorsWriter(path: path, entries: entries, metadata: [("format", "pt")])
        try [Float(1), 2].withUnsafeBytes { try w.write($0) }
        try w.finish()
        XCTAssertThrowsError(try Checkpoint.open(path))
        let ck = try Checkpoint.openAny(path)
        XCTAssertEqual(ck.layout, .unknown)
        XCTAssertEqual(ck.unknownLayoutReason, "holds no tensor of a known model")
        XCTAssertEqual(ck.components[0].source.entries, entries)
    }
}
