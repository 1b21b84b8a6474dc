import DGBase
import XCTest
@testable import DGCheckpoint
import DGTensor

/// A fresh folder per test, removed afterwards, and helpers to write and check files in it.
class SafeTensorsTestCase: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "dginstyle-\(type(of: self))-\(UUID().uuidString)/"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// `Tests/Fixtures`, found from this source file so tests run from any directory.
    static let fixtures: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()   // DGCheckpointTests
        url.deleteLastPathComponent()   // Tests
        return url.appendingPathComponent("Fixtures").path + "/"
    }()

    func folderContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
    }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = folder + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A safetensors file from its parts; `length` overrides the header length field.
    @discardableResult
    func write(_ name: String, header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) throws -> String {
        var n = (length ?? UInt64(header.count)).littleEndian
        let prefix = withUnsafeBytes(of: &n) { Array($0) }
        return try write(name, prefix + header + data)
    }

    @discardableResult
    func write(_ name: String, header: String, data: [UInt8] = [], length: UInt64? = nil) throws -> String {
        try write(name, header: Array(header.utf8), data: data, length: length)
    }

    /// Opening `path` fails with a FileError naming the file and saying `phrase`.
    func assertRefused(_ path: String, _ phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try SafeTensorsFile(path: path)
            XCTFail("\(path) was accepted; expected \"\(phrase)\"", file: file, line: line)
        } catch let error as FileError {
            XCTAssertEqual(error.path, path, file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(path + ": "), error.description, file: file, line: line)
            XCTAssertTrue(error.description.contains(phrase), "\"\(error.description)\" lacks \"\(phrase)\"", file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), "not one line: \(error.description)", file: file, line: line)
        } catch {
            XCTFail("not a FileError: \(error)", file: file, line: line)
        }
    }

    /// A contiguous tensor holding exactly `bytes`.
    func tensor(_ dtype: DType, _ shape: [Int], _ bytes: [UInt8]) throws -> Tensor {
        try bytes.withUnsafeBytes { try Tensor(shape: shape, dtype: dtype, bytes: $0) }
    }

    func bytes(of tensor: Tensor) -> [UInt8] {
        let c = tensor.contiguous()
        return withExtendedLifetime(c) { Array(c.rawBytes) }
    }
}
