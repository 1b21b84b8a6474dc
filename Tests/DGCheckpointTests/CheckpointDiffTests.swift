import DGBase
import DGTensor
import Foundation
import XCTest
@testable import DGCheckpoint

/// `Checkpoint.diff`, on the fixtures and on hand-made tensors.
final class CheckpointDiffTests: XCTestCase {
    func testBlockNames() {
        let cases = [
            ("unet/down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", "unet/down_blocks.1.attentions.0"),
            ("unet/down_blocks.1.resnets.0.conv1.weight", "unet/down_blocks.1.resnets.0"),
            ("unet/mid_block.attentions.0.proj_in.weight", "unet/mid_block.attentions.0"),
            ("unet/mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight", "unet/mid_block.attentions.0"),
            ("vae/decoder.up_blocks.2.upsamplers.0.conv.bias", "vae/decoder.up_blocks.2.upsamplers.0"),
            ("controlnet/controlnet_cond_embedding.blocks.2.weight", "controlnet/controlnet_cond_embedding.blocks.2"),
            ("unet/up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.bias", "unet/up_blocks.3.attentions.2"),
            ("unet/conv_in.weight", "unet/conv_in"),
            ("unet/time_embedding.linear_1.weight", "unet/time_embedding.linear_1"),
            ("text_encoder/text_model.encoder.layers.3.self_attn.q_proj.weight", "text_encoder/text_model.encoder.layers.3"),
            ("text_encoder/text_model.embeddings.token_embedding.weight", "text_encoder/text_model.embeddings"),
            ("vae/encoder.mid_block.attentions.0.to_q.weight", "vae/encoder.mid_block.attentions.0"),
            ("controlnet/controlnet_down_blocks.3.weight", "controlnet/controlnet_down_blocks.3"),
            ("tensors/emb_params", "tensors/emb_params"),
            ("0.weight", "0"),
            ("tensors/lora_unet_mid_block_attentions_0_proj_out.alpha", "tensors/lora_unet_mid_block_attentions_0_proj_out"),
        ]
        for (name, block) in cases { XCTAssertEqual(CheckpointDiff.blockName(of: name), block, name) }
    }

