import DGAutograd
import DGBase
import DGCheckpoint
import DGDiffusion
import DGEval
import DGLayers
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

final class ValidationTests: XCTestCase {
    func testMaskAlignment() {
        let labels: [UInt8] = [0, 0, 1, 1, 2, 2, 255, 255]
        // Each class one flat colour: all variance explained.
        let flat = Tensor(shape: [1, 3, 2, 4], floats: (0..<3).flatMap { c in labels.map { Float($0 == 255 ? 9 : Int($0) * (c + 1)) } })
        XCTAssertEqual(maskAlignment(image: flat, labels: labels), 1, accuracy: 1e-12)
        // Colour independent of class (alternating within every class): none explained.
        let unrelated = Tensor(shape: [1, 1, 2, 4], floats: [0, 1, 0, 1, 0, 1, 0, 1])
        XCTAssertEqual(maskAlignment(image: unrelated, labels: labels), 0, accuracy: 1e-12)
        // Half: class means differ by as much as the spread within classes.
        let half = Tensor(shape: [1, 1, 1, 4], floats: [0, 2, 2, 4])
        XCTAssertEqual(maskAlignment(image: half, labels: [0, 0, 1, 1]), 0.5, accuracy: 1e-12)
    }

    func testLabelsFromOneHot() {
        let ids: [Float] = [0, 5, 18, 255, 3, 42]
        let oneHot = SemanticCondition.oneHot(Tensor(shape: [1, 2, 3], floats: ids))
        XCTAssertEqual(labelsFromOneHot(oneHot, index: 0), [0, 5, 18, 255, 3, 255])
    }

    /// The validator draws each mask on U^S and U^P from the same noise, logs the mask
    /// alignment of each, and the run records it (step 0 as the untrained baseline).
    func testStyleSwapValidationDuringARun() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (base, schedule) = try Tiny.models()
        let source = InMemoryBatchSource(Tiny.samples(), seed: 4)
        let trainer = try Tiny.controlNetTrainer(Tiny.options(steps: 2), source: source, fixtureControlNet: true)
        var composed: [(String, [ValidationRow])] = []
        let validator = StyleSwapValidator(baseUNet: base.unet!, samples: try source.validationBatch(2)!,
                                           scheduler: try DDIMScheduler(schedule, steps: 2), seed: 9) { rows, path in
            composed.append((path, rows))
            FileManager.default.createFile(atPath: path, contents: Data([0]))
        }
        var s = RunSettings(output: dir)
        s.validateEvery = 2
        s.progress = false
        _ = try TrainingRun(trainer: trainer, settings: s, validator: validator).run()
        XCTAssertEqual(composed.map { URL(fileURLWithPath: $0.0).lastPathComponent }, ["step-00000000.png", "step-00000002.png"])
        let rows = composed[0].1
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows[0].generated.map(\.name), ["U^S", "U^P"])
        XCTAssertEqual(rows[0].generated[0].image.shape, [1, 3, 64, 64])
        // Here U^S and U^P are the same weights: the same image from the same noise.
        XCTAssertEqual(rows[0].generated[0].image.floats, rows[0].generated[1].image.floats)
        let records = MetricsLog(path: dir + "/metrics.jsonl").records().filter { $0["validation"] != nil }
        XCTAssertEqual(records.compactMap { $0["step"]?.int }, [0, 2])
        XCTAssertNotNil(records[0]["mask_alignment_us"]?.double)
        XCTAssertNotNil(records[0]["mask_alignment_up"]?.double)
        XCTAssertNotNil(records[0]["latent_alignment_us"]?.double)
        // The fixture ControlNet's output convolutions are not zero: the masks matter.
        XCTAssertNotEqual(records[0]["loss_own_mask"]?.double, records[0]["loss_swapped_mask"]?.double)
    }
}

