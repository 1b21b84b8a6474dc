import DGBase
import XCTest
@testable import DGCheckpoint
import DGTensor

/// Every way a safetensors file can be broken is refused at open with one clear line.
final class SafeTensorsMalformedTests: SafeTensorsTestCase {
    private func tensorHeader(_ fields: String, name: String = "t") -> String { "{\"\(name)\":{\(fields)}}" }

    func testTooShort() throws {
        assertRefused(try write("empty.safetensors", []), "file is 0 bytes, too short")
        assertRefused(try write("short.safetensors", [1, 2, 3, 4, 5, 6, 7]), "file is 7 bytes, too short")
    }

    func testHugeHeaderLengthIsRefusedWithoutReadingIt() throws {
        let path = try write("huge.safetensors", header: "{}", length: 150_000_000)
        let start = Date()
        assertRefused(path, "header is 150000000 bytes, more than the 100000000 allowed")
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        // A length that does not even fit an Int must not trap.
        assertRefused(try write("max.safetensors", header: "{}", length: .max), "header is 18446744073709551615 bytes, more than")
        assertRefused(try write("limit.safetensors", header: "{}", length: 100_000_001), "more than the 100000000 allowed")
    }

    func testHeaderPastTheEnd() throws {
        assertRefused(try write("past.safetensors", header: "{}", length: 1000), "header is 1000 bytes but only 2 bytes follow")
        assertRefused(try write("past1.safetensors", header: "{} ", length: 4), "header is 4 bytes but only 3 bytes follow")
    }

    func testHeaderNotUTF8() throws {
        let header: [UInt8] = Array("{\"a".utf8) + [0xFF] + Array("\":{}}".utf8)
        assertRefused(try write("utf8.safetensors", header: header), "header is not valid UTF-8")
        // Even where JSON would not look: in the padding.
        assertRefused(try write("utf8pad.safetensors", header: Array("{}".utf8) + [0xC3]), "header is not valid UTF-8")
    }

    func testHeaderMustStartWithBrace() throws {
        assertRefused(try write("space.safetensors", header: " {}"), "header does not start with '{'")
        assertRefused(try write("array.safetensors", header: "[]"), "header does not start with '{'")
        assertRefused(try write("zero.safetensors", header: ""), "header does not start with '{'")
        assertRefused(try write("deep.safetensors", header: String(repeating: "[", count: 100_000)), "does not start with '{'")
    }

    func testInvalidJSON() throws {
        assertRefused(try write("json.safetensors", header: "{\"t\": }"), "header is not valid JSON at byte 6")
        assertRefused(try write("trail.safetensors", header: "{} x"), "trailing characters")
        assertRefused(try write("unterminated.safetensors", header: "{\"t\":{\"dtype\":\"F32\""), "header is not valid JSON")
    }