    func testValuesAreComparedInFloat64AcrossTypes() {
        let a: [Float] = [1, -2, 0.5, .nan, 3]
        let b: [Float] = [1, -2, 0.75, .nan, 0]
        let f16 = a.map { float16Bits($0) }
        let change = a.withUnsafeBytes { ra in b.withUnsafeBytes { rb in Checkpoint.compareValues(ra, .f32, rb, .f32, count: 5) } }
        XCTAssertEqual(change.count, 5)
        XCTAssertEqual(change.differing, 2)
        XCTAssertEqual(change.maxAbsDifference, 3)
        XCTAssertEqual(change.sumSquaresDifference, 0.0625 + 9)
        XCTAssertEqual(change.sumSquaresA, 1 + 4 + 0.25 + 9)
        XCTAssertEqual(change.relative, (9.0625 / 14.25).squareRoot(), accuracy: 1e-15)
        // Every value of `a` is a float16: the half copy is the same weights.
        let same = a.withUnsafeBytes { ra in f16.withUnsafeBytes { rb in Checkpoint.compareValues(ra, .f32, rb, .f16, count: 5) } }
        XCTAssertTrue(same.isIdentical)
        XCTAssertEqual(same.relative, 0)
        // One side NaN: a change, and an infinite relative one.
        let nan: [Float] = [1, -2, 0.5, 7, 3]
        let c = nan.withUnsafeBytes { ra in a.withUnsafeBytes { rb in Checkpoint.compareValues(ra, .f32, rb, .f32, count: 5) } }
        XCTAssertEqual(c.nonFinite, 1)
        XCTAssertEqual(c.relative, .infinity)
        // float8 E4M3: 0x38 = 1.0, 0xC0 = -2.0, 0x01 = 2^-9, 0x7F NaN; E5M2 0x3C = 1.0.
        var out = [Double](repeating: 0, count: 4)
        let bytes: [UInt8] = [0x38, 0xC0, 0x01, 0x7F]
        bytes.withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { Checkpoint.decode(raw, .f8e4m3, from: 0, count: 4, into: $0.baseAddress!) } }
        XCTAssertEqual(Array(out[0..<3]), [1, -2, 0x1p-9])
        XCTAssertTrue(out[3].isNaN)
        [UInt8(0x3C)].withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { Checkpoint.decode(raw, .f8e5m2, from: 0, count: 1, into: $0.baseAddress!) } }
        XCTAssertEqual(out[0], 1)
    }

    /// The LDM single file and the diffusers folder hold the same weights under other names.
    func testLDMFileAndDiffusersFolderAreIdentical() throws {
        let diff = try Checkpoint.diff(try Checkpoint.openAny(Fixtures.tinyLDM), try Checkpoint.openAny(Fixtures.tinySD))
        XCTAssertTrue(diff.isIdentical, "\(diff.onlyInA.prefix(3)) \(diff.onlyInB.prefix(3)) \(diff.changedTensors.prefix(3).map(\.name))")
        XCTAssertEqual(diff.tensors.count, try Checkpoint.open(Fixtures.tinySD).components.reduce(0) { $0 + $1.source.entries.count })
        XCTAssertEqual(diff.total.relative, 0)
        // Its float16 variant of the VAE differs by float16 rounding, no more.
        let half = try Checkpoint.diff(try Checkpoint.openAny(Fixtures.tinySD), try Checkpoint.openAny(Fixtures.tinySD, options: .init(variant: "fp16")),
                                       component: "vae")
        XCTAssertFalse(half.isIdentical)
        XCTAssertEqual(half.dtypeChanges.count, half.tensors.count)
        XCTAssertGreaterThan(half.total.relative, 0)
        XCTAssertLessThan(half.total.relative, 1e-3)
    }

    func testChangedAndMissingTensorsAreReported() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try Checkpoint.open(Fixtures.tinySD + "/unet")
        let entries = base.components[0].source.entries
        // B: one attention block scaled by 1.01, one tensor dropped, one added, one reshaped.
        var tensors: [(TensorEntry, [Float])] = []
        for e in entries.dropFirst() {
            var v = try base.components[0].source.tensor(e.name).floats
            if e.name.hasPrefix("down_blocks.1.attentions.0.") { v = v.map { $0 * 1.01 } }
            if e.name == "conv_out.bias" {
                tensors.append((TensorEntry(name: e.name, dtype: .f32, shape: [1, e.count]), v))
                continue
            }
            tensors.append((e, v))
        }
        tensors.append((TensorEntry(name: "extra.weight", dtype: .f32, shape: [2]), [1, 2]))
        let path = dir + "/b.safetensors"
        let w = try SafeTensorsWriter(path: path, entries: tensors.map(\.0), metadata: nil)
        for (_, v) in tensors { try v.withUnsafeBytes { try w.write($0) } }
        try w.finish()

        let diff = try Checkpoint.diff(base, try Checkpoint.openAny(path))
        XCTAssertFalse(diff.isIdentical)
        XCTAssertEqual(diff.onlyInA, ["unet/" + entries[0].name])
        XCTAssertEqual(diff.onlyInB, ["unet/extra.weight"])
        XCTAssertEqual(diff.shapeChanges.map(\.name), ["unet/conv_out.bias"])
        let blocks = diff.blocks()
        // The reshaped tensor comes first (it cannot be compared), then the scaled block.
        XCTAssertEqual(blocks[0].name, "unet/conv_out")
        XCTAssertEqual(blocks[1].name, "unet/down_blocks.1.attentions.0")
        XCTAssertEqual(blocks[1].change.relative, 0.01, accuracy: 1e-6)
        XCTAssertTrue(blocks.dropFirst(2).allSatisfy { $0.change.isIdentical })
        XCTAssertEqual(diff.tensorsByChange().first?.name, "unet/conv_out.bias")
    }
}
