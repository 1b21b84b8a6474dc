import DGBase
import DGCheckpoint
import DGTensor
import Foundation

/// Pixel counts of (ground-truth class, predicted class) over an evaluated set. Pixels whose
/// ground truth is not a class (255 = ignore, or any id >= classes) are not counted;
/// predictions are always classes.
public struct ConfusionMatrix: Equatable, Sendable {
    public let classes: Int
    /// Row-major [truth][prediction].
    public private(set) var counts: [Int]

    public init(classes: Int) {
        self.classes = classes
        counts = [Int](repeating: 0, count: classes * classes)
    }

    /// From row-major counts [truth][prediction] (as a report's "per_image" lists them).
    public init?(classes: Int, counts: [Int]) {
        guard classes > 0, counts.count == classes * classes, counts.allSatisfy({ $0 >= 0 }) else { return nil }
        self.classes = classes
        self.counts = counts
    }

    public subscript(truth: Int, predicted: Int) -> Int { counts[truth * classes + predicted] }

    /// Adds another matrix's counts (the same classes).
    public mutating func add(_ other: ConfusionMatrix) {
        precondition(other.classes == classes, "ConfusionMatrix.add: \(other.classes) classes into \(classes)")
        for i in counts.indices { counts[i] += other.counts[i] }
    }

    /// Adds one image's pixels (the two arrays are the same pixels in the same order).
    public mutating func add(truth: [UInt8], predicted: [UInt8]) {
        let c = classes
        counts.withUnsafeMutableBufferPointer { m in
            for (t, p) in zip(truth, predicted) where Int(t) < c && Int(p) < c { m[Int(t) * c + Int(p)] += 1 }
        }
    }

    /// Pixels of each class in the ground truth (row sums).
    public var truthPixels: [Int] { (0..<classes).map { t in (0..<classes).reduce(0) { $0 + self[t, $1] } } }
    /// Pixels predicted as each class (column sums).
    public var predictedPixels: [Int] { (0..<classes).map { p in (0..<classes).reduce(0) { $0 + self[$1, p] } } }
    public var totalPixels: Int { counts.reduce(0, +) }

    /// Intersection over union of each class, TP / (TP + FP + FN); nil for a class absent from
    /// the ground truth (its IoU would only measure false positives, or be 0/0).
    public var iou: [Double?] {
        let truth = truthPixels, predicted = predictedPixels
        return (0..<classes).map { c in
            guard truth[c] > 0 else { return nil }
            let tp = self[c, c]
            return Double(tp) / Double(truth[c] + predicted[c] - tp)
        }
    }

    /// Mean IoU over the classes present in the ground truth (the convention of this project's
    /// reports; nil when no pixel was counted).
    public var meanIoU: Double? {
        let present = iou.compactMap { $0 }
        return present.isEmpty ? nil : present.reduce(0, +) / Double(present.count)
    }

    /// Mean IoU over every class whose union is not empty (mmsegmentation's nanmean): also
    /// counts, with IoU 0, a class absent from the ground truth but predicted somewhere. Only
    /// classes neither present nor predicted (0/0 = NaN) are excluded.
    public var meanIoUOverPredictedOrPresent: Double? {
        let truth = truthPixels, predicted = predictedPixels
        var values: [Double] = []
        for c in 0..<classes {
            let union = truth[c] + predicted[c] - self[c, c]
            if union > 0 { values.append(Double(self[c, c]) / Double(union)) }
        }
        return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }

    /// Correctly classified pixels / counted pixels.
    public var pixelAccuracy: Double? {
        let total = totalPixels
        return total == 0 ? nil : Double((0..<classes).reduce(0) { $0 + self[$1, $1] }) / Double(total)
    }
}

/// How much better set B's images are segmented than set A's, paired image by image (the same
/// masks, different images): the mean over `classes` of IoU(B) - IoU(A), and a percentile
/// bootstrap interval over images — resampling which images count, with replacement, and
/// summing their matrices, as the IoU itself is summed over a set.
public enum PairedIoUBootstrap {
    /// The statistic on summed matrices: mean over the classes present in the ground truth of
    /// both of IoU(b) - IoU(a); nil when none is present.
    public static func difference(_ a: ConfusionMatrix, _ b: ConfusionMatrix, classes: [Int]) -> Double? {
        let ia = a.iou, ib = b.iou
        let d = classes.compactMap { c -> Double? in
            guard let x = ia[c], let y = ib[c] else { return nil }
            return y - x
        }
        return d.isEmpty ? nil : d.reduce(0, +) / Double(d.count)
    }

    /// (difference on all images, lower and upper end of the central `level` interval over
    /// `resamples` bootstrap sets); nil without images or classes present.
    public static func interval(_ a: [ConfusionMatrix], _ b: [ConfusionMatrix], classes: [Int], resamples: Int = 2000,
                                level: Double = 0.95, seed: UInt64 = 0) -> (difference: Double, low: Double, high: Double)? {
        interval(runs: [(a, b)], classes: classes, resamples: resamples, level: level, seed: seed)
    }

