import DGAutograd
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

final class LRScheduleTests: XCTestCase {
    func lr(_ s: LRSchedule, _ step: Int, base: Double = 1e-3) -> Double { s.learningRate(step: step, base: base) }

    /// The values diffusers' get_scheduler lambdas give, computed by hand from their formulas.
    func testSchedulesFollowTheDiffusersFormulas() {
        let constant = LRSchedule(.constant, totalSteps: 100)
        for s in [0, 1, 50, 99, 150] { XCTAssertEqual(lr(constant, s), 1e-3) }

        let warm = LRSchedule(.constantWithWarmup, warmupSteps: 10, totalSteps: 100)
        XCTAssertEqual(lr(warm, 0), 0)                       // the first update has rate 0, as in PyTorch's LambdaLR
        XCTAssertEqual(lr(warm, 5), 5e-4, accuracy: 1e-18)
        XCTAssertEqual(lr(warm, 10), 1e-3)
        XCTAssertEqual(lr(warm, 1000), 1e-3)

        let linear = LRSchedule(.linear, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(lr(linear, 5), 5e-4, accuracy: 1e-18)
        XCTAssertEqual(lr(linear, 10), 1e-3, accuracy: 1e-18)
        XCTAssertEqual(lr(linear, 60), 5e-4, accuracy: 1e-18)
        XCTAssertEqual(lr(linear, 110), 0)
        XCTAssertEqual(lr(linear, 200), 0)

        let cosine = LRSchedule(.cosine, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(lr(cosine, 3), 3e-4, accuracy: 1e-18)
        XCTAssertEqual(lr(cosine, 10), 1e-3, accuracy: 1e-18)
        for s in [10, 35, 60, 85, 110] {
            let progress = Double(s - 10) / 100
            XCTAssertEqual(lr(cosine, s), 1e-3 * 0.5 * (1 + cos(Double.pi * progress)), accuracy: 1e-15, "step \(s)")
        }
        XCTAssertEqual(lr(cosine, 60), 5e-4, accuracy: 1e-15)
        XCTAssertEqual(lr(cosine, 110), 0, accuracy: 1e-18)
        let restarts = LRSchedule(.cosine, warmupSteps: 0, totalSteps: 100, cycles: 1)
        XCTAssertEqual(lr(restarts, 50), 0, accuracy: 1e-18)
        XCTAssertEqual(lr(restarts, 100), 1e-3, accuracy: 1e-15)

        let poly = LRSchedule(.polynomial, warmupSteps: 10, totalSteps: 110, endLearningRate: 1e-7, power: 2)
        XCTAssertEqual(lr(poly, 4), 4e-4, accuracy: 1e-18)
        XCTAssertEqual(lr(poly, 10), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(lr(poly, 60), (1e-3 - 1e-7) * 0.25 + 1e-7, accuracy: 1e-15)
        XCTAssertEqual(lr(poly, 110), 1e-7, accuracy: 1e-15)
        XCTAssertEqual(lr(poly, 500), 1e-7, accuracy: 1e-15)
        let polyLinear = LRSchedule(.polynomial, warmupSteps: 0, totalSteps: 100)
        XCTAssertEqual(lr(polyLinear, 30), (1e-3 - 1e-7) * 0.7 + 1e-7, accuracy: 1e-15)
    }

    func testTrainerUsesTheScheduledRate() throws {
        var o = Tiny.options(steps: 3, lr: 1e-3)
        o.schedule = LRSchedule(.constantWithWarmup, warmupSteps: 2, totalSteps: 3)
        let t = try Tiny.controlNetTrainer(o)
        let before = weightBytes(t.trainable)
        XCTAssertEqual(try t.trainStep().learningRate, 0)
        // Rate 0: AdamW's decay and step are both 0, so nothing moves.
        XCTAssertEqual(weightBytes(t.trainable), before)
        XCTAssertEqual(try t.trainStep().learningRate, 5e-4, accuracy: 1e-12)
        XCTAssertEqual(try t.trainStep().learningRate, 1e-3, accuracy: 1e-12)
    }
}

final class TrainerTests: XCTestCase {
    func gradients(_ t: DiffusionTrainer) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: t.trainable.namedParameters().compactMap { n, p in p.grad.map { (n, $0) } })
    }

    /// The largest per-parameter difference ||a - b|| / ||a||. Some gradients are zero up to
    /// rounding (self-attention over the single token of the 1x1 middle block: softmax of one
    /// logit has no gradient), so norms are floored at 1e-3 of the global gradient norm.
    func worstGradientDifference(_ a: [String: Tensor], _ b: [String: Tensor]) -> Double {
        func norm(_ t: Tensor) -> Double { t.floats.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
        let global = a.values.reduce(0.0) { $0 + pow(norm($1), 2) }.squareRoot()
        var worst = 0.0
        for (name, g) in a {
            guard let h = b[name] else { XCTFail("no gradient for \(name)"); continue }
            worst = max(worst, norm(Kernels.sub(g, h)) / max(norm(g), 1e-3 * global))
        }
        return worst
    }

    /// Two micro-batches of 1 with the loss halved give the gradient of one batch of 2: the
    /// same samples (the source draws them in order), the same noise (keyed by sample).
    func testGradientAccumulationEqualsTheLargerBatch() throws {
        var big = Tiny.options(batch: 2), small = Tiny.options(batch: 1, accumulation: 2)
        big.maxGradNorm = nil
        small.maxGradNorm = nil
        let a = try Tiny.controlNetTrainer(big, fixtureControlNet: true)
        let b = try Tiny.controlNetTrainer(small, fixtureControlNet: true)
        let (lossA, normA) = try a.accumulateGradients()
        let (lossB, normB) = try b.accumulateGradients()
        XCTAssertEqual(lossA, lossB, accuracy: 1e-5 * lossA)
        XCTAssertEqual(normA, normB, accuracy: 1e-4 * normA)
        let ga = gradients(a), gb = gradients(b)
        XCTAssertEqual(ga.count, a.trainable.namedParameters().count)
        XCTAssertEqual(Set(ga.keys), Set(gb.keys))
        XCTAssertLessThan(worstGradientDifference(ga, gb), 1e-4)
    }

    /// Gradient checkpointing recomputes the same forward: same loss, same gradients. Not bit for bit:
    /// a checkpointed block sums its input's gradients inside the block before adding the ones from
    /// outside it (the skip connections), so the two differ by f32 reassociation, ~8 ulps here, whose
    /// size moves with the rounding of the convolutions around it (on an AMD EPYC: within the bound
    /// with the implicit-GEMM route and Winograd from 256 or 16 tiles, 1.13e-6 with that CPU's
    /// 64-tile rule). So the routes are fixed rather than the CPU's rule: both, each within 1e-6, with
    /// F(2x2, 3x3) (F(4x4, 3x3) off: its rounding is another, and CPU-dependent, route).
    func testGradientCheckpointingGivesTheSameGradients() throws {
        let rule = (Kernels.winogradTiles, Kernels.winograd4Tiles)
        defer { Kernels.winogradTiles = rule.0; Kernels.winograd4Tiles = rule.1 }
        Kernels.winograd4Tiles = -1
        for tiles in [-1, 256] {
            Kernels.winogradTiles = tiles
            var on = Tiny.options()
            on.gradientCheckpointing = true
            let a = try Tiny.controlNetTrainer(Tiny.options(), fixtureControlNet: true)
            let b = try Tiny.controlNetTrainer(on, fixtureControlNet: true)
            let (la, _) = try a.accumulateGradients()
            let (lb, _) = try b.accumulateGradients()
            XCTAssertEqual(la, lb, "Winograd from \(tiles) tiles")
            XCTAssertLessThan(worstGradientDifference(gradients(a), gradients(b)), 1e-6, "Winograd from \(tiles) tiles")
        }
    }

    /// The same for LoRA adapters inside the recomputed blocks (targets all: convolutions too).
    /// B starts at zero, so A's gradients are zero in both; B's are compared.
    func testGradientCheckpointingGivesTheSameLoRAGradients() throws {
        var off = Tiny.options()
        off.lora = LoRASettings(rank: 2, alpha: 2, targets: .all)
        var on = off
        on.gradientCheckpointing = true
        let a = try Tiny.unetTrainer(off), b = try Tiny.unetTrainer(on)
        let (la, _) = try a.accumulateGradients()
        let (lb, _) = try b.accumulateGradients()
        XCTAssertEqual(la, lb)
        let ga = gradients(a), gb = gradients(b)
        XCTAssertEqual(ga.count, a.unet.loraParameters().count)
        // Summation order only: ~3e-7 on most adapters, 1.5e-6 on the smallest gradients (the
        // cross-attention keys', 0.2% of the global norm); the bound ModelForwardTests sets for
        // the UNet's own weights.
        XCTAssertLessThan(worstGradientDifference(ga, gb), 1e-5)
    }

    func testFrozenModelsGetNoGradients() throws {
        let t = try Tiny.controlNetTrainer(Tiny.options(), fixtureControlNet: true)
        _ = try t.accumulateGradients()
        for model in [t.unet as Module, t.vae, t.textEncoder] {
            for (name, p) in model.namedParameters() {
                XCTAssertNil(p.grad, name)
                XCTAssertFalse(p.requiresGrad, name)
            }
        }
        for (name, p) in t.controlnet!.namedParameters() { XCTAssertNotNil(p.grad, name) }

        let u = try Tiny.unetTrainer(Tiny.options())
        _ = try u.accumulateGradients()
        for model in [u.vae as Module, u.textEncoder] {
            for (name, p) in model.namedParameters() { XCTAssertNil(p.grad, name) }
        }
        XCTAssertTrue(u.unet.namedParameters().allSatisfy { $0.parameter.grad != nil })
    }

    /// A few updates on one fixed sample lower the loss on that sample (measured with fixed
    /// noise and timesteps, so that the comparison is not at the mercy of the draw).
    func testAFewStepsOnAFixedBatchReduceTheLoss() throws {
        let sample = Tiny.samples()[0]
        for target in [TrainingTarget.controlnet, .unet] {
            var o = Tiny.options(steps: 6, lr: 2e-3, batch: 2)
            o.maxGradNorm = nil
            let source = InMemoryBatchSource([target == .unet ? .init(pixels: sample.pixels, condition: nil, caption: "") : sample], seed: 1)
            let t = target == .unet ? try Tiny.unetTrainer(o, source: source) : try Tiny.controlNetTrainer(o, source: source)
            let probe = try source.next(4)
            let offset = 1_000_000  // noise of samples the training never draws
            let before = try t.evaluateLoss(probe, firstSample: offset)
            for _ in 0..<6 { try t.trainStep() }
            let after = try t.evaluateLoss(probe, firstSample: offset)
            XCTAssertLessThan(after, before * 0.9, "\(target): loss \(before) -> \(after)")
        }
    }

    /// A trainer with these options on the fixture ControlNet, after checking that its loss on a
    /// fixed probe is near the f32 trainer's but not equal (the weights are read rounded).
    func trainerWithALossNearF32(_ o: TrainingOptions, file: StaticString = #filePath, line: UInt = #line) throws -> DiffusionTrainer {
        let t = try Tiny.controlNetTrainer(o, fixtureControlNet: true)
        let reference = try Tiny.controlNetTrainer(Tiny.options(), fixtureControlNet: true)
        let probe = try InMemoryBatchSource(Tiny.samples(), seed: 5).next(2)
        let l16 = try t.evaluateLoss(probe, firstSample: 0), l32 = try reference.evaluateLoss(probe, firstSample: 0)
        XCTAssertNotEqual(l16, l32, file: file, line: line)
        XCTAssertEqual(l16, l32, accuracy: 0.02 * l32, file: file, line: line)
        let r = try t.trainStep()
        XCTAssertTrue(r.loss.isFinite, file: file, line: line)
        return t
    }

    func testBF16FrozenWeights() throws {
        var o = Tiny.options()
        o.frozenDType = .bf16
        let t = try trainerWithALossNearF32(o)
        for model in [t.unet as Module, t.vae, t.textEncoder] {
            XCTAssertTrue(model.namedParameters().allSatisfy { $0.parameter.value!.dtype == .bf16 })
        }
        XCTAssertTrue(t.controlnet!.namedParameters().allSatisfy { $0.parameter.value!.dtype == .f32 })
    }

    /// --mixed-precision bf16: the forward reads the weights rounded to bf16 (a loss near, not
    /// equal to, the f32 one), the ControlNet's weights and AdamW state stay f32, the setting is
    /// part of the run's options (a resume may not switch it), and checkpoints from before the
    /// option existed resume as the f32 runs they were.
    func testMixedPrecisionBF16() throws {
        var o = Tiny.options()
        o.mixedPrecisionBF16 = true
        let t = try trainerWithALossNearF32(o)
        XCTAssertTrue(t.controlnet!.namedParameters().allSatisfy { $0.parameter.value!.dtype == .f32 })
        XCTAssertTrue(t.optimizer.firstMoments.allSatisfy { $0 == nil || $0!.dtype == .f32 })
        XCTAssertFalse(Autocast.isBF16)

        XCTAssertEqual(o.json["mixed_precision"]?.string, "bf16")
        XCTAssertEqual(o.conflicts(with: Tiny.options().json), ["mixed_precision \"no\" -> \"bf16\""])
        var old = Tiny.options().json
        old = .object((old.objectPairs ?? []).filter { $0.0 != "mixed_precision" })
        XCTAssertEqual(Tiny.options().conflicts(with: old), [])
        XCTAssertFalse(o.conflicts(with: old).isEmpty)
    }

    /// --optimizer adamw8bit is part of the run's options; checkpoints from before it resume as AdamW.
    func testOptimizerStateIsARunOption() {
        var o = Tiny.options()
        o.optimizerState = .blockwise8bit
        XCTAssertEqual(o.conflicts(with: Tiny.options().json), ["optimizer \"adamw\" -> \"adamw8bit\""])
        let old = JSON.object((Tiny.options().json.objectPairs ?? []).filter { $0.0 != "optimizer" })
        XCTAssertEqual(Tiny.options().conflicts(with: old), [])
        XCTAssertEqual(o.conflicts(with: old).count, 1)
    }

    func testBadBatchesAreRefused() throws {
        let samples = Tiny.samples(size: 64)
        let noLabels = InMemoryBatchSource(samples.map { .init(pixels: $0.pixels, condition: nil, caption: "") }, seed: 1)
        XCTAssertThrowsError(try Tiny.controlNetTrainer(Tiny.options(), source: noLabels).trainStep()) { e in
            XCTAssertTrue("\(e)".contains("label maps"), "\(e)")
        }
        let odd = InMemoryBatchSource([.init(pixels: Tensor(zeros: [3, 40, 64]), condition: Tensor(zeros: [20, 40, 64]), caption: "")], seed: 1)
        XCTAssertThrowsError(try Tiny.controlNetTrainer(Tiny.options(), source: odd).trainStep()) { e in
            XCTAssertTrue("\(e)".contains("multiples of 64"), "\(e)")
        }
        var bad = Tiny.options()
        bad.gradientAccumulation = 0
        XCTAssertThrowsError(try Tiny.controlNetTrainer(bad))
    }
}

/// A source that hands out NaN pixels from a given batch on.
final class PoisonedSource: TrainingBatchSource {
    let inner: InMemoryBatchSource
    let poisonFrom: Int
    var drawn = 0

    init(_ inner: InMemoryBatchSource, poisonFrom: Int) {
        self.inner = inner
        self.poisonFrom = poisonFrom
    }

    func next(_ count: Int) throws -> TrainingBatch {
        var b = try inner.next(count)
        drawn += 1
        if drawn > poisonFrom { b.pixels = Tensor(shape: b.pixels.shape, floats: [Float](repeating: .nan, count: b.pixels.count)) }
        return b
    }

    func saveState() -> JSON { ["inner": inner.saveState(), "drawn": .int(drawn)] }
    func restoreState(_ state: JSON) throws {
        try inner.restoreState(state["inner"] ?? .null)
        drawn = state["drawn"]?.int ?? 0
    }
    var identity: JSON { inner.identity }
}

final class RunTests: XCTestCase {
    func exportedBytes(_ dir: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: dir + "/controlnet/diffusion_pytorch_model.safetensors"))
    }

