import ArgumentParser
import DGBase
import DGCheckpoint
import Foundation

extension Bench {
    /// The SD 1.5 workloads of docs/PERFORMANCE.md in one go. Each runs in its own child process (this executable's
    /// `bench model`), so every peak RSS is that workload's alone.
    struct Suite: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "all",
            abstract: "Run every SD 1.5 model workload (each in its own process) and print one table.",
            discussion: """
            Workloads are WORKLOAD:RESOLUTION:BATCH[:ckpt]; the default list is the UNet at 256 and 512 px \
            (batch 1 and 2), ControlNet + UNet at 512 px, a ControlNet training step at 256 px with and without \
            gradient checkpointing, and VAE encode / decode at 512 px. tools/bench-vs-torch.sh runs the same list \
            in PyTorch beside it.
            """)

        static let defaultWorkloads = ["unet:256:1", "unet:512:1", "unet:512:2", "controlnet:512:1", "controlnet-train-step:256:1",
                                       "controlnet-train-step:256:1:ckpt", "vae-encode:512:1", "vae-decode:512:1"]

        @Argument(help: "Workloads (default: the SD 1.5 table's list).")
        var workloads: [String] = []

        @Option(help: "Timed runs per workload (the median is reported).")
        var runs = 3

        @Flag(help: "Print one JSON object per workload instead of the table.")
        var json = false

        func run() throws {
            guard let exe = Bundle.main.executablePath else { throw ValidationError("cannot locate the dginstyle executable") }
            let list = workloads.isEmpty ? Self.defaultWorkloads : workloads
            var rows: [String] = []
            for spec in list {
                let parts = spec.split(separator: ":").map(String.init)
                guard (3...4).contains(parts.count), Int(parts[1]) != nil, Int(parts[2]) != nil,
                      parts.count == 3 || parts[3] == "ckpt", Model.Workload(rawValue: parts[0]) != nil else {
                    throw ValidationError("bad workload '\(spec)': expected WORKLOAD:RESOLUTION:BATCH[:ckpt], WORKLOAD one of \(Model.Workload.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                var args = ["bench", "model", parts[0], "--resolution", parts[1], "--batch", parts[2], "--runs", String(runs), "--json"]
                if parts.count == 4 { args.append("--checkpointing") }
                let process = Process()
                process.executableURL = URL(fileURLWithPath: exe)
                process.arguments = args
                let pipe = Pipe()
                process.standardOutput = pipe
                try process.run()
                let out = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                guard process.terminationStatus == 0,
                      let line = String(decoding: out, as: UTF8.self).split(separator: "\n").last,
                      let result = try? JSON.parse(String(line)) else {
                    throw CommandFailure("benchmark workload \(spec) failed (exit status \(process.terminationStatus))")
                }
                if json { emit(result.compact); continue }
                let seconds = result["seconds"]?.double ?? .nan, peak = result["peak_rss_mb"]?.double ?? .nan
                let cpu = result["cpu_seconds"]?.double ?? .nan
                rows.append("| \(parts[0])\(parts.count == 4 ? " (checkpointing)" : "") | \(parts[1]) | \(parts[2]) | \(String(format: "%.2f", seconds)) s | \(String(format: "%.2f", cpu)) s | \(String(format: "%.0f", peak)) MB |")
            }
            if json { return }
            emit("| workload | px | batch | median time | CPU time | peak RSS |\n|---|---|---|---|---|---|")
            emit(rows.joined(separator: "\n"))
        }
    }
}

/// A run-time failure of a command, printed as one line with exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
