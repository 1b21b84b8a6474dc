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

    public static func markdown(_ results: JSON) -> String {
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