    func testDeepNestingDoesNotCrash() throws {
        let arrays = "{\"t\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        assertRefused(try write("deep1.safetensors", header: arrays), "nested deeper than 64 levels")
        let objects = String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)
        assertRefused(try write("deep2.safetensors", header: objects), "nested deeper than 64 levels")
    }

    func testMetadata() throws {
        assertRefused(try write("m1.safetensors", header: "{\"__metadata__\":{\"format\":1}}"),
                      "__metadata__ value for \"format\" must be a string, not a number")
        assertRefused(try write("m2.safetensors", header: "{\"__metadata__\":[\"pt\"]}"), "__metadata__ must be an object of strings, not an array")
        assertRefused(try write("m3.safetensors", header: "{\"__metadata__\":null}"), "__metadata__ must be an object")
        assertRefused(try write("m4.safetensors", header: "{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}"), "must be a string, not an object")
    }

    func testTensorFields() throws {
        let ok = "\"shape\":[1],\"data_offsets\":[0,4]"
        assertRefused(try write("dtype.safetensors", header: tensorHeader("\"dtype\":\"F4\",\(ok)", name: "w.1"), data: [0, 0, 0, 0]),
                      "tensor \"w.1\" has unknown dtype \"F4\"")
        assertRefused(try write("dtype2.safetensors", header: tensorHeader("\"dtype\":32,\(ok)")), "tensor \"t\": dtype must be a string")
        assertRefused(try write("lower.safetensors", header: tensorHeader("\"dtype\":\"f32\",\(ok)")), "unknown dtype \"f32\"")
        assertRefused(try write("missing.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"data_offsets\":[0,4]"), data: [0, 0, 0, 0]),
                      "tensor \"t\" is missing the field \"shape\"")
        assertRefused(try write("missing2.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[1]")), "missing the field \"data_offsets\"")
        assertRefused(try write("extra.safetensors", header: tensorHeader("\"dtype\":\"F32\",\(ok),\"stride\":[1]"), data: [0, 0, 0, 0]),
                      "tensor \"t\" has an unexpected field \"stride\"")
        assertRefused(try write("notobj.safetensors", header: "{\"t\":[1,2]}"), "tensor \"t\" must be an object, not an array")
        assertRefused(try write("negative.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]")),
                      "shape must be an array of non-negative integers, not [2,-1]")
        assertRefused(try write("float.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]")),
                      "shape must be an array of non-negative integers")
        assertRefused(try write("shapeint.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]")),
                      "shape must be an array")
        assertRefused(try write("three.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]")),
                      "data_offsets must be [begin, end]")
        assertRefused(try write("negoff.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]")),
                      "data_offsets must be [begin, end]")
        assertRefused(try write("bigoff.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]")),
                      "out of range")
        assertRefused(try write("dup.safetensors", header: "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", data: [1, 2]),
                      "duplicate key \"t\"")
    }

    func testSizes() throws {
        assertRefused(try write("backwards.safetensors", header: tensorHeader("\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]"), data: [UInt8](repeating: 0, count: 8)),
                      "tensor \"t\": data_offsets [8, 4] end before they begin")
        assertRefused(try write("length.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]"), data: [0, 0, 0, 0]),
                      "tensor \"t\": data_offsets [0, 4] hold 4 bytes but a F32 tensor of shape [2] is 8 bytes")
        assertRefused(try write("overflow.safetensors", header: tensorHeader("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]")),
                      "shape [4294967296, 4294967296] has too many elements (overflows 64 bits)")
        assertRefused(try write("overflow2.safetensors", header: tensorHeader("\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]")),
                      "too many bytes (overflows 64 bits)")
        // A zero dimension makes any other size fine: nothing to multiply out.
        let zero = try write("zero.safetensors", header: tensorHeader("\"dtype\":\"F64\",\"shape\":[9223372036854775807,0],\"data_offsets\":[0,0]"))
        XCTAssertEqual(try SafeTensorsFile(path: zero).entries.first?.shape, [Int.max, 0])
    }

    func testLayout() throws {
        func two(_ a: (Int, Int), _ b: (Int, Int)) -> String {
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[\(a.1 - a.0)],\"data_offsets\":[\(a.0),\(a.1)]},"
                + "\"b\":{\"dtype\":\"U8\",\"shape\":[\(b.1 - b.0)],\"data_offsets\":[\(b.0),\(b.1)]}}"
        }
        let data = [UInt8](repeating: 7, count: 12)
        assertRefused(try write("gap.safetensors", header: two((0, 4), (8, 12)), data: data),
                      "gap in the data: tensor \"b\" at data_offsets [8, 12] starts at 8 but the previous tensor \"a\" ends at 4")
        assertRefused(try write("overlap.safetensors", header: two((0, 8), (4, 12)), data: data),
                      "tensor \"b\" at data_offsets [4, 12] overlaps the previous tensor \"a\", which ends at 8")
        assertRefused(try write("same.safetensors", header: two((0, 12), (0, 12)), data: data), "overlaps the previous tensor")
        assertRefused(try write("first.safetensors", header: two((4, 8), (8, 12)), data: data),
                      "the first tensor's data, \"a\" at data_offsets [4, 8], must start at offset 0")
        assertRefused(try write("truncated.safetensors", header: two((0, 4), (4, 16)), data: data),
                      "file is truncated: the tensors need 16 bytes of data but only 12 follow the header")
        assertRefused(try write("extra.safetensors", header: two((0, 4), (4, 8)), data: data),
                      "4 unexpected bytes after the last tensor's data")
        assertRefused(try write("nothing.safetensors", header: "{}", data: [0]), "1 unexpected bytes after")
        // Header order does not matter, only the offsets: b may come first.
        let swapped = try SafeTensorsFile(path: try write("swapped.safetensors", header: two((4, 12), (0, 4)), data: data))
        XCTAssertEqual(swapped.entries.map(\.name), ["b", "a"])
    }

    func testMissingFiles() {
        let missing = folder + "missing.safetensors"
        assertRefused(missing, "No such file")
        assertRefused(folder, "not a regular file")
        XCTAssertThrowsError(try openSafeTensors(path: folder + "missing.safetensors.index.json")) { error in
            XCTAssertTrue("\(error)".hasPrefix(self.folder + "missing.safetensors.index.json: "), "\(error)")
        }
    }

    /// A real file cut short anywhere is refused with a message, never a crash or a bad read.
    func testTruncatedFixture() throws {
        let source = Self.fixtures + "sd-tiny/tiny-sd/vae/diffusion_pytorch_model.fp16.safetensors"
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: source)))
        let dataOffset = try SafeTensorsFile(path: source).dataOffset
        let cuts: [(Int, String)] = [
            (0, "too short"), (5, "too short"), (8, "only 0 bytes follow"), (9, "only 1 bytes follow"),
            (dataOffset - 1, "bytes follow the length"), (dataOffset, "file is truncated"),
            (dataOffset + 1, "file is truncated"), (bytes.count / 2, "file is truncated"), (bytes.count - 1, "file is truncated"),
        ]
        for (cut, phrase) in cuts {
            assertRefused(try write("cut-\(cut).safetensors", Array(bytes[..<cut])), phrase)
        }
        assertRefused(try write("longer.safetensors", bytes + [0]), "1 unexpected bytes after")
    }
}