    /// The same over several paired runs evaluated on the same images (models trained with
    /// different seeds, say; image i is the same image in every run): the statistic is the mean
    /// over runs of each run's difference, and every resample draws the images (the same ones
    /// for all runs) and, when there is more than one, the runs, both with replacement — so the
    /// interval holds the test set's sampling and the spread between training runs. With one run
    /// no run is drawn: the single-run interval keeps its random sequence.
    public static func interval(runs: [([ConfusionMatrix], [ConfusionMatrix])], classes: [Int], resamples: Int = 2000,
                                level: Double = 0.95, seed: UInt64 = 0) -> (difference: Double, low: Double, high: Double)? {
        guard let first = runs.first?.0.first, let n = runs.first?.0.count,
              runs.allSatisfy({ $0.0.count == n && $0.1.count == n }) else { return nil }
        func summed(_ set: [ConfusionMatrix], _ pick: [Int]) -> ConfusionMatrix {
            var m = ConfusionMatrix(classes: first.classes)
            for i in pick { m.add(set[i]) }
            return m
        }
        func statistic(_ images: [Int], _ chosen: [Int]) -> Double? {
            let d = chosen.compactMap { r in difference(summed(runs[r].0, images), summed(runs[r].1, images), classes: classes) }
            return d.isEmpty ? nil : d.reduce(0, +) / Double(d.count)
        }
        let all = Array(0..<n)
        guard let full = statistic(all, Array(runs.indices)) else { return nil }
        var rng = SplitMix64(seed: seed)
        var values: [Double] = []
        for _ in 0..<max(1, resamples) {
            let images = all.map { _ in rng.int(below: n) }
            let chosen = runs.count > 1 ? runs.indices.map { _ in rng.int(below: runs.count) } : [0]
            if let d = statistic(images, chosen) { values.append(d) }
        }
        values.sort()
        guard !values.isEmpty else { return nil }
        let tail = (1 - level) / 2
        func at(_ q: Double) -> Double { values[min(values.count - 1, max(0, Int((q * Double(values.count)).rounded(.down))))] }
        return (full, at(tail), at(1 - tail))
    }
}

/// The report `segment eval` prints: one JSON object.
public struct SegmentationReport {
    public var confusion: ConfusionMatrix
    public var classNames: [String]
    public var images: Int
    public var model: String
    public var data: [String]
    public var seconds: Double
    /// Each image's own matrix (name, counts), for statistics over images; nil: not reported.
    public var perImage: [(name: String, confusion: ConfusionMatrix)]?

    public init(confusion: ConfusionMatrix, classNames: [String], images: Int, model: String, data: [String], seconds: Double) {
        self.confusion = confusion
        self.classNames = classNames
        self.images = images
        self.model = model
        self.data = data
        self.seconds = seconds
    }

    public var json: JSON {
        func number(_ v: Double?) -> JSON { v.map { .double(($0 * 1e6).rounded() / 1e6) } ?? .null }
        let iou = confusion.iou, truth = confusion.truthPixels, predicted = confusion.predictedPixels
        var j: JSON = [
            "model": .string(model), "data": .array(data.map { .string($0) }), "images": .int(images),
            "pixels": .int(confusion.totalPixels),
            "miou": number(confusion.meanIoU),
            "miou_convention": "mean over the classes present in the ground truth of the evaluated set",
            "miou_nonempty_union": number(confusion.meanIoUOverPredictedOrPresent),
            "classes_present": .int(iou.compactMap { $0 }.count),
            "pixel_accuracy": number(confusion.pixelAccuracy),
            "iou": .object(zip(classNames, iou).map { ($0, number($1)) }),
            "class_pixels": .object(classNames.indices.map {
                (classNames[$0], ["truth": .int(truth[$0]), "predicted": .int(predicted[$0])] as JSON)
            }),
            "confusion": .array((0..<confusion.classes).map { t in .array((0..<confusion.classes).map { .int(confusion[t, $0]) }) }),
            "seconds": .double((seconds * 1000).rounded() / 1000),
        ]
        if let perImage {
            j.set("per_image", .array(perImage.map { ["image": .string($0.name), "counts": .array($0.confusion.counts.map { .int($0) })] as JSON }))
        }
        return j
    }

    /// A table for people: per-class IoU, then the means.
    public var text: String {
        var lines = ["\(model) on \(data.joined(separator: ", ")): \(images) images, \(confusion.totalPixels) labelled pixels"]
        let truth = confusion.truthPixels
        for (c, v) in confusion.iou.enumerated() {
            let name = classNames[c].padding(toLength: 14, withPad: " ", startingAt: 0)
            lines.append("  \(name) " + (v.map { String(format: "%6.2f", $0 * 100) } ?? "     -") + String(format: "  (%d px)", truth[c]))
        }
        func pct(_ v: Double?) -> String { v.map { String(format: "%.2f", $0 * 100) } ?? "-" }
        lines.append("mIoU \(pct(confusion.meanIoU)) (over the \(confusion.iou.compactMap { $0 }.count) classes present in the ground truth)")
        lines.append("mIoU \(pct(confusion.meanIoUOverPredictedOrPresent)) (over classes present or predicted)")
        lines.append("pixel accuracy \(pct(confusion.pixelAccuracy))")
        return lines.joined(separator: "\n")
    }
}
