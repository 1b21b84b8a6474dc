import ArgumentParser
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation

extension LoRAFormat: ExpressibleByArgument {}

/// `--unet-lora L --lora-scale s` of sample, generate and swap: Style Swap as a dial.
struct UNetLoRAArguments: ParsableArguments {
    @Option(help: "A LoRA (kohya or diffusers safetensors) merged into the UNet (and the text encoder, if it adapts it).")
    var unetLora: String?

    @Option(help: "How much of --unet-lora: 0 is the UNet as it is (Style Swap on U^P), 1 the LoRA's U^S; between interpolates.")
    var loraScale: Float = 1

    func validate() throws {
        guard loraScale.isFinite else { throw ValidationError("--lora-scale must be a finite number") }
    }
}

/// The models a LoRA adapts, taken from `holders` (component name -> the checkpoint holding
/// it), with the LoRA merged in at `scale`, each as a one-component in-memory checkpoint.
func mergeLoRA(_ path: String, scale: Float, into holders: [String: Checkpoint]) throws -> [String: Checkpoint] {
    let lora = try LoRAFile.read(path)
    var out: [String: Checkpoint] = [:]
    let classNames = ["unet": "UNet2DConditionModel", "text_encoder": "CLIPTextModel"]
    for name in Set(lora.layers.map(\.component)).sorted() {
        guard let ck = holders[name], let c = ck.component(name) ?? (ck.components.count == 1 ? ck.components[0] : nil),
              c.className == classNames[name] else {
            throw FileError(path, "adapts a \(name), which \(holders[name]?.path ?? "the base") does not hold")
        }
        let (_, model) = try loadModel(c)
        try lora.merge(into: model, component: name, scale: scale, path: path)
        out[name] = Checkpoint(inMemory: [try Component(model: model, config: c.config ?? [:])])
    }
    return out
}

