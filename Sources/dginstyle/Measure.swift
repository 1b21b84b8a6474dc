import ArgumentParser
import DGCheckpoint
import DGData
import DGDiffusion
import DGModels
import DGTraining
import Foundation

struct Measure: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure generated data: style (photo vs game), mask adherence, and the experiment's report.",
        subcommands: [MeasureStyle.self, MeasureMasks.self, MeasureReport.self])
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
        let vae = try referenceVae.map(Self.loadVAE)
        func references(_ dir: String) throws -> [[Double]] {
            try StyleMeasure.imageFiles(dir).enumerated().map { i, file in
                var image = try PNG.read(file).rgb()
                if let vae { image = try Self.roundTrip(image, vae: vae, file: file, seed: seed &+ UInt64(i)) }
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

extension MeasureStyle {
    static func loadVAE(_ path: String) throws -> AutoencoderKL {
        let ck = try Checkpoint.open(path)
        guard let c = ck.component("vae") else { throw DataError(path, "holds no VAE") }
        guard let vae = try loadModel(c).1 as? AutoencoderKL else { throw DataError(path, "its vae is not an AutoencoderKL") }
        return vae
    }

    /// The image as the VAE reconstructs it (a posterior sample, decoded).
    static func roundTrip(_ image: Image, vae: AutoencoderKL, file: String, seed: UInt64) throws -> Image {
        let f = 1 << (vae.block_out_channels.count - 1)
        guard image.width % f == 0, image.height % f == 0 else {
            throw DataError(file, "is \(image.width)x\(image.height); the VAE needs sides that are multiples of \(f)")
        }
        let latents = vae.encodeToLatents(Resize.toUnit(image.tensor()), generator: NoiseGenerator(seed: seed))
        return Image(tensor: Resize.toSigned(vae.decodeToImage(latents)))
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

struct MeasureReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "The markdown tables of tools/run-experiment.sh's results.json.",
        discussion: """
        RESULTS is the JSON object run-experiment.sh assembles: "settings", "style" (a `measure style --json` \
        output), "masks" (name -> `measure masks --json` output), "mrlf" ("oracle", "without", "with": \
        `segment eval --json` outputs) and "generalisation" ("seeds", "source_only", "source_plus_generated": \
        one eval output per seed). Sections whose data is missing are reported as not run.
        """)

    @Argument(help: "results.json")
    var results: String

    @Option(help: "Write the markdown here instead of standard output.")
    var out: String?

    func run() throws {
        guard let data = FileManager.default.contents(atPath: results) else { throw DataError(results, "cannot read") }
        let json: JSON
        do { json = try JSON.parse(bytes: Array(data)) } catch { throw DataError(results, "\(error)") }
        let text = ExperimentReport.markdown(json)
        if let out {
            try writeFileAtomically(out, Array(text.utf8))
            emit("wrote \(out)")
        } else {
            emit(text)
        }
    }
}

/// Turns the experiment's results into the tables of docs/EXPERIMENT.md.
enum ExperimentReport {
    /// The variants the demo and the experiment generate, by folder name.
    static let variants = [
        ("game-source", "game source renders (reference)"),
        ("photo-test", "photo renders (reference)"),
        ("a-source-unet", "(a) ControlNet on U^S"),
        ("b-style-swap", "(b) Style Swap: ControlNet on U^P"),
        ("c-style-swap-mrlf", "(c) Style Swap + MRLF"),
    ]
    static let smallClasses = ["pole", "traffic light", "traffic sign", "person", "rider", "bicycle", "motorcycle"]

    static func f(_ v: Double?, _ digits: Int = 3) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "–" }

    static func meanStd(_ values: [Double]) -> (Double, Double)? {
        guard !values.isEmpty else { return nil }
        let m = values.reduce(0, +) / Double(values.count)
        let v = values.count > 1 ? values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1) : 0
        return (m, v.squareRoot())
    }

    /// The same value with every null member of an object removed: a step that did not run
    /// reads as absent, like one the script left out.
    static func withoutNulls(_ j: JSON) -> JSON {
        if let pairs = j.objectPairs { return .object(pairs.filter { !$0.1.isNull }.map { ($0.0, withoutNulls($0.1)) }) }
        if let items = j.array { return .array(items.map(withoutNulls)) }
        return j
    }

    /// The paired bootstrap of the small classes' IoU gain, from the two reports' "per_image"
    /// matrices (`segment eval --per-image`), images matched by name.
    static func smallClassInterval(_ without: JSON, _ with: JSON) -> (Double, Double, Double, Int)? {
        func matrices(_ report: JSON) -> [String: ConfusionMatrix]? {
            guard let list = report["per_image"]?.array else { return nil }
            var out: [String: ConfusionMatrix] = [:]
            for item in list {
                guard let name = item["image"]?.string, let counts = item["counts"]?.array?.compactMap(\.int) else { return nil }
                let side = Int(Double(counts.count).squareRoot())
                guard let m = ConfusionMatrix(classes: side, counts: counts) else { return nil }
                out[name] = m
            }
            return out
        }
        guard let a = matrices(without), let b = matrices(with) else { return nil }
        let names = a.keys.filter { b[$0] != nil }.sorted()
        let classes = smallClasses.compactMap { Cityscapes.classNames.firstIndex(of: $0) }
        guard let r = PairedIoUBootstrap.interval(names.map { a[$0]! }, names.map { b[$0]! }, classes: classes) else { return nil }
        return (r.difference, r.low, r.high, names.count)
    }

    static func markdown(_ results: JSON) -> String {
        let r = withoutNulls(results)
        var md = "# Experiment results\n\n"
        if let s = r["settings"], let pairs = s.objectPairs, !pairs.isEmpty {
            md += "Settings: " + pairs.map { "\($0.0) = \($0.1.string ?? $0.1.compact)" }.joined(separator: ", ") + "\n\n"
        }

        md += "## Claim 1: Style Swap output is closer to the photo domain; mask adherence stays comparable\n\n"
        let style = r["style"], masks = r["masks"]
        let sets = style?["sets"]?.array ?? []
        if sets.isEmpty && masks == nil {
            md += "Not run.\n\n"
        } else {
            md += "| images | count | mean P(photo) | classified photo | photo closeness | mask R² (mean) | mask R² (median) |\n|---|---|---|---|---|---|---|\n"
            var names = variants.map(\.0)
            for s in sets { if let n = s["name"]?.string, !names.contains(n) { names.append(n) } }
            for name in names {
                let set = sets.first { $0["name"]?.string == name }
                let mask = masks?[name]
                guard set != nil || mask != nil else { continue }
                let title = variants.first { $0.0 == name }?.1 ?? name
                let count = set?["count"]?.int ?? mask?["count"]?.int
                md += "| \(title) | \(count.map(String.init) ?? "–") | \(f(set?["mean_p_photo"]?.double)) | "
                    + "\(set?["photo_share"]?.double.map { String(format: "%.1f%%", 100 * $0) } ?? "–") | \(f(set?["photo_closeness"]?.double)) | "
                    + "\(f(mask?["mean"]?.double)) | \(f(mask?["median"]?.double)) |\n"
            }
            if let c = style?["classifier"] {
                md += "\nDomain classifier: held-out accuracy \(f(c["held_out_accuracy"]?.double)) on \(c["held_out"]?.int ?? 0) images "
                    + "(trained on \(c["train"]?.int ?? 0) photo and game reference renders"
                    + (c["reference_vae"]?.string.map { ", passed through the VAE of \($0)" } ?? "") + "). "
                    + "Photo closeness = distance to game / (distance to photo + distance to game), distances between "
                    + "feature distributions (diagonal Fréchet); both far above the photo-game distance "
                    + "(\(f(c["reference_gap"]?.double))) means images far from either domain.\n"
            }
            md += "\n"
        }

        md += "## Claim 2: MRLF and small classes (segmenter trained on held-out photo renders)\n\n"
        if let m = r["mrlf"], let without = m["without"], let with = m["with"] {
            // The judge's own IoU on photo renders says which classes it can rate at all.
            let judge = m["oracle"]
            md += "| class | judge on photo renders | IoU without MRLF | IoU with MRLF | difference |\n|---|---|---|---|---|\n"
            var gains: [Double] = []
            for name in smallClasses {
                let a = without["iou"]?[name]?.double, b = with["iou"]?[name]?.double
                if let a, let b { gains.append(b - a) }
                md += "| \(name) | \(f(judge?["iou"]?[name]?.double)) | \(f(a)) | \(f(b)) | \(a != nil && b != nil ? String(format: "%+.3f", b! - a!) : "–") |\n"
            }
            if let (g, _) = meanStd(gains) { md += "| **small classes, mean** | | | | \(String(format: "%+.3f", g)) |\n" }
            let interval = smallClassInterval(without, with)
            let a = without["miou"]?.double, b = with["miou"]?.double
            md += "| mIoU (all classes) | \(f(judge?["miou"]?.double)) | \(f(a)) | \(f(b)) | \(a != nil && b != nil ? String(format: "%+.3f", b! - a!) : "–") |\n"
            if let (d, lo, hi, n) = interval {
                md += "\nSmall classes, mean IoU difference (with - without MRLF, classes present in both): "
                    + String(format: "%+.3f, 95%% bootstrap interval [%+.3f, %+.3f] over the %d images (paired, 2000 resamples).", d, lo, hi, n) + "\n"
            }
            if let o = m["oracle"] { md += "\nThe judging segmenter's own mIoU on held-out photo renders: \(f(o["miou"]?.double)).\n" }
            md += "\n"
        } else {
            md += "Not run.\n\n"
        }

        md += "## Claim 3: domain generalisation (mIoU on held-out photo renders)\n\n"
        if let g = r["generalisation"], let src = g["source_only"]?.array, let gen = g["source_plus_generated"]?.array, !src.isEmpty {
            let seeds = g["seeds"]?.array?.map { $0.string ?? $0.compact } ?? src.indices.map { String($0) }
            md += "| training data | " + seeds.map { "seed \($0)" }.joined(separator: " | ") + " | mean ± std |\n"
            md += "|---|" + String(repeating: "---|", count: seeds.count + 1) + "\n"
            func row(_ title: String, _ runs: [JSON]) -> (String, Double?) {
                let v = runs.compactMap { $0["miou"]?.double }
                let ms = meanStd(v)
                return ("| \(title) | " + runs.map { f($0["miou"]?.double) }.joined(separator: " | ")
                        + " | \(ms.map { f($0.0) + " ± " + f($0.1) } ?? "–") |\n", ms?.0)
            }
            let (a, ma) = row("game source only", src), (b, mb) = row("source + generated (Style Swap + MRLF)", gen)
            md += a + b
            if let ma, let mb { md += "\nDifference of the means: " + String(format: "%+.3f", mb - ma) + " mIoU.\n" }
            md += "\n"
        } else {
            md += "Not run.\n\n"
        }
        return md
    }
}
