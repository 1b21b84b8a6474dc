import DGBase
import Foundation
import XCTest
@testable import DGCheckpoint
import DGTensor

final class LDMKeyMapTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func manifest() throws -> JSON {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("sd15-manifest.json"))
        return try JSON.parse(bytes: data)
    }

    /// name -> shape of one manifest section.
    static func shapes(_ manifest: JSON, _ section: String) throws -> [String: [Int]] {
        let pairs = try XCTUnwrap(manifest[section]?.objectPairs, "manifest has no \(section)")
        var out: [String: [Int]] = [:]
        for (name, shape) in pairs { out[name] = try XCTUnwrap(shape.array).map { try XCTUnwrap($0.int) } }
        return out
    }

    static func sd15Map(_ manifest: JSON) throws -> LDMKeyMap {
        let configs = try XCTUnwrap(manifest["configs"])
        return try LDMKeyMap(unetConfig: configs["unet"], vaeConfig: configs["vae"],
                             textEncoderConfig: configs["text_encoder"], controlnetConfig: configs["controlnet"])
    }

    /// Checks that `map` takes the LDM names of `ldm` one-to-one onto the union of the diffusers
    /// sections, with agreeing shapes, and back.
    func assertBijection(_ map: LDMKeyMap, ldm: [String: [Int]], diffusers: [LDMComponent: [String: [Int]]],
                         prefixes: [String: LDMComponent], file: StaticString = #filePath, line: UInt = #line) {
        var covered: [LDMComponent: Set<String>] = [:]
        for (key, shape) in ldm {
            guard case .parameter(let m) = map.classify(key) else {
                XCTFail("\(key) is not a parameter: \(map.classify(key))", file: file, line: line); continue
            }
            let expected = prefixes.first { key.hasPrefix($0.key) }?.value
            XCTAssertEqual(m.component, expected, key, file: file, line: line)
            XCTAssertEqual(m.ldm, key, file: file, line: line)
            guard let target = diffusers[m.component]?[m.diffusers] else {
                XCTFail("\(key) -> \(m.component.rawValue) \(m.diffusers), which the model does not have", file: file, line: line)
                continue
            }
            XCTAssertTrue(covered[m.component, default: []].insert(m.diffusers).inserted,
                          "two LDM keys map to \(m.diffusers)", file: file, line: line)
            XCTAssertEqual(m.diffusersShape(fromLDM: shape), target, key, file: file, line: line)
            XCTAssertEqual(m.ldmShape(fromDiffusers: target), shape, key, file: file, line: line)
            XCTAssertEqual(m.attentionReshape, shape.count == 4 && target.count == 2, key, file: file, line: line)
            XCTAssertEqual(map.needsAttentionReshape(component: m.component, diffusersName: m.diffusers), m.attentionReshape)
            XCTAssertTrue(map.diffusers(fromLDM: key)! == (m.component, m.diffusers), key, file: file, line: line)
            XCTAssertEqual(map.ldm(component: m.component, name: m.diffusers), key, file: file, line: line)
        }
        for (component, names) in diffusers {
            let missing = Set(names.keys).subtracting(covered[component] ?? [])
            XCTAssertTrue(missing.isEmpty, "\(component.rawValue) names no LDM key maps to: \(missing.sorted().prefix(10))",
                          file: file, line: line)
        }
        // The table lists exactly these parameters, no more.
        let tableKeys = Set(map.mappings.filter { diffusers.keys.contains($0.component) }.map(\.ldm))
        XCTAssertEqual(tableKeys, Set(ldm.keys), "table vs file: extra \(tableKeys.subtracting(ldm.keys).sorted().prefix(10)), "
                       + "missing \(Set(ldm.keys).subtracting(tableKeys).sorted().prefix(10))", file: file, line: line)
    }

    // MARK: the full SD 1.5 manifest

    func testSD15SingleFileMapsOntoDiffusersOneToOne() throws {
        let manifest = try Self.manifest()
        let map = try Self.sd15Map(manifest)
        let ldm = try Self.shapes(manifest, "ldm_single_file")
        XCTAssertEqual(ldm.count, 1130)
        assertBijection(map, ldm: ldm,
                        diffusers: [.unet: try Self.shapes(manifest, "unet"), .vae: try Self.shapes(manifest, "vae"),
                                    .textEncoder: try Self.shapes(manifest, "text_encoder")],
                        prefixes: ["model.diffusion_model.": .unet, "first_stage_model.": .vae,
                                   "cond_stage_model.transformer.": .textEncoder])
        let reshaped = map.mappings.filter(\.attentionReshape).map(\.diffusers).sorted()
        XCTAssertEqual(reshaped, ["decoder", "encoder"].flatMap { part in
            ["to_k", "to_out.0", "to_q", "to_v"].map { "\(part).mid_block.attentions.0.\($0).weight" }
        })
    }

    func testSD15ControlNetMapsOntoDiffusersOneToOne() throws {
        let manifest = try Self.manifest()
        let map = try Self.sd15Map(manifest)
        assertBijection(map, ldm: try Self.shapes(manifest, "controlnet_ldm"),
                        diffusers: [.controlnet: try Self.shapes(manifest, "controlnet")],
                        prefixes: ["control_model.": .controlnet])
        XCTAssertEqual(map.ldm(component: .controlnet, name: "controlnet_cond_embedding.conv_in.weight"),
                       "control_model.input_hint_block.0.weight")
        XCTAssertEqual(map.ldm(component: .controlnet, name: "controlnet_cond_embedding.conv_out.bias"),
                       "control_model.input_hint_block.14.bias")
        XCTAssertEqual(map.ldm(component: .controlnet, name: "controlnet_down_blocks.11.weight"), "control_model.zero_convs.11.0.weight")
        XCTAssertEqual(map.ldm(component: .controlnet, name: "controlnet_mid_block.bias"), "control_model.middle_block_out.0.bias")
    }

    func testDefaultsAreTheSD15Configs() throws {
        let fromConfigs = try Self.sd15Map(try Self.manifest())
        XCTAssertEqual(try LDMKeyMap().mappings, fromConfigs.mappings)
        // A config that leaves keys out gets the diffusers class defaults (SD 1.5's for the UNet).
        XCTAssertEqual(try LDMKeyMap(unetConfig: .object([]), vaeConfig: LDMKeyMap.sd15VAE).mappings, fromConfigs.mappings)
    }

    func testSpotChecks() throws {
        let map = try LDMKeyMap()
        let pairs: [(String, LDMComponent, String)] = [
            ("model.diffusion_model.input_blocks.3.0.op.weight", .unet, "down_blocks.0.downsamplers.0.conv.weight"),
            ("model.diffusion_model.input_blocks.4.0.skip_connection.bias", .unet, "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("model.diffusion_model.middle_block.1.proj_in.weight", .unet, "mid_block.attentions.0.proj_in.weight"),
            ("model.diffusion_model.output_blocks.2.1.conv.weight", .unet, "up_blocks.0.upsamplers.0.conv.weight"),
            ("model.diffusion_model.output_blocks.5.2.conv.bias", .unet, "up_blocks.1.upsamplers.0.conv.bias"),
            ("model.diffusion_model.output_blocks.11.1.proj_out.weight", .unet, "up_blocks.3.attentions.2.proj_out.weight"),
            ("model.diffusion_model.time_embed.2.weight", .unet, "time_embedding.linear_2.weight"),
            ("model.diffusion_model.out.0.bias", .unet, "conv_norm_out.bias"),
            ("first_stage_model.decoder.up.3.block.0.conv1.weight", .vae, "decoder.up_blocks.0.resnets.0.conv1.weight"),
            ("first_stage_model.decoder.up.0.block.2.norm2.bias", .vae, "decoder.up_blocks.3.resnets.2.norm2.bias"),
            ("first_stage_model.decoder.up.1.upsample.conv.weight", .vae, "decoder.up_blocks.2.upsamplers.0.conv.weight"),
            ("first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", .vae, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
            ("first_stage_model.encoder.mid.attn_1.proj_out.weight", .vae, "encoder.mid_block.attentions.0.to_out.0.weight"),
            ("first_stage_model.post_quant_conv.bias", .vae, "post_quant_conv.bias"),
            ("cond_stage_model.transformer.final_layer_norm.weight", .textEncoder, "final_layer_norm.weight"),
        ]
        for (ldm, component, name) in pairs {
            XCTAssertTrue(map.diffusers(fromLDM: ldm)! == (component, name), ldm)
            XCTAssertEqual(map.ldm(component: component, name: name), ldm)
        }
        XCTAssertTrue(map.needsAttentionReshape(component: .vae, diffusersName: "decoder.mid_block.attentions.0.to_q.weight"))
        XCTAssertFalse(map.needsAttentionReshape(component: .vae, diffusersName: "decoder.mid_block.attentions.0.to_q.bias"))
        XCTAssertFalse(map.needsAttentionReshape(component: .vae, diffusersName: "decoder.mid_block.attentions.0.group_norm.weight"))
        XCTAssertFalse(map.needsAttentionReshape(component: .unet, diffusersName: "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"))
        let m = try XCTUnwrap(map.mapping(component: .vae, diffusersName: "encoder.mid_block.attentions.0.to_v.weight"))
        XCTAssertEqual(m.diffusersShape(fromLDM: [512, 512, 1, 1]), [512, 512])
        XCTAssertEqual(m.diffusersShape(fromLDM: [512, 512]), [512, 512])
        XCTAssertNil(m.diffusersShape(fromLDM: [512, 512, 3, 3]))
        XCTAssertEqual(m.ldmShape(fromDiffusers: [512, 512]), [512, 512, 1, 1])
        XCTAssertNil(m.ldmShape(fromDiffusers: [512]))
    }

    // MARK: non-parameter keys, EMA, unknown keys

    func testPositionIDsAreNotParameters() throws {
        // The manifest (transformers 5) has no position ids on either side: they are a buffer.
        let manifest = try Self.manifest()
        XCTAssertFalse(try Self.shapes(manifest, "text_encoder").keys.contains { $0.contains("position_ids") })
        XCTAssertFalse(try Self.shapes(manifest, "ldm_single_file").keys.contains { $0.contains("position_ids") })
        let map = try LDMKeyMap()
        for key in ["cond_stage_model.transformer.text_model.embeddings.position_ids",
                    "cond_stage_model.transformer.embeddings.position_ids"] {
            XCTAssertEqual(map.classify(key), .ignored, key)
            XCTAssertTrue(LDMKeyMap.isIgnoredLDMKey(key))
            XCTAssertNil(map.diffusers(fromLDM: key))
        }
        XCTAssertNil(map.ldm(component: .textEncoder, name: "text_model.embeddings.position_ids"))
        XCTAssertNil(map.ldm(component: .textEncoder, name: "embeddings.position_ids"))
        XCTAssertTrue(LDMKeyMap.isIgnoredDiffusersName("text_model.embeddings.position_ids", component: .textEncoder))
        XCTAssertTrue(LDMKeyMap.isIgnoredDiffusersName("embeddings.position_ids", component: .textEncoder))
        XCTAssertFalse(LDMKeyMap.isIgnoredDiffusersName("embeddings.position_embedding.weight", component: .textEncoder))
        XCTAssertFalse(LDMKeyMap.isIgnoredDiffusersName("embeddings.position_ids", component: .unet))
    }

    func testNonParameterKeysAreIgnored() throws {
        let map = try LDMKeyMap()
        for key in ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                    "logvar", "model_ema.decay", "model_ema.num_updates"] {
            XCTAssertEqual(map.classify(key), .ignored, key)
            XCTAssertTrue(LDMKeyMap.isIgnoredLDMKey(key), key)
            XCTAssertNil(map.diffusers(fromLDM: key))
        }
        XCTAssertFalse(LDMKeyMap.isIgnoredLDMKey("model.diffusion_model.out.0.weight"))
    }

    func testEMAKeys() throws {
        XCTAssertEqual(LDMKeyMap.emaKey(forLDM: "model.diffusion_model.input_blocks.0.0.weight"),
                       "model_ema.diffusion_modelinput_blocks00weight")
        XCTAssertNil(LDMKeyMap.emaKey(forLDM: "first_stage_model.encoder.conv_in.weight"))
        let map = try LDMKeyMap()
        let unet = map.mappings.filter { $0.component == .unet }
        XCTAssertEqual(unet.count, 686)
        var seen = Set<String>()
        for m in unet {
            let ema = try XCTUnwrap(LDMKeyMap.emaKey(forLDM: m.ldm))
            XCTAssertTrue(seen.insert(ema).inserted, "EMA key \(ema) is ambiguous")
            XCTAssertEqual(map.classify(ema), .ema(of: m.ldm))
            XCTAssertNil(map.diffusers(fromLDM: ema))
        }
    }

    func testUnknownKeysAreReported() throws {
        let map = try LDMKeyMap()
        for key in ["model.diffusion_model.input_blocks.99.0.in_layers.0.weight",
                    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.bias",  // no bias there
                    "model.diffusion_model.input_blocks.1.0.skip_connection.weight",  // same channels: no shortcut
                    "model.diffusion_model.out.0.weight.extra", "first_stage_model.loss.logvar",
                    "cond_stage_model.transformer.encoder.layers.12.mlp.fc1.weight",
                    "model_ema.diffusion_modelbogus", "model_ema.decay.x", "something_else", ""] {
            XCTAssertEqual(map.classify(key), .unknown, key)
            XCTAssertNil(map.diffusers(fromLDM: key))
            XCTAssertFalse(LDMKeyMap.isIgnoredLDMKey(key))
        }
        XCTAssertNil(map.ldm(component: .unet, name: "down_blocks.9.resnets.0.norm1.weight"))
        XCTAssertNil(map.ldm(component: .vae, name: "down_blocks.0.resnets.0.norm1.weight"))
    }

    // MARK: alternative spellings

    func testTextModelPrefix() throws {
        let flat = try LDMKeyMap()
        let prefixed = try LDMKeyMap(clipTextModelPrefix: true)
        let long = "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"
        let short = "cond_stage_model.transformer.encoder.layers.3.mlp.fc1.weight"
        for map in [flat, prefixed] {
            // Both spellings are read; text_model.-prefixed diffusers names too.
            XCTAssertTrue(map.diffusers(fromLDM: long)! == (.textEncoder, "encoder.layers.3.mlp.fc1.weight"))
            XCTAssertTrue(map.diffusers(fromLDM: short)! == (.textEncoder, "encoder.layers.3.mlp.fc1.weight"))
            XCTAssertEqual(map.ldm(component: .textEncoder, name: "text_model.encoder.layers.3.mlp.fc1.weight"),
                           map.ldm(component: .textEncoder, name: "encoder.layers.3.mlp.fc1.weight"))
        }
        XCTAssertEqual(flat.ldm(component: .textEncoder, name: "encoder.layers.3.mlp.fc1.weight"), short)
        XCTAssertEqual(prefixed.ldm(component: .textEncoder, name: "encoder.layers.3.mlp.fc1.weight"), long)
        XCTAssertEqual(prefixed.classify(long), .parameter(prefixed.mapping(component: .textEncoder,
                                                                             diffusersName: "encoder.layers.3.mlp.fc1.weight")!))
    }

    func testDeprecatedDiffusersVAEAttentionNames() throws {
        let map = try LDMKeyMap()
        let cases = [("encoder.mid_block.attentions.0.query.weight", "encoder.mid_block.attentions.0.to_q.weight"),
                     ("decoder.mid_block.attentions.0.key.bias", "decoder.mid_block.attentions.0.to_k.bias"),
                     ("decoder.mid_block.attentions.0.value.weight", "decoder.mid_block.attentions.0.to_v.weight"),
                     ("decoder.mid_block.attentions.0.proj_attn.weight", "decoder.mid_block.attentions.0.to_out.0.weight")]
        for (old, new) in cases {
            XCTAssertEqual(LDMKeyMap.canonicalDiffusersName(old, component: .vae), new)
            XCTAssertEqual(map.ldm(component: .vae, name: old), map.ldm(component: .vae, name: new))
            XCTAssertNotNil(map.ldm(component: .vae, name: old))
        }
        XCTAssertTrue(map.needsAttentionReshape(component: .vae, diffusersName: "decoder.mid_block.attentions.0.proj_attn.weight"))
        XCTAssertEqual(LDMKeyMap.canonicalDiffusersName("decoder.conv_in.weight", component: .vae), "decoder.conv_in.weight")
        XCTAssertEqual(LDMKeyMap.canonicalDiffusersName("text_model.final_layer_norm.bias", component: .textEncoder),
                       "final_layer_norm.bias")
    }

    // MARK: other configs

    func testStructureFollowsTheConfig() throws {
        // Two levels, one resnet per level, attention only at the second level, no mid attention.
        let unet: JSON = ["down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                          "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "block_out_channels": [8, 16],
                          "layers_per_block": 1, "transformer_layers_per_block": [1, 2], "mid_block_type": "UNetMidBlock2D"]
        let vae: JSON = ["down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
                         "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "block_out_channels": [8, 8],
                         "layers_per_block": 1, "mid_block_add_attention": false, "use_quant_conv": false]
        let map = try LDMKeyMap(unetConfig: unet, vaeConfig: vae, textEncoderConfig: ["num_hidden_layers": 1],
                                controlnetConfig: ["down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                                                   "block_out_channels": [8, 16], "layers_per_block": 1,
                                                   "conditioning_embedding_out_channels": [4, 8]])
        let expect: [(String, LDMComponent, String)] = [
            ("model.diffusion_model.input_blocks.1.0.in_layers.0.weight", .unet, "down_blocks.0.resnets.0.norm1.weight"),
            ("model.diffusion_model.input_blocks.2.0.op.weight", .unet, "down_blocks.0.downsamplers.0.conv.weight"),
            ("model.diffusion_model.input_blocks.3.0.skip_connection.weight", .unet, "down_blocks.1.resnets.0.conv_shortcut.weight"),
            ("model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight", .unet,
             "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"),
            ("model.diffusion_model.middle_block.1.out_layers.3.bias", .unet, "mid_block.resnets.1.conv2.bias"),
            ("model.diffusion_model.output_blocks.1.1.transformer_blocks.1.norm3.weight", .unet,
             "up_blocks.0.attentions.1.transformer_blocks.1.norm3.weight"),
            ("model.diffusion_model.output_blocks.1.2.conv.weight", .unet, "up_blocks.0.upsamplers.0.conv.weight"),
            ("model.diffusion_model.output_blocks.3.0.skip_connection.weight", .unet, "up_blocks.1.resnets.1.conv_shortcut.weight"),
            ("first_stage_model.decoder.up.1.upsample.conv.weight", .vae, "decoder.up_blocks.0.upsamplers.0.conv.weight"),
            ("first_stage_model.decoder.up.0.block.1.conv2.weight", .vae, "decoder.up_blocks.1.resnets.1.conv2.weight"),
            ("first_stage_model.post_quant_conv.weight", .vae, "post_quant_conv.weight"),
            ("control_model.input_hint_block.2.weight", .controlnet, "controlnet_cond_embedding.blocks.0.weight"),
            ("control_model.input_hint_block.6.bias", .controlnet, "controlnet_cond_embedding.conv_out.bias"),
            ("control_model.zero_convs.3.0.weight", .controlnet, "controlnet_down_blocks.3.weight"),
        ]
        for (ldm, component, name) in expect {
            XCTAssertTrue(map.diffusers(fromLDM: ldm).map { $0 == (component, name) } ?? false, "\(ldm) -> \(String(describing: map.diffusers(fromLDM: ldm)))")
            XCTAssertEqual(map.ldm(component: component, name: name), ldm)
        }
        for absent in ["model.diffusion_model.input_blocks.1.1.norm.weight", "model.diffusion_model.input_blocks.1.0.skip_connection.weight",
                       "model.diffusion_model.middle_block.2.in_layers.0.weight", "model.diffusion_model.input_blocks.4.0.op.weight",
                       "model.diffusion_model.output_blocks.3.1.conv.weight", "model.diffusion_model.output_blocks.4.0.in_layers.0.weight",
                       "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.quant_conv.weight",
                       "first_stage_model.decoder.up.0.upsample.conv.weight", "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
                       "cond_stage_model.transformer.encoder.layers.1.mlp.fc1.weight",
                       "control_model.input_hint_block.8.weight", "control_model.zero_convs.4.0.weight"] {
            XCTAssertEqual(map.classify(absent), .unknown, absent)
        }
        XCTAssertEqual(map.mappings.filter { $0.component == .controlnet }.map(\.ldm).filter { $0.contains("zero_convs") }.count, 8)
    }

    func testUnsupportedConfigsThrow() {
        let bad: [(JSON?, JSON?)] = [
            (["down_block_types": ["SimpleCrossAttnDownBlock2D"], "block_out_channels": [8]], nil),
            (["block_out_channels": [8, 16]], nil),  // 4 default down blocks
            (["class_embed_type": "timestep"], nil),
            (["layers_per_block": [1, 2]], nil),
            (["up_block_types": ["UpBlock2D"]], nil),
            (nil, ["down_block_types": ["DownEncoderBlock2D"], "block_out_channels": [8, 8]]),
            (nil, ["layers_per_block": "two"]),
        ]
        for (unet, vae) in bad {
            XCTAssertThrowsError(try LDMKeyMap(unetConfig: unet, vaeConfig: vae)) { error in
                XCTAssertTrue(error is FileError, "\(error)")
            }
        }
    }

    // MARK: the tiny fixtures: same bytes under both names

    /// A minimal safetensors reader for these tests: the header and each tensor's raw bytes.
    struct SafeTensors {
        struct Tensor { let dtype: String; let shape: [Int]; let bytes: Data }
        let tensors: [String: Tensor]

        init(_ url: URL) throws {
            let data = try Data(contentsOf: url)
            XCTAssertGreaterThanOrEqual(data.count, 8)
            let n = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            let header = try JSON.parse(bytes: data[8..<(8 + n)])
            var tensors: [String: Tensor] = [:]
            for (name, info) in try XCTUnwrap(header.objectPairs) where name != "__metadata__" {
                let offsets = try XCTUnwrap(info["data_offsets"]?.array).map { try XCTUnwrap($0.int) }
                tensors[name] = Tensor(dtype: try XCTUnwrap(info["dtype"]?.string),
                                       shape: try XCTUnwrap(info["shape"]?.array).map { try XCTUnwrap($0.int) },
                                       bytes: data[(8 + n + offsets[0])..<(8 + n + offsets[1])])
            }
            self.tensors = tensors
        }
    }

    static func config(_ path: String) throws -> JSON {
        try JSON.parse(bytes: Data(contentsOf: fixtures.appendingPathComponent("sd-tiny/" + path)))
    }

    /// Every LDM tensor sits under its diffusers name with the same dtype and bytes; every
    /// diffusers tensor is reached; the table lists exactly the file's parameters.
    func assertSameTensors(_ map: LDMKeyMap, ldmFile: String, diffusers: [LDMComponent: String],
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let ldm = try SafeTensors(Self.fixtures.appendingPathComponent("sd-tiny/" + ldmFile))
        let targets = try diffusers.mapValues { try SafeTensors(Self.fixtures.appendingPathComponent("sd-tiny/" + $0)) }
        var covered: [LDMComponent: Set<String>] = [:]
        var reshaped = 0
        for (key, tensor) in ldm.tensors {
            guard case .parameter(let m) = map.classify(key) else {
                XCTFail("\(key): \(map.classify(key))", file: file, line: line); continue
            }
            guard let target = targets[m.component]?.tensors[m.diffusers] else {
                XCTFail("\(key) -> \(m.component.rawValue) \(m.diffusers), not in the diffusers file", file: file, line: line)
                continue
            }
            covered[m.component, default: []].insert(m.diffusers)
            XCTAssertEqual(tensor.dtype, target.dtype, key, file: file, line: line)
            XCTAssertEqual(m.diffusersShape(fromLDM: tensor.shape), target.shape, key, file: file, line: line)
            XCTAssertEqual(m.ldmShape(fromDiffusers: target.shape), tensor.shape, key, file: file, line: line)
            XCTAssertTrue(tensor.bytes == target.bytes, "\(key) and \(m.diffusers) hold different values", file: file, line: line)
            XCTAssertEqual(map.ldm(component: m.component, name: m.diffusers), key, file: file, line: line)
            if m.attentionReshape {
                reshaped += 1
                XCTAssertEqual(tensor.shape.count, 4, key, file: file, line: line)
            }
        }
        for (component, source) in targets {
            let missing = Set(source.tensors.keys).subtracting(covered[component] ?? [])
            XCTAssertTrue(missing.isEmpty, "\(component.rawValue) tensors no LDM key reaches: \(missing.sorted())", file: file, line: line)
        }
        let table = Set(map.mappings.filter { diffusers.keys.contains($0.component) }.map(\.ldm))
        XCTAssertEqual(table, Set(ldm.tensors.keys), file: file, line: line)
        if diffusers[.vae] != nil { XCTAssertEqual(reshaped, 8, file: file, line: line) }
    }

    func testTinySingleFileHoldsTheDiffusersTensors() throws {
        let map = try LDMKeyMap(unetConfig: try Self.config("tiny-sd/unet/config.json"),
                                vaeConfig: try Self.config("tiny-sd/vae/config.json"),
                                textEncoderConfig: try Self.config("tiny-sd/text_encoder/config.json"),
                                controlnetConfig: try Self.config("tiny-controlnet/config.json"))
        try assertSameTensors(map, ldmFile: "tiny-sd-ldm.safetensors",
                              diffusers: [.unet: "tiny-sd/unet/diffusion_pytorch_model.safetensors",
                                          .vae: "tiny-sd/vae/diffusion_pytorch_model.safetensors",
                                          .textEncoder: "tiny-sd/text_encoder/model.safetensors"])
    }

    func testTinyControlNetFileHoldsTheDiffusersTensors() throws {
        let map = try LDMKeyMap(unetConfig: try Self.config("tiny-sd/unet/config.json"),
                                controlnetConfig: try Self.config("tiny-controlnet/config.json"))
        try assertSameTensors(map, ldmFile: "tiny-controlnet-ldm.safetensors",
                              diffusers: [.controlnet: "tiny-controlnet/diffusion_pytorch_model.safetensors"])
    }
}
