import ArgumentParser
import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGEval
import DGModels
import DGTensor
import DGTraining
import Foundation

struct Measure: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure generated data: style (photo vs game), mask adherence, and the experiment's report.",
        subcommands: [MeasureStyle.self, MeasureMasks.self, MeasureVAE.self, MeasureReport.self])
}

/// A set's name in reports: its folder's last component.
func setName(_ path: String) -> String {
    URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
}

func number(_ v: Double) -> JSON { v.isFinite ? .double((v * 1e6).rounded() / 1e6) : .null }

struct MeasureStyle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "style",
        abstract: "How photo-like sets of images are, by a photo-vs-game classifier fit on reference renders.",
        discussion: """
        Each image becomes a vector of style statistics (mean and spread of each colour, saturation, \
        colourfulness, luminance contrast, edge and Laplacian energy, share of flat pixels, gradient kurtosis, \
        4x4-block contrast, distinct colours, dark share). A logistic regression on standardised features \
        (L2 0.01, Newton's method) is fit on --photo (positive) vs --game images, with a quarter of each \
        held out (split by --seed) to report its accuracy. Then for each --images set: the mean P(photo) and \
        the share classified photo (P > 0.5). A folder's images are DIR/images/*.png when DIR/images exists \
        (a synth dataset, a generate output), else DIR/*.png. Images of any size compare (every statistic is \
        a per-pixel average), but edge statistics depend on scale: use references rendered at the scale of \
        the images measured.
        """)

    @Option(help: "Photo-domain reference images (e.g. `synth --style photo`).")
    var photo: String

    @Option(help: "Game-domain reference images (e.g. `synth --style game`).")
    var game: String

    @Option(help: "A set of images to score (repeatable).")
    var images: [String] = []

    @Option(help: "Seed of the held-out split (and of the VAE's posterior samples).")
    var seed: UInt64 = 0

    @Option(help: "Pass the reference images through this pipeline's VAE (encode, decode) first, so they carry the reconstruction blur generated images have.")
    var referenceVae: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one --images DIR") }
        let vae = try referenceVae.map(VAERoundTrip.loadVAE)
        func references(_ dir: String) throws -> [[Double]] {
            try StyleMeasure.imageFiles(dir).enumerated().map { i, file in
                var image = try PNG.read(file).rgb()
                if let vae { image = try VAERoundTrip.roundTrip(image, vae: vae, file: file, seed: seed &+ UInt64(i)) }
                return StyleFeatures.of(image)
            }
        }
        let photoRows = try references(photo)
        let gameRows = try references(game)
        let measure = try StyleMeasure(photo: photoRows, game: gameRows, seed: seed)
        let scores = try images.map { dir in measure.score(try StyleMeasure.features(of: StyleMeasure.imageFiles(dir)), path: dir) }
        if json {
            let sets: [JSON] = scores.map { s in
                .object([
                    ("name", .string(setName(s.path))), ("path", .string(s.path)), ("count", .int(s.count)),
                    ("mean_p_photo", number(s.meanPhotoProbability)), ("photo_share", number(s.photoShare)),
                    ("distance_photo", number(s.distancePhoto)), ("distance_game", number(s.distanceGame)),
                    ("photo_closeness", number(s.photoCloseness)),
                    ("feature_means", .object(zip(StyleFeatures.names, s.featureMeans).map { ($0, number($1)) })),
                ])
            }
            let out: JSON = .object([
                ("photo", .string(photo)), ("game", .string(game)),
                ("classifier", .object([
                    ("kind", "logistic regression on standardised style features"),
                    ("photo_images", .int(photoRows.count)), ("game_images", .int(gameRows.count)),
                    ("train", .int(measure.trainCount)), ("held_out", .int(measure.heldOutCount)),
                    ("held_out_accuracy", number(measure.heldOutAccuracy)), ("seed", .string(String(seed))),
                    ("reference_gap", number(measure.referenceGap)), ("reference_vae", referenceVae.map { .string($0) } ?? nil),
                    ("features", .array(StyleFeatures.names.map { .string($0) })),
                ])),
                ("sets", .array(sets)),
            ])
            emit(out.pretty)
        } else {
            var text = "classifier: \(photoRows.count) photo + \(gameRows.count) game images, held-out accuracy "
                + String(format: "%.3f", measure.heldOutAccuracy) + " (\(measure.heldOutCount) images); photo-game distance "
                + String(format: "%.3f", measure.referenceGap) + "\n"
            for s in scores {
                text += "\(s.path): \(s.count) images, mean P(photo) " + String(format: "%.3f", s.meanPhotoProbability)
                    + ", classified photo " + String(format: "%.1f%%", 100 * s.photoShare)
                    + ", distance to photo " + String(format: "%.3f", s.distancePhoto) + " / game " + String(format: "%.3f", s.distanceGame)
                    + " (photo closeness " + String(format: "%.3f", s.photoCloseness) + ")\n"
            }
            emit(text)
        }
    }
}

