import DGBase
import XCTest
import DGCheckpoint
import DGLayers
@testable import DGModels

/// Supported variations build the structure the reference builds; everything else is refused
/// with an error that names the key.
final class ModelConfigTests: XCTestCase {
    private func unetConfig(_ changes: [(String, JSON)]) throws -> JSON {
        var config = try Fixtures.manifestConfig("unet")
        for (key, value) in changes { config.set(key, value) }
        return config
    }

    private func shapes(_ model: Module) -> [String: [Int]] {
        Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, $0.parameter.shape) })
    }

    private func assertRefused(_ config: JSON, key: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try buildModel(config: config), file: file, line: line) { error in
            guard let error = error as? ModelConfigError else {
                return XCTFail("not a ModelConfigError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(error.key, key, file: file, line: line)
            XCTAssertTrue(error.description.contains("\"\(key)\""), error.description, file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), error.description, file: file, line: line)
        }
    }

    /// SD 2.x: per-block head counts, Linear projections in the transformers, 1024-wide text.
    func testSD2UNet() throws {
        let unet = try UNet2DConditionModel(config: unetConfig([
            ("attention_head_dim", [5, 10, 20, 20]), ("use_linear_projection", true), ("cross_attention_dim", 1024),
        ]))
        // SD 2.x's UNet, per the published model.
        XCTAssertEqual(unet.parameterCount, 865_910_724)
        let s = shapes(unet)
        XCTAssertEqual(s["down_blocks.0.attentions.0.proj_in.weight"], [320, 320])
        XCTAssertEqual(s["up_blocks.3.attentions.2.proj_out.weight"], [320, 320])
        XCTAssertEqual(s["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"], [1280, 1024])
        let down = unet.down_blocks[1] as! CrossAttnDownBlock2D
        XCTAssertTrue(down.attentions[0].proj_in is Linear)
        XCTAssertEqual([down.attentions[0].transformer_blocks[0].attn1.heads, down.attentions[0].attention_head_dim], [10, 64])
        let up = unet.up_blocks[1] as! CrossAttnUpBlock2D
        XCTAssertEqual(up.num_attention_heads, 20)
        XCTAssertEqual(unet.mid_block?.num_attention_heads, 20)
    }

    /// num_attention_heads, when set, is the head count and attention_head_dim is ignored.
    func testNumAttentionHeadsOverrides() throws {
        let unet = try UNet2DConditionModel(config: unetConfig([("num_attention_heads", 5), ("attention_head_dim", 8)]))
        let attn = (unet.down_blocks[0] as! CrossAttnDownBlock2D).attentions[0].transformer_blocks[0].attn1
        XCTAssertEqual([attn.heads, attn.dim_head], [5, 64])
    }

    func testStructuralOptions() throws {
        let unet = try UNet2DConditionModel(config: unetConfig([
            ("transformer_layers_per_block", 2), ("conv_in_kernel", 5), ("conv_out_kernel", 1),
            ("layers_per_block", [1, 2, 2, 3]), ("in_channels", 9), ("upcast_attention", true),
        ]))
        let s = shapes(unet)
        XCTAssertEqual(s["conv_in.weight"], [320, 9, 5, 5])
        XCTAssertEqual(unet.conv_in.padding, 2)
        XCTAssertEqual(s["conv_out.weight"], [4, 320, 1, 1])
        XCTAssertNotNil(s["down_blocks.0.attentions.0.transformer_blocks.1.attn2.to_q.weight"])
        XCTAssertNotNil(s["mid_block.attentions.0.transformer_blocks.1.norm3.weight"])
        XCTAssertNil(s["down_blocks.0.resnets.1.conv1.weight"])
        XCTAssertNotNil(s["down_blocks.3.resnets.2.conv1.weight"])
        // Up blocks take the reversed layer counts, plus one.
        XCTAssertNotNil(s["up_blocks.0.resnets.3.conv1.weight"])
        XCTAssertNil(s["up_blocks.3.resnets.2.conv1.weight"])
        XCTAssertTrue((unet.down_blocks[0] as! CrossAttnDownBlock2D).attentions[0].transformer_blocks[0].attn2.upcast_attention)
    }

    func testNoMidBlock() throws {
        let unet = try UNet2DConditionModel(config: unetConfig([("mid_block_type", nil)]))
        XCTAssertNil(unet.mid_block)
        XCTAssertFalse(unet.namedParameters().contains { $0.name.hasPrefix("mid_block.") })
    }

    func testVAEOptions() throws {
        var config = try Fixtures.manifestConfig("vae")
        config.set("mid_block_add_attention", false)
        config.set("use_quant_conv", false)
        config.set("scaling_factor", 0.13025)
        let vae = try AutoencoderKL(config: config)
        let names = vae.namedParameters().map(\.name)
        XCTAssertFalse(names.contains { $0.contains("attentions") })
        XCTAssertFalse(names.contains { $0.hasPrefix("quant_conv.") })
        XCTAssertTrue(names.contains("post_quant_conv.weight"))
        XCTAssertEqual(vae.scaling_factor, 0.13025, accuracy: 1e-7)
        XCTAssertTrue(vae.encoder.mid_block.attentions.isEmpty)
    }

    func testCLIPGeluForSD2() throws {
        var config = try Fixtures.manifestConfig("text_encoder")
        config.set("hidden_act", "gelu")
        config.set("hidden_size", 1024)
        config.set("num_attention_heads", 16)
        config.set("num_hidden_layers", 23)
        config.set("intermediate_size", 4096)
        let clip = try CLIPTextModel(config: config)
        XCTAssertEqual(clip.hidden_act, .gelu)
        XCTAssertEqual(clip.encoder.layers.count, 23)
        XCTAssertEqual(clip.encoder.layers[0].mlp.fc1.weight.shape, [4096, 1024])
    }

    func testUnsupportedUNetFeaturesAreRefused() throws {
        let refused: [(String, JSON)] = [
            ("class_embed_type", "timestep"), ("addition_embed_type", "text_time"), ("time_cond_proj_dim", 256),
            ("num_class_embeds", 10), ("encoder_hid_dim", 768), ("resnet_time_scale_shift", "scale_shift"),
            ("time_embedding_type", "fourier"), ("act_fn", "gelu"), ("attention_type", "gated"),
            ("dual_cross_attention", true), ("only_cross_attention", true), ("only_cross_attention", [false, true, false, false]),
            ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"), ("resnet_skip_time_act", true),
            ("reverse_transformer_layers_per_block", [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]),
            ("transformer_layers_per_block", [[1, 1], [1, 1], [1, 1], [1, 1]]),
            ("norm_num_groups", nil), ("norm_num_groups", 24), ("block_out_channels", [320, 640, 1280, 0]),
            ("attention_head_dim", [8, 8]), ("attention_head_dim", 7), ("layers_per_block", "2"), ("conv_in_kernel", 4),
            ("cross_attention_norm", "group_norm"), ("mid_block_only_cross_attention", true),
        ]
        for (key, value) in refused {
            assertRefused(try unetConfig([(key, value)]), key: key)
        }
        // The lists must agree in length; the error names the one that disagrees with block_out_channels.
        assertRefused(try unetConfig([("block_out_channels", [320, 640, 1280])]), key: "down_block_types")
        assertRefused(try unetConfig([("down_block_types", ["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"])]),
                      key: "down_block_types")
        assertRefused(try unetConfig([("up_block_types", ["UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])]),
                      key: "up_block_types")
        // Unsupported values that equal the reference default are fine.
        XCTAssertNoThrow(try buildModel(config: unetConfig([("class_embed_type", nil), ("only_cross_attention", [false, false, false, false])])))
    }

    func testUnsupportedControlNetVAEAndCLIPFeaturesAreRefused() throws {
        var controlnet = try Fixtures.manifestConfig("controlnet")
        controlnet.set("layers_per_block", [2, 2, 2, 2])
        assertRefused(controlnet, key: "layers_per_block")
        controlnet = try Fixtures.manifestConfig("controlnet")
        controlnet.set("controlnet_conditioning_channel_order", "rgba")
        assertRefused(controlnet, key: "controlnet_conditioning_channel_order")
        controlnet = try Fixtures.manifestConfig("controlnet")
        controlnet.set("mid_block_type", nil)
        assertRefused(controlnet, key: "mid_block_type")

        var vae = try Fixtures.manifestConfig("vae")
        vae.set("up_block_types", ["UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D"])
        assertRefused(vae, key: "up_block_types")
        vae = try Fixtures.manifestConfig("vae")
        vae.set("down_block_types", ["DownEncoderBlock2D"])
        assertRefused(vae, key: "down_block_types")

        var clip = try Fixtures.manifestConfig("text_encoder")
        clip.set("hidden_act", "relu")
        assertRefused(clip, key: "hidden_act")
        clip = try Fixtures.manifestConfig("text_encoder")
        clip.set("num_attention_heads", 7)
        assertRefused(clip, key: "num_attention_heads")
    }

    /// ControlNet.from_unet checks the UNet's config as the UNet would.
    func testControlNetFromRefusedUNetConfig() throws {
        XCTAssertThrowsError(try ControlNetModel(unetConfig: unetConfig([("class_embed_type", "timestep")]))) { error in
            XCTAssertEqual((error as? ModelConfigError)?.key, "class_embed_type")
        }
    }

    func testBuildModelDispatch() throws {
        assertRefused(["_class_name": "UNet2DModel"], key: "_class_name")
        assertRefused(["architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model"], key: "architectures")
        assertRefused(["model_type": "clip"], key: "model_type")
        assertRefused(["hidden_size": 32], key: "_class_name")
        // A bare transformers config identified by either field builds with the reference defaults.
        let (kind, model) = try buildModel(config: ["architectures": ["CLIPTextModel"]])
        XCTAssertEqual(kind, .textEncoder)
        XCTAssertEqual((model as? CLIPTextModel)?.hidden_size, 512)
        XCTAssertEqual(try buildModel(config: ["model_type": "clip_text_model", "num_hidden_layers": 1]).0, .textEncoder)
        XCTAssertEqual(ModelKind.textEncoder.rawValue, "text_encoder")
        let (vaeKind, vae) = try buildModel(config: ["_class_name": "AutoencoderKL"])
        XCTAssertEqual(vaeKind, .vae)
        XCTAssertEqual((vae as? AutoencoderKL)?.block_out_channels, [64])
    }

    func testErrorDescription() {
        let error = ModelConfigError(model: "UNet2DConditionModel", key: "class_embed_type",
                                     problem: "= \"timestep\" is not supported (only null)")
        XCTAssertEqual(error.description, "UNet2DConditionModel config: \"class_embed_type\" = \"timestep\" is not supported (only null)")
    }
}
