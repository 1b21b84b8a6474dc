import DGBase
import DGCheckpoint
import DGLayers

/// The noise-predicting UNet of Stable Diffusion (diffusers `UNet2DConditionModel`), built
/// from its `config.json`. It supports what SD 1.x and 2.x configs use and refuses, naming the
/// key, every other feature that would change the structure or the computation.
public final class UNet2DConditionModel: Module {
    public let conv_in: Conv2d
    public let time_proj: Timesteps
    public let time_embedding: TimestepEmbedding
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, high resolution first.
    public let down_blocks: [Module]
    /// `UpBlock2D` or `CrossAttnUpBlock2D`, low resolution first.
    public let up_blocks: [Module]
    /// nil when the config's `mid_block_type` is null.
    public let mid_block: UNetMidBlock2DCrossAttn?
    public let conv_norm_out: GroupNorm
    public let conv_out: Conv2d

    public let config: JSON
    public let in_channels: Int, out_channels: Int
    public let block_out_channels: [Int]
    public let cross_attention_dim: [Int]
    public let norm_num_groups: Int, norm_eps: Float
    /// Latent side length the model was trained at (64 for SD 1.5); informational.
    public let sample_size: Int?
    /// When true the forward pass first maps the input from [0, 1] to [-1, 1].
    public let center_input_sample: Bool
    /// How many times the up path doubles the resolution; inputs must divide by 2^this.
    public let num_upsamplers: Int

    public init(config: JSON) throws {
        let r = try ConfigReader(config, model: "UNet2DConditionModel")
        let spec = try UNetSpec(r, controlNet: false)
        let n = spec.block_out_channels.count

        in_channels = spec.in_channels
        out_channels = try r.positiveInt("out_channels", default: 4)
        block_out_channels = spec.block_out_channels
        cross_attention_dim = spec.cross_attention_dim
        norm_num_groups = spec.norm_num_groups
        norm_eps = spec.norm_eps
        sample_size = try r.optionalInt("sample_size")
        center_input_sample = try r.bool("center_input_sample", default: false)
        self.config = config

        let up_block_types = try r.strings("up_block_types", default: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
            .map(UNetSpec.withoutResPrefix)
        guard up_block_types.count == n else {
            throw r.error("up_block_types", "has \(up_block_types.count) entries, but block_out_channels has \(n)")
        }
        if let t = up_block_types.first(where: { !["UpBlock2D", "CrossAttnUpBlock2D"].contains($0) }) {
            throw r.error("up_block_types", "contains \"\(t)\", which is not supported (only UpBlock2D, CrossAttnUpBlock2D)")
        }
        let conv_in_kernel = try spec.oddKernel(r, "conv_in_kernel")
        let conv_out_kernel = try spec.oddKernel(r, "conv_out_kernel")

        conv_in = Conv2d(in_channels, block_out_channels[0], kernel: conv_in_kernel, padding: (conv_in_kernel - 1) / 2)
        time_proj = spec.timeProj()
        time_embedding = spec.timeEmbedding()
        down_blocks = spec.downBlocks()

        // The up path mirrors the down path. Each up block has one more resnet than its down
        // block, to consume the skip connection its down block's downsampler (or conv_in) left.
        let reversedChannels = Array(block_out_channels.reversed())
        let reversedLayers = Array(spec.layers_per_block.reversed())
        let reversedTransformerLayers = Array(spec.transformer_layers_per_block.reversed())
        let reversedHeads = Array(spec.num_attention_heads.reversed())
        var ups: [Module] = []
        var output_channel = reversedChannels[0]
        for (i, type) in up_block_types.enumerated() {
            let prev_output_channel = output_channel
            output_channel = reversedChannels[i]
            let input_channel = reversedChannels[min(i + 1, n - 1)]
            let add_upsample = i != n - 1
            let settings = spec.settings(block: n - 1 - i)
            if type == "CrossAttnUpBlock2D" {
                ups.append(CrossAttnUpBlock2D(
                    in_channels: input_channel, prev_output_channel: prev_output_channel, out_channels: output_channel,
                    num_layers: reversedLayers[i] + 1, transformer_layers_per_block: reversedTransformerLayers[i],
                    num_attention_heads: reversedHeads[i], add_upsample: add_upsample, settings: settings))
            } else {
                ups.append(UpBlock2D(
                    in_channels: input_channel, prev_output_channel: prev_output_channel, out_channels: output_channel,
                    num_layers: reversedLayers[i] + 1, add_upsample: add_upsample, settings: settings))
            }
        }
        up_blocks = ups
        num_upsamplers = n - 1
        mid_block = spec.midBlock()

        conv_norm_out = GroupNorm(groups: norm_num_groups, channels: block_out_channels[0], eps: norm_eps)
        conv_out = Conv2d(block_out_channels[0], out_channels, kernel: conv_out_kernel, padding: (conv_out_kernel - 1) / 2)
    }
}

/// The settings, and the encoder half, that `UNet2DConditionModel` and `ControlNetModel` share:
/// a ControlNet is a copy of the UNet's conv_in, time embedding, down blocks and mid block.
struct UNetSpec {
    let in_channels: Int
    let block_out_channels: [Int]
    let down_block_types: [String]
    let hasMidBlock: Bool
    let layers_per_block: [Int]
    let transformer_layers_per_block: [Int]
    /// Per block. SD 1.x/2.x configs give this as `attention_head_dim`, a historical misnomer.
    let num_attention_heads: [Int]
    let cross_attention_dim: [Int]
    let norm_num_groups: Int
    let norm_eps: Float
    let use_linear_projection: Bool
    let upcast_attention: Bool
    let downsample_padding: Int
    let mid_block_scale_factor: Float
    let flip_sin_to_cos: Bool
    let freq_shift: Float
    let time_embed_dim: Int
    let dropout: Float

