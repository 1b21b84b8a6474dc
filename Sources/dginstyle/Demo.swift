import ArgumentParser
import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGEval
import DGTraining
import Foundation

/// One of the three generators the demo compares, and where its dataset goes.
struct DemoVariant {
    let folder: String
    let title: String
    let headline: String
    let useSourceUNet: Bool
    let mrlf: Bool

    static let all = [
        DemoVariant(folder: "a-source-unet", title: "(A) CN ON U^S", headline: "(a) ControlNet on U^S, one pass", useSourceUNet: true, mrlf: false),
        DemoVariant(folder: "b-style-swap", title: "(B) STYLE SWAP", headline: "(b) Style Swap: ControlNet on U^P, one pass", useSourceUNet: false, mrlf: false),
        DemoVariant(folder: "c-style-swap-mrlf", title: "(C) SWAP + MRLF", headline: "(c) Style Swap + MRLF", useSourceUNet: false, mrlf: true),
    ]
}

struct Demo: ParsableCommand {
    static let defaultPipeline = "weights/tiny-sd.dginstyle"
    static let defaultSourceUNet = "weights/tiny-unet-source.dginstyle"
    static let defaultControlNet = "weights/tiny-controlnet.dginstyle"
    /// What makes each shipped file, for the message when one is missing.
    static let makers = [
        defaultPipeline: "the base-model recipes in recipes/ (see recipes/README.md)",
        defaultSourceUNet: "the U^S (DreamBooth on game scenes) recipe in recipes/ (see recipes/README.md)",
        defaultControlNet: "the ControlNet recipe in recipes/ (see recipes/README.md)",
    ]

    static let configuration = CommandConfiguration(
        abstract: "DGInStyle in miniature: label maps, three generators on the same masks, and a contact sheet.",
        discussion: """
        Draws --count street-scene label maps with synth (game style, --seed) into OUT/masks, then generates \
        one image per mask three ways with the generate command's code, each a dataset folder (images/, \
        labels/, vis/, generation.jsonl): OUT/a-source-unet — the ControlNet on the UNet it was trained \
        with (U^S, source style), one pass; OUT/b-style-swap — Style Swap: the same ControlNet on the base \
        UNet U^P, one pass; OUT/c-style-swap-mrlf — Style Swap with Multi-resolution Latent Fusion (a second \
        pass at twice --resolution). Every variant uses the same crops, captions and seeds. \
        OUT/contact-sheet.png has one row per item and the columns mask (Cityscapes colours) | (a) | (b) | (c) \
        under a title strip. Finally the mask adherence (R², see `measure masks`) of each variant is printed. \
        A rerun with the same settings reuses finished images; --overwrite starts over. The default models \
        are the ones shipped in weights/ (made by the recipes in recipes/).
        """)

    @Option(help: "Output folder.")
    var out = "out/demo"

    @Option(help: "Number of label maps (rows of the contact sheet).")
    var count = 4

    @Option(help: "Seed of the label maps and of the generation.")
    var seed: UInt64 = 8100

    @Option(help: "Base Stable Diffusion pipeline (its UNet is U^P).")
    var pipeline = Demo.defaultPipeline

    @Option(help: "The source-domain UNet U^S the ControlNet was trained on (a file holding a unet).")
    var unetSource = Demo.defaultSourceUNet

    @Option(help: "The semantic ControlNet (20 condition channels).")
    var controlnet = Demo.defaultControlNet

    @OptionGroup var sampling: SamplingArguments<MiniatureSampling>

    @Option(help: "Crop side in pixels (a multiple of 64); MRLF's second pass runs at twice this.")
    var resolution = 128

    @Option(help: "Size WxH of the synth label maps the crops are taken from.")
    var maskSize = "256x128"

    @Flag(help: "Remove this demo's earlier outputs in OUT first.")
    var overwrite = false

    @Flag(help: "Do not draw progress bars.")
    var quiet = false

    func checkModel(_ path: String, _ option: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else { return }
        if let maker = Demo.makers[path] {
            throw GenerationError("\(path): not found; it is made by \(maker), or pass \(option) PATH")
        }
        throw GenerationError("\(path): no such file or folder (\(option))")
    }

