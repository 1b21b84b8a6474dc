import DGBase
import DGTensor
import Foundation
import XCTest
@testable import DGCheckpoint

final class NativeFormatTests: XCTestCase {
    private func sampleTensors() -> [(TensorEntry, Tensor)] {
        var rng = SystemRandomNumberGenerator()
        let f = Tensor(shape: [4, 5, 3], floats: (0..<60).map { _ in Float.random(in: -2...2, using: &rng) })
        return [
            (TensorEntry(name: "a.weight", dtype: .f32, shape: [4, 5, 3]), f),
            (TensorEntry(name: "a.half", dtype: .f16, shape: [4, 5, 3]), f.converted(to: .f16)),
            (TensorEntry(name: "a.brain", dtype: .bf16, shape: [4, 5, 3]), f.converted(to: .bf16)),
            (TensorEntry(name: "ids", dtype: .i64, shape: [3]), Tensor(shape: [3], floats: [1, 2, 49407]).converted(to: .i64)),
            (TensorEntry(name: "empty", dtype: .f32, shape: [0, 7]), Tensor(zeros: [0, 7])),
            (TensorEntry(name: "scalar", dtype: .f32, shape: []), Tensor(shape: [], floats: [3.5])),
            (TensorEntry(name: "zeros", dtype: .f32, shape: [4096]), Tensor(zeros: [4096])),
        ]
    }

    private func write(_ path: String, compression: Bool) throws -> [(TensorEntry, Tensor)] {
        let tensors = sampleTensors()
        let w = try NativeWriter(path: path, kind: "model")
        w.addComponent("unet", className: "UNet2DConditionModel", metadata: [("format", "pt")])
        try w.addFile("unet/config.json", Array("{\"_class_name\": \"UNet2DConditionModel\"}".utf8))
        for (e, t) in tensors {
            try t.withRawBytes {
                try w.addTensor(component: "unet", entry: e, bytes: $0,
                                compression: compression ? Compression.preferred(for: e.dtype.byteSize) : .none)
            }
        }
        try w.finish()
        return tensors
    }