struct MeasureMasks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "masks",
        abstract: "How well images follow their label maps: the mask-alignment R² of each image.",
        discussion: """
        DIR is a generate output (images/NAME.png + labels/NAME_labelTrainIds.png) or any GTA5-layout dataset \
        (a synth folder). R² = 1 - (colour variance within classes) / (total colour variance): 1 when every \
        class region is one flat colour of its own, near 0 for an image unrelated to its mask. Ignore pixels \
        (255) are left out. Prints count, mean, median, min and max.
        """)

    @Option(help: "A generate output folder or GTA5-layout dataset (repeatable).")
    var images: [String] = []

    @Flag(help: "Print JSON: one object per folder (an array when more than one).")
    var json = false

    func run() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one --images DIR") }
        let results = try images.map { try MaskAdherence.measure($0) }
        if json {
            let objects: [JSON] = results.map { r in
                .object([
                    ("name", .string(setName(r.path))), ("path", .string(r.path)), ("count", .int(r.values.count)),
                    ("mean", number(r.mean)), ("median", number(r.median)),
                    ("min", number(r.values.min() ?? 0)), ("max", number(r.values.max() ?? 0)),
                ])
            }
            emit((objects.count == 1 ? objects[0] : .array(objects)).pretty)
        } else {
            emit(results.map { r in
                "\(r.path): \(r.values.count) images, mask R² mean " + String(format: "%.4f", r.mean) + ", median "
                    + String(format: "%.4f", r.median) + ", min " + String(format: "%.4f", r.values.min() ?? 0) + ", max "
                    + String(format: "%.4f", r.values.max() ?? 0)
            }.joined(separator: "\n"))
        }
    }
}

