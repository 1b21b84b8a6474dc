import DGBase
import Foundation
import XCTest
import DGCheckpoint
import DGLayers

/// Paths and readers for `Tests/Fixtures`.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    static func json(_ relative: String) throws -> JSON {
        try JSON.parse(bytes: Data(contentsOf: url(relative)))
    }

    static let manifest: JSON = {
        do { return try json("sd15-manifest.json") } catch { fatalError("cannot read sd15-manifest.json: \(error)") }
    }()

    /// name -> shape for one model of the SD 1.5 manifest.
    static func manifestShapes(_ model: String) throws -> [String: [Int]] {
        let pairs = try XCTUnwrap(manifest[model]?.objectPairs, "manifest has no \(model)")
        return try Dictionary(uniqueKeysWithValues: pairs.map { name, shape in
            (name, try XCTUnwrap(shape.array?.compactMap(\.int), "bad shape for \(name)"))
        })
    }

    /// The manifest's config for `model`, with the `_class_name` that diffusers writes into a
    /// config.json (the manifest leaves it out).
    static func manifestConfig(_ model: String) throws -> JSON {
        var config = try XCTUnwrap(manifest["configs"]?[model], "manifest has no config for \(model)")
        let classNames = ["unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "controlnet": "ControlNetModel"]
        if let name = classNames[model] { config.set("_class_name", .string(name)) }
        return config
    }

    /// name -> shape from a safetensors file's header alone: an 8-byte little-endian length,
    /// then that many bytes of JSON.
    static func safetensorsShapes(_ relative: String) throws -> [String: [Int]] {
        let handle = try FileHandle(forReadingFrom: url(relative))
        defer { try? handle.close() }
        let lengthBytes = try XCTUnwrap(handle.read(upToCount: 8))
        XCTAssertEqual(lengthBytes.count, 8)
        let length = lengthBytes.reversed().reduce(0) { $0 << 8 | Int($1) }
        let header = try JSON.parse(bytes: XCTUnwrap(handle.read(upToCount: length)))
        var shapes: [String: [Int]] = [:]
        for (name, entry) in try XCTUnwrap(header.objectPairs) where name != "__metadata__" {
            shapes[name] = try XCTUnwrap(entry["shape"]?.array?.compactMap(\.int), "bad shape for \(name)")
        }
        return shapes
    }
}

/// Asserts that `model`'s parameters are exactly `expected` (names and shapes, in any order),
/// listing what is missing, unexpected or of another shape; and that building allocated nothing.
func assertParameters(of model: Module, equal expected: [String: [Int]], _ label: String,
                      file: StaticString = #filePath, line: UInt = #line) {
    let named = model.namedParameters()
    var actual: [String: [Int]] = [:]
    for (name, p) in named {
        if actual[name] != nil { XCTFail("\(label): duplicate parameter \(name)", file: file, line: line) }
        actual[name] = p.shape
        if p.value != nil || p.grad != nil { XCTFail("\(label): \(name) was allocated while building", file: file, line: line) }
    }
    let missing = expected.keys.filter { actual[$0] == nil }.sorted()
    let unexpected = actual.keys.filter { expected[$0] == nil }.sorted()
    let wrongShape = expected.keys.filter { actual[$0] != nil && actual[$0] != expected[$0] }.sorted()
        .map { "\($0): built \(actual[$0]!), expected \(expected[$0]!)" }
    func list(_ items: [String]) -> String {
        items.prefix(20).joined(separator: "\n  ") + (items.count > 20 ? "\n  ... (\(items.count) in all)" : "")
    }
    XCTAssertTrue(missing.isEmpty, "\(label): \(missing.count) missing:\n  \(list(missing))", file: file, line: line)
    XCTAssertTrue(unexpected.isEmpty, "\(label): \(unexpected.count) unexpected:\n  \(list(unexpected))", file: file, line: line)
    XCTAssertTrue(wrongShape.isEmpty, "\(label): \(wrongShape.count) of another shape:\n  \(list(wrongShape))", file: file, line: line)
}
