import DGAutograd
import DGBase
import DGCheckpoint
import DGData
import DGEval
import DGLayers
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

final class SegmentationTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "dginstyle-seg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    // MARK: metrics

    func testIoUAndMeansOfHandMadeMasks() {
        // Six pixels, four classes; the last pixel is ignored (its prediction 2 does not count).
        var m = ConfusionMatrix(classes: 4)
        m.add(truth: [0, 0, 1, 1, 2, 255], predicted: [0, 1, 1, 1, 0, 2])
        XCTAssertEqual(m.totalPixels, 5)
        XCTAssertEqual(m.truthPixels, [2, 2, 1, 0])
        XCTAssertEqual(m.predictedPixels, [2, 3, 0, 0])
        // class 0: TP 1, FP 1 (pixel 4), FN 1 (pixel 1) -> 1/3; class 1: TP 2, FP 1 -> 2/3;
        // class 2: TP 0, FN 1 -> 0; class 3 is absent from the truth and never predicted.
        let iou = m.iou
        XCTAssertEqual(iou[0]!, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(iou[1]!, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(iou[2]!, 0)
        XCTAssertNil(iou[3])
        XCTAssertEqual(m.meanIoU!, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m.meanIoUOverPredictedOrPresent!, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m.pixelAccuracy!, 3.0 / 5, accuracy: 1e-12)

        // A class predicted but absent from the truth: left out of mIoU (present classes), counted
        // with IoU 0 by the non-empty-union mean.
        var p = ConfusionMatrix(classes: 4)
        p.add(truth: [0, 0], predicted: [0, 3])
        XCTAssertNil(p.iou[3])
        XCTAssertEqual(p.meanIoU!, 0.5, accuracy: 1e-12)
        XCTAssertEqual(p.meanIoUOverPredictedOrPresent!, 0.25, accuracy: 1e-12)

        var empty = ConfusionMatrix(classes: 4)
        empty.add(truth: [255, 255], predicted: [0, 1])
        XCTAssertNil(empty.meanIoU)
        XCTAssertNil(empty.pixelAccuracy)
    }

    func testReportNamesClassesAndWritesNullForAbsentOnes() throws {
        var m = ConfusionMatrix(classes: 3)
        m.add(truth: [0, 1, 1], predicted: [0, 1, 0])
        let report = SegmentationReport(confusion: m, classNames: ["road", "sky", "car"], images: 1, model: "m", data: ["d"], seconds: 0)
        let json = try JSON.parse(report.json.compact)
        XCTAssertEqual(json["iou"]?["road"]?.double ?? -1, 0.5, accuracy: 1e-6)
        XCTAssertEqual(json["iou"]?["sky"]?.double ?? -1, 0.5, accuracy: 1e-6)
        XCTAssertEqual(json["iou"]?["car"], .null)
        XCTAssertEqual(json["miou"]?.double ?? -1, 0.5, accuracy: 1e-6)
        XCTAssertEqual(json["pixel_accuracy"]?.double ?? -1, 2.0 / 3, accuracy: 1e-6)
        XCTAssertEqual(json["confusion"], [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    }

    /// The paired bootstrap of `measure report`: a set no better than another gives 0 and an
    /// interval around it; a set better on every image an interval above 0.
    func testPairedIoUBootstrap() throws {
        func image(_ hits: Int) -> ConfusionMatrix {
            var m = ConfusionMatrix(classes: 3)
            // 10 pixels of class 2, `hits` predicted right, the rest as class 0; 20 pixels of class 0.
            m.add(truth: [UInt8](repeating: 2, count: 10) + [UInt8](repeating: 0, count: 20),
                  predicted: [UInt8](repeating: 2, count: hits) + [UInt8](repeating: 0, count: 30 - hits))
            return m
        }
        let a = [2, 5, 3, 8].map(image), better = [4, 7, 5, 10].map(image)
        let same = try XCTUnwrap(PairedIoUBootstrap.interval(a, a, classes: [2], resamples: 500))
        XCTAssertEqual(same.difference, 0)
        XCTAssertEqual(same.low, 0)
        XCTAssertEqual(same.high, 0)
        let up = try XCTUnwrap(PairedIoUBootstrap.interval(a, better, classes: [2], resamples: 500))
        XCTAssertEqual(up.difference, 26.0 / 40 - 18.0 / 40, accuracy: 1e-12)   // IoU = hits / 10 summed: 18/40 -> 26/40
        XCTAssertGreaterThan(up.low, 0)
        XCTAssertLessThanOrEqual(up.low, up.difference)
        XCTAssertGreaterThanOrEqual(up.high, up.difference)
        // Only classes present in the truth count; none present: nil.
        XCTAssertNil(PairedIoUBootstrap.interval(a, better, classes: [1]))
        XCTAssertNil(PairedIoUBootstrap.interval([], [], classes: [2]))
        // Several paired runs on the same images: the mean of their differences; resampling the
        // runs as well, the interval reaches from the run without a gain (0) towards the one with.
        let runs = try XCTUnwrap(PairedIoUBootstrap.interval(runs: [(a, a), (a, better)], classes: [2], resamples: 500))
        XCTAssertEqual(runs.difference, up.difference / 2, accuracy: 1e-12)
        XCTAssertEqual(runs.low, 0)
        XCTAssertGreaterThan(runs.high, runs.difference)
        // One run is the single-run interval, draw for draw.
        let one = try XCTUnwrap(PairedIoUBootstrap.interval(runs: [(a, better)], classes: [2], resamples: 500))
        XCTAssertEqual(one.low, up.low)
        XCTAssertEqual(one.high, up.high)
        XCTAssertNil(PairedIoUBootstrap.interval(runs: [(a, better), (Array(a.prefix(2)), Array(better.prefix(2)))], classes: [2]))
        // Matrices from a report's counts.
        XCTAssertEqual(ConfusionMatrix(classes: 3, counts: image(4).counts), image(4))
        XCTAssertNil(ConfusionMatrix(classes: 3, counts: [1, 2]))
        var report = SegmentationReport(confusion: image(4), classNames: ["road", "sky", "pole"], images: 1, model: "m", data: ["d"], seconds: 0)
        XCTAssertNil(try JSON.parse(report.json.compact)["per_image"])
        report.perImage = [("x.png", image(4))]
        let listed = try JSON.parse(report.json.compact)["per_image"]?.array
        XCTAssertEqual(listed?.first?["image"]?.string, "x.png")
        XCTAssertEqual(listed?.first?["counts"]?.array?.compactMap(\.int), image(4).counts)
    }

    // MARK: model

    func testSegmenterShapesNamesAndSaveLoad() throws {
        let model = Segmenter(SegmenterConfig(classNames: Cityscapes.classNames))
        let names = model.namedParameters().map(\.name)
        XCTAssertTrue(names.contains("encoder.0.conv1.weight"))
        XCTAssertTrue(names.contains("encoder.3.downsample.weight"))
        XCTAssertFalse(names.contains("encoder.0.downsample.weight"))
        XCTAssertTrue(names.contains("decoder.2.conv1.weight"))
        XCTAssertEqual(model.decoder[2].conv1.weight.shape, [16, 32, 3, 3])
        XCTAssertEqual(model.conv_out.weight.shape, [19, 16, 1, 1])
        model.initializeParameters(seed: 3)
        let x = Tensor(shape: [1, 3, 16, 24], floats: (0..<(3 * 16 * 24)).map { Float($0 % 17) / 8 - 1 })
        XCTAssertEqual(Autograd.noGrad { model(Var(x)) }.shape, [1, 19, 16, 24])
        // Sides that are no multiple of 8 are padded inside predict; the answer has the image's size.
        let odd = Tensor(shape: [1, 3, 13, 21], floats: (0..<(3 * 13 * 21)).map { Float($0 % 5) / 3 - 0.5 })
        XCTAssertEqual(model.predict(odd).count, 13 * 21)

        let path = dir + "/s.dginstyle"
        try model.save(to: path)
        let loaded = try Segmenter.load(from: path)
        XCTAssertEqual(loaded.config, model.config)
        XCTAssertEqual(loaded.predict(odd), model.predict(odd))
        XCTAssertThrowsError(try Segmenter.load(from: dir + "/missing.dginstyle"))
    }

    // MARK: training

    func writeData(_ name: String, count: Int, seed: UInt64) throws -> String {
        let root = dir + "/" + name
        try Synth.writeDataset(to: root, count: count, width: 64, height: 32, style: .game, seed: seed, progress: false)
        return root
    }

    func options(steps: Int) -> SegmentationOptions {
        var o = SegmentationOptions()
        o.steps = steps
        o.batchSize = 2
        o.crop = 32
        o.warmupSteps = 0
        o.learningRate = 3e-3
        o.seed = 5
        return o
    }

    func trainer(_ data: SegmentationData, steps: Int) throws -> SegmentationTrainer {
        var config = SegmenterConfig(classNames: Cityscapes.classNames)
        config.blockOutChannels = [8, 16, 16]
        let model = Segmenter(config)
        model.initializeParameters(seed: 1)
        return try SegmentationTrainer(model: model, crops: SegmentationCrops(data: data, crop: 32, seed: 5), options: options(steps: steps))
    }

    /// A few updates on two small synthetic images lower the loss on a fixed batch of their crops.
    func testAFewStepsLowerTheLoss() throws {
        let data = try SegmentationData(roots: [try writeData("a", count: 2, seed: 1)])
        let t = try trainer(data, steps: 25)
        let fixed = try t.crops.batch(firstSample: 1000, count: 4)
        func loss() -> Float {
            Autograd.noGrad { crossEntropy(t.model(Var(fixed.pixels)), targets: fixed.targets) }.value.floats[0]
        }
        let before = loss()
        for _ in 0..<25 { try t.trainStep() }
        let after = loss()
        XCTAssertLessThan(after, before * 0.8, "loss \(before) -> \(after)")
    }

    /// Crops mix both folders, come from streams keyed by the sample index (the same k gives the
    /// same crop), and hold only train ids or 255.
    func testCropsPoolFoldersAndAreReproducible() throws {
        let data = try SegmentationData(roots: [try writeData("a", count: 3, seed: 1), try writeData("b", count: 2, seed: 2)])
        XCTAssertEqual(data.counts, [3, 2])
        let crops = SegmentationCrops(data: data, crop: 32, seed: 9)
        let again = SegmentationCrops(data: data, crop: 32, seed: 9)
        for k in [0, 7, 31] { XCTAssertEqual(try crops.sample(k).1, try again.sample(k).1) }
        let b = try crops.batch(firstSample: 0, count: 6)
        XCTAssertEqual(b.pixels.shape, [6, 3, 32, 32])
        XCTAssertTrue(b.targets.allSatisfy { $0 < 19 || $0 == 255 })
        // A crop larger than the image is padded with ignored pixels.
        let big = SegmentationCrops(data: data, crop: 72, seed: 9)
        let (_, labels) = try big.sample(0)
        XCTAssertEqual(labels.width, 72)
        XCTAssertTrue(labels.ids[(72 - 1) * 72] == 255)   // row 71 lies below the 32-pixel image
    }

    /// `photometric`: the same crops and labels, images augmented differently per crop and per
    /// seed, identically for the same (seed, k); recorded in the options only when on.
    func testPhotometricAugmentation() throws {
        let data = try SegmentationData(roots: [try writeData("a", count: 3, seed: 1)])
        let plain = SegmentationCrops(data: data, crop: 32, seed: 9)
        let augmented = SegmentationCrops(data: data, crop: 32, seed: 9, photometric: true)
        let again = SegmentationCrops(data: data, crop: 32, seed: 9, photometric: true)
        var changed = 0
        for k in 0..<12 {
            let (p, pl) = try plain.sample(k), (a, al) = try augmented.sample(k)
            XCTAssertEqual(pl, al, "labels are untouched")
            XCTAssertEqual(a, try again.sample(k).0, "fixed by (seed, k)")
            if a != p { changed += 1 }
        }
        // Each of six operations applies with probability 1/2: all twelve crops untouched has odds 2^-72.
        XCTAssertGreaterThan(changed, 6)
        let otherSeed = SegmentationCrops(data: data, crop: 32, seed: 10, photometric: true)
        XCTAssertNotEqual(try otherSeed.sample(0).0, try SegmentationCrops(data: data, crop: 32, seed: 10).sample(0).0)
        var options = SegmentationOptions()
        XCTAssertNil(options.json["photometric"])
        options.photometric = true
        XCTAssertEqual(options.json["photometric"], .string(PhotometricAugmentation.name))
    }

    /// The pieces by hand: mmseg's convert truncates and clips; a neutral HSV round trip keeps
    /// every 8-bit colour; saturation 0 gives grey at the maximum; a 120-degree hue turn rotates
    /// the primaries; blur keeps a flat image and spreads an impulse symmetrically.
    func testPhotometricPieces() {
        var px: [Float] = [10, 200, 250]
        PhotometricAugmentation.affine(&px, alpha: 1.5, beta: -20)
        XCTAssertEqual(px, [0, 255, 255])
        var colours: [Float] = []
        for r in stride(from: 0, through: 255, by: 15) { for g in stride(from: 0, through: 255, by: 17) { for b in stride(from: 0, through: 255, by: 51) { colours += [Float(r), Float(g), Float(b)] } } }
        var roundTrip = colours
        PhotometricAugmentation.adjustHSV(&roundTrip, saturation: 1, hueShiftDegrees: 0)
        XCTAssertEqual(roundTrip, colours)
        var grey: [Float] = [200, 100, 50]
        PhotometricAugmentation.adjustHSV(&grey, saturation: 0, hueShiftDegrees: 0)
        XCTAssertEqual(grey, [200, 200, 200])
        var red: [Float] = [255, 0, 0, 0, 255, 0]
        PhotometricAugmentation.adjustHSV(&red, saturation: 1, hueShiftDegrees: 120)
        XCTAssertEqual(red, [0, 255, 0, 0, 0, 255])
        let flat = [Float](repeating: 77, count: 5 * 5 * 3)
        XCTAssertEqual(PhotometricAugmentation.gaussianBlur(flat, width: 5, height: 5, sigma: 1.3), flat)
        var impulse = [Float](repeating: 0, count: 5 * 5 * 3)
        impulse[(2 * 5 + 2) * 3] = 255
        let spread = PhotometricAugmentation.gaussianBlur(impulse, width: 5, height: 5, sigma: 1)
        XCTAssertLessThan(spread[(2 * 5 + 2) * 3], 255)
        XCTAssertGreaterThan(spread[(2 * 5 + 1) * 3], 0)
        XCTAssertEqual(spread[(2 * 5 + 1) * 3], spread[(2 * 5 + 3) * 3])
        XCTAssertEqual(spread[(1 * 5 + 2) * 3], spread[(2 * 5 + 1) * 3])
        XCTAssertEqual(spread[(2 * 5 + 2) * 3 + 1], 0, "channels stay apart")
    }

    /// `balanceClasses`: ENet's weights 1 / ln(1.02 + share) from the training labels, used by the
    /// loss, recorded in the options (a checkpoint made without them does not resume with them).
    func testBalancedClassWeights() throws {
        let data = try SegmentationData(roots: [try writeData("a", count: 2, seed: 1)])
        let counts = try data.classPixels()
        let total = Double(counts.reduce(0, +))
        XCTAssertGreaterThan(total, 0)
        let weights = try data.balancedClassWeights()
        XCTAssertEqual(weights.count, 19)
        for c in 0..<19 { XCTAssertEqual(Double(weights[c]), 1 / log(1.02 + Double(counts[c]) / total), accuracy: 1e-4) }
        let present = (0..<19).filter { counts[$0] > 0 }.sorted { counts[$0] < counts[$1] }
        XCTAssertGreaterThan(present.count, 1)
        XCTAssertGreaterThan(weights[present.first!], weights[present.last!])

        var o = options(steps: 2)
        o.balanceClasses = true
        var config = SegmenterConfig(classNames: Cityscapes.classNames)
        config.blockOutChannels = [8, 16, 16]
        let model = Segmenter(config)
        model.initializeParameters(seed: 1)
        let t = try SegmentationTrainer(model: model, crops: SegmentationCrops(data: data, crop: 32, seed: 5), options: o)
        XCTAssertEqual(t.classWeights, weights)
        XCTAssertNil(try trainer(data, steps: 2).classWeights)
        XCTAssertEqual(o.json["class_weights"]?.string, "balanced")
        XCTAssertNil(options(steps: 2).json["class_weights"])
        XCTAssertFalse(o.conflicts(with: options(steps: 2).json).isEmpty)
        // The weighted loss is what the trainer optimises: it differs from the plain one on a batch.
        let batch = try t.crops.batch(firstSample: 0, count: 2)
        let logits = Autograd.noGrad { t.model(Var(batch.pixels)) }
        let weighted = crossEntropy(logits, targets: batch.targets, weights: weights).value.floats[0]
        let plain = crossEntropy(logits, targets: batch.targets).value.floats[0]
        XCTAssertNotEqual(weighted, plain)
        XCTAssertEqual(try t.trainStep().loss, Double(weighted), accuracy: 1e-5)
    }

    /// Stopped after a checkpoint and resumed, a run ends with the same weights as one that ran through.
    func testResumeGivesTheSameWeights() throws {
        let data = try SegmentationData(roots: [try writeData("a", count: 2, seed: 1)])
        func run(_ out: String, stopAfter: Int?, resume: Bool) throws -> TrainingRun {
            var s = RunSettings(output: out)
            s.exportFormat = .native
            s.checkpointEvery = 3
            s.progress = false
            s.resume = resume
            s.stopAfter = stopAfter
            let r = TrainingRun(trainer: try trainer(data, steps: 6), settings: s)
            _ = try r.run()
            return r
        }
        _ = try run(dir + "/straight", stopAfter: nil, resume: false)
        let first = try run(dir + "/split", stopAfter: 3, resume: false)
        XCTAssertFalse(FileManager.default.fileExists(atPath: first.modelPath))
        XCTAssertThrowsError(try run(dir + "/split", stopAfter: nil, resume: false))   // checkpoints there: needs --resume
        _ = try run(dir + "/split", stopAfter: nil, resume: true)
        let a = try Segmenter.load(from: dir + "/straight/" + SegmentationTrainer.modelFile)
        let b = try Segmenter.load(from: dir + "/split/" + SegmentationTrainer.modelFile)
        for ((name, p), (_, q)) in zip(a.namedParameters(), b.namedParameters()) {
            XCTAssertEqual(p.value!.floats, q.value!.floats, name)
        }
        XCTAssertEqual(MetricsLog(path: dir + "/split/metrics.jsonl").records().compactMap { $0["step"]?.int }, [1, 2, 3, 4, 5, 6])
    }
}