struct MeasureVAE: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vae",
        abstract: "The VAE's ceiling: a labelled dataset through a pipeline's VAE, written as a dataset with the same labels.",
        discussion: """
        Every image of --data (GTA5 or Cityscapes layout) is encoded, a latent is drawn from the posterior \
        (item i with seed --seed + i) and decoded, as every generated image is; OUT is a GTA5-layout dataset \
        of the reconstructions (OUT/images/NAME.png) and the unchanged labels (OUT/labels/NAME_labelTrainIds.png \
        for train-id labels, OUT/labels/NAME.png for label ids). Generated images cannot be \
        better than what the VAE keeps, so a segmenter's score on OUT (`segment eval --data OUT`) bounds its \
        score on generated data. Prints the mean absolute error (0-255 scale) and PSNR over all images.
        """)

    @Option(help: "A pipeline or file holding a vae.")
    var pipeline: String

    @Option(help: "A labelled dataset folder.")
    var data: String

    @Option(help: "Output folder (images/ and labels/).")
    var out: String

    @Option(help: "Split of a Cityscapes-layout folder.")
    var split = "val"

    @Option(help: "Seed of the posterior samples.")
    var seed: UInt64 = 0

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "No progress bar.")
    var quiet = false

    func run() throws {
        let vae = try VAERoundTrip.loadVAE(pipeline)
        let samples = try Dataset.scan(root: data, split: split).complete()
        guard !samples.isEmpty else { throw FileError(data, "holds no labelled images") }
        let fm = FileManager.default
        for sub in ["images", "labels"] { try fm.createDirectory(atPath: "\(out)/\(sub)", withIntermediateDirectories: true) }
        var absSum = 0.0, squaredSum = 0.0, count = 0
        let bar = ProgressBar("measure vae", total: Double(samples.count), unit: "img", enabled: !quiet)
        for (i, sample) in samples.enumerated() {
            let image = try PNG.read(sample.imagePath).rgb()
            let rebuilt = try VAERoundTrip.roundTrip(image, vae: vae, file: sample.imagePath, seed: seed &+ UInt64(i))
            for (a, b) in zip(image.pixels, rebuilt.pixels) {
                let d = Double(a) - Double(b)
                absSum += abs(d)
                squaredSum += d * d
            }
            count += image.pixels.count
            // Named by the image, so that the pair holds in the GTA5 layout whatever layout it came from.
            let stem = URL(fileURLWithPath: sample.imagePath).deletingPathExtension().lastPathComponent
            guard let label = fm.contents(atPath: sample.labelPath) else { throw FileError(sample.labelPath, "cannot read") }
            try writeFileAtomically("\(out)/labels/\(stem)" + (sample.labelsAreTrainIds ? "_labelTrainIds.png" : ".png"), Array(label))
            try PNG.write(rebuilt, to: "\(out)/images/\(stem).png")
            bar.update(Double(i + 1))
        }
        bar.finish()
        let mae = absSum / Double(count), mse = squaredSum / Double(count)
        let psnr = 10 * log10(255 * 255 / max(mse, 1e-12))
        if json {
            emit(JSON.object([("data", .string(data)), ("out", .string(out)), ("pipeline", .string(pipeline)),
                              ("count", .int(samples.count)), ("mean_abs_error", number(mae)), ("psnr_db", number(psnr))]).pretty)
        } else {
            emit("\(samples.count) images through the VAE of \(pipeline) into \(out): mean absolute error "
                 + String(format: "%.2f", mae) + " (of 255), PSNR " + String(format: "%.2f", psnr) + " dB")
        }
    }
}

struct MeasureReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "The markdown tables of tools/run-experiment.sh's results.json.",
        discussion: """
        RESULTS is the JSON object run-experiment.sh assembles: "settings", "style" (a `measure style --json` \
        output), "masks" (name -> `measure masks --json` output), "mrlf" ("oracle": a `segment eval --json` \
        output, optionally "oracle_vae": the same on the test renders through the VAE (`measure vae`); "without", "with" and optionally "with_next" (MRLF with the anchor at the next timestep): one \
        `segment eval --json --per-image` output each, or a list of them, one per generation seed) and \
        "ablation" ("rows": a list of {"name": source, photometric, a, b or c, "runs": [{"seg_seed", \
        optionally "gen_seed", "eval": a `segment eval --json --per-image` output}]}, each row compared with \
        the row above and with the first). Sections whose data is missing are reported as not run.
        """)

    @Argument(help: "results.json")
    var results: String

    @Option(help: "Write the markdown here instead of standard output.")
    var out: String?

    func run() throws {
        guard let data = FileManager.default.contents(atPath: results) else { throw FileError(results, "cannot read") }
        let json: JSON
        do { json = try JSON.parse(bytes: Array(data)) } catch { throw FileError(results, "\(error)") }
        let text = ExperimentReport.markdown(json)
        if let out {
            try writeFileAtomically(out, Array(text.utf8))
            emit("wrote \(out)")
        } else {
            emit(text)
        }
    }
}
