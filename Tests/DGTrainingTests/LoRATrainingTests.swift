import DGAutograd
import DGBase
import DGCheckpoint
import DGLayers
import DGModels
import DGTensor
@testable import DGTraining
import Foundation
import XCTest

/// DreamBooth as a LoRA through the one training loop: only the adapters learn, checkpoints
/// hold them alone, a resumed run ends bit for bit where a straight one does, and the export is
/// a diffusers LoRA file.
final class LoRATrainingTests: XCTestCase {
    func options(steps: Int = 4) -> TrainingOptions {
        var o = Tiny.options(steps: steps, lr: 1e-2, batch: 1, accumulation: 2)
        o.lora = LoRASettings(rank: 4, alpha: 8, targets: .attn)
        o.frozenDType = .bf16
        return o
    }

    func testOnlyTheAdaptersLearnAndTheLossFalls() throws {
        let sample = Tiny.samples()[0]
        var o = options(steps: 6)
        o.maxGradNorm = nil
        let source = InMemoryBatchSource([.init(pixels: sample.pixels, condition: nil, caption: "")], seed: 1)
        let t = try Tiny.unetTrainer(o, source: source)
        let adapters = t.unet.loraParameters()
        XCTAssertEqual(t.trainableParameters.map(\.name), adapters.map(\.name))
        // attn: 16 transformers x (q, k, v, out.0 of attn1 and attn2, proj_in, proj_out), A and B each.
        XCTAssertEqual(adapters.count, 16 * 10 * 2)
        let probe = try source.next(4)
        let before = try t.evaluateLoss(probe, firstSample: 1_000_000)
        for _ in 0..<6 { try t.trainStep() }
        XCTAssertLessThan(try t.evaluateLoss(probe, firstSample: 1_000_000), before * 0.95)
        let adapterNames = Set(adapters.map(\.name))
        for (name, p) in t.unet.namedParameters() where !adapterNames.contains(name) {
            XCTAssertFalse(p.requiresGrad, name)
            XCTAssertEqual(p.value!.dtype, .bf16, name)
        }
        XCTAssertTrue(adapters.allSatisfy { $0.parameter.value!.dtype == .f32 && $0.parameter.requiresGrad })
    }

    func testResumeIsBitExactAndTheExportIsADiffusersLoRA() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let o = options()
        var straight = RunSettings(output: dir + "/straight")
        straight.checkpointEvery = 2
        straight.progress = false
        let a = try Tiny.unetTrainer(o)
        let run = TrainingRun(trainer: a, settings: straight)
        XCTAssertTrue(try run.run().finished)
        XCTAssertEqual(run.modelPath, dir + "/straight/pytorch_lora_weights.safetensors")

        var first = RunSettings(output: dir + "/resumed")
        first.checkpointEvery = 2
        first.progress = false
        first.stopAfter = 2
        XCTAssertEqual(try TrainingRun(trainer: try Tiny.unetTrainer(o), settings: first).run().endStep, 2)
        // The checkpoint holds the adapters and their moments, not the frozen UNet.
        let checkpoint = try NativeFile(path: dir + "/resumed/checkpoints/checkpoint-00000002.dginstyle")
        XCTAssertEqual(checkpoint.source("unet_lora").entries.count, a.unet.loraParameters().count)
        var second = first
        second.stopAfter = nil
        second.resume = true
        // Another LoRA setting would be another run.
        var other = o
        other.lora!.rank = 2
        XCTAssertThrowsError(try TrainingRun(trainer: try Tiny.unetTrainer(other), settings: second).run()) { error in
            XCTAssert("\(error)".contains("lora"), "\(error)")
        }
        let b = try Tiny.unetTrainer(o)
        XCTAssertEqual(try TrainingRun(trainer: b, settings: second).run().startStep, 2)

        let exported = { (run: String) in try Data(contentsOf: URL(fileURLWithPath: dir + "/\(run)/pytorch_lora_weights.safetensors")) }
        XCTAssertEqual(try exported("straight"), try exported("resumed"))
        let lora = try LoRAFile.read(dir + "/straight/pytorch_lora_weights.safetensors")
        XCTAssertEqual(lora.format, .diffusers)
        XCTAssertEqual(lora.layers.map(\.module), a.unet.loraLayers().map(\.name))
        XCTAssertTrue(lora.layers.allSatisfy { $0.rank == 4 && $0.alpha == 8 })
        XCTAssertTrue(lora.layers.contains { $0.up.floats.contains { $0 != 0 } }, "B moved from zero")
    }
}