    /// N updates straight equal N/2, a checkpoint, a fresh process state (new models, new
    /// trainer, new source) resumed from it, and N/2 more: bit for bit, with accumulation,
    /// clipping, a decaying schedule and a stateful sampler in play.
    func testResumeIsBitExact() throws { try checkResumeIsBitExact(optimizerState: .f32) }

    /// The same with 8-bit AdamW state: codes and block scales go through the checkpoint too.
    func testResumeIsBitExactWith8BitOptimizerState() throws { try checkResumeIsBitExact(optimizerState: .blockwise8bit) }

    func checkResumeIsBitExact(optimizerState: AdamW.StateStorage) throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = Tiny.options(steps: 4, lr: 1e-3, batch: 1, accumulation: 2)
        o.schedule = LRSchedule(.cosine, warmupSteps: 1, totalSteps: 4)
        o.maxGradNorm = 0.5
        o.optimizerState = optimizerState

        var straight = RunSettings(output: dir + "/straight")
        straight.checkpointEvery = 2
        straight.progress = false
        let a = try Tiny.controlNetTrainer(o)
        let sa = try TrainingRun(trainer: a, settings: straight).run()
        XCTAssertTrue(sa.finished)

        var first = RunSettings(output: dir + "/resumed")
        first.checkpointEvery = 2
        first.progress = false
        first.stopAfter = 2
        let s1 = try TrainingRun(trainer: try Tiny.controlNetTrainer(o), settings: first).run()
        XCTAssertFalse(s1.finished)
        XCTAssertEqual(s1.endStep, 2)
        var second = first
        second.stopAfter = nil
        second.resume = true
        let b = try Tiny.controlNetTrainer(o)
        let s2 = try TrainingRun(trainer: b, settings: second).run()
        XCTAssertEqual(s2.startStep, 2)
        XCTAssertTrue(s2.finished)

