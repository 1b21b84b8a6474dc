import Foundation

/// The fixtures copied into the project (Tests/Fixtures), found from this file's location so
/// the tests run from any working directory.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static let tiny = root + "/sd-tiny"
    static let tinySD = tiny + "/tiny-sd"
    static let tinyControlNet = tiny + "/tiny-controlnet"
    static let tinyLDM = tiny + "/tiny-sd-ldm.safetensors"
    static let tinyControlNetLDM = tiny + "/tiny-controlnet-ldm.safetensors"
    static let manifest = root + "/sd15-manifest.json"

    /// A fresh scratch directory, removed by the caller's `defer`.
    static func scratch(_ name: String = #function) -> String {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        let dir = NSTemporaryDirectory() + "dginstyle-\(safe)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}
