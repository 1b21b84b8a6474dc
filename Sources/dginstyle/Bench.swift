import ArgumentParser
import DGCheckpoint
import DGTensor
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks and the inputs they need (see docs/PERFORMANCE.md).",
        subcommands: [MakeCheckpoint.self, Compression.self, Generation.self])
}

extension Bench {
    /// A checkpoint of the right names and shapes with random values: the full SD 1.5 sizes
    /// without downloading SD 1.5.
    struct MakeCheckpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "make-checkpoint",
            abstract: "Write a safetensors file with every tensor of a manifest section, random values.")

        @Option(help: "The parameter manifest (Tests/Fixtures/sd15-manifest.json).")
        var manifest: String

        @Option(help: "Manifest section: ldm_single_file, unet, vae, text_encoder, controlnet, controlnet_ldm.")
        var section = "ldm_single_file"

        @Option(help: "Element type of the tensors.")
        var dtype: DType = .f32

        @Option(help: "Seed of the values.")
        var seed: UInt64 = 0

        @Argument(help: "Output .safetensors file.")
        var output: String

        func run() throws {
            guard let data = FileManager.default.contents(atPath: manifest) else { throw CheckpointError(manifest, "cannot read") }
            let json = try JSON.parse(bytes: Array(data))
            guard let pairs = json[section]?.objectPairs else { throw CheckpointError(manifest, "has no section \(section)") }
            let entries = try pairs.map { name, shape -> TensorEntry in
                guard let dims = shape.array?.compactMap(\.int) else { throw CheckpointError(manifest, "bad shape for \(name)") }
                return TensorEntry(name: name, dtype: dtype, shape: dims)
            }
            let total = entries.reduce(0) { $0 + $1.byteCount }
            let progress = ProgressBar("make-checkpoint", total: Double(total), unit: "B")
            let writer = try SafeTensorsWriter(path: output, entries: entries, metadata: [("format", "pt")])
            for (i, e) in entries.enumerated() {
                let t = randomWeights(e.shape, seed: seed &+ UInt64(i)).converted(to: dtype)
                try t.withRawBytes { try writer.write($0) }
                progress.advance(by: Double(e.byteCount))
            }
            try writer.finish()
            progress.finish()
            emit("wrote \(output): \(entries.count) tensors, \(ProgressBar.bytes(Double(total)))")
        }
    }

    /// What per-tensor zstd saves on f32 and f16 weights and what it costs to load.
    struct Compression: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure native-format compression (size, write and load time) on a checkpoint's weights.")

        @Argument(help: "Any checkpoint this program reads.")
        var source: String

        @Option(help: "Scratch directory for the native files.")
        var scratch = NSTemporaryDirectory()

        @Option(help: "zstd level.")
        var level: Int32 = 3

        func run() throws {
            let ck = try Checkpoint.open(source)
            var rows: [String] = ["| weights | stored as | size | vs raw | write | load + verify |", "|---|---|---|---|---|---|"]
            for dtype in [DType.f32, .f16] {
                var raw = 0.0
                for compress in [false, true] {
                    let path = scratch + "/bench-compression-\(getpid())-\(dtype.name)-\(compress).dginstyle"
                    defer { try? FileManager.default.removeItem(atPath: path) }
                    var options = WriteOptions(dtype: dtype, compress: compress, overwrite: true, progress: false)
                    options.compressionLevel = level
                    let t0 = Date()
                    try ck.write(to: path, format: .native, options: options)
                    let write = Date().timeIntervalSince(t0)
                    let size = Double((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
                    if !compress { raw = size }
                    // Load every tensor (verifying its checksum) and touch it, as a model load would.
                    let t1 = Date()
                    let back = try Checkpoint.open(path)
                    var sink: UInt8 = 0
                    for c in back.components {
                        for e in c.source.entries {
                            try c.source.tensor(e.name).withRawBytes { bytes in
                                var i = 0
                                while i < bytes.count { sink ^= bytes[i]; i += 4096 }
                            }
                        }
                    }
                    let load = Date().timeIntervalSince(t1)
                    rows.append("| \(dtype.name) | \(compress ? "zstd-\(level) (byte-split)" : "raw") | \(ProgressBar.bytes(size)) | \(String(format: "%.1f%%", 100 * size / raw)) | \(String(format: "%.2f s", write)) | \(String(format: "%.2f s", load))\(sink == 255 ? " " : "") |")
                }
            }
            emit(rows.joined(separator: "\n"))
        }
    }
}

/// Normal-ish values (sum of four uniforms) with the spread of initialised weights; chunks are
/// seeded by position, so the result does not depend on the thread count.
func randomWeights(_ shape: [Int], seed: UInt64, std: Float = 0.02) -> Tensor {
    let t = Tensor(zeros: shape)
    let n = t.count
    let chunk = 1 << 16
    t.withMutableFloats { out in
        let base = out.baseAddress!
        Parallel.forEach((n + chunk - 1) / chunk, minimumChunk: 4) { blocks in
            for b in blocks {
                var s = (seed &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(b) &+ 1) &* 0xBF58_476D_1CE4_E5B9
                for i in (b * chunk)..<min(n, (b + 1) * chunk) {
                    var acc: Float = 0
                    for _ in 0..<4 {
                        s ^= s << 13; s ^= s >> 7; s ^= s << 17
                        acc += Float(s >> 40) * (1.0 / Float(1 << 24))
                    }
                    base[i] = (acc - 2) * std * 1.7320508
                }
            }
        }
    }
    return t
}
