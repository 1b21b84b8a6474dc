import ArgumentParser
import DGAutograd
import DGBase
import DGCheckpoint
import DGData
import DGEval
import DGModels
import DGTensor
import DGTraining
import Foundation

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segment",
        abstract: "Train and evaluate a small semantic segmentation network (the yardstick of generated data).",
        discussion: "See docs/SEGMENT.md for the network, the loss and the conventions of the report.",
        subcommands: [SegmentTrain.self, SegmentEval.self])
}

struct SegmentTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a segmenter on one or more labelled datasets.",
        discussion: """
        Each --data folder is a dataset in the GTA5 layout (images/ + labels/, as synth and generate write \
        them) or the Cityscapes layout. The folders are pooled: every training crop comes from a file drawn \
        uniformly from all of their images, so a folder weighs by its number of images. Crops are random \
        --crop squares (images smaller than that are padded with ignored pixels), flipped left-right with \
        probability 1/2 (with --photometric, then colour-jittered, blurred and noised: the no-diffusion \
        augmentation baseline, docs/SEGMENT.md). Loss: cross-entropy over the 19 Cityscapes classes, label 255 ignored. AdamW, \
        linear warm-up then cosine decay to 0. Writes OUT/metrics.jsonl, OUT/loss.svg, OUT/checkpoints/ and \
        finally OUT/segmenter.dginstyle. Stop at any time and continue with --resume.
        """)

    @Option(help: "Labelled training data (repeat to mix several folders).")
    var data: [String] = []

    @Option(help: "Run folder: checkpoints/, metrics.jsonl, loss.svg, segmenter.dginstyle.")
    var out: String

    @Option(help: "Optimizer updates.")
    var steps = SegmentationOptions().steps

    @Option(help: "Side of the square training crops (a multiple of 8).")
    var crop = SegmentationOptions().crop

    @Option(help: "Crops per update.")
    var batchSize = SegmentationOptions().batchSize

    @Option(help: "Peak learning rate (AdamW).")
    var lr = SegmentationOptions().learningRate

    @Option(help: "AdamW decoupled weight decay.")
    var weightDecay = SegmentationOptions().weightDecay

    @Option(help: "Warm-up updates (linear from 0).")
    var warmupSteps = SegmentationOptions().warmupSteps

    @Flag(help: "No random horizontal flips.")
    var noFlip = false

    @Flag(help: "Weigh each pixel's loss by its class, 1 / ln(1.02 + the class's share of the training pixels) (ENet's weights): rare, thin classes get learnt.")
    var balanceClasses = false

    @Flag(help: "Photometric augmentation of every crop: mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue), Gaussian blur and Gaussian noise, each with probability 1/2, drawn per crop from --seed.")
    var photometric = false

    @Option(help: "Seed of the initial weights and of the crops.")
    var seed: UInt64 = 0

    @Option(help: "Channels of the four resolution levels, comma separated.")
    var channels = "16,32,64,96"

    @Option(help: "Split of a Cityscapes-layout folder.")
    var split = "train"

    @Option(help: "Checkpoint every this many updates (and after the last); 0: only at the end.")
    var checkpointEvery = 200

    @Option(help: "Checkpoints kept (the newest).")
    var keep = 2

    @Flag(help: "Continue from the newest checkpoint in --out.")
    var resume = false

    @Flag(help: "No progress bar.")
    var quiet = false

    @Option(help: "Also log to: tensorboard (event files in OUT/logs) or none.")
    var reportTo: ReportTo = .tensorboard

    func validate() throws {
        guard !data.isEmpty else { throw ValidationError("give at least one --data folder") }
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must not be negative") }
        guard keep > 0 else { throw ValidationError("--keep must be at least 1") }
    }

    func run() throws {
        var options = SegmentationOptions()
        options.steps = steps
        options.crop = crop
        options.batchSize = batchSize
        options.learningRate = lr
        options.weightDecay = weightDecay
        options.warmupSteps = warmupSteps
        options.flip = !noFlip
        options.seed = seed
        options.balanceClasses = balanceClasses
        options.photometric = photometric
        try options.validate()
        let levels = channels.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !levels.isEmpty, levels.allSatisfy({ $0 != nil }) else { throw ValidationError("--channels must be integers separated by commas, not \(channels)") }
        var config = SegmenterConfig(classNames: Cityscapes.classNames)
        config.blockOutChannels = levels.map { $0! }
        config = try SegmenterConfig(json: config.json)  // the same checks as a loaded config
        guard crop % (1 << (config.blockOutChannels.count - 1)) == 0 else {
            throw ValidationError("--crop \(crop) must be a multiple of \(1 << (config.blockOutChannels.count - 1)) for \(config.blockOutChannels.count) levels")
        }

        let pooled = try SegmentationData(roots: data, split: split)
        try pooled.checkSizes()
        let model = Segmenter(config)
        model.initializeParameters(seed: seed)
        let trainer = try SegmentationTrainer(model: model, crops: SegmentationCrops(data: pooled, crop: crop, seed: seed, flip: !noFlip, photometric: photometric),
                                              options: options)
        var settings = RunSettings(output: out)
        settings.checkpointEvery = checkpointEvery
        settings.keep = keep
        settings.resume = resume
        settings.progress = !quiet
        settings.label = "segment train"
        settings.exportFormat = .native
        settings.tensorboard = reportTo == .tensorboard
        let run = TrainingRun(trainer: trainer, settings: settings)
        run.log = { if !quiet { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } }
        if !quiet {
            let counts = zip(pooled.roots, pooled.counts).map { "\($0.0) (\($0.1))" }.joined(separator: ", ")
            FileHandle.standardError.write(Data("segmenter: \(model.parameterCount) parameters; data: \(counts)\n".utf8))
            if let w = trainer.classWeights {
                let list = zip(config.classNames, w).map { "\($0.0) " + String(format: "%.1f", $0.1) }.joined(separator: ", ")
                FileHandle.standardError.write(Data("class weights: \(list)\n".utf8))
            }
        }
        let summary = try run.run()
        if Profiler.enabled { emit("per update:\n" + Profiler.report(runs: max(1, summary.endStep - summary.startStep))) }
        if summary.startStep == summary.endStep {
            emit("already trained (\(summary.endStep) steps); model: \(summary.model ?? "-")")
            return
        }
        var line = "trained steps \(summary.startStep + 1)-\(summary.endStep) of \(steps)" + String(format: " in %.1f s", summary.seconds)
        if let l = summary.recentLoss { line += String(format: ", recent loss %.4f", l) }
        if let m = summary.model { line += "; model: \(m)" }
        emit(line)
    }
}

