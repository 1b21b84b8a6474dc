import DGBase
import DGCheckpoint
import DGData
import DGTensor
import Foundation

/// Per-image style statistics that tell flat, saturated game renderings from textured, lit
/// photographs regardless of content: colour, saturation, contrast, edge and texture energy.
/// All are per-pixel averages (not sums), so images of different sizes compare.
public enum StyleFeatures {
    public static let names = [
        "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b",
        "saturation_mean", "saturation_std", "luma_std", "colourfulness",
        "gradient_mean", "flat_share", "laplacian_mean", "laplacian_to_gradient", "gradient_log_kurtosis",
        "block_std_mean", "distinct_colours", "dark_share",
    ]

    public static func of(_ image: Image) -> [Double] {
        let rgb = image.rgb()
        let (w, h) = (rgb.width, rgb.height)
        let n = w * h
        var r = [Double](repeating: 0, count: n), g = r, b = r, y = r, sat = r
        var colours = Set<Int>()
        for p in 0..<n {
            let (pr, pg, pb) = (rgb.pixels[p * 3], rgb.pixels[p * 3 + 1], rgb.pixels[p * 3 + 2])
            r[p] = Double(pr) / 255
            g[p] = Double(pg) / 255
            b[p] = Double(pb) / 255
            y[p] = 0.299 * r[p] + 0.587 * g[p] + 0.114 * b[p]
            let hi = max(r[p], g[p], b[p]), lo = min(r[p], g[p], b[p])
            sat[p] = hi > 0 ? (hi - lo) / hi : 0
            colours.insert(Int(pr >> 3) << 10 | Int(pg >> 3) << 5 | Int(pb >> 3))
        }
        func meanStd(_ v: [Double]) -> (Double, Double) {
            let m = v.reduce(0, +) / Double(v.count)
            return (m, (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)).squareRoot())
        }
        let (mr, sr) = meanStd(r), (mg, sg) = meanStd(g), (mb, sb) = meanStd(b)
        let (ms, ss) = meanStd(sat), (_, sy) = meanStd(y)
        // Hasler & Süsstrunk's colourfulness on opponent channels.
        let rg = (0..<n).map { r[$0] - g[$0] }, yb = (0..<n).map { 0.5 * (r[$0] + g[$0]) - b[$0] }
        let (mrg, srg) = meanStd(rg), (myb, syb) = meanStd(yb)
        let colourfulness = (srg * srg + syb * syb).squareRoot() + 0.3 * (mrg * mrg + myb * myb).squareRoot()

        // Forward differences of luminance in both directions: their magnitudes, how many are
        // (nearly) zero — flat shading — and how heavy their tail is (few strong edges on flat
        // areas give a large kurtosis, texture noise a small one).
        var gradSum = 0.0, flat = 0.0, m2 = 0.0, m4 = 0.0, count = 0.0
        for yy in 0..<h {
            for xx in 0..<w {
                let p = yy * w + xx
                for d in [xx + 1 < w ? y[p + 1] - y[p] : nil, yy + 1 < h ? y[p + w] - y[p] : nil].compactMap({ $0 }) {
                    gradSum += abs(d)
                    if abs(d) < 1.0 / 255 { flat += 1 }
                    m2 += d * d
                    m4 += d * d * d * d
                    count += 1
                }
            }
        }
        let gradientMean = count > 0 ? gradSum / count : 0
        let flatShare = count > 0 ? flat / count : 1
        let kurtosis = m2 > 0 ? (m4 / count) / ((m2 / count) * (m2 / count)) : 1
        var lapSum = 0.0, lapCount = 0.0
        if w > 2 && h > 2 {
            for yy in 1..<(h - 1) {
                for xx in 1..<(w - 1) {
                    let p = yy * w + xx
                    lapSum += abs(4 * y[p] - y[p - 1] - y[p + 1] - y[p - w] - y[p + w])
                    lapCount += 1
                }
            }
        }
        let laplacianMean = lapCount > 0 ? lapSum / lapCount : 0
        // Local contrast: luminance spread inside 4x4 blocks.
        var blockStd = 0.0, blocks = 0.0
        for by in stride(from: 0, to: h - 3, by: 4) {
            for bx in stride(from: 0, to: w - 3, by: 4) {
                var s = 0.0, s2 = 0.0
                for yy in by..<(by + 4) { for xx in bx..<(bx + 4) { let v = y[yy * w + xx]; s += v; s2 += v * v } }
                blockStd += max(0, s2 / 16 - (s / 16) * (s / 16)).squareRoot()
                blocks += 1
            }
        }
        let dark = Double(y.filter { $0 < 0.1 }.count) / Double(n)
        return [
            mr, mg, mb, sr, sg, sb, ms, ss, sy, colourfulness,
            gradientMean, flatShare, laplacianMean, laplacianMean / (gradientMean + 1e-4), log(max(kurtosis, 1e-9)),
            blocks > 0 ? blockStd / blocks : 0, Double(colours.count) / Double(min(n, 32768)), dark,
        ]
    }
}