struct LoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA files: merge one into a UNet or pipeline, extract one from two UNets, convert between layouts.",
        discussion: """
        Both layouts people exchange are read and written: kohya-ss (lora_unet_..._to_q.lora_down.weight, \
        .lora_up.weight, .alpha) and diffusers/PEFT (unet....to_q.lora_A.weight, lora_B.weight, alpha in the \
        lora_adapter_metadata header entry). `inspect L` describes one. See docs/LORA.md.
        """,
        subcommands: [Merge.self, Extract.self, Convert.self])

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bake a LoRA into a UNet or a pipeline: W + scale x (alpha/rank) x up·down, as diffusers' fuse_lora.")

        @Option(help: "A pipeline (diffusers folder or native file) or a UNet (any checkpoint holding one).")
        var base: String

        @Option(help: "The LoRA (kohya or diffusers safetensors).")
        var lora: String

        @Option(help: "Multiplier of the LoRA (0: the base unchanged).")
        var scale: Float = 1

        @OptionGroup var output: PipelineOutput

        func validate() throws {
            try output.validate()
            guard scale.isFinite else { throw ValidationError("--scale must be a finite number") }
        }

        func run() throws {
            let baseCk = try Checkpoint.open(base)
            if baseCk.isPipeline {
                return try output.write(base: base, unet: nil, vae: nil, textEncoder: nil, controlnet: nil, controlnetConfig: nil,
                                        lora: (lora, scale))
            }
            let merged = try mergeLoRA(lora, scale: scale, into: ["unet": baseCk])
            try merged["unet"]!.write(to: output.out, format: output.format,
                                      options: WriteOptions(dtype: output.dtype, compress: output.compress, overwrite: output.overwrite, progress: !output.quiet))
            if !output.quiet { emit("wrote \(output.out): the UNet of \(base) + LoRA \(lora) at scale \(scale) (\(output.format.rawValue))") }
        }
    }

    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A LoRA from two UNets: the truncated SVD of each layer's weight difference (kohya's extract_lora_from_models).",
            discussion: """
            For each layer --targets selects, ΔW = W_tuned − W_base (a convolution's flattened to [out, in·k·k]) is \
            factored by LAPACK's SVD (sgesdd, in OpenBLAS) and cut to --rank: up = U_r·diag(S_r), down = V_rᵀ, \
            alpha = rank. Each layer's line gives the share of ‖ΔW‖² the rank keeps (Σ_{i<r} σ_i² / Σ σ_i²); \
            layers that did not change get no adapter. Unlike kohya, the factors are not clamped, so each product \
            is the best rank-r approximation of its difference.
            """)

        @Option(help: "The base UNet U^P (a pipeline, a UNet folder or any checkpoint holding one).")
        var base: String

        @Option(help: "The fine-tuned UNet U^S, of the same architecture.")
        var tuned: String

        @Option(help: "Rank of every adapter.")
        var rank: Int

        @Option(help: "Layers: attn, attn+ff (kohya's default: every linear layer of the transformers), all-linear, all.")
        var targets: LoRATargets = .attnFF

        @Option(help: "Write the LoRA here (without: only the report).")
        var out: String?

        @Option(help: "Layout of the written file: diffusers or kohya.")
        var format: LoRAFormat = .kohya

        @Flag(help: "Print the report as JSON.")
        var json = false

        func validate() throws {
            guard rank > 0 else { throw ValidationError("--rank must be positive") }
        }

        func run() throws {
            func unet(_ path: String) throws -> Component {
                let ck = try Checkpoint.open(path, options: .init(configDirectory: base))
                guard let c = ck.component("unet") ?? (ck.components.count == 1 ? ck.components[0] : nil), c.className == "UNet2DConditionModel" else {
                    throw FileError(path, "holds no UNet2DConditionModel")
                }
                return c
            }
            let (lora, report) = try LoRAFile.extract(base: try unet(base), tuned: try unet(tuned), rank: rank, targets: targets)
            if let out { try lora.write(to: out, format: format) }
            let total = report.reduce(0.0) { $0 + $1.differenceNorm * $1.differenceNorm }
            let kept = report.reduce(0.0) { $0 + $1.keptEnergy * $1.differenceNorm * $1.differenceNorm }
            if json {
                emit(JSON.object([
                    ("layers", .array(report.map { ["module": .string($0.module), "rank": .int($0.rank), "difference_norm": .double($0.differenceNorm),
                                                    "kept_energy": .double($0.keptEnergy)] })),
                    ("kept_energy", total > 0 ? .double(kept / total) : .null), ("parameters", .int(lora.parameterCount)),
                    ("out", out.map { .string($0) } ?? .null),
                ]).pretty)
                return
            }
            var lines = report.map { "  \($0.module)  rank \($0.rank)  ‖ΔW‖ " + String(format: "%.4g  kept %.2f%%", $0.differenceNorm, 100 * $0.keptEnergy) }
            lines.append(total > 0 ? "\(report.count) layers changed; rank \(rank) keeps " + String(format: "%.2f%%", 100 * kept / total)
                                         + " of the total ‖ΔW‖²; \(formatCount(lora.parameterCount)) parameters"
                                   : "the two UNets have the same weights in every targeted layer: nothing to extract")
            if let out { lines.append("wrote \(out) (\(format.rawValue))") }
            emit(lines.joined(separator: "\n"))
        }
    }

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rewrite a LoRA in the other layout (kohya <-> diffusers); the values stay as they are.")

        @Argument(help: "The LoRA to read.")
        var source: String

        @Argument(help: "The file to write.")
        var destination: String

        @Option(help: "diffusers or kohya.")
        var format: LoRAFormat

        func run() throws {
            let lora = try LoRAFile.read(source)
            try lora.write(to: destination, format: format)
            emit("wrote \(destination): \(lora.layers.count) layers, \(lora.format.rawValue) -> \(format.rawValue)")
        }
    }
}
