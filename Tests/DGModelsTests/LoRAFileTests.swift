import DGAutograd
import DGBase
import DGCheckpoint
import DGLayers
import Foundation
import XCTest
@testable import DGModels
import DGTensor

/// LoRA files against diffusers/PEFT (Tests/Fixtures/lora, made by tools/lora-parity.py from files
/// this program wrote): the UNet with each file loaded, attached or merged, gives diffusers'
/// outputs; one training step gives PEFT's loss and adapter gradients; both layouts round-trip.
final class LoRAFileTests: XCTestCase {
    static let tolerance = 2e-5  // the parity command's
    let io = try! SafeTensorsFile(path: Fixtures.url("lora/lora_io.safetensors").path)

    func loadUNet() throws -> UNet2DConditionModel {
        let ck = try Checkpoint.open(Fixtures.url("sd-tiny/tiny-sd/unet").path)
        return try XCTUnwrap(loadModel(ck.components[0]).1 as? UNet2DConditionModel)
    }

    func forward(_ unet: UNet2DConditionModel) throws -> [Float] {
        try Autograd.noGrad {
            unet(Var(try io.tensor("sample").copied()), timesteps: try io.tensor("timesteps").floats,
                 text: Var(try io.tensor("text").copied())).value.floats
        }
    }

    func path(_ name: String) -> String { Fixtures.url("lora/\(name).safetensors").path }

    func testOutputsMatchDiffusersLoadLoRAWeightsInBothLayouts() throws {
        XCTAssertLessThan(relativeError(try forward(try loadUNet()), try io.tensor("base.out").floats), Self.tolerance)
        for name in ["attn", "all"] {
            for layout in ["diffusers", "kohya"] {
                let file = try LoRAFile.read(path("\(name).\(layout)"))
                XCTAssertEqual(file.format.rawValue, layout)
                for (scale, key) in [(Float(1), "\(name).\(layout).out"), (0.5, "\(name).\(layout).half.out")] {
                    let reference = try io.tensor(key).floats
                    let attached = try loadUNet()
                    try file.attach(to: attached, component: "unet", scale: scale, path: path(name))
                    let a = relativeError(try forward(attached), reference)
                    let merged = try loadUNet()
                    try file.merge(into: merged, component: "unet", scale: scale, path: path(name))
                    let m = relativeError(try forward(merged), reference)
                    print("LoRA parity \(key): attached rel \(a), merged rel \(m)")
                    XCTAssertLessThan(a, Self.tolerance, "\(key) attached")
                    XCTAssertLessThan(m, Self.tolerance, "\(key) merged")
                }
            }
        }
    }

    func testTrainingStepMatchesPEFT() throws {
        let unet = try loadUNet()
        for (_, p) in unet.namedParameters() { p.requiresGrad = false }
        try LoRAFile.read(path("attn.diffusers")).attach(to: unet, component: "unet", path: path("attn.diffusers"))
        let loss = mseLoss(unet(Var(try io.tensor("sample").copied()), timesteps: try io.tensor("timesteps").floats,
                                text: Var(try io.tensor("text").copied())), Var(try io.tensor("noise").copied()))
        Autograd.backward(loss)
        let lossError = relativeError(loss.value.floats, try io.tensor("step.loss").floats)
        XCTAssertLessThan(lossError, Self.tolerance)
        let adapters = unet.loraParameters()
        XCTAssertEqual(adapters.count, io.entries.filter { $0.name.hasPrefix("grad.") }.count)
        var worst = 0.0
        for (name, p) in adapters {
            let e = relativeError(try XCTUnwrap(p.grad, name).floats, try io.tensor("grad." + name).floats)
            XCTAssertLessThan(e, Self.tolerance, name)
            worst = max(worst, e)
        }
        print("LoRA parity training step: loss rel \(lossError), worst of \(adapters.count) adapter gradients rel \(worst)")
    }