        XCTAssertEqual(weightBytes(a.trainable), weightBytes(b.trainable))
        XCTAssertEqual(try exportedBytes(dir + "/straight"), try exportedBytes(dir + "/resumed"))
        for i in a.optimizer.parameters.indices {
            XCTAssertEqual(a.optimizer.firstMoments[i]!.floats, b.optimizer.firstMoments[i]!.floats)
            XCTAssertEqual(a.optimizer.secondMoments[i]!.floats, b.optimizer.secondMoments[i]!.floats)
            XCTAssertEqual(a.optimizer.firstScales[i]?.floats, b.optimizer.firstScales[i]?.floats)
            XCTAssertEqual(a.optimizer.secondScales[i]?.floats, b.optimizer.secondScales[i]?.floats)
            XCTAssertEqual(a.optimizer.firstMoments[i]!.dtype, a.optimizer.quantizesState(of: i) ? .u8 : .f32)
        }
        // The tiny ControlNet has weights both above and below the 4096 elements of 8-bit state.
        XCTAssertEqual(a.optimizer.parameters.indices.contains { a.optimizer.quantizesState(of: $0) }, optimizerState == .blockwise8bit)
        XCTAssertEqual(a.optimizer.step, b.optimizer.step)
        // The weights really moved (the comparison is not between two untouched models).
        let initial = try Tiny.controlNetTrainer(o)
        XCTAssertNotEqual(weightBytes(initial.trainable), weightBytes(a.trainable))

