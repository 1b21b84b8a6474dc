import DGBase
import DGData
import DGEval
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

final class StyleMeasureTests: XCTestCase {
    /// Flat blocks of a few saturated colours (game-like).
    static func flatImage(_ seed: UInt64, width: Int = 48, height: Int = 32) -> Image {
        var rng = SplitMix64(seed: seed)
        let colours = (0..<4).map { _ in [UInt8(rng.int(below: 256)), UInt8(rng.int(below: 256)), 0] }
        var pixels: [UInt8] = []
        for y in 0..<height { for x in 0..<width { pixels += colours[(x / 12 + y / 16) % 4] } }
        return Image(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// Grey-brown textured noise (photo-like).
    static func noisyImage(_ seed: UInt64, width: Int = 48, height: Int = 32) -> Image {
        var rng = SplitMix64(seed: seed)
        let base = 80 + rng.int(below: 60)
        var pixels: [UInt8] = []
        for _ in 0..<(width * height) {
            let v = base + rng.int(below: 60)
            pixels += [UInt8(v), UInt8(v - 10), UInt8(v - 20)]
        }
        return Image(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// The classifier separates two obviously different sets on held-out images, scores new
    /// images of each kind on the right side, and the distances put each set next to its own kind.
    func testClassifierSeparatesObviousSets() throws {
        let photo = (0..<24).map { StyleFeatures.of(Self.noisyImage(UInt64($0))) }
        let game = (0..<24).map { StyleFeatures.of(Self.flatImage(UInt64(100 + $0))) }
        XCTAssertEqual(photo[0].count, StyleFeatures.names.count)
        let measure = try StyleMeasure(photo: photo, game: game, seed: 3)
        XCTAssertEqual(measure.heldOutCount, 12)
        XCTAssertEqual(measure.trainCount, 36)
        XCTAssertEqual(measure.heldOutAccuracy, 1)
        let newPhoto = measure.score((0..<8).map { StyleFeatures.of(Self.noisyImage(UInt64(1000 + $0))) }, path: "p")
        let newGame = measure.score((0..<8).map { StyleFeatures.of(Self.flatImage(UInt64(2000 + $0))) }, path: "g")
        XCTAssertGreaterThan(newPhoto.meanPhotoProbability, 0.9)
        XCTAssertEqual(newPhoto.photoShare, 1)
        XCTAssertLessThan(newGame.meanPhotoProbability, 0.1)
        XCTAssertEqual(newGame.photoShare, 0)
        XCTAssertLessThan(newPhoto.distancePhoto, newPhoto.distanceGame)
        XCTAssertLessThan(newGame.distanceGame, newGame.distancePhoto)
        XCTAssertGreaterThan(newPhoto.photoCloseness, 0.8)
        XCTAssertLessThan(newGame.photoCloseness, 0.2)
        // The same seed splits the same way: the same model.
        XCTAssertEqual(try StyleMeasure(photo: photo, game: game, seed: 3).classifier.weights, measure.classifier.weights)
        XCTAssertThrowsError(try StyleMeasure(photo: [photo[0]], game: game))
    }

    /// Newton's method reaches the regularised optimum: the gradient vanishes there, and on
    /// overlapping 1-D data the probability rises with the feature.
    func testLogisticRegressionOptimum() {
        let x: [[Double]] = [[0], [1], [2], [3], [2.5], [4], [5], [6]]
        let y = [0, 0, 0, 1, 0, 1, 1, 1]
        let l2 = 0.01
        let m = LogisticRegression.fit(x, labels: y, l2: l2)
        var grad = [0.0, 0.0]
        for (row, label) in zip(x, y) {
            let z = m.standardised(row)[0]
            let p = m.probability(row)
            grad[0] += (p - Double(label)) * z / Double(x.count)
            grad[1] += (p - Double(label)) / Double(x.count)
        }
        grad[0] += l2 * m.weights[0]
        XCTAssertEqual(grad[0], 0, accuracy: 1e-9)
        XCTAssertEqual(grad[1], 0, accuracy: 1e-9)
        XCTAssertLessThan(m.probability([1]), m.probability([3]))
        XCTAssertLessThan(m.probability([3]), m.probability([5]))
        XCTAssertEqual(StyleMeasure.distributionDistance(x, x), 0)
        XCTAssertEqual(StyleMeasure.distributionDistance([[0], [2]], [[1], [1]]), 1, accuracy: 1e-12)  // means equal, spreads 1 vs 0
    }

    /// Mask adherence of a dataset folder: 1 for flat class colours, near 0 for noise unrelated to the mask.
    func testMaskAdherenceOfHandMadeDatasets() throws {
        let root = NSTemporaryDirectory() + "dginstyle-masks-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (w, h) = (64, 64)
        var labels = LabelMap(width: w, height: h, fill: 0)
        for y in 0..<h { for x in 0..<w { labels[x, y] = UInt8(x < 20 ? 0 : y < 30 ? 10 : x < 50 ? 13 : 255) } }
        var rng = SplitMix64(seed: 9)
        var flat: [UInt8] = [], noise: [UInt8] = []
        for p in 0..<(w * h) {
            let c = Cityscapes.palette[Int(min(labels.ids[p], 18))]
            flat += labels.ids[p] == 255 ? [UInt8(rng.int(below: 256)), 0, 0] : [c.0, c.1, c.2]  // ignore pixels do not count
            noise += (0..<3).map { _ in UInt8(rng.int(below: 256)) }
        }
        for (name, pixels) in [("flat", flat), ("noise", noise)] {
            for sub in ["images", "labels"] { try FileManager.default.createDirectory(atPath: "\(root)/\(name)/\(sub)", withIntermediateDirectories: true) }
            for i in 0..<2 {
                try PNG.write(Image(width: w, height: h, channels: 3, pixels: pixels), to: "\(root)/\(name)/images/x\(i).png")
                try PNG.write(Image(width: w, height: h, channels: 1, pixels: labels.ids), to: "\(root)/\(name)/labels/x\(i)_labelTrainIds.png")
            }
        }
        let flatResult = try MaskAdherence.measure(root + "/flat")
        XCTAssertEqual(flatResult.values.count, 2)
        XCTAssertEqual(flatResult.mean, 1, accuracy: 1e-9)
        let noiseResult = try MaskAdherence.measure(root + "/noise")
        XCTAssertEqual(noiseResult.mean, 0, accuracy: 0.01)
        XCTAssertThrowsError(try MaskAdherence.measure(root + "/missing"))
    }
}