    /// kohya -> ours -> kohya and diffusers keep names, values and alphas; the kohya names map
    /// back to diffusers module paths.
    func testBothLayoutsRoundTrip() throws {
        let kohya = try LoRAFile.read(path("all.kohya")), peft = try LoRAFile.read(path("all.diffusers"))
        XCTAssertEqual(kohya.layers.map(\.module), peft.layers.map(\.module))
        XCTAssert(kohya.layers.contains { $0.module == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0" })
        XCTAssert(kohya.layers.contains { $0.module == "down_blocks.0.resnets.0.time_emb_proj" })
        XCTAssert(kohya.layers.contains { $0.module == "down_blocks.0.downsamplers.0.conv" })
        for (a, b) in zip(kohya.layers, peft.layers) {
            XCTAssertEqual(a.down.floats, b.down.floats)
            XCTAssertEqual(a.up.floats, b.up.floats)
            XCTAssertEqual(a.alpha, 1)
            XCTAssertEqual(b.alpha, 1, "alpha from the lora_adapter_metadata")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-roundtrip-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for format in LoRAFormat.allCases {
            try kohya.write(to: dir + "/x.safetensors", format: format)
            let back = try LoRAFile.read(dir + "/x.safetensors")
            XCTAssertEqual(back.format, format)
            XCTAssertEqual(back.layers.map(\.module), kohya.layers.map(\.module))
            XCTAssertEqual(back.layers.map(\.alpha), kohya.layers.map(\.alpha))
        }
    }

    func testMalformedFilesFailWithOneLine() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-bad-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = Tensor(zeros: [4, 32]), b = Tensor(zeros: [32, 4])
        let cases: [(String, [(String, Tensor)], String)] = [
            ("half", [("unet.mid_block.attentions.0.proj_in.lora_A.weight", a)], "has no up (B) matrix"),
            ("rank", [("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", a), ("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", Tensor(zeros: [32, 3]))],
             "do not make a rank-4 product"),
            ("loha", [("lora_unet_x.lora_down.weight", a), ("lora_unet_x.hada_w1_a", a)], "is no plain LoRA tensor"),
            ("none", [("weight", a)], "holds no LoRA"),
            // Found by fuzzing (the lora target): a NaN alpha crashed writing the file back.
            ("nan-alpha", [("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", a), ("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", b),
                           ("lora_unet_mid_block_attentions_0_proj_in.alpha", Tensor(shape: [], floats: [.nan]))], "has alpha nan, not a finite number"),
        ]
        for (name, tensors, message) in cases {
            try SafeTensorsWriter.save(path: dir + "/\(name).safetensors", tensors: tensors)
            XCTAssertThrowsError(try LoRAFile.read(dir + "/\(name).safetensors"), name) { error in
                XCTAssert("\(error)".contains(message), "\(name): \(error)")
            }
        }
        // A layer the UNet lacks, or one of another shape: named, nothing merged.
        let lora = LoRAFile(format: .diffusers, layers: [LoRALayer(component: "unet", module: "mid_block.attentions.0.proj_in", down: a, up: b, alpha: nil)])
        XCTAssertThrowsError(try lora.merge(into: try loadUNet(), component: "unet", scale: 1, path: "x")) { error in
            XCTAssert("\(error)".contains("makes a weight of shape [32, 32]"), "\(error)")
        }
    }

    /// kohya's extract_lora_from_models: a difference of rank r comes back whole at rank >= r, and
    /// the kept energy share is Σσ² of the kept singular values over all of them.
    func testExtractRecoversALowRankDifference() throws {
        let base = try Checkpoint.open(Fixtures.url("sd-tiny/tiny-sd/unet").path).components[0]
        let tuned = try loadUNet()
        let lora = try LoRAFile.read(path("attn.diffusers"))
        try lora.merge(into: tuned, component: "unet", scale: 1, path: "attn")
        let tunedComponent = try Component(model: tuned, config: base.config!)
        let (full, report) = try LoRAFile.extract(base: base, tuned: tunedComponent, rank: 4, targets: .attnFF)
        XCTAssertEqual(Set(full.layers.map(\.module)), Set(lora.layers.map(\.module)), "only the changed layers")
        for r in report { XCTAssertGreaterThan(r.keptEnergy, 1 - 1e-5, r.module) }
        let again = try loadUNet()
        try full.merge(into: again, component: "unet", scale: 1, path: "extracted")
        XCTAssertLessThan(relativeError(try forward(again), try forward(tuned)), 1e-5)
        let (_, truncated) = try LoRAFile.extract(base: base, tuned: tunedComponent, rank: 1, targets: .attn)
        XCTAssert(truncated.allSatisfy { $0.keptEnergy < 1 && $0.keptEnergy > 0.25 }, "rank 1 of a rank-4 difference keeps at least its largest share")
    }
}
