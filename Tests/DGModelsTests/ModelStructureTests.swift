import Foundation
import XCTest
import DGCheckpoint
import DGLayers
@testable import DGModels

/// Every model built from its config has exactly the reference's parameter names and shapes.
final class SD15ManifestTests: XCTestCase {
    private func check(_ model: String, expecting kind: ModelKind) throws {
        let (builtKind, built) = try buildModel(config: Fixtures.manifestConfig(model))
        XCTAssertEqual(builtKind, kind)
        assertParameters(of: built, equal: try Fixtures.manifestShapes(model), "SD 1.5 \(model)")
        XCTAssertEqual(built.parameterCount, Fixtures.manifest["parameter_counts"]?[model]?.int, "\(model) parameter count")
    }

    func testUNet() throws { try check("unet", expecting: .unet) }
    func testVAE() throws { try check("vae", expecting: .vae) }
    func testTextEncoder() throws { try check("text_encoder", expecting: .textEncoder) }
    func testControlNet() throws { try check("controlnet", expecting: .controlnet) }

    func testTypesAndHyperParameters() throws {
        let unet = try UNet2DConditionModel(config: Fixtures.manifestConfig("unet"))
        XCTAssertEqual(unet.down_blocks.map { "\(type(of: $0))" },
                       ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        XCTAssertEqual(unet.up_blocks.map { "\(type(of: $0))" },
                       ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        XCTAssertEqual(unet.num_upsamplers, 3)
        // SD 1.x's attention_head_dim 8 is the head count: 320 channels -> 8 heads of 40.
        let transformer = (unet.down_blocks[0] as! CrossAttnDownBlock2D).attentions[0]
        XCTAssertFalse(transformer.use_linear_projection)
        XCTAssertTrue(transformer.proj_in is Conv2d)
        let block = transformer.transformer_blocks[0]
        XCTAssertEqual(block.attn1.heads, 8)
        XCTAssertEqual(block.attn1.dim_head, 40)
        XCTAssertFalse(block.attn1.is_cross_attention)
        XCTAssertTrue(block.attn2.is_cross_attention)
        XCTAssertEqual(block.attn2.cross_attention_dim, 768)
        XCTAssertEqual(block.attn2.scale, 1 / Float(40).squareRoot())
        XCTAssertEqual(block.ff.inner_dim, 1280)
        let resnet = (unet.up_blocks[0] as! UpBlock2D).resnets[0]
        XCTAssertEqual([resnet.in_channels, resnet.out_channels, resnet.groups], [2560, 1280, 32])
        XCTAssertEqual(resnet.eps, 1e-5)
        XCTAssertTrue(resnet.use_in_shortcut)
        XCTAssertEqual(unet.time_proj.num_channels, 320)
        XCTAssertTrue(unet.time_proj.flip_sin_to_cos)
        XCTAssertEqual(unet.time_proj.downscale_freq_shift, 0)
        XCTAssertEqual(unet.mid_block?.output_scale_factor, 1)
        XCTAssertEqual((unet.down_blocks[0] as! CrossAttnDownBlock2D).downsamplers?[0].padding, 1)

        let vae = try AutoencoderKL(config: Fixtures.manifestConfig("vae"))
        XCTAssertEqual(vae.scaling_factor, 0.18215, accuracy: 1e-7)
        XCTAssertEqual(vae.latent_channels, 4)
        XCTAssertEqual(vae.encoder.down_blocks[0].downsamplers?[0].padding, 0)
        XCTAssertEqual(vae.encoder.down_blocks[0].resnets[0].eps, 1e-6)
        XCTAssertNil(vae.encoder.down_blocks[0].resnets[0].time_emb_proj)
        let attention = vae.decoder.mid_block.attentions[0]
        XCTAssertEqual([attention.heads, attention.dim_head], [1, 512])
        XCTAssertTrue(attention.residual_connection)
        XCTAssertTrue(attention.upcast_softmax)

        let clip = try CLIPTextModel(config: Fixtures.manifestConfig("text_encoder"))
        XCTAssertEqual(clip.hidden_act, .quickGELU)
        XCTAssertEqual(clip.encoder.layers[0].self_attn.head_dim, 64)
        XCTAssertEqual(clip.eos_token_id, 49407)

        let controlnet = try ControlNetModel(config: Fixtures.manifestConfig("controlnet"))
        XCTAssertEqual(controlnet.conditioning_channels, 20)
        XCTAssertEqual(controlnet.controlnet_down_blocks.count, 12)
        XCTAssertEqual(controlnet.controlnet_conditioning_channel_order, "rgb")
    }

    /// Building describes a model; it must not cost the seconds and gigabytes that weights do.
    func testBuildingIsFast() throws {
        let configs = try ["unet", "vae", "text_encoder", "controlnet"].map(Fixtures.manifestConfig)
        let start = Date()
        var parameters = 0
        for config in configs { parameters += try buildModel(config: config).1.namedParameters().count }
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(parameters, 686 + 248 + 196 + 340)
        XCTAssertLessThan(seconds, 2, "building and listing all four SD 1.5 models took \(seconds) s")
    }

    /// The ControlNet config made from the UNet config has the values diffusers' from_unet gives.
    func testControlNetConfigFromUNetConfig() throws {
        let made = try ControlNetModel.config(fromUNetConfig: Fixtures.manifestConfig("unet"), conditioningChannels: 20)
        let reference = try Fixtures.manifestConfig("controlnet")
        XCTAssertEqual(made["_class_name"], "ControlNetModel")
        let referencePairs = try XCTUnwrap(reference.objectPairs).filter { !$0.0.hasPrefix("_") }
        let madePairs = try XCTUnwrap(made.objectPairs).filter { !$0.0.hasPrefix("_") }
        XCTAssertEqual(Set(madePairs.map(\.0)), Set(referencePairs.map(\.0)))
        for (key, value) in referencePairs { XCTAssertEqual(made[key], value, key) }
        let built = try ControlNetModel(unetConfig: Fixtures.manifestConfig("unet"), conditioningChannels: 20)
        assertParameters(of: built, equal: try Fixtures.manifestShapes("controlnet"), "SD 1.5 ControlNet from UNet config")
    }
}

/// The tiny models' weight files hold exactly the parameters their configs build.
final class TinyFixtureTests: XCTestCase {
    private func check(_ folder: String, weights: String, expecting kind: ModelKind) throws {
        let (builtKind, built) = try buildModel(config: Fixtures.json("sd-tiny/\(folder)/config.json"))
        XCTAssertEqual(builtKind, kind)
        assertParameters(of: built, equal: try Fixtures.safetensorsShapes("sd-tiny/\(folder)/\(weights)"), "tiny \(folder)")
    }

    func testUNet() throws { try check("tiny-sd/unet", weights: "diffusion_pytorch_model.safetensors", expecting: .unet) }
    func testVAE() throws { try check("tiny-sd/vae", weights: "diffusion_pytorch_model.safetensors", expecting: .vae) }
    func testTextEncoder() throws { try check("tiny-sd/text_encoder", weights: "model.safetensors", expecting: .textEncoder) }
    func testControlNet() throws { try check("tiny-controlnet", weights: "diffusion_pytorch_model.safetensors", expecting: .controlnet) }

    func testControlNetFromTinyUNetConfig() throws {
        let unetConfig = try Fixtures.json("sd-tiny/tiny-sd/unet/config.json")
        let controlnet = try ControlNetModel(unetConfig: unetConfig, conditioningChannels: 20,
                                             conditioningEmbeddingOutChannels: [16, 32, 96, 256])
        assertParameters(of: controlnet, equal: try Fixtures.safetensorsShapes("sd-tiny/tiny-controlnet/diffusion_pytorch_model.safetensors"),
                         "ControlNet from the tiny UNet config")
        // Exactly the config.json diffusers wrote, key order included.
        let made = try ControlNetModel.config(fromUNetConfig: unetConfig, conditioningChannels: 20,
                                              conditioningEmbeddingOutChannels: [16, 32, 96, 256])
        XCTAssertEqual(made, try Fixtures.json("sd-tiny/tiny-controlnet/config.json"), made.pretty)
    }

    /// In this tiny config attention_head_dim 8 is again the head count: 32 channels -> 8 heads of 4.
    func testTinyHeads() throws {
        let unet = try UNet2DConditionModel(config: Fixtures.json("sd-tiny/tiny-sd/unet/config.json"))
        let attn = (unet.down_blocks[0] as! CrossAttnDownBlock2D).attentions[0].transformer_blocks[0].attn1
        XCTAssertEqual([attn.heads, attn.dim_head, attn.inner_dim], [8, 4, 32])
        let clip = try CLIPTextModel(config: Fixtures.json("sd-tiny/tiny-sd/text_encoder/config.json"))
        XCTAssertEqual([clip.num_attention_heads, clip.encoder.layers[0].self_attn.head_dim], [4, 8])
    }
}
