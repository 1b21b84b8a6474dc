import DGBase
import XCTest
@testable import DGCheckpoint
import DGTensor

final class SafeTensorsTests: SafeTensorsTestCase {
    private var tinySD: String { Self.fixtures + "sd-tiny/tiny-sd/" }

    // MARK: reading files the reference library wrote

    func testUNetFixture() throws {
        let file = try SafeTensorsFile(path: tinySD + "unet/diffusion_pytorch_model.safetensors")
        XCTAssertEqual(file.entries.count, 684)
        XCTAssertEqual(file.metadata?.map(\.0), ["format"])
        XCTAssertEqual(file.metadataValue("format"), "pt")
        XCTAssertEqual(file.dataOffset, 8 + 78928)
        XCTAssertEqual(file.entries.first, TensorEntry(name: "conv_in.bias", dtype: .f32, shape: [32]))
        XCTAssertEqual(file.entries.last?.name, "up_blocks.3.resnets.2.time_emb_proj.weight")
        XCTAssertEqual(file.entry("conv_in.weight"), TensorEntry(name: "conv_in.weight", dtype: .f32, shape: [32, 4, 3, 3]))
        XCTAssertEqual(try file.byteRange("conv_in.weight"), (file.dataOffset + 128)..<(file.dataOffset + 4736))
        // Entries come in data order, back to back.
        for (a, b) in zip(file.byteRanges, file.byteRanges.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        XCTAssertEqual(file.byteRanges.last?.upperBound, file.file.size)

        let conv = try file.tensor("conv_in.weight")
        XCTAssertTrue(conv.storage.isBorrowed, "an aligned f32 tensor should map zero-copy")
        XCTAssertEqual(conv.shape, [32, 4, 3, 3])
        let values = conv.floats
        XCTAssertEqual(Array(values.prefix(3)), [-0.018619760870933533, -0.08276502043008804, 0.027178950607776642])
        XCTAssertEqual(values.last, 0.06783408671617508)
        XCTAssertEqual(try file.tensor("up_blocks.3.resnets.2.time_emb_proj.weight").floats.last, -0.045914724469184875)
        XCTAssertEqual(try file.bytes("conv_in.bias").count, 128)
        file.release("conv_in.weight")
        XCTAssertEqual(try file.tensor("conv_in.weight").floats, values, "released pages read back from disk")

        XCTAssertThrowsError(try file.tensor("conv_in.weights")) { error in
            XCTAssertEqual("\(error)", file.path + ": no tensor named \"conv_in.weights\"")
        }
    }

    func testVAEPrecisionVariants() throws {
        let f32 = try SafeTensorsFile(path: tinySD + "vae/diffusion_pytorch_model.safetensors")
        let f16 = try SafeTensorsFile(path: tinySD + "vae/diffusion_pytorch_model.fp16.safetensors")
        let bf16 = try SafeTensorsFile(path: tinySD + "vae/diffusion_pytorch_model.bf16.safetensors")
        XCTAssertEqual(f32.entries.count, 244)
        XCTAssertEqual(f16.entries.map(\.name), f32.entries.map(\.name))
        XCTAssertEqual(bf16.entries.map(\.shape), f32.entries.map(\.shape))
        XCTAssertEqual(Set(f32.entries.map(\.dtype)), [.f32])
        XCTAssertEqual(Set(f16.entries.map(\.dtype)), [.f16])
        XCTAssertEqual(Set(bf16.entries.map(\.dtype)), [.bf16])

        XCTAssertEqual(try f32.tensor("decoder.conv_in.bias").floats.prefix(3), [0.1730012595653534, -0.44812366366386414, 0.5717194676399231])
        let half = try f16.tensor("decoder.conv_in.bias")
        XCTAssertEqual(half.dtype, .f16)
        XCTAssertEqual(try f16.withBytes("decoder.conv_in.bias") { Array($0.prefix(6)) }, [0x89, 0x31, 0x2C, 0xB7, 0x93, 0x38])
        XCTAssertEqual(try bf16.withBytes("decoder.conv_in.bias") { Array($0.prefix(6)) }, [0x31, 0x3E, 0xE5, 0xBE, 0x12, 0x3F])
        XCTAssertEqual(try f16.withBytes("quant_conv.weight") { Array($0.suffix(2)) }, [0xCA, 0x33])
        XCTAssertEqual(try bf16.withBytes("quant_conv.weight") { Array($0.suffix(2)) }, [0x79, 0x3E])
        // Each narrow variant is the f32 weight rounded.
        let exact = try f32.tensor("quant_conv.weight").floats
        for variant in [try f16.tensor("quant_conv.weight"), try bf16.tensor("quant_conv.weight")] {
            for (a, b) in zip(variant.floats, exact) { XCTAssertEqual(a, b, accuracy: abs(b) / 64 + 1e-6) }
        }
    }

    func testOtherFixtures() throws {
        let clip = try SafeTensorsFile(path: tinySD + "text_encoder/model.safetensors")
        XCTAssertEqual(clip.entry("embeddings.token_embedding.weight")?.shape, [49408, 32])
        XCTAssertEqual(try clip.tensor("embeddings.token_embedding.weight").floats.last, 0.010891254059970379)
        let io = try SafeTensorsFile(path: Self.fixtures + "sd-tiny/io.safetensors")
        XCTAssertNil(io.metadata)
        XCTAssertEqual(io.entry("ddpm.t"), TensorEntry(name: "ddpm.t", dtype: .i32, shape: [3]))
        XCTAssertEqual(try io.tensor("ddpm.t").converted(to: .f32).floats, [0, 250, 999])
        for path in ["sd-tiny/tiny-sd-ldm.safetensors", "sd-tiny/tiny-controlnet-ldm.safetensors",
                     "sd-tiny/tiny-controlnet/diffusion_pytorch_model.safetensors", "sd-tiny/controlnet_step_grads.safetensors"] {
            XCTAssertFalse(try SafeTensorsFile(path: Self.fixtures + path).entries.isEmpty, path)
        }
    }

    /// Bytes written by the Python `safetensors` 0.8.0 package (numpy): every numpy dtype, a
    /// scalar, a zero-element tensor sharing its offset with the next one, metadata, and the
    /// writer's dtype-size ordering and 8-byte padding.
    func testFileWrittenByReferencePython() throws {
        let path = try write("reference.safetensors", [UInt8](Data(base64Encoded: Self.referenceFile)!))
        let file = try SafeTensorsFile(path: path)
        XCTAssertEqual(file.metadata?.map { "\($0.0)=\($0.1)" }, ["note=written by safetensors 0.8.0", "format=np"])
        XCTAssertEqual(file.entries.map(\.name), ["u64", "i64", "f64", "empty", "f32", "scalar", "u32", "i32", "f16", "u16", "i16", "i8", "u8", "bool"])
        XCTAssertEqual(file.entry("empty")?.shape, [0, 3])
        XCTAssertEqual(file.entry("scalar")?.shape, [])
        XCTAssertEqual(try file.tensor("scalar").floats, [3.5])
        XCTAssertEqual(try file.tensor("empty").floats, [])
        XCTAssertEqual(try file.tensor("f32").floats, [0, 0.25, 0.5, 0.75, 1, 1.25])
        XCTAssertEqual(try file.tensor("f64").converted(to: .f32).floats, [-1.5, -0.5, 0.5])
        XCTAssertEqual(try file.tensor("f16").converted(to: .f32).floats, [1, -2.5, 65504])
        XCTAssertEqual(bytes(of: try file.tensor("i64")), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        XCTAssertEqual(bytes(of: try file.tensor("u64")), [UInt8](repeating: 0xFF, count: 8))
        XCTAssertEqual(try file.tensor("i16").converted(to: .f32).floats, [-300, 300])
        XCTAssertEqual(try file.tensor("i8").converted(to: .f32).floats, [-128, 127])
        XCTAssertEqual(try file.tensor("u32").converted(to: .f32).floats, [4e9])
        XCTAssertEqual(bytes(of: try file.tensor("bool")), [1, 0, 1])
        XCTAssertEqual(bytes(of: try file.tensor("u8")), [1, 2, 3])
    }

    // MARK: writing

    func testRoundTripEveryDTypeAndShape() throws {
        var generator = SystemRandomNumberGenerator()
        var tensors: [(String, Tensor)] = []
        for dtype in DType.allCases {
            for shape in [[], [0], [3, 0, 2], [1], [5], [2, 3, 4]] {
                let count = shape.reduce(1, *) * dtype.byteSize
                let random = (0..<count).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
                tensors.append(("\(dtype.name).\(shape)", try tensor(dtype, shape, random)))
            }
        }
        tensors.shuffle()
        let path = folder + "all.safetensors"
        let metadata = [("format", "pt"), ("é \"quoted\"\n", "😀\u{0}")]
        try SafeTensorsWriter.save(path: path, tensors: tensors, metadata: metadata)

        let file = try SafeTensorsFile(path: path)
        XCTAssertEqual(file.dataOffset % 64, 0)
        XCTAssertEqual(file.metadata?.map(\.0), metadata.map(\.0))
        XCTAssertEqual(file.metadata?.map(\.1), metadata.map(\.1))
        // Data order is the caller's order, zero-byte tensors included (ties keep header order).
        XCTAssertEqual(file.entries.map(\.name), tensors.map(\.0))
        for (name, t) in tensors {
            let read = try file.tensor(name)
            XCTAssertEqual(read.dtype, t.dtype, name)
            XCTAssertEqual(read.shape, t.shape, name)
            XCTAssertEqual(bytes(of: read), bytes(of: t), name)
        }
    }

    func testHeaderLayout() throws {
        let path = folder + "layout.safetensors"
        try SafeTensorsWriter.save(path: path, tensors: [("b", try tensor(.u8, [3], [1, 2, 3])), ("a", Tensor(zeros: [2], dtype: .f32))],
                                   metadata: [("format", "pt")])
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let n = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual((8 + n) % 64, 0)
        XCTAssertEqual(bytes.count, 8 + n + 3 + 8)
        let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        XCTAssertEqual(header.trimmingCharacters(in: .whitespaces),
                       #"{"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"a":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#)
        XCTAssertTrue(header.hasSuffix(" "))
        XCTAssertNotNil(try JSON.parse(header)["a"])
        // a's data starts at an odd address: read by copy, still right.
        let a = try SafeTensorsFile(path: path).tensor("a")
        XCTAssertFalse(a.storage.isBorrowed)
        XCTAssertEqual(a.floats, [0, 0])
    }

    func testNonContiguousTensorsAreSavedInRowMajorOrder() throws {
        let t = Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]).transposed(0, 1)
        let path = folder + "t.safetensors"
        try SafeTensorsWriter.save(path: path, tensors: [("t", t)])
        let read = try SafeTensorsFile(path: path).tensor("t")
        XCTAssertEqual(read.shape, [3, 2])
        XCTAssertEqual(read.floats, [1, 4, 2, 5, 3, 6])
        XCTAssertTrue(read.storage.isBorrowed)
    }

    func testStreamingInPieces() throws {
        let entries = [TensorEntry(name: "x", dtype: .u8, shape: [10]), TensorEntry(name: "none", dtype: .f32, shape: [0]),
                       TensorEntry(name: "y", dtype: .u16, shape: [2])]
        let path = folder + "pieces.safetensors"
        let writer = try SafeTensorsWriter(path: path, entries: entries, metadata: nil)
        XCTAssertEqual(writer.dataOffset % 64, 0)
        let data: [UInt8] = Array(0..<14)
        for piece in [data[0..<3], data[3..<3], data[3..<10], data[10..<11], data[11..<14]] {
            try Array(piece).withUnsafeBytes { try writer.write($0) }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "nothing at the final path before finish")
        try writer.finish()
        XCTAssertEqual(try folderContents(), ["pieces.safetensors"])
        let file = try SafeTensorsFile(path: path)
        XCTAssertNil(file.metadata)
        XCTAssertEqual(try file.withBytes("x") { Array($0) }, Array(0..<10))
        XCTAssertEqual(try file.withBytes("y") { Array($0) }, [10, 11, 12, 13])
        XCTAssertEqual(try file.tensor("none").shape, [0])
    }

    func testLargeTensorsPassTheBuffer() throws {
        // Bigger than the write buffer, and a small one either side, to cover each path.
        let big = (0..<(3 << 20)).map { Float($0) }
        let tensors = [("small", Tensor(shape: [3], floats: [1, 2, 3])), ("big", Tensor(shape: [big.count], floats: big)),
                       ("after", Tensor(shape: [1], floats: [7]))]
        let path = folder + "big.safetensors"
        try SafeTensorsWriter.save(path: path, tensors: tensors)
        let file = try SafeTensorsFile(path: path)
        XCTAssertEqual(try file.tensor("big").floats, big)
        XCTAssertEqual(try file.tensor("after").floats, [7])
    }

    func testWriterChecksWhatItIsGiven() throws {
        let entries = [TensorEntry(name: "a", dtype: .f32, shape: [2]), TensorEntry(name: "b", dtype: .u8, shape: [1])]
        let path = folder + "w.safetensors"
        let writer = try SafeTensorsWriter(path: path, entries: entries, metadata: nil)
        XCTAssertThrowsError(try writer.write(Tensor(zeros: [3], dtype: .f32))) { XCTAssertTrue("\($0)".contains("is F32 [2] but a F32 [3] tensor")) }
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 9).withUnsafeBytes { try writer.write($0) }) {
            XCTAssertTrue("\($0)".contains("tensor \"a\" is 8 bytes but 9 were written for it"), "\($0)")
        }
        try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try writer.write($0) }
        XCTAssertThrowsError(try writer.write(Tensor(zeros: [2], dtype: .f32))) { XCTAssertTrue("\($0)".contains("half written")) }
        XCTAssertThrowsError(try writer.finish()) {
            XCTAssertEqual("\($0)", path + ": incomplete: tensor \"a\" got 4 of its 8 bytes")
        }
        XCTAssertEqual(try folderContents(), [], "a failed finish removes the temporary file")
        XCTAssertThrowsError(try writer.finish())

        let full = try SafeTensorsWriter(path: path, entries: [TensorEntry(name: "b", dtype: .u8, shape: [1])], metadata: nil)
        try full.write(try tensor(.u8, [1], [9]))
        XCTAssertThrowsError(try [UInt8(1)].withUnsafeBytes { try full.write($0) }) { XCTAssertTrue("\($0)".contains("after all 1 tensors are complete")) }
        try full.finish()
        XCTAssertThrowsError(try full.write(try tensor(.u8, [1], [9])))

        let dup = [TensorEntry(name: "a", dtype: .u8, shape: [1]), TensorEntry(name: "a", dtype: .u8, shape: [1])]
        XCTAssertThrowsError(try SafeTensorsWriter(path: path, entries: dup, metadata: nil)) { XCTAssertTrue("\($0)".contains("tensor \"a\" appears twice")) }
        XCTAssertThrowsError(try SafeTensorsWriter(path: path, entries: [TensorEntry(name: "__metadata__", dtype: .u8, shape: [1])], metadata: nil))
        XCTAssertThrowsError(try SafeTensorsWriter(path: path, entries: [], metadata: [("k", "1"), ("k", "2")])) { XCTAssertTrue("\($0)".contains("appears twice")) }
        XCTAssertThrowsError(try SafeTensorsWriter(path: path, entries: [TensorEntry(name: "n", dtype: .u8, shape: [-1])], metadata: nil))
        XCTAssertThrowsError(try SafeTensorsWriter(path: path, entries: [TensorEntry(name: "o", dtype: .f64, shape: [1 << 62])], metadata: nil)) {
            XCTAssertTrue("\($0)".contains("too large"))
        }
        XCTAssertThrowsError(try SafeTensorsWriter(path: folder + "no/such/folder.safetensors", entries: [], metadata: nil)) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertEqual(try folderContents(), ["w.safetensors"])
        XCTAssertEqual(try SafeTensorsFile(path: path).withBytes("b") { Array($0) }, [9])
    }

    func testAbortAndDeinitRemoveTheTemporaryFile() throws {
        let entries = [TensorEntry(name: "a", dtype: .u8, shape: [4])]
        let path = folder + "x.safetensors"
        let writer = try SafeTensorsWriter(path: path, entries: entries, metadata: nil)
        try [UInt8](repeating: 1, count: 2).withUnsafeBytes { try writer.write($0) }
        XCTAssertEqual(try folderContents().count, 1)
        XCTAssertTrue(try folderContents()[0].hasPrefix(".x.safetensors.tmp-"))
        writer.abort()
        XCTAssertEqual(try folderContents(), [])
        XCTAssertThrowsError(try writer.finish())

        do {
            let dropped = try SafeTensorsWriter(path: path, entries: entries, metadata: nil)
            try [UInt8](repeating: 1, count: 4).withUnsafeBytes { try dropped.write($0) }
            XCTAssertEqual(try folderContents().count, 1)
        }
        XCTAssertEqual(try folderContents(), [], "deinit without finish removes the temporary file")
    }

    func testFinishReplacesAnExistingFile() throws {
        let path = folder + "m.safetensors"
        try SafeTensorsWriter.save(path: path, tensors: [("old", Tensor(zeros: [1]))])
        try SafeTensorsWriter.save(path: path, tensors: [("new", Tensor(zeros: [2]))])
        XCTAssertEqual(try SafeTensorsFile(path: path).entries.map(\.name), ["new"])
        XCTAssertEqual(try folderContents(), ["m.safetensors"])
        try SafeTensorsWriter.save(path: folder + "empty.safetensors", tensors: [])
        XCTAssertEqual(try SafeTensorsFile(path: folder + "empty.safetensors").entries, [])
    }

    // MARK: sharded checkpoints

    private func makeShards() throws -> String {
        try SafeTensorsWriter.save(path: folder + "model-00001-of-00002.safetensors",
                                   tensors: [("b", Tensor(shape: [2], floats: [1, 2])), ("a", Tensor(shape: [1], floats: [3]))])
        try SafeTensorsWriter.save(path: folder + "model-00002-of-00002.safetensors",
                                   tensors: [("c", Tensor(shape: [1, 1], floats: [4]))])
        return folder + "model.safetensors.index.json"
    }

    private func writeIndex(_ path: String, _ weightMap: [(String, JSON)], metadata: JSON = ["total_size": 16]) throws {
        try Data(JSON.object([("metadata", metadata), ("weight_map", .object(weightMap))]).pretty.utf8).write(to: URL(fileURLWithPath: path))
    }

    func testShardedCheckpoint() throws {
        let index = try makeShards()
        try writeIndex(index, [("a", "model-00001-of-00002.safetensors"), ("b", "model-00001-of-00002.safetensors"),
                               ("c", "model-00002-of-00002.safetensors")])
        let source = try openSafeTensors(path: index)
        let sharded = try XCTUnwrap(source as? ShardedSafeTensors)
        XCTAssertEqual(sharded.path, index)
        XCTAssertEqual(sharded.metadata?["total_size"], 16)
        XCTAssertEqual(sharded.shards.count, 2)
        XCTAssertEqual(sharded.entries.map(\.name), ["b", "a", "c"])
        XCTAssertEqual(try sharded.tensor("b").floats, [1, 2])
        XCTAssertEqual(try sharded.tensor("c").shape, [1, 1])
        XCTAssertEqual(try sharded.tensor("c").floats, [4])
        sharded.release("b")
        XCTAssertThrowsError(try sharded.tensor("d")) { XCTAssertEqual("\($0)", index + ": no tensor named \"d\"") }
        XCTAssertTrue(try openSafeTensors(path: folder + "model-00002-of-00002.safetensors") is SafeTensorsFile)
    }

    func testShardedMismatches() throws {
        let index = try makeShards()
        func refused(_ weightMap: [(String, JSON)], _ phrase: String, line: UInt = #line) throws {
            try writeIndex(index, weightMap)
            XCTAssertThrowsError(try ShardedSafeTensors(indexPath: index), line: line) {
                XCTAssertTrue("\($0)".contains(phrase), "\"\($0)\" lacks \"\(phrase)\"", line: line)
            }
        }
        let one = "model-00001-of-00002.safetensors", two = "model-00002-of-00002.safetensors"
        try refused([("a", .string(one)), ("b", .string(one)), ("c", .string(two)), ("d", .string(two))],
                    index + ": weight_map puts \"d\" in \(two), which does not hold it")
        try refused([("a", .string(one)), ("b", .string(two)), ("c", .string(two))], "\(one) holds \"b\", which the weight_map does not assign to it")
        try refused([("a", .string(one)), ("c", .string(two))], "\(one) holds \"b\", which the weight_map does not assign to it")
        try refused([("a", .string(one)), ("b", .string(one)), ("c", "model-00003-of-00002.safetensors")],
                    folder + "model-00003-of-00002.safetensors: cannot open file")
        try refused([("a", .string("../\(one)"))], "which is not a plain file name")
        try refused([("a", 1)], "weight_map entry for \"a\" must be a shard file name")

        try Data("{\"metadata\": {}}".utf8).write(to: URL(fileURLWithPath: index))
        XCTAssertThrowsError(try ShardedSafeTensors(indexPath: index)) { XCTAssertTrue("\($0)".contains("no \"weight_map\" object")) }
        try Data("{\"weight_map\": {}".utf8).write(to: URL(fileURLWithPath: index))
        XCTAssertThrowsError(try ShardedSafeTensors(indexPath: index)) { XCTAssertTrue("\($0)".contains("index is not valid JSON")) }
    }

    // MARK: -

    static let referenceFile = """
    cAMAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJub3RlIjoid3JpdHRlbiBieSBzYWZldGVuc29ycyAwLjguMCIsImZvcm1hdCI6Im5wIn0sInU2NCI6eyJkdHlwZSI6IlU2NCIsInNoYXBlIjpbMV0sImRhdGFfb2Zmc2V0cyI6WzAsOF19LCJpNjQiOnsiZHR5cGUiOiJJNjQiLCJzaGFwZSI6WzJdLCJkYXRhX29mZnNldHMiOls4LDI0XX0sImY2NCI6eyJkdHlwZSI6IkY2NCIsInNoYXBlIjpbM10sImRhdGFfb2Zmc2V0cyI6WzI0LDQ4XX0sImVtcHR5Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlswLDNdLCJkYXRhX29mZnNldHMiOls0OCw0OF19LCJmMzIiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzIsM10sImRhdGFfb2Zmc2V0cyI6WzQ4LDcyXX0sInNjYWxhciI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbXSwiZGF0YV9vZmZzZXRzIjpbNzIsNzZdfSwidTMyIjp7ImR0eXBlIjoiVTMyIiwic2hhcGUiOlsxXSwiZGF0YV9vZmZzZXRzIjpbNzYsODBdfSwiaTMyIjp7ImR0eXBlIjoiSTMyIiwic2hhcGUiOlsxXSwiZGF0YV9vZmZzZXRzIjpbODAsODRdfSwiZjE2Ijp7ImR0eXBlIjoiRjE2Iiwic2hhcGUiOlszXSwiZGF0YV9vZmZzZXRzIjpbODQsOTBdfSwidTE2Ijp7ImR0eXBlIjoiVTE2Iiwic2hhcGUiOlsyXSwiZGF0YV9vZmZzZXRzIjpbOTAsOTRdfSwiaTE2Ijp7ImR0eXBlIjoiSTE2Iiwic2hhcGUiOlsxLDJdLCJkYXRhX29mZnNldHMiOls5NCw5OF19LCJpOCI6eyJkdHlwZSI6Ikk4Iiwic2hhcGUiOlsyXSwiZGF0YV9vZmZzZXRzIjpbOTgsMTAwXX0sInU4Ijp7ImR0eXBlIjoiVTgiLCJzaGFwZSI6WzNdLCJkYXRhX29mZnNldHMiOlsxMDAsMTAzXX0sImJvb2wiOnsiZHR5cGUiOiJCT09MIiwic2hhcGUiOlszXSwiZGF0YV9vZmZzZXRzIjpbMTAzLDEwNl19fSAg//////////8AAAAAAAAAgP////////9/AAAAAAAA+L8AAAAAAADgvwAAAAAAAOA/AAAAAAAAgD4AAAA/AABAPwAAgD8AAKA/AABgQAAoa+75////ADwAwf97//8BANT+LAGAfwECAwEAAQ==
    """
}