    func job(_ v: DemoVariant) -> DatasetJob {
        var j = DatasetJob(pipeline: pipeline, controlnet: controlnet, unet: v.useSourceUNet ? unetSource : nil,
                           labels: out + "/masks", out: out + "/" + v.folder)
        j.count = count
        j.seed = seed
        j.sampling = sampling.options
        j.resolution = resolution
        j.mrlf = v.mrlf
        return j
    }

    func run() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard resolution > 0, resolution % 64 == 0 else { throw ValidationError("--resolution \(resolution) is not a positive multiple of 64") }
        let size = maskSize.lowercased().split(separator: "x").compactMap { Int($0) }
        guard size.count == 2 else { throw ValidationError("--mask-size must be WxH, e.g. 256x128, not \(maskSize)") }
        try checkModel(pipeline, "--pipeline")
        try checkModel(unetSource, "--unet-source")
        try checkModel(controlnet, "--controlnet")
        // Every model is loaded and checked before anything is written or removed.
        let sourcePipe = try ControlNetPipeline(pipeline: pipeline, controlnet: controlnet, unet: unetSource)
        let swapPipe = try ControlNetPipeline(pipeline: pipeline, controlnet: controlnet)
        guard let cn = swapPipe.controlnet, cn.conditioning_channels == Cityscapes.classCount + 1 else {
            throw GenerationError("\(controlnet): the ControlNet takes \(swapPipe.controlnet?.conditioning_channels ?? 0) condition channels, not the \(Cityscapes.classCount + 1) of one-hot Cityscapes labels")
        }
        guard resolution % swapPipe.sizeMultiple == 0 else {
            throw GenerationError("--resolution \(resolution) is not a multiple of \(swapPipe.sizeMultiple) (the VAE's and UNet's downsampling)")
        }
        let fm = FileManager.default
        let jobs = DemoVariant.all.map(job)
        if overwrite {
            for name in ["masks", "contact-sheet.png"] + DemoVariant.all.map(\.folder) { try? fm.removeItem(atPath: out + "/" + name) }
        } else {
            for j in jobs {
                guard let data = fm.contents(atPath: j.out + "/run.json") else { continue }
                guard (try? JSON.parse(bytes: Array(data))) == j.settings else {
                    throw GenerationError("\(j.out): holds a run with other settings; pass --overwrite or another --out")
                }
            }
        }

        let start = Date()
        try Synth.writeDataset(to: out + "/masks", count: count, width: size[0], height: size[1], style: .game, seed: seed,
                               overwrite: true, progress: !quiet)
        emit("masks: \(count) synth street scenes (\(size[0])x\(size[1]), seed \(seed)) in \(out)/masks")
        var names: [String] = []
        for (v, j) in zip(DemoVariant.all, jobs) {
            let t0 = Date()
            let generator = try DatasetGenerator(j)
            let summary = try generator.run(progress: !quiet, progressLabel: String(v.headline.prefix(3)),
                                            loaded: v.useSourceUNet ? sourcePipe : swapPipe)
            let adherence = try MaskAdherence.measure(j.out)
            emit("\(v.headline): \(summary.generated) generated, \(summary.skipped) reused, "
                 + String(format: "%.1f s", Date().timeIntervalSince(t0)) + ", mask R² " + String(format: "%.3f", adherence.mean)
                 + " -> \(j.out)")
            names = generator.shardItems.map(\.name)
        }

        var rows: [[Image]] = []
        for name in names {
            let labels = try PNG.readLabels(out + "/" + DemoVariant.all[0].folder + "/labels/" + name + "_labelTrainIds.png")
            var row = [Cityscapes.colorize(labels)]
            for v in DemoVariant.all { row.append(try PNG.read(out + "/" + v.folder + "/images/" + name + ".png")) }
            rows.append(row)
        }
        let sheet = try ContactSheet.compose(rows: rows, titles: ["MASK"] + DemoVariant.all.map(\.title))
        try PNG.write(sheet, to: out + "/contact-sheet.png")
        emit("contact sheet: \(out)/contact-sheet.png (\(sheet.width)x\(sheet.height); a row per item, columns mask | (a) | (b) | (c)), "
             + String(format: "%.1f s in all", Date().timeIntervalSince(start)))
    }
}
