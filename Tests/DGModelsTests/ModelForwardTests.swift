import DGAutograd
import DGCheckpoint
import DGLayers
import Foundation
import XCTest
@testable import DGModels
import DGTensor

/// What the parity command does not cover: gradient checkpointing, ControlNet initialisation from
/// a UNet, saving trained models, and loading from every storage precision.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count else { return .infinity }
    let diff = zip(a, b).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) }.squareRoot()
    let norm = b.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    return norm > 0 ? diff / norm : diff
}

final class ModelForwardTests: XCTestCase {
    static let tiny = Fixtures.url("sd-tiny").path

    func loadUNet() throws -> UNet2DConditionModel {
        let ck = try Checkpoint.open(Self.tiny + "/tiny-sd/unet")
        return try XCTUnwrap(loadModel(ck.components[0]).1 as? UNet2DConditionModel)
    }

    func io() throws -> SafeTensorsFile { try SafeTensorsFile(path: Self.tiny + "/io.safetensors") }

    /// Recomputing blocks in backward must give the gradients of keeping activations. Not bit for
    /// bit: a checkpointed block hands back the gradient of a shared input (the time embedding,
    /// the text) as one sum, where the plain graph adds each use's share separately, so float32
    /// additions happen in another order (~1e-7 relative).
    func testGradientCheckpointingGivesTheSameGradients() throws {
        let unet = try loadUNet()
        let io = try io()
        let sample = Var(try io.tensor("unet.sample").copied()), text = Var(try io.tensor("unet.encoder_hidden_states").copied())
        let controlnet = try ControlNetModel.initialized(from: unet, seed: 7)
        // Non-zero output convolutions, so the ControlNet's own blocks receive gradients too.
        for block in controlnet.controlnet_down_blocks + [controlnet.controlnet_mid_block] { block.initializeParameters(seed: 3) }
        var results: [[String: [Float]]] = []
        for checkpoint in [false, true] {
            for (_, p) in unet.namedParameters() + controlnet.namedParameters() { p.grad = nil }
            let control = controlnet(sample, timesteps: [10, 900], text: text,
                                     condition: Var(Tensor(zeros: [2, 20, 128, 128])), checkpoint: checkpoint)
            let out = unet(sample, timesteps: [10, 900], text: text, control: control, checkpoint: checkpoint)
            Autograd.backward(mseLoss(out, Var(Tensor(zeros: out.shape))))
            var grads: [String: [Float]] = [:]
            for (name, p) in unet.namedParameters() { grads["unet." + name] = p.grad?.floats }
            for (name, p) in controlnet.namedParameters() { grads["controlnet." + name] = p.grad?.floats }
            results.append(grads)
        }
        XCTAssertEqual(results[0].count, unet.namedParameters().count + controlnet.namedParameters().count)
        for (name, g) in results[0] {
            guard let h = results[1][name] else { XCTFail("\(name): missing gradient"); continue }
            XCTAssertLessThan(relativeError(h, g), 1e-5, name)
        }
    }

    func testControlNetFromUNetStartsNeutralAndOwnsItsWeights() throws {
        let unet = try loadUNet()
        let io = try io()
        let controlnet = try ControlNetModel.initialized(from: unet, seed: 1)
        XCTAssertEqual(controlnet.conditioning_channels, 20)
        XCTAssertEqual(controlnet.conv_in.weight.value?.floats, unet.conv_in.weight.value?.floats)
        XCTAssertFalse(controlnet.conv_in.weight.value!.storage === unet.conv_in.weight.value!.storage)
        XCTAssertTrue(controlnet.controlnet_mid_block.weight.value!.floats.allSatisfy { $0 == 0 })
        XCTAssertTrue(controlnet.controlnet_cond_embedding.conv_out.weight.value!.floats.allSatisfy { $0 == 0 })
        XCTAssertFalse(controlnet.controlnet_cond_embedding.conv_in.weight.value!.floats.allSatisfy { $0 == 0 })
        Autograd.noGrad {
            let sample = Var(try! io.tensor("unet.sample").copied()), text = Var(try! io.tensor("unet.encoder_hidden_states").copied())
            let plain = unet(sample, timesteps: [10, 900], text: text).value.floats
            let control = controlnet(sample, timesteps: [10, 900], text: text, condition: Var(try! io.tensor("controlnet.cond").copied()))
            XCTAssertTrue(unet(sample, timesteps: [10, 900], text: text, control: control).value.floats == plain)
        }
    }