struct SegmentEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Per-class IoU, mIoU and pixel accuracy of a segmenter on a labelled dataset.",
        discussion: """
        Every image of --data is segmented whole (the network is fully convolutional; sides are padded to a \
        multiple of 8 by repeating edge pixels, and the prediction cropped back). Pixels labelled 255 (or any \
        id that is no class) are not counted. mIoU is the mean IoU over the classes present in the ground \
        truth of the whole evaluated set; classes absent from it have IoU null. The report also gives the \
        mean over every class present or predicted (mmsegmentation's nanmean: a class predicted but absent \
        counts 0), pixel accuracy, pixel counts and the confusion matrix (rows: truth, columns: prediction). \
        All inputs are checked before anything is computed or written.
        """)

    @Option(help: "A trained segmenter (segmenter.dginstyle, or one of its training checkpoints).")
    var model: String

    @Option(help: "Labelled data to evaluate on (GTA5 or Cityscapes layout).")
    var data: String

    @Option(help: "Split of a Cityscapes-layout folder.")
    var split = "val"

    @Flag(help: "Print the report as one JSON object instead of a table.")
    var json = false

    @Option(help: "Also write the JSON report to this file.")
    var out: String?

    @Option(help: "Write each image's prediction in Cityscapes colours to this folder.")
    var predDir: String?

    @Flag(help: "Add each image's confusion matrix to the JSON report (\"per_image\": image name and row-major counts).")
    var perImage = false

    @Flag(help: "No progress bar.")
    var quiet = false

    func run() throws {
        let segmenter = try Segmenter.load(from: model)
        let set = try SegmentationData(roots: [data], split: split)
        let started = Date()
        let (confusion, images, each) = try SegmentationEvaluation.evaluate(segmenter, data: set, predictions: predDir,
                                                                            perImage: perImage, progress: !quiet)
        var report = SegmentationReport(confusion: confusion, classNames: segmenter.config.classNames, images: images,
                                        model: model, data: [data], seconds: Date().timeIntervalSince(started))
        if perImage { report.perImage = each }
        if let out { try writeFileAtomically(out, Array((report.json.pretty + "\n").utf8)) }
        emit(json ? report.json.compact : report.text)
    }
}
