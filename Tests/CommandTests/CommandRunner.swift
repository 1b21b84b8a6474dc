import Foundation
import XCTest

/// What a command printed and how it ended.
struct CommandResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs the built `dginstyle` binary as a user would; shared by every command test.
protocol CommandRunning {}

extension CommandRunning {
    func binary() throws -> URL {
        let b = Bundle.main.bundleURL.appendingPathComponent("dginstyle")
        guard FileManager.default.isExecutableFile(atPath: b.path) else { throw XCTSkip("dginstyle binary not found at \(b.path)") }
        return b
    }

    /// A configured, not yet started process (progress bars off, output discarded).
    func process(_ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = try binary()
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["DGINSTYLE_NO_PROGRESS"] = "1"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        return p
    }

    /// Runs to the end, in `directory` when given (relative paths then resolve there).
    func run(_ arguments: [String], in directory: String? = nil) throws -> CommandResult {
        let p = try process(arguments)
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        return try collect(p)
    }

    /// Starts `p` and waits for it, with its output captured.
    func collect(_ p: Process) throws -> CommandResult {
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return CommandResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                             stderr: String(decoding: e, as: UTF8.self))
    }

    /// A fresh scratch directory, removed by the caller's `defer`.
    func scratch() -> String {
        let dir = NSTemporaryDirectory() + "dginstyle-cmd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}