    /// diffusers accepts the old "UNetRes" prefix on block type names.
    static func withoutResPrefix(_ type: String) -> String {
        type.hasPrefix("UNetRes") ? String(type.dropFirst(7)) : type
    }

    init(_ r: ConfigReader, controlNet: Bool) throws {
        // Features that add embeddings, change the time path or the blocks' wiring.
        for key in ["class_embed_type", "num_class_embeds", "addition_embed_type", "encoder_hid_dim",
                    "encoder_hid_dim_type", "time_cond_proj_dim", "time_embedding_act_fn", "timestep_post_act",
                    "cross_attention_norm", "reverse_transformer_layers_per_block"] {
            try r.requireUnset(key)
        }
        try r.requireUnset("mid_block_only_cross_attention", unless: [false])
        try r.require("act_fn", in: ["silu"])
        try r.require("resnet_time_scale_shift", in: ["default"])
        try r.require("time_embedding_type", in: ["positional"])
        try r.require("attention_type", in: ["default"])
        try r.require("dual_cross_attention", in: [false])
        try r.require("resnet_skip_time_act", in: [false])
        try r.require("resnet_out_scale_factor", in: [1])
        try r.require("class_embeddings_concat", in: [false])

        in_channels = try r.positiveInt("in_channels", default: 4)
        block_out_channels = try r.positiveInts("block_out_channels", default: [320, 640, 1280, 1280])
        let n = block_out_channels.count

        down_block_types = try r.strings("down_block_types", default: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
            .map(UNetSpec.withoutResPrefix)
        guard down_block_types.count == n else {
            throw r.error("down_block_types", "has \(down_block_types.count) entries, but block_out_channels has \(n)")
        }
        if let t = down_block_types.first(where: { !["CrossAttnDownBlock2D", "DownBlock2D"].contains($0) }) {
            throw r.error("down_block_types", "contains \"\(t)\", which is not supported (only CrossAttnDownBlock2D, DownBlock2D)")
        }
        // A UNet may have no mid block (null); diffusers' ControlNet always has one.
        try r.require("mid_block_type", in: controlNet ? ["UNetMidBlock2DCrossAttn"] : ["UNetMidBlock2DCrossAttn", nil])
        hasMidBlock = r.present("mid_block_type") != nil || r.json["mid_block_type"] == nil

        for (i, v) in try r.perBlock("only_cross_attention", count: n, default: false).enumerated() where v != false {
            throw r.error("only_cross_attention", "= \(v.compact) (block \(i)) is not supported (only false)")
        }

        if controlNet, let v = r.json["layers_per_block"], v.array != nil {
            throw r.error("layers_per_block", "must be one integer for a ControlNet, not \(v.compact)")
        }
        layers_per_block = try r.perBlockPositiveInts("layers_per_block", count: n, default: 2)
        transformer_layers_per_block = try r.perBlockPositiveInts("transformer_layers_per_block", count: n, default: 1)
        // num_attention_heads, when given, is the head count; otherwise attention_head_dim is.
        let headsKey = r.present("num_attention_heads") != nil ? "num_attention_heads" : "attention_head_dim"
        num_attention_heads = try r.perBlockPositiveInts(headsKey, count: n, default: 8)
        for (c, h) in zip(block_out_channels, num_attention_heads) where c % h != 0 {
            throw r.error(headsKey, "= \(h) heads do not divide \(c) channels")
        }
        cross_attention_dim = try r.perBlockPositiveInts("cross_attention_dim", count: n, default: 1280)

        norm_num_groups = try r.positiveInt("norm_num_groups", default: 32)
        try r.requireGroups(norm_num_groups, divide: block_out_channels)
        norm_eps = Float(try r.double("norm_eps", default: 1e-5))
        use_linear_projection = try r.bool("use_linear_projection", default: false)
        upcast_attention = try r.bool("upcast_attention", default: false)
        downsample_padding = try r.int("downsample_padding", default: 1)
        guard downsample_padding >= 0 else { throw r.error("downsample_padding", "must not be negative") }
        mid_block_scale_factor = Float(try r.double("mid_block_scale_factor", default: 1))
        flip_sin_to_cos = try r.bool("flip_sin_to_cos", default: true)
        freq_shift = Float(try r.double("freq_shift", default: 0))
        time_embed_dim = try r.optionalInt("time_embedding_dim") ?? block_out_channels[0] * 4
        guard time_embed_dim > 0 else { throw r.error("time_embedding_dim", "must be positive") }
        dropout = Float(try r.double("dropout", default: 0))
    }

    func oddKernel(_ r: ConfigReader, _ key: String) throws -> Int {
        let k = try r.positiveInt(key, default: 3)
        guard k % 2 == 1 else { throw r.error(key, "= \(k) is not supported (only odd sizes)") }
        return k
    }

    func settings(block i: Int) -> UNetBlockSettings {
        UNetBlockSettings(temb_channels: time_embed_dim, resnet_groups: norm_num_groups, resnet_eps: norm_eps,
                          dropout: dropout, cross_attention_dim: cross_attention_dim[i],
                          use_linear_projection: use_linear_projection, upcast_attention: upcast_attention)
    }

    func timeProj() -> Timesteps {
        Timesteps(num_channels: block_out_channels[0], flip_sin_to_cos: flip_sin_to_cos, downscale_freq_shift: freq_shift)
    }

    func timeEmbedding() -> TimestepEmbedding {
        TimestepEmbedding(in_channels: block_out_channels[0], time_embed_dim: time_embed_dim)
    }

    /// Each block but the last halves the resolution.
    func downBlocks() -> [Module] {
        var blocks: [Module] = []
        var output_channel = block_out_channels[0]
        for (i, type) in down_block_types.enumerated() {
            let input_channel = output_channel
            output_channel = block_out_channels[i]
            let add_downsample = i != block_out_channels.count - 1
            if type == "CrossAttnDownBlock2D" {
                blocks.append(CrossAttnDownBlock2D(
                    in_channels: input_channel, out_channels: output_channel, num_layers: layers_per_block[i],
                    transformer_layers_per_block: transformer_layers_per_block[i], num_attention_heads: num_attention_heads[i],
                    add_downsample: add_downsample, downsample_padding: downsample_padding, settings: settings(block: i)))
            } else {
                blocks.append(DownBlock2D(
                    in_channels: input_channel, out_channels: output_channel, num_layers: layers_per_block[i],
                    add_downsample: add_downsample, downsample_padding: downsample_padding, settings: settings(block: i)))
            }
        }
        return blocks
    }

    func midBlock() -> UNetMidBlock2DCrossAttn? {
        guard hasMidBlock else { return nil }
        let last = block_out_channels.count - 1
        return UNetMidBlock2DCrossAttn(
            in_channels: block_out_channels[last], transformer_layers_per_block: transformer_layers_per_block[last],
            num_attention_heads: num_attention_heads[last], output_scale_factor: mid_block_scale_factor,
            settings: settings(block: last))
    }
}
