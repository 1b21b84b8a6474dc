import ArgumentParser
import DGBase
import DGCheckpoint
import DGModels
import DGTensor
import Foundation

extension OutputFormat: ExpressibleByArgument {}

extension DType: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument.lowercased() {
        case "f32", "fp32", "float32": self = .f32
        case "f16", "fp16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        default: return nil
        }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert any supported checkpoint to another layout, format or precision.",
        discussion: """
        Formats: diffusers (a pipeline or model folder that diffusers loads unchanged), ldm (one safetensors \
        file in the original layout: model.diffusion_model.* / first_stage_model.* / cond_stage_model.transformer.*, \
        or control_model.* for a ControlNet), native (one dginstyle file, docs/FORMAT.md), safetensors (one \
        model with diffusers names). Conversion streams one tensor at a time and writes atomically.
        Sources: diffusers folders (safetensors or .bin weights), safetensors files, sharded indexes, native \
        files, and PyTorch checkpoints (.ckpt, .pt, .pth, .bin).
        \(pickleFormatsHelp)
        """)

    @Argument(help: "Source: a diffusers folder, safetensors file (any layout), PyTorch .ckpt/.pt/.pth/.bin, sharded index, or native file.")
    var source: String

    @Argument(help: "Destination file or folder.")
    var destination: String

    @Option(help: "Output format: diffusers, ldm, native or safetensors.")
    var format: OutputFormat

    @Option(help: "Store floating-point tensors as f32, f16 or bf16 (round to nearest even).")
    var dtype: DType?

    @Option(help: "A diffusers folder to take model configs (and tokenizer/scheduler files) from; needed for LDM files that are not standard SD 1.5.")
    var config: String?

    @Flag(help: "Read the UNet's EMA weights (model_ema.*) of an LDM file.")
    var ema = false

    @Option(help: "Weight variant to read from a diffusers folder (fp16, bf16).")
    var variant: String?

    @Option(help: "Write only this component (unet, vae, text_encoder, controlnet).")
    var component: String?

    @Flag(help: "Native format: compress each tensor with zstd (byte-split for 16/32-bit floats).")
    var compress = false

    @Flag(help: "Replace the destination if it exists.")
    var overwrite = false

    @Flag(help: "Skip checking tensor names and shapes against the models the configs describe.")
    var noCheck = false

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    func run() throws {
        let ck = try Checkpoint.open(source, options: .init(configDirectory: config, ema: ema, variant: variant))
        if !ck.unexpectedKeys.isEmpty {
            warn("\(source): \(ck.unexpectedKeys.count) keys belong to no known model and are not converted: \(ck.unexpectedKeys.prefix(5).joined(separator: ", "))")
        }
        if !noCheck { try checkAgainstConfigs(ck) }
        if format == .diffusers && ck.isPipeline && ck.file("tokenizer/vocab.json") == nil && component == nil {
            warn("no tokenizer files: diffusers needs tokenizer/ to load the pipeline; pass --config with a diffusers pipeline folder to copy them")
        }
        try ck.write(to: destination, format: format,
                     options: WriteOptions(dtype: dtype, compress: compress, component: component, overwrite: overwrite, progress: !quiet))
        if !quiet { emit("wrote \(destination) (\(format.rawValue))") }
    }

    /// Names and shapes must be those of the model each config builds: catches a non-SD 1.5
    /// single file read with the SD 1.5 defaults before anything is written.
    private func checkAgainstConfigs(_ ck: Checkpoint) throws {
        for c in ck.components {
            guard let config = c.config else { continue }
            let (_, model) = try buildModel(config: config)
            let problems = compareToModel(c.source.entries, model)
            if !problems.isEmpty {
                let hint = ck.layout == .ldm || ck.layout == .controlnetLDM ? "; pass --config DIR with the model's diffusers configs" : ""
                throw FileError(c.source.path, "\(c.name) does not match its config: \(problems.prefix(4).joined(separator: "; "))\(problems.count > 4 ? "; ..." : "")\(hint)")
            }
        }
    }
}

/// What `inspect --help` and `convert --help` say about PyTorch pickles.
let pickleFormatsHelp = """
    PyTorch checkpoints are read in the torch.save zip format (PyTorch >= 1.6) by our own pickle \
    reader, which runs nothing: it rebuilds only what a weights file needs (the allow-list of torch.load \
    with weights_only=True: dicts, OrderedDict, tensors, parameters, storages, torch.device/Size), takes \
    a few objects Lightning pickles beside the weights (pytorch_lightning.*, argparse.Namespace, \
    omegaconf.*, numpy scalars) as inert placeholders with a warning, and refuses anything else \
    (os.system, builtins.eval, subprocess.*, unknown classes) with one line naming it, since a pickle \
    can name any function to be called. Also refused: the pre-1.6 legacy format, TorchScript archives, \
    deflate-compressed archives, big-endian files. See docs/PICKLE.md.
    """