/// L2-regularised logistic regression on standardised features, fit by Newton's method (the
/// loss is convex and the models are a few dozen weights, so it converges in a few steps to the
/// one optimum: no learning rate to tune, the same weights on every machine).
public struct LogisticRegression: Sendable {
    public var mean: [Double]
    public var scale: [Double]
    /// Weights per standardised feature, then the bias.
    public var weights: [Double]

    /// `labels[i]` is 1 for the positive class. `l2` penalises the weights (not the bias) on top
    /// of the mean log loss; it also keeps them finite on separable data.
    public static func fit(_ x: [[Double]], labels: [Int], l2: Double = 0.01, iterations: Int = 50) -> LogisticRegression {
        let d = x.first?.count ?? 0, n = Double(x.count)
        var mean = [Double](repeating: 0, count: d), scale = [Double](repeating: 1, count: d)
        for j in 0..<d {
            mean[j] = x.reduce(0) { $0 + $1[j] } / n
            let sd = (x.reduce(0) { $0 + ($1[j] - mean[j]) * ($1[j] - mean[j]) } / n).squareRoot()
            scale[j] = sd > 1e-12 ? sd : 0  // constant features carry nothing: weight them 0
        }
        var model = LogisticRegression(mean: mean, scale: scale, weights: [Double](repeating: 0, count: d + 1))
        let z = x.map { model.standardised($0) + [1] }
        for _ in 0..<iterations {
            var grad = [Double](repeating: 0, count: d + 1)
            var hess = [[Double]](repeating: [Double](repeating: 0, count: d + 1), count: d + 1)
            for (row, label) in zip(z, labels) {
                let p = sigmoid(zip(row, model.weights).reduce(0) { $0 + $1.0 * $1.1 })
                let s = max(p * (1 - p), 1e-12)
                for j in 0...d {
                    grad[j] += (p - Double(label)) * row[j] / n
                    for k in 0...j { hess[j][k] += s * row[j] * row[k] / n }
                }
            }
            for j in 0..<d {
                grad[j] += l2 * model.weights[j]
                hess[j][j] += l2
            }
            hess[d][d] += 1e-9
            for j in 0...d { for k in 0..<j { hess[k][j] = hess[j][k] } }
            guard let step = solveSymmetric(hess, grad) else { break }
            var change = 0.0
            for j in 0...d {
                model.weights[j] -= step[j]
                change = max(change, abs(step[j]))
            }
            if change < 1e-10 { break }
        }
        return model
    }

    public func standardised(_ features: [Double]) -> [Double] {
        features.indices.map { scale[$0] > 0 ? (features[$0] - mean[$0]) / scale[$0] : 0 }
    }

    /// P(positive class).
    public func probability(_ features: [Double]) -> Double {
        let z = standardised(features) + [1]
        return sigmoid(zip(z, weights).reduce(0) { $0 + $1.0 * $1.1 })
    }
}

private func sigmoid(_ v: Double) -> Double { v >= 0 ? 1 / (1 + exp(-v)) : exp(v) / (1 + exp(v)) }

/// Solves A x = b for symmetric positive definite A (Cholesky); nil if A is not.
private func solveSymmetric(_ a: [[Double]], _ b: [Double]) -> [Double]? {
    let n = b.count
    var l = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
    for i in 0..<n {
        for j in 0...i {
            var s = a[i][j]
            for k in 0..<j { s -= l[i][k] * l[j][k] }
            if i == j {
                guard s > 0 else { return nil }
                l[i][i] = s.squareRoot()
            } else {
                l[i][j] = s / l[j][j]
            }
        }
    }
    var y = [Double](repeating: 0, count: n)
    for i in 0..<n {
        var s = b[i]
        for k in 0..<i { s -= l[i][k] * y[k] }
        y[i] = s / l[i][i]
    }
    var x = [Double](repeating: 0, count: n)
    for i in stride(from: n - 1, through: 0, by: -1) {
        var s = y[i]
        for k in (i + 1)..<n { s -= l[k][i] * x[k] }
        x[i] = s / l[i][i]
    }
    return x
}

/// The style measure of claim 1: a photo-vs-game domain classifier fit on reference renders
/// (a seeded, stratified hold-out gives its accuracy), then, for each set of images, the mean
/// probability it gives "photo" and the share it classifies as photo.
public struct StyleMeasure {
    public struct SetScore: Sendable {
        public var path: String
        public var count: Int
        public var meanPhotoProbability: Double
        public var photoShare: Double
        /// Mean of each feature over the set (in `StyleFeatures.names` order).
        public var featureMeans: [Double]
        /// Distance of the set's feature distribution to each reference's (`distributionDistance`):
        /// a classifier only says which side of its boundary a set falls on, even for images far
        /// from both domains; these say how far.
        public var distancePhoto: Double
        public var distanceGame: Double
        /// distanceGame / (distancePhoto + distanceGame): 1 at the photo references, 0 at the game ones.
        public var photoCloseness: Double { distancePhoto + distanceGame > 0 ? distanceGame / (distancePhoto + distanceGame) : 0.5 }
    }