final class FrozenStorageTests: XCTestCase {
    /// A bf16 weight widened at use gives exactly the gradients of its float32 widening: the
    /// ops keep the bf16 form for backward and widen it again there. (With the bf16 products off:
    /// with them on, the forward rounds the activations to bf16 too, and the values differ by that;
    /// BFloat16ComputeTests checks that path.)
    func testWidenedWeightsGiveTheSameGradients() {
        let saved = GEMM.bf16
        defer { GEMM.bf16 = saved }
        GEMM.bf16 = false
        let w32 = Tensor(shape: [4, 3, 3, 3], floats: RandomStream(seed: 1).normals(108))
        let w16 = w32.converted(to: .bf16)
        let lw32 = Tensor(shape: [5, 4], floats: RandomStream(seed: 2).normals(20)), lw16 = lw32.converted(to: .bf16)
        let pw16 = Tensor(shape: [4, 4], floats: RandomStream(seed: 4).normals(16)).converted(to: .bf16)
        var grads: [[Float]] = []
        for compact in [true, false] {
            var gx: Tensor?
            let x = Var.leaf(Tensor(shape: [1, 3, 6, 6], floats: RandomStream(seed: 3).normals(108))) { gx = $0 }
            let w = compact ? Var(widening: w16) : Var(w16.converted(to: .f32))
            XCTAssertEqual(w.widenedFrom != nil, compact)
            let lw = compact ? Var(widening: lw16) : Var(lw16.converted(to: .f32))
            let pw = compact ? Var(widening: pw16) : Var(pw16.converted(to: .f32))
            let c = conv2d(x, w, nil, padding: 1)
            let h = c.permuted([0, 2, 3, 1])
            // The per-pixel layers between image and token layouts keep their weight too.
            let tokens = pointwiseToTokens(c, pw, nil)
            let back = tokensToPointwise(tokens, pw, nil, height: 6, width: 6)
            Autograd.backward(sum(linear(h, lw, nil) * linear(h, lw, nil)) + sum(back * back))
            grads.append(gx!.floats)
        }
        XCTAssertEqual(grads[0], grads[1])
    }
}

final class MaskLossTests: XCTestCase {
    /// At initialisation (zero output convolutions) the ControlNet ignores its condition: the
    /// loss with swapped masks is exactly the loss with the right ones. A few updates later it
    /// is not (the mask acts through the product of two layers that start at zero, so it takes
    /// a few large steps to show at float precision).
    func testAnUntrainedControlNetIgnoresTheMask() throws {
        let source = InMemoryBatchSource(Tiny.samples(), seed: 4)
        var o = Tiny.options(steps: 8, lr: 1e-2, batch: 2)
        o.maxGradNorm = nil
        let trainer = try Tiny.controlNetTrainer(o, source: source)
        let (_, schedule) = try Tiny.models()
        let v = StyleSwapValidator(baseUNet: nil, samples: try source.validationBatch(4)!, scheduler: try DDIMScheduler(schedule, steps: 1),
                                   seed: 1) { _, _ in }
        let before = try XCTUnwrap(v.maskLosses(trainer: trainer))
        XCTAssertEqual(before.own, before.swapped)
        for _ in 0..<8 { try trainer.trainStep() }
        let after = try XCTUnwrap(v.maskLosses(trainer: trainer))
        XCTAssertNotEqual(after.own, after.swapped)
    }
}

final class DownsampleTests: XCTestCase {
    func testBlocksTakeTheirMostFrequentClass() {
        // 4x2 -> 2x1 with factor 2: left block 3x class 1 + 255, right block 2x 4 + 2x 2 (tie: lower id).
        let labels: [UInt8] = [1, 1, 4, 2, 1, 255, 2, 4]
        XCTAssertEqual(downsampleLabels(labels, width: 4, height: 2, factor: 2), [1, 2])
        XCTAssertEqual(downsampleLabels([255, 255, 255, 255], width: 2, height: 2, factor: 2), [255])
    }
}