        let steps = MetricsLog(path: dir + "/resumed/metrics.jsonl").records().compactMap { $0["loss"] != nil ? $0["step"]?.int : nil }
        XCTAssertEqual(steps, [1, 2, 3, 4])
        let svg = try String(contentsOfFile: dir + "/resumed/loss.svg", encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("polyline"))
    }

    func testResumeAfterAKillBeyondTheCheckpointDropsTheLostSteps() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = RunSettings(output: dir)
        s.checkpointEvery = 2
        s.progress = false
        s.stopAfter = 3   // steps 1-3 logged, checkpoint at 2: step 3 is lost work
        _ = try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 4)), settings: s).run()
        // A torn last line, as a kill in mid-write leaves it.
        let h = FileHandle(forWritingAtPath: dir + "/metrics.jsonl")!
        h.seekToEndOfFile()
        h.write(Data("{\"step\": 4, \"lo".utf8))
        try h.close()
        s.stopAfter = nil
        s.resume = true
        let r = try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 4)), settings: s).run()
        XCTAssertEqual(r.startStep, 2)
        let records = MetricsLog(path: dir + "/metrics.jsonl").records()
        XCTAssertEqual(records.compactMap { $0["step"]?.int }, [1, 2, 3, 4])

        // TensorBoard: one event file per process, each opening with a SessionLog START at the
        // first step it logs, so TensorBoard drops the first process's lost step 3; what is left
        // is metrics.jsonl's losses.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/logs").filter { $0.hasPrefix("events.out.tfevents.") }
        XCTAssertEqual(files.count, 2, "\(files)")
        // In the order the processes ran (their STARTs grow; names may share a second).
        let logs = try files.map { try TensorBoardEvents.read(dir + "/logs/" + $0) }.sorted { ($0.starts.first ?? 0) < ($1.starts.first ?? 0) }
        let first = logs[0], second = logs[1]
        XCTAssertEqual(first.fileVersion, "brain.Event:2")
        XCTAssertEqual(first.starts, [1])
        XCTAssertEqual(second.starts, [3])
        let loss = { (e: (values: [TensorBoardEvents.Value], fileVersion: String?, starts: [Int])) in e.values.filter { $0.tag == "train/loss" } }
        XCTAssertEqual(loss(first).map(\.step), [1, 2, 3])
        XCTAssertEqual(loss(second).map(\.step), [3, 4])
        let kept = loss(first).filter { $0.step <= 2 } + loss(second)
        XCTAssertEqual(kept.map { $0.scalar! }, records.map { Float($0["loss"]!.double!) })
        XCTAssertTrue(second.values.contains { $0.tag == "train/lr" && $0.step == 4 })
    }

    func testCheckpointRotationKeepsTheNewest() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = RunSettings(output: dir)
        s.checkpointEvery = 1
        s.keep = 2
        s.progress = false
        try FileManager.default.createDirectory(atPath: dir + "/checkpoints", withIntermediateDirectories: true)
        // What a process killed while writing leaves behind.
        FileManager.default.createFile(atPath: dir + "/checkpoints/.checkpoint-00000003.dginstyle.tmp-99-123", contents: Data([1, 2]))
        let r = try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 5)), settings: s).run()
        XCTAssertTrue(r.finished)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted()
        XCTAssertEqual(names, ["checkpoint-00000004.dginstyle", "checkpoint-00000005.dginstyle"])
        // The final model and a checkpoint read back as models.
        let exported = try LoadedPipeline(try Checkpoint.open(dir + "/controlnet")).controlnet
        XCTAssertNotNil(exported)
        let inCheckpoint = try Checkpoint.open(dir + "/checkpoints/checkpoint-00000005.dginstyle")
        XCTAssertNotNil(inCheckpoint.component("controlnet"))
    }

    func testANewRunRefusesAFolderWithCheckpoints() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = RunSettings(output: dir)
        s.checkpointEvery = 1
        s.progress = false
        s.stopAfter = 1
        _ = try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 2)), settings: s).run()
        s.stopAfter = nil
        XCTAssertThrowsError(try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 2)), settings: s).run()) { e in
            XCTAssertTrue("\(e)".contains("--resume"), "\(e)")
        }
        // Resuming with another learning rate would not continue the same run.
        s.resume = true
        XCTAssertThrowsError(try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 2, lr: 5e-4)), settings: s).run()) { e in
            XCTAssertTrue("\(e)".contains("learning_rate"), "\(e)")
        }
        // A longer run is fine under a constant schedule.
        let r = try TrainingRun(trainer: try Tiny.controlNetTrainer(Tiny.options(steps: 3)), settings: s).run()
        XCTAssertEqual(r.startStep, 1)
        XCTAssertEqual(r.endStep, 3)
    }

    func testNonFiniteLossStopsTheRunAndKeepsTheLastGoodCheckpoint() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = RunSettings(output: dir)
        s.checkpointEvery = 1
        s.progress = false
        let source = PoisonedSource(InMemoryBatchSource(Tiny.samples(), seed: 2), poisonFrom: 2)
        let t = try Tiny.controlNetTrainer(Tiny.options(steps: 5), source: source)
        XCTAssertThrowsError(try TrainingRun(trainer: t, settings: s).run()) { e in
            guard case TrainingError.nonFinite = e else { return XCTFail("\(e)") }
            let message = "\(e)"
            XCTAssertTrue(message.contains("step 3"), message)
            XCTAssertTrue(message.contains("checkpoint-00000002.dginstyle"), message)
            XCTAssertTrue(message.contains("nan"), message)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted()
        XCTAssertEqual(names, ["checkpoint-00000001.dginstyle", "checkpoint-00000002.dginstyle"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/controlnet"))
        XCTAssertEqual(t.step, 2)
        // The weights of the last good step are intact (finite) in the checkpoint.
        let ck = try NativeFile(path: dir + "/checkpoints/checkpoint-00000002.dginstyle").source("controlnet")
        for e in ck.entries { XCTAssertTrue(try ck.tensor(e.name).floats.allSatisfy(\.isFinite), e.name) }
    }

    func testNonFiniteGradientStopsTheStep() throws {
        let t = try Tiny.controlNetTrainer(Tiny.options(), fixtureControlNet: true)
        // A huge weight in a zero convolution: finite loss is impossible to keep, and if the
        // forward stays finite the gradient does not.
        let p = t.controlnet!.controlnet_mid_block.weight
        p.value = Tensor(shape: p.shape, floats: [Float](repeating: 3e38, count: p.count))
        XCTAssertThrowsError(try t.trainStep()) { e in
            guard case TrainingError.nonFinite = e else { return XCTFail("\(e)") }
        }
        XCTAssertEqual(t.step, 0)
        XCTAssertTrue(t.controlnet!.namedParameters().allSatisfy { $0.parameter.grad == nil })
    }
}