    func testRoundTripIsBitIdenticalWithAndWithoutCompression() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for compression in [false, true] {
            let path = dir + "/m-\(compression).dginstyle"
            let tensors = try write(path, compression: compression)
            let file = try NativeFile(path: path)
            XCTAssertEqual(file.components.map(\.name), ["unet"])
            XCTAssertEqual(file.components[0].metadata?.first?.1, "pt")
            XCTAssertEqual(try file.file("unet/config.json"), Array("{\"_class_name\": \"UNet2DConditionModel\"}".utf8))
            let source = file.source("unet")
            XCTAssertEqual(source.entries, tensors.map(\.0))
            for (e, t) in tensors {
                let back = try source.tensor(e.name)
                XCTAssertEqual(back.dtype, e.dtype)
                XCTAssertEqual(back.shape, e.shape)
                XCTAssertEqual(back.withRawBytes { Array($0) }, t.withRawBytes { Array($0) }, e.name)
            }
            for t in file.tensors { XCTAssertEqual(t.offset % NativeFormat.alignment, 0) }
            if compression {
                XCTAssertEqual(file.tensors.first { $0.entry.name == "zeros" }?.compression, .zstdByteSplit)
            }
        }
    }

    func testEveryFlippedDataByteIsCaught() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for compression in [false, true] {
            let path = dir + "/m.dginstyle"
            try? FileManager.default.removeItem(atPath: path)
            _ = try write(path, compression: compression)
            let clean = try Data(contentsOf: URL(fileURLWithPath: path))
            let file = try NativeFile(path: path)
            // Flip one byte inside each stored region in turn: the read of that tensor must fail.
            for t in file.tensors where t.storedLength > 0 {
                var bad = clean
                let at = t.offset + t.storedLength / 2
                bad[at] ^= 0x40
                let badPath = dir + "/bad.dginstyle"
                try bad.write(to: URL(fileURLWithPath: badPath))
                let reopened = try NativeFile(path: badPath)
                XCTAssertThrowsError(try reopened.source("unet").tensor(t.entry.name)) { error in
                    XCTAssertTrue("\(error)".contains("checksum"), "\(error)")
                    XCTAssertTrue("\(error)".contains(t.entry.name), "\(error)")
                }
            }
            // A flipped header byte is caught before anything is parsed.
            var bad = clean
            bad[bad.count - 10] ^= 0x01
            try bad.write(to: URL(fileURLWithPath: dir + "/badheader.dginstyle"))
            XCTAssertThrowsError(try NativeFile(path: dir + "/badheader.dginstyle")) { error in
                XCTAssertTrue("\(error)".contains("header checksum"), "\(error)")
            }
        }
    }

    func testMalformedNativeFilesAreRejected() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.dginstyle"
        _ = try write(path, compression: false)
        let clean = try Data(contentsOf: URL(fileURLWithPath: path))
        func expect(_ data: Data, _ phrase: String, line: UInt = #line) {
            let p = dir + "/case.dginstyle"
            try! data.write(to: URL(fileURLWithPath: p))
            XCTAssertThrowsError(try NativeFile(path: p), line: line) { error in
                XCTAssertTrue("\(error)".contains(p), "\(error)", line: line)
                XCTAssertTrue("\(error)".contains(phrase), "\(error)", line: line)
            }
        }
        expect(Data(), "too short")
        expect(Data("NOTSTYLE".utf8) + clean.dropFirst(8), "bad magic")
        for cut in [40, clean.count / 2, clean.count - 1] { expect(clean.prefix(cut), "truncated") }
        var huge = clean
        huge.replaceSubrange(16..<24, with: withUnsafeBytes(of: UInt64(150_000_000).littleEndian) { Data($0) })
        expect(huge, "more than")

        // A header that is valid JSON and checksummed but describes impossible storage.
        func withHeader(_ edit: (inout String) -> Void) -> Data {
            let headerOffset = Int(clean.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) })
            var header = String(decoding: clean[headerOffset...], as: UTF8.self)
            edit(&header)
            let bytes = Array(header.utf8)
            var out = clean.prefix(headerOffset)
            out.append(contentsOf: bytes)
            var prologue = Data(NativeFormat.magic)
            for v in [UInt64(headerOffset), UInt64(bytes.count), bytes.withUnsafeBytes { XXH64.hash($0) }] {
                withUnsafeBytes(of: v.littleEndian) { prologue.append(contentsOf: $0) }
            }
            out.replaceSubrange(0..<32, with: prologue)
            return out
        }
        expect(withHeader { $0 = $0.replacingOccurrences(of: "\"F32\"", with: "\"F31\"") }, "unknown dtype")
        expect(withHeader { $0 = $0.replacingOccurrences(of: "\"none\"", with: "\"lzma\"") }, "unknown compression")
        expect(withHeader { $0 = $0.replacingOccurrences(of: "[4,5,3]", with: "[4,5,4]") }, "needs")
        expect(withHeader { $0 = $0.replacingOccurrences(of: "[4096]", with: "[4611686018427387904,4]") }, "overflows")
        expect(withHeader { $0 = $0.replacingOccurrences(of: "\"format\":\"dginstyle\"", with: "\"format\":\"other\"") }, "does not describe")
        expect(withHeader { $0 = String(repeating: "[", count: 5000) }, "nested deeper")
        expect(withHeader { $0 = $0.replacingOccurrences(of: "\"name\":\"a.half\"", with: "\"name\":\"a.weight\"") }, "stored twice")
        expect(withHeader { h in
            // Point the second tensor at the first one's bytes.
            let file = try! NativeFile(path: path)
            h = h.replacingOccurrences(of: "\"offset\":\(file.tensors[1].offset),", with: "\"offset\":\(file.tensors[0].offset),")
        }, "overlap")
    }

    func testXXH64MatchesReferenceVectors() {
        // Published XXH64 test vectors (seed 0).
        XCTAssertEqual(XXH64.hash(UnsafeRawBufferPointer(start: nil, count: 0)), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(Array("a".utf8).withUnsafeBytes { XXH64.hash($0) }, 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(Array("abc".utf8).withUnsafeBytes { XXH64.hash($0) }, 0x44BC_2CF5_AD77_0999)
        let long = Array("Nobody inspects the spammish repetition".utf8)
        XCTAssertEqual(long.withUnsafeBytes { XXH64.hash($0) }, 0xFBCE_A83C_8A37_8BF1)
    }

    func testByteSplitRoundTrips() {
        let src: [UInt8] = Array(0..<24)
        var planes = [UInt8](repeating: 0, count: 24)
        var back = [UInt8](repeating: 0, count: 24)
        src.withUnsafeBytes { s in planes.withUnsafeMutableBytes { ByteSplit.split(s, elementSize: 4, into: $0) } }
        XCTAssertEqual(Array(planes[0..<6]), [0, 4, 8, 12, 16, 20])
        planes.withUnsafeBytes { s in back.withUnsafeMutableBytes { ByteSplit.join(s, elementSize: 4, into: $0) } }
        XCTAssertEqual(back, src)
    }
}