    func testInitialisationFollowsPyTorchDefaultsAndIsReproducible() {
        let a = Linear(64, 32), b = Linear(64, 32)
        a.initializeParameters(seed: 5)
        b.initializeParameters(seed: 5)
        XCTAssertEqual(a.weight.value?.floats, b.weight.value?.floats)
        let w = a.weight.value!.floats
        XCTAssertLessThanOrEqual(w.map(abs).max()!, 1 / 8)
        XCTAssertGreaterThan(w.map(abs).max()!, 0.9 / 8)
        let n = GroupNorm(groups: 2, channels: 4)
        n.initializeParameters(seed: 0)
        XCTAssertEqual(n.weight.value?.floats, [1, 1, 1, 1])
    }

    /// A model trained here is saved through the checkpoint writers and reads back the same.
    func testTrainedModelsSaveAndReload() throws {
        let dir = NSTemporaryDirectory() + "dginstyle-save-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let unet = try loadUNet()
        let controlnet = try ControlNetModel.initialized(from: unet, seed: 2)
        let ck = Checkpoint(inMemory: [try Component(model: controlnet, config: controlnet.config)])
        for format in [OutputFormat.diffusers, .native, .ldm] {
            let out = dir + "/cn-\(format.rawValue)" + (format == .diffusers ? "" : ".safetensors")
            try ck.write(to: out, format: format, options: WriteOptions(progress: false))
            let back = try Checkpoint.open(out, options: .init(configDirectory: format == .ldm ? dir + "/cn-diffusers" : nil))
            let (_, model) = try loadModel(back.components[0])
            let reloaded = try XCTUnwrap(model as? ControlNetModel)
            for ((name, p), (_, q)) in zip(controlnet.namedParameters(), reloaded.namedParameters()) {
                XCTAssertTrue(p.value?.floats == q.value?.floats, "\(format) \(name)")
            }
        }
    }

    /// Weights stored in f16 / bf16 load (as float32) and give nearly the f32 model's output.
    func testHalfPrecisionWeightsLoad() throws {
        let io = try io()
        let latent = Var(try io.tensor("vae.latent").copied())
        var outputs: [[Float]] = []
        for variant in [nil, "fp16", "bf16"] as [String?] {
            let ck = try Checkpoint.open(Self.tiny + "/tiny-sd/vae", options: .init(variant: variant))
            XCTAssertEqual(ck.components[0].source.entries[0].dtype, variant == nil ? .f32 : variant == "fp16" ? .f16 : .bf16)
            let vae = try XCTUnwrap(loadModel(ck.components[0]).1 as? AutoencoderKL)
            outputs.append(Autograd.noGrad { vae.decode(latent).value.floats })
        }
        for (i, tolerance) in [(1, 2e-3), (2, 2e-2)] {
            let diff = zip(outputs[i], outputs[0]).reduce(0.0) { $0 + pow(Double($1.0 - $1.1), 2) }.squareRoot()
            let norm = outputs[0].reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
            XCTAssertLessThan(diff / norm, tolerance, "variant \(i)")
        }
    }

    func testMismatchedWeightsAreReportedByName() throws {
        let ck = try Checkpoint.open(Self.tiny + "/tiny-sd/unet")
        var config = try XCTUnwrap(ck.components[0].config)
        config.set("cross_attention_dim", 48)
        var component = ck.components[0]
        component.config = config
        XCTAssertThrowsError(try loadModel(component)) { error in
            XCTAssertTrue("\(error)".contains("attn2.to_k.weight has shape [64, 32], expected [64, 48]"), "\(error)")
        }
    }
}
