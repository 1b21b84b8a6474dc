import DGBase
import DGCheckpoint
import DGLayers

/// The VAE of Stable Diffusion (diffusers `AutoencoderKL`): images to a diagonal Gaussian over
/// latents and latents back to images. Its resnets have no time embedding and use eps 1e-6.
public final class AutoencoderKL: Module {
    public let encoder: VAEEncoder
    public let decoder: VAEDecoder
    /// 1x1 convs on the moments and on the latents; configs may leave either out.
    public let quant_conv: Conv2d?
    public let post_quant_conv: Conv2d?

    public let config: JSON
    public let in_channels: Int, out_channels: Int, latent_channels: Int
    public let block_out_channels: [Int]
    /// Latents are multiplied by this after encoding, and divided before decoding, so that
    /// the diffusion model sees roughly unit variance.
    public let scaling_factor: Float
    /// Subtracted before scaling when set (not in SD 1.x/2.x).
    public let shift_factor: Float?
    public let latents_mean: [Double]?, latents_std: [Double]?
    /// The reference runs this VAE in float32 even when the rest runs in half precision.
    public let force_upcast: Bool
    public let sample_size: Int?

    public init(config: JSON) throws {
        let r = try ConfigReader(config, model: "AutoencoderKL")
        try r.require("act_fn", in: ["silu"])
        in_channels = try r.positiveInt("in_channels", default: 3)
        out_channels = try r.positiveInt("out_channels", default: 3)
        latent_channels = try r.positiveInt("latent_channels", default: 4)
        block_out_channels = try r.positiveInts("block_out_channels", default: [64])
        let n = block_out_channels.count
        for (key, type) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let types = try r.strings(key, default: [type])
            guard types.count == n else {
                throw r.error(key, "has \(types.count) entries, but block_out_channels has \(n)")
            }
            if let t = types.first(where: { $0 != type }) {
                throw r.error(key, "contains \"\(t)\", which is not supported (only \(type))")
            }
        }
        let layers_per_block = try r.positiveInt("layers_per_block", default: 1)
        let norm_num_groups = try r.positiveInt("norm_num_groups", default: 32)
        try r.requireGroups(norm_num_groups, divide: block_out_channels)
        let mid_block_add_attention = try r.bool("mid_block_add_attention", default: true)
        scaling_factor = Float(try r.double("scaling_factor", default: 0.18215))
        shift_factor = try r.optionalDouble("shift_factor").map(Float.init)
        latents_mean = try r.optionalDoubles("latents_mean")
        latents_std = try r.optionalDoubles("latents_std")
        force_upcast = try r.bool("force_upcast", default: true)
        sample_size = try r.optionalInt("sample_size")
        self.config = config

        encoder = VAEEncoder(in_channels: in_channels, out_channels: latent_channels, block_out_channels: block_out_channels,
                             layers_per_block: layers_per_block, norm_num_groups: norm_num_groups,
                             mid_block_add_attention: mid_block_add_attention)
        decoder = VAEDecoder(in_channels: latent_channels, out_channels: out_channels, block_out_channels: block_out_channels,
                             layers_per_block: layers_per_block, norm_num_groups: norm_num_groups,
                             mid_block_add_attention: mid_block_add_attention)
        quant_conv = try r.bool("use_quant_conv", default: true)
            ? Conv2d(2 * latent_channels, 2 * latent_channels, kernel: 1) : nil
        post_quant_conv = try r.bool("use_post_quant_conv", default: true)
            ? Conv2d(latent_channels, latent_channels, kernel: 1) : nil
    }
}

/// The VAE's eps for every GroupNorm; its config has no key for it.
let vaeNormEps: Float = 1e-6

/// Images to mean and log-variance of the latents (`2 * out_channels` channels: "double_z").
public final class VAEEncoder: Module {
    public let conv_in: Conv2d
    public let down_blocks: [DownEncoderBlock2D]
    public let mid_block: UNetMidBlock2D
    public let conv_norm_out: GroupNorm
    public let conv_out: Conv2d

    public let in_channels: Int, out_channels: Int
    public let double_z = true

    public init(in_channels: Int, out_channels: Int, block_out_channels: [Int], layers_per_block: Int,
                norm_num_groups: Int, mid_block_add_attention: Bool) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        conv_in = Conv2d(in_channels, block_out_channels[0], kernel: 3, padding: 1)
        var blocks: [DownEncoderBlock2D] = []
        var output_channel = block_out_channels[0]
        for (i, c) in block_out_channels.enumerated() {
            let input_channel = output_channel
            output_channel = c
            blocks.append(DownEncoderBlock2D(in_channels: input_channel, out_channels: output_channel,
                                             num_layers: layers_per_block, groups: norm_num_groups,
                                             add_downsample: i != block_out_channels.count - 1))
        }
        down_blocks = blocks
        let last = block_out_channels.last!
        mid_block = UNetMidBlock2D(in_channels: last, groups: norm_num_groups, add_attention: mid_block_add_attention)
        conv_norm_out = GroupNorm(groups: norm_num_groups, channels: last, eps: vaeNormEps)
        conv_out = Conv2d(last, 2 * out_channels, kernel: 3, padding: 1)
    }
}