    public var classifier: LogisticRegression
    /// The references, standardised as the classifier sees them.
    var photoReference: [[Double]]
    var gameReference: [[Double]]
    public var trainCount: Int
    public var heldOutCount: Int
    public var heldOutAccuracy: Double

    /// The PNG images of a folder: DIR/images/*.png when DIR/images exists (a dataset or a
    /// `generate` output), else DIR/*.png; sorted by name.
    public static func imageFiles(_ dir: String) throws -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw FileError(dir, "no such folder")
        }
        var sub: ObjCBool = false
        let folder = FileManager.default.fileExists(atPath: dir + "/images", isDirectory: &sub) && sub.boolValue ? dir + "/images" : dir
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.lowercased().hasSuffix(".png") }.sorted()
        guard !names.isEmpty else { throw FileError(folder, "holds no .png images") }
        return names.map { folder + "/" + $0 }
    }

    public static func features(of files: [String]) throws -> [[Double]] {
        try files.map { StyleFeatures.of(try PNG.read($0)) }
    }

    /// Fits the classifier on `photo` (positive) and `game` feature rows, holding out
    /// `heldOutShare` of each class (at least one image when a class has two or more).
    public init(photo: [[Double]], game: [[Double]], seed: UInt64 = 0, heldOutShare: Double = 0.25) throws {
        guard photo.count >= 2, game.count >= 2 else {
            throw FileError("style measure", "needs at least 2 photo and 2 game images (got \(photo.count) and \(game.count))")
        }
        var rng = SplitMix64(seed: seed)
        func split(_ rows: [[Double]]) -> (train: [[Double]], test: [[Double]]) {
            var order = Array(rows.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.int(below: i + 1)) }
            let held = max(1, Int((Double(rows.count) * heldOutShare).rounded()))
            return (order.dropFirst(held).map { rows[$0] }, order.prefix(held).map { rows[$0] })
        }
        let p = split(photo), g = split(game)
        let model = LogisticRegression.fit(p.train + g.train, labels: [Int](repeating: 1, count: p.train.count) + [Int](repeating: 0, count: g.train.count))
        classifier = model
        trainCount = p.train.count + g.train.count
        heldOutCount = p.test.count + g.test.count
        let correct = p.test.filter { model.probability($0) > 0.5 }.count + g.test.filter { model.probability($0) <= 0.5 }.count
        heldOutAccuracy = Double(correct) / Double(heldOutCount)
        photoReference = photo.map(model.standardised)
        gameReference = game.map(model.standardised)
    }

    /// The distance between the two references themselves: the size of the domain gap.
    public var referenceGap: Double { Self.distributionDistance(photoReference, gameReference) }

    /// A Fréchet distance with diagonal covariances between two sets of standardised feature rows,
    /// per feature: mean over features of (difference of means)² + (difference of standard deviations)².
    public static func distributionDistance(_ a: [[Double]], _ b: [[Double]]) -> Double {
        guard let d = a.first?.count, d > 0, !b.isEmpty else { return 0 }
        func moments(_ rows: [[Double]], _ j: Int) -> (Double, Double) {
            let m = rows.reduce(0) { $0 + $1[j] } / Double(rows.count)
            return (m, (rows.reduce(0) { $0 + ($1[j] - m) * ($1[j] - m) } / Double(rows.count)).squareRoot())
        }
        var total = 0.0
        for j in 0..<d {
            let (ma, sa) = moments(a, j), (mb, sb) = moments(b, j)
            total += (ma - mb) * (ma - mb) + (sa - sb) * (sa - sb)
        }
        return total / Double(d)
    }

    public func score(_ rows: [[Double]], path: String) -> SetScore {
        let probabilities = rows.map(classifier.probability)
        let n = Double(max(rows.count, 1))
        let means = (0..<(rows.first?.count ?? 0)).map { j in rows.reduce(0) { $0 + $1[j] } / n }
        let standardised = rows.map(classifier.standardised)
        return SetScore(path: path, count: rows.count, meanPhotoProbability: probabilities.reduce(0, +) / n,
                        photoShare: Double(probabilities.filter { $0 > 0.5 }.count) / n, featureMeans: means,
                        distancePhoto: Self.distributionDistance(standardised, photoReference),
                        distanceGame: Self.distributionDistance(standardised, gameReference))
    }
}

/// Mask adherence of a dataset: the mask-alignment R² (`maskAlignment`) of every image against
/// its own label map.
public struct MaskAdherence: Sendable {
    public var path: String
    public var values: [Double]
    public var mean: Double { values.reduce(0, +) / Double(max(values.count, 1)) }
    public var median: Double {
        let s = values.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// `root` in the GTA5 layout: a `synth` dataset or a `generate` output folder.
    public static func measure(_ root: String) throws -> MaskAdherence {
        let samples = try Dataset.samples(root: root)
        guard !samples.isEmpty else { throw FileError(root, "holds no images") }
        let values = try samples.map { sample -> Double in
            let (image, labels) = try sample.load()
            return maskAlignment(image: image.rgb().tensor(), labels: labels.ids)
        }
        return MaskAdherence(path: root, values: values)
    }
}
