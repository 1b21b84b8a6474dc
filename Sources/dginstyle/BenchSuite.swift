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
            Workloads are WORKLOAD:RESOLUTION:BATCH[:ckpt][:bf16][:8bit] (ckpt: gradient checkpointing; bf16: \
            bf16 weights, or the frozen UNet in bf16 for a training step; 8bit: a training step with 8-bit \
            AdamW state); the default list is the UNet at 256 \
            and 512 px (batch 1 and 2), ControlNet + UNet at 512 px, a ControlNet training step at 256 px with and \
            without gradient checkpointing, a full UNet fine-tune and a rank-16 LoRA step at 256 and 512 px, and \
            VAE encode / decode at 512 px. tools/bench-vs-torch.sh runs the same list in PyTorch beside it.
            """)

        static let defaultWorkloads = ["unet:256:1", "unet:512:1", "unet:512:2", "controlnet:512:1", "controlnet-train-step:256:1",
                                       "controlnet-train-step:256:1:ckpt", "unet-train-step:256:1", "lora-train-step:256:1",
                                       "unet-train-step:512:1", "lora-train-step:512:1", "vae-encode:512:1", "vae-decode:512:1"]

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
                let extras = parts.dropFirst(3)
                guard parts.count >= 3, Int(parts[1]) != nil, Int(parts[2]) != nil, Model.Workload(rawValue: parts[0]) != nil,
                      extras.allSatisfy(["ckpt", "bf16", "8bit"].contains), Set(extras).count == extras.count else {
                    throw ValidationError("bad workload '\(spec)': expected WORKLOAD:RESOLUTION:BATCH[:ckpt][:bf16][:8bit], WORKLOAD one of \(Model.Workload.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                var args = ["bench", "model", parts[0], "--resolution", parts[1], "--batch", parts[2], "--runs", String(runs), "--json"]
                if extras.contains("ckpt") { args.append("--checkpointing") }
                if extras.contains("bf16") { args += ["--dtype", "bf16"] }
                if extras.contains("8bit") { args += ["--optimizer", "adamw8bit"] }
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
                let notes = (extras.contains("ckpt") ? ["checkpointing"] : []) + (extras.contains("bf16") ? ["bf16"] : [])
                    + (extras.contains("8bit") ? ["AdamW8bit"] : [])
                rows.append("| \(parts[0])\(notes.isEmpty ? "" : " (\(notes.joined(separator: ", ")))") | \(parts[1]) | \(parts[2]) | \(String(format: "%.2f", seconds)) s | \(String(format: "%.2f", cpu)) s | \(String(format: "%.0f", peak)) MB |")
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