/// Latents to images; the mirror of the encoder with one more resnet per block.
public final class VAEDecoder: Module {
    public let conv_in: Conv2d
    public let up_blocks: [UpDecoderBlock2D]
    public let mid_block: UNetMidBlock2D
    public let conv_norm_out: GroupNorm
    public let conv_out: Conv2d

    public let in_channels: Int, out_channels: Int

    public init(in_channels: Int, out_channels: Int, block_out_channels: [Int], layers_per_block: Int,
                norm_num_groups: Int, mid_block_add_attention: Bool) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        let reversedChannels = Array(block_out_channels.reversed())
        conv_in = Conv2d(in_channels, reversedChannels[0], kernel: 3, padding: 1)
        mid_block = UNetMidBlock2D(in_channels: reversedChannels[0], groups: norm_num_groups, add_attention: mid_block_add_attention)
        var blocks: [UpDecoderBlock2D] = []
        var output_channel = reversedChannels[0]
        for (i, c) in reversedChannels.enumerated() {
            let prev_output_channel = output_channel
            output_channel = c
            blocks.append(UpDecoderBlock2D(in_channels: prev_output_channel, out_channels: output_channel,
                                           num_layers: layers_per_block + 1, groups: norm_num_groups,
                                           add_upsample: i != reversedChannels.count - 1))
        }
        up_blocks = blocks
        conv_norm_out = GroupNorm(groups: norm_num_groups, channels: block_out_channels[0], eps: vaeNormEps)
        conv_out = Conv2d(block_out_channels[0], out_channels, kernel: 3, padding: 1)
    }
}

/// Resnets, then (except in the last block) a stride-2 downsampler without padding: diffusers
/// pads its input by one on the right and bottom instead.
public final class DownEncoderBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let downsamplers: [Downsample2D]?

    public let in_channels: Int, out_channels: Int, num_layers: Int

    public init(in_channels: Int, out_channels: Int, num_layers: Int, groups: Int, add_downsample: Bool) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        resnets = (0..<num_layers).map {
            ResnetBlock2D(in_channels: $0 == 0 ? in_channels : out_channels, out_channels: out_channels,
                          temb_channels: nil, groups: groups, eps: vaeNormEps)
        }
        downsamplers = add_downsample ? [Downsample2D(channels: out_channels, padding: 0)] : nil
    }
}

/// Resnets, then (except in the last block) an upsampler. No skip connections in a VAE.
public final class UpDecoderBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let upsamplers: [Upsample2D]?

    public let in_channels: Int, out_channels: Int, num_layers: Int

    public init(in_channels: Int, out_channels: Int, num_layers: Int, groups: Int, add_upsample: Bool) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        resnets = (0..<num_layers).map {
            ResnetBlock2D(in_channels: $0 == 0 ? in_channels : out_channels, out_channels: out_channels,
                          temb_channels: nil, groups: groups, eps: vaeNormEps)
        }
        upsamplers = add_upsample ? [Upsample2D(channels: out_channels)] : nil
    }
}

/// resnet, (attention, resnet): the VAE's mid block. Its attention is single-head
/// self-attention over all pixels with an input GroupNorm and a residual connection, and its
/// projections have biases. Without `add_attention` it is just the two resnets.
public final class UNetMidBlock2D: Module {
    /// Empty when `add_attention` is false (diffusers then holds None; no keys either way).
    public let attentions: [Attention]
    public let resnets: [ResnetBlock2D]

    public let in_channels: Int, groups: Int, eps: Float
    public let add_attention: Bool

    public init(in_channels: Int, groups: Int, add_attention: Bool, eps: Float = 1e-6) {
        self.in_channels = in_channels
        self.groups = groups
        self.eps = eps
        self.add_attention = add_attention
        attentions = add_attention
            ? [Attention(query_dim: in_channels, heads: 1, dim_head: in_channels, bias: true, upcast_softmax: true,
                         norm_num_groups: groups, eps: eps, residual_connection: true)]
            : []
        resnets = (0..<2).map { _ in
            ResnetBlock2D(in_channels: in_channels, out_channels: in_channels, temb_channels: nil, groups: groups, eps: eps)
        }
    }
}
