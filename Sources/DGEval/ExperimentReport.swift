import DGBase
import DGData
import Foundation

/// Turns the experiment's results into the tables of docs/EXPERIMENT.md.
public enum ExperimentReport {
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

    /// A report's "per_image" matrices (`segment eval --per-image`) by image name.
    static func matrices(_ report: JSON) -> [String: ConfusionMatrix]? {
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

    /// A list of reports, or one report standing alone.
    static func reports(_ j: JSON?) -> [JSON] { j?.array ?? (j.map { [$0] } ?? []) }

    /// The images of several reports as one set (the generated sets of several generation seeds),
    /// named by position and image, so that two lists of reports pair image by image.
    static func pooled(_ list: [JSON]) -> [String: ConfusionMatrix]? {
        var out: [String: ConfusionMatrix] = [:]
        for (i, report) in list.enumerated() {
            guard let m = matrices(report) else { return nil }
            for (name, matrix) in m { out["\(i)/\(name)"] = matrix }
        }
        return out.isEmpty ? nil : out
    }

    /// The paired bootstrap (`PairedIoUBootstrap`) of `b` - `a` over `classes`: each of `runs`
    /// pairs two sets of per-image matrices of the same images; returns (difference, low, high,
    /// images per run).
    static func interval(runs: [(a: [String: ConfusionMatrix], b: [String: ConfusionMatrix])], classes: [Int]) -> (Double, Double, Double, Int)? {
        var paired: [([ConfusionMatrix], [ConfusionMatrix])] = []
        var names: [String]?
        for (a, b) in runs {
            let common = a.keys.filter { b[$0] != nil }.sorted()
            // The runs' image i must be the same image.
            if let names, names != common { return nil }
            names = common
            paired.append((common.map { a[$0]! }, common.map { b[$0]! }))
        }
        guard let n = names?.count, n > 0,
              let r = PairedIoUBootstrap.interval(runs: paired, classes: classes) else { return nil }
        return (r.difference, r.low, r.high, n)
    }

    /// The same from pairs of reports with "per_image" matrices.
    static func interval(reports: [(a: JSON, b: JSON)], classes: [Int]) -> (Double, Double, Double, Int)? {
        var runs: [(a: [String: ConfusionMatrix], b: [String: ConfusionMatrix])] = []
        for (a, b) in reports {
            guard let ma = matrices(a), let mb = matrices(b) else { return nil }
            runs.append((ma, mb))
        }
        return interval(runs: runs, classes: classes)
    }

    /// The small classes' IoU gain from `without` to `with` (each one report or one per
    /// generation seed, in the same order), paired over the pooled images.
    static func smallClassInterval(_ without: [JSON], _ with: [JSON]) -> (Double, Double, Double, Int)? {
        guard let a = pooled(without), let b = pooled(with) else { return nil }
        return interval(runs: [(a, b)], classes: smallClasses.compactMap { Cityscapes.classNames.firstIndex(of: $0) })
    }

    static func mean(_ values: [Double?]) -> Double? {
        let v = values.compactMap { $0 }
        return v.isEmpty || v.count != values.count ? nil : v.reduce(0, +) / Double(v.count)
    }

    /// Claim 3's arms, by the names run-experiment.sh gives them.
    static let arms = [
        "source": "game source only",
        "photometric": "source + photometric augmentation (no diffusion)",
        "a": "source + (a) ControlNet on U^S",
        "b": "source + (b) Style Swap",
        "c": "source + (c) Style Swap + MRLF",
    ]

    static func signed(_ r: (Double, Double, Double, Int)?) -> String {
        r.map { String(format: "%+.3f [%+.3f, %+.3f]", $0.0, $0.1, $0.2) } ?? "–"
    }

    /// The runs of `row` paired with those of `reference` (as (reference, row)): the same
    /// segmenter seed, and the same generation seed where both have one — a run without generated
    /// data pairs with every generation seed's run of its segmenter seed.
    static func pairs(_ row: JSON, _ reference: JSON) -> [(a: JSON, b: JSON)] {
        let mine = row["runs"]?.array ?? [], theirs = reference["runs"]?.array ?? []
        return mine.flatMap { x in
            theirs.compactMap { y -> (a: JSON, b: JSON)? in
                guard y["seg_seed"] == x["seg_seed"], x["gen_seed"] == nil || y["gen_seed"] == nil || x["gen_seed"] == y["gen_seed"],
                      let ex = x["eval"], let ey = y["eval"] else { return nil }
                return (a: ey, b: ex)
            }
        }
    }

    /// Where the numbers come from: the invocation that wrote results.json, and every invocation on
    /// its output folder ("invocations": a started record each, and a finished record for each that
    /// finished), so that a run continued across sessions says so.
    static func provenance(_ r: JSON) -> String {
        var md = ""
        if let p = r["provenance"] {
            let made = p["outputs_made"]?.int ?? 0, reused = p["outputs_reused"]?.int ?? 0
            md += "Provenance: `\(p["command"]?.string ?? "?")` at commit \(p["commit"]?.string ?? "?") on \(p["machine"]?.string ?? "?"), "
                + "finished \(p["finished"]?.string ?? "?") after \(p["wall_s"]?.int.map(String.init) ?? "?") s; outputs made \(made), reused \(reused)"
                + (reused == 0 ? " (one invocation made everything).\n\n" : ".\n\n")
        }
        let records = r["invocations"]?.array ?? []
        let started = records.filter { $0["finished"] == nil }
        if !started.isEmpty {
            md += "Invocations on this output folder: \(started.count)\n\n"
            for (i, s) in started.enumerated() {
                let end = records.first { $0["finished"] != nil && $0["started"] == s["started"] }
                md += "\(i + 1). started \(s["started"]?.string ?? "?") at commit \(s["commit"]?.string ?? "?") on \(s["machine"]?.string ?? "?"): "
                md += end.map { e in
                    "finished \(e["finished"]?.string ?? "?") after \(e["wall_s"]?.int.map(String.init) ?? "?") s, "
                        + "outputs made \(e["outputs_made"]?.int ?? 0), reused \(e["outputs_reused"]?.int ?? 0)\n"
                } ?? "did not finish (stopped; its finished outputs were reused by the next)\n"
            }
            md += "\n"
        }
        return md
    }

    public static func markdown(_ results: JSON) -> String {
        let r = withoutNulls(results)
        var md = "# Experiment results\n\n"
        if let s = r["settings"], let pairs = s.objectPairs, !pairs.isEmpty {
            md += "Settings: " + pairs.map { "\($0.0) = \($0.1.string ?? $0.1.compact)" }.joined(separator: ", ") + "\n\n"
        }
        md += provenance(r)

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
        if let m = r["mrlf"], m["without"] != nil, m["with"] != nil {
            // One report per generation seed (or one alone); per-class IoUs are their means.
            let without = reports(m["without"]), with = reports(m["with"]), next = reports(m["with_next"])
            let judge = m["oracle"]
            if without.count > 1 { md += "IoUs are the means over \(without.count) generation seeds; the intervals pool their images.\n\n" }
            let hasNext = !next.isEmpty
            md += "| class | judge on photo renders | IoU without MRLF | IoU with MRLF | difference |" + (hasNext ? " IoU with MRLF, anchor at next | difference (next - t-1) |" : "")
                + "\n|---|---|---|---|---|" + (hasNext ? "---|---|" : "") + "\n"
            func iou(_ list: [JSON], _ name: String) -> Double? { list.isEmpty ? nil : mean(list.map { $0["iou"]?[name]?.double }) }
            func miou(_ list: [JSON]) -> Double? { list.isEmpty ? nil : mean(list.map { $0["miou"]?.double }) }
            func diff(_ a: Double?, _ b: Double?) -> String { a != nil && b != nil ? String(format: "%+.3f", b! - a!) : "–" }
            var gains: [Double] = [], nextGains: [Double] = []
            for name in smallClasses {
                let a = iou(without, name), b = iou(with, name), c = iou(next, name)
                if let a, let b { gains.append(b - a) }
                if let b, let c { nextGains.append(c - b) }
                md += "| \(name) | \(f(judge?["iou"]?[name]?.double)) | \(f(a)) | \(f(b)) | \(diff(a, b)) |" + (hasNext ? " \(f(c)) | \(diff(b, c)) |" : "") + "\n"
            }
            if let (g, _) = meanStd(gains) {
                md += "| **small classes, mean** | | | | \(String(format: "%+.3f", g)) |"
                    + (hasNext ? " | \(meanStd(nextGains).map { String(format: "%+.3f", $0.0) } ?? "–") |" : "") + "\n"
            }
            md += "| mIoU (all classes) | \(f(judge?["miou"]?.double)) | \(f(miou(without))) | \(f(miou(with))) | \(diff(miou(without), miou(with))) |"
                + (hasNext ? " \(f(miou(next))) | \(diff(miou(with), miou(next))) |" : "") + "\n"
            if let (d, lo, hi, n) = smallClassInterval(without, with) {
                md += "\nSmall classes, mean IoU difference (with - without MRLF, classes present in both): "
                    + String(format: "%+.3f, 95%% bootstrap interval [%+.3f, %+.3f] over the %d images (paired, 2000 resamples).", d, lo, hi, n) + "\n"
            }
            if hasNext, let (d, lo, hi, n) = smallClassInterval(with, next) {
                md += "\nMRLF's anchor noise, next timestep - t-1 (the reference's level), small classes: "
                    + String(format: "%+.3f, 95%% bootstrap interval [%+.3f, %+.3f] over the %d images.", d, lo, hi, n) + "\n"
            }
            if let o = m["oracle"]?["miou"]?.double {
                md += "\nThe judging segmenter's own mIoU on held-out photo renders: \(f(o))"
                // How close generated images come to the domain they imitate, and how close the VAE lets them.
                if let b = miou(without), o > 0 {
                    md += "; on Style-Swapped images (b) \(f(b)), " + String(format: "%.0f%%", 100 * b / o) + " of it"
                }
                if let v = m["oracle_vae"]?["miou"]?.double, o > 0 {
                    md += "; on the same photo renders through the pipeline's VAE (encode, decode: the ceiling of generated images) "
                        + "\(f(v)), " + String(format: "%.0f%%", 100 * v / o) + " of it"
                }
                md += ".\n"
            }
            md += "\n"
        } else {
            md += "Not run.\n\n"
        }

        md += "## Claim 3: domain generalisation (mIoU on held-out photo renders)\n\n"
        if let rows = r["ablation"]?["rows"]?.array, !rows.isEmpty {
            // Each row adds one component to the row above; the control arm adds no diffusion.
            md += "| training data | runs | mIoU, mean ± std | difference to the row above [95% interval] | difference to source only [95% interval] |\n"
            md += "|---|---|---|---|---|\n"
            let all = Array(0..<Cityscapes.classCount)
            for (i, row) in rows.enumerated() {
                let name = row["name"]?.string ?? "?"
                let runs = row["runs"]?.array ?? []
                let ms = meanStd(runs.compactMap { $0["eval"]?["miou"]?.double })
                let above = i > 0 ? signed(interval(reports: pairs(row, rows[i - 1]), classes: all)) : ""
                let source = i > 0 ? signed(interval(reports: pairs(row, rows[0]), classes: all)) : ""
                md += "| \(arms[name] ?? name) | \(runs.count) | \(ms.map { f($0.0) + " ± " + f($0.1) } ?? "–") | \(above) | \(source) |\n"
            }
            md += "\nRuns: segmenter seeds x generation seeds (rows without generated data: segmenter seeds only). "
                + "Intervals: paired bootstrap of the mIoU difference (mean over classes present of the IoU difference), "
                + "resampling test images and paired runs (the same segmenter seed and generation seed), 2000 resamples.\n\n"
        } else {
            md += "Not run.\n\n"
        }
        return md
    }
}
