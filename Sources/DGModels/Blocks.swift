import DGLayers

// The blocks that diffusers' UNet, ControlNet and VAE are made of. Property names are
// diffusers' attribute names, so the reflected keys are its state-dict keys; hyper-parameters
// are stored beside the layers because the forward passes need them and reflection skips them.

// MARK: - time

/// Sinusoidal features of the timestep (diffusers `Timesteps`). Parameterless, kept as a
/// module so the UNet reads like diffusers' and the forward pass finds its settings here.
public final class Timesteps: Module {
    public let num_channels: Int
    public let flip_sin_to_cos: Bool
    public let downscale_freq_shift: Float
    public let scale: Float = 1
    public let max_period: Float = 10000

    public init(num_channels: Int, flip_sin_to_cos: Bool, downscale_freq_shift: Float) {
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift
    }
}

/// linear_1 -> SiLU -> linear_2.
public final class TimestepEmbedding: Module {
    public let linear_1: Linear
    public let linear_2: Linear
    public let in_channels: Int, time_embed_dim: Int

    public init(in_channels: Int, time_embed_dim: Int) {
        self.in_channels = in_channels
        self.time_embed_dim = time_embed_dim
        linear_1 = Linear(in_channels, time_embed_dim)
        linear_2 = Linear(time_embed_dim, time_embed_dim)
    }
}

// MARK: - resnet

/// GroupNorm-SiLU-conv twice, with the time embedding added between (when there is one: the
/// VAE's blocks have none) and a 1x1 shortcut when the channel count changes.
public final class ResnetBlock2D: Module {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    public let time_emb_proj: Linear?
    public let norm2: GroupNorm
    public let dropout: Dropout
    public let conv2: Conv2d
    public let conv_shortcut: Conv2d?

    public let in_channels: Int, out_channels: Int
    public let temb_channels: Int?
    public let groups: Int, eps: Float
    /// The output is (shortcut + residual) / output_scale_factor.
    public let output_scale_factor: Float

    public var use_in_shortcut: Bool { conv_shortcut != nil }

    public init(in_channels: Int, out_channels: Int, temb_channels: Int?, groups: Int, eps: Float,
                output_scale_factor: Float = 1, dropout: Float = 0) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.temb_channels = temb_channels
        self.groups = groups
        self.eps = eps
        self.output_scale_factor = output_scale_factor
        norm1 = GroupNorm(groups: groups, channels: in_channels, eps: eps)
        conv1 = Conv2d(in_channels, out_channels, kernel: 3, padding: 1)
        time_emb_proj = temb_channels.map { Linear($0, out_channels) }
        norm2 = GroupNorm(groups: groups, channels: out_channels, eps: eps)
        self.dropout = Dropout(dropout)
        conv2 = Conv2d(out_channels, out_channels, kernel: 3, padding: 1)
        conv_shortcut = in_channels != out_channels ? Conv2d(in_channels, out_channels, kernel: 1) : nil
    }
}

// MARK: - resampling

/// A stride-2 3x3 convolution. With `padding` 0 (the VAE encoder) diffusers first pads the
/// input asymmetrically by (0, 1, 0, 1), which the forward pass must reproduce.
public final class Downsample2D: Module {
    public let conv: Conv2d
    public let channels: Int, out_channels: Int, padding: Int

    public init(channels: Int, out_channels: Int? = nil, padding: Int) {
        self.channels = channels
        self.out_channels = out_channels ?? channels
        self.padding = padding
        conv = Conv2d(channels, self.out_channels, kernel: 3, stride: 2, padding: padding)
    }
}

/// Nearest-neighbour 2x upsampling followed by a 3x3 convolution.
public final class Upsample2D: Module {
    public let conv: Conv2d
    public let channels: Int, out_channels: Int

    public init(channels: Int, out_channels: Int? = nil) {
        self.channels = channels
        self.out_channels = out_channels ?? channels
        conv = Conv2d(channels, self.out_channels, kernel: 3, padding: 1)
    }
}

// MARK: - attention

/// Multi-head attention (diffusers `Attention`). Self-attention when `cross_attention_dim` is
/// nil; keys and values then come from the query's own features. The VAE's variant adds an
/// input GroupNorm, a residual connection and biases on the projections.
public final class Attention: Module {
    public let group_norm: GroupNorm?
    public let to_q: Linear
    public let to_k: Linear
    public let to_v: Linear
    /// `to_out.0` is the output projection, `to_out.1` a Dropout that keeps diffusers' index.
    public let to_out: [Module]

    public let query_dim: Int
    /// Width of the key/value input: the text features for cross-attention, else `query_dim`.
    public let cross_attention_dim: Int
    public let is_cross_attention: Bool
    public let heads: Int, dim_head: Int, inner_dim: Int
    public let scale: Float
    public let upcast_attention: Bool, upcast_softmax: Bool
    public let residual_connection: Bool
    public let rescale_output_factor: Float

    public var out_proj: Linear { to_out[0] as! Linear }

    public init(query_dim: Int, cross_attention_dim: Int? = nil, heads: Int, dim_head: Int,
                bias: Bool, out_bias: Bool = true, upcast_attention: Bool = false, upcast_softmax: Bool = false,
                norm_num_groups: Int? = nil, eps: Float = 1e-5, residual_connection: Bool = false,
                rescale_output_factor: Float = 1, dropout: Float = 0) {
        self.query_dim = query_dim
        self.cross_attention_dim = cross_attention_dim ?? query_dim
        is_cross_attention = cross_attention_dim != nil
        self.heads = heads
        self.dim_head = dim_head
        inner_dim = heads * dim_head
        scale = 1 / Float(dim_head).squareRoot()
        self.upcast_attention = upcast_attention
        self.upcast_softmax = upcast_softmax
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor
        group_norm = norm_num_groups.map { GroupNorm(groups: $0, channels: query_dim, eps: eps) }
        to_q = Linear(query_dim, inner_dim, bias: bias)
        to_k = Linear(self.cross_attention_dim, inner_dim, bias: bias)
        to_v = Linear(self.cross_attention_dim, inner_dim, bias: bias)
        to_out = [Linear(inner_dim, query_dim, bias: out_bias), Dropout(dropout)]
    }
}

/// One projection to twice the width; half of it, through GELU, gates the other half.
public final class GEGLU: Module {
    public let proj: Linear
    public let dim_in: Int, dim_out: Int

    public init(dim_in: Int, dim_out: Int) {
        self.dim_in = dim_in
        self.dim_out = dim_out
        proj = Linear(dim_in, dim_out * 2)
    }
}

/// `net` = [GEGLU, Dropout, Linear], indexed as diffusers indexes it.
public final class FeedForward: Module {
    public let net: [Module]
    public let dim: Int, inner_dim: Int, dim_out: Int

    public var geglu: GEGLU { net[0] as! GEGLU }
    public var proj_out: Linear { net[2] as! Linear }

    public init(dim: Int, mult: Int = 4, dropout: Float = 0) {
        self.dim = dim
        inner_dim = dim * mult
        dim_out = dim
        net = [GEGLU(dim_in: dim, dim_out: inner_dim), Dropout(dropout), Linear(inner_dim, dim)]
    }
}

/// LayerNorm before each of self-attention, cross-attention on the text and the GEGLU
/// feed-forward, each with a residual connection.
public final class BasicTransformerBlock: Module {
    public let norm1: LayerNorm
    public let attn1: Attention
    public let norm2: LayerNorm
    public let attn2: Attention
    public let norm3: LayerNorm
    public let ff: FeedForward

    public let dim: Int, num_attention_heads: Int, attention_head_dim: Int, cross_attention_dim: Int

    public init(dim: Int, num_attention_heads: Int, attention_head_dim: Int, cross_attention_dim: Int,
                upcast_attention: Bool, dropout: Float = 0, norm_eps: Float = 1e-5) {
        self.dim = dim
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim
        self.cross_attention_dim = cross_attention_dim
        norm1 = LayerNorm(dim, eps: norm_eps)
        attn1 = Attention(query_dim: dim, heads: num_attention_heads, dim_head: attention_head_dim,
                          bias: false, upcast_attention: upcast_attention, dropout: dropout)
        norm2 = LayerNorm(dim, eps: norm_eps)
        attn2 = Attention(query_dim: dim, cross_attention_dim: cross_attention_dim, heads: num_attention_heads,
                          dim_head: attention_head_dim, bias: false, upcast_attention: upcast_attention, dropout: dropout)
        norm3 = LayerNorm(dim, eps: norm_eps)
        ff = FeedForward(dim: dim, dropout: dropout)
    }
}

/// The spatial transformer: GroupNorm, projection to tokens, transformer blocks, projection
/// back, plus the input as residual. SD 1.x projects with 1x1 convolutions, SD 2.x with
/// Linear layers (`use_linear_projection`), which also moves where the reshape to tokens happens.
public final class Transformer2DModel: Module {
    public let norm: GroupNorm
    /// `Conv2d` (1x1) or, with `use_linear_projection`, `Linear`.
    public let proj_in: Module
    public let transformer_blocks: [BasicTransformerBlock]
    public let proj_out: Module

    public let num_attention_heads: Int, attention_head_dim: Int
    public let in_channels: Int, inner_dim: Int
    public let norm_num_groups: Int
    public let norm_eps: Float = 1e-6
    public let use_linear_projection: Bool

    public init(num_attention_heads: Int, attention_head_dim: Int, in_channels: Int, num_layers: Int,
                cross_attention_dim: Int, norm_num_groups: Int, use_linear_projection: Bool,
                upcast_attention: Bool, dropout: Float = 0) {
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim
        self.in_channels = in_channels
        let inner_dim = num_attention_heads * attention_head_dim
        self.inner_dim = inner_dim
        self.norm_num_groups = norm_num_groups
        self.use_linear_projection = use_linear_projection
        norm = GroupNorm(groups: norm_num_groups, channels: in_channels, eps: norm_eps)
        proj_in = use_linear_projection ? Linear(in_channels, inner_dim) : Conv2d(in_channels, inner_dim, kernel: 1)
        transformer_blocks = (0..<num_layers).map { _ in
            BasicTransformerBlock(dim: inner_dim, num_attention_heads: num_attention_heads,
                                  attention_head_dim: attention_head_dim, cross_attention_dim: cross_attention_dim,
                                  upcast_attention: upcast_attention, dropout: dropout)
        }
        proj_out = use_linear_projection ? Linear(inner_dim, in_channels) : Conv2d(inner_dim, in_channels, kernel: 1)
    }
}

// MARK: - UNet blocks

/// What every resnet and spatial transformer of one UNet (or ControlNet) shares.
public struct UNetBlockSettings: Sendable, Equatable {
    public var temb_channels: Int
    public var resnet_groups: Int
    public var resnet_eps: Float
    public var dropout: Float
    public var cross_attention_dim: Int
    public var use_linear_projection: Bool
    public var upcast_attention: Bool

    public init(temb_channels: Int, resnet_groups: Int, resnet_eps: Float, dropout: Float = 0,
                cross_attention_dim: Int, use_linear_projection: Bool, upcast_attention: Bool) {
        self.temb_channels = temb_channels
        self.resnet_groups = resnet_groups
        self.resnet_eps = resnet_eps
        self.dropout = dropout
        self.cross_attention_dim = cross_attention_dim
        self.use_linear_projection = use_linear_projection
        self.upcast_attention = upcast_attention
    }

    func resnet(_ inChannels: Int, _ outChannels: Int, outputScaleFactor: Float = 1) -> ResnetBlock2D {
        ResnetBlock2D(in_channels: inChannels, out_channels: outChannels, temb_channels: temb_channels,
                      groups: resnet_groups, eps: resnet_eps, output_scale_factor: outputScaleFactor, dropout: dropout)
    }

    /// Heads split the channels evenly (diffusers: head dim = channels // heads).
    func transformer(_ channels: Int, heads: Int, layers: Int) -> Transformer2DModel {
        Transformer2DModel(num_attention_heads: heads, attention_head_dim: channels / heads, in_channels: channels,
                           num_layers: layers, cross_attention_dim: cross_attention_dim, norm_num_groups: resnet_groups,
                           use_linear_projection: use_linear_projection, upcast_attention: upcast_attention,
                           dropout: dropout)
    }
}

/// Resnets each followed by a spatial transformer, then (except in the last block) a stride-2
/// downsampler. Every layer's output is a skip connection for the up path.
public final class CrossAttnDownBlock2D: Module {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]
    public let downsamplers: [Downsample2D]?

    public let in_channels: Int, out_channels: Int, num_layers: Int, num_attention_heads: Int

    public init(in_channels: Int, out_channels: Int, num_layers: Int, transformer_layers_per_block: Int,
                num_attention_heads: Int, add_downsample: Bool, downsample_padding: Int, settings: UNetBlockSettings) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        resnets = (0..<num_layers).map { settings.resnet($0 == 0 ? in_channels : out_channels, out_channels) }
        attentions = (0..<num_layers).map { _ in
            settings.transformer(out_channels, heads: num_attention_heads, layers: transformer_layers_per_block)
        }
        downsamplers = add_downsample ? [Downsample2D(channels: out_channels, padding: downsample_padding)] : nil
    }
}

/// Resnets only, then (except in the last block) a stride-2 downsampler.
public final class DownBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let downsamplers: [Downsample2D]?

    public let in_channels: Int, out_channels: Int, num_layers: Int

    public init(in_channels: Int, out_channels: Int, num_layers: Int, add_downsample: Bool,
                downsample_padding: Int, settings: UNetBlockSettings) {
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        resnets = (0..<num_layers).map { settings.resnet($0 == 0 ? in_channels : out_channels, out_channels) }
        downsamplers = add_downsample ? [Downsample2D(channels: out_channels, padding: downsample_padding)] : nil
    }
}

/// resnet, then (transformer, resnet) per layer, at the lowest resolution.
public final class UNetMidBlock2DCrossAttn: Module {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]

    public let in_channels: Int, num_layers: Int, num_attention_heads: Int
    public let output_scale_factor: Float

    public init(in_channels: Int, num_layers: Int = 1, transformer_layers_per_block: Int, num_attention_heads: Int,
                output_scale_factor: Float, settings: UNetBlockSettings) {
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.output_scale_factor = output_scale_factor
        attentions = (0..<num_layers).map { _ in
            settings.transformer(in_channels, heads: num_attention_heads, layers: transformer_layers_per_block)
        }
        resnets = (0...num_layers).map { _ in settings.resnet(in_channels, in_channels, outputScaleFactor: output_scale_factor) }
    }
}

/// The input width of each resnet of an up block: the running features concatenated with one
/// skip connection. The last layer's skip comes from the next-lower-resolution down block,
/// hence `in_channels`; the first layer's running features come from the block below
/// (`prev_output_channel`).
private func upBlockResnetInputs(in_channels: Int, prev_output_channel: Int, out_channels: Int, num_layers: Int) -> [Int] {
    (0..<num_layers).map { i in
        let skip = i == num_layers - 1 ? in_channels : out_channels
        let running = i == 0 ? prev_output_channel : out_channels
        return running + skip
    }
}

/// Resnets over concatenated skip connections, then (except in the last block) an upsampler.
public final class UpBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let upsamplers: [Upsample2D]?

    public let in_channels: Int, prev_output_channel: Int, out_channels: Int, num_layers: Int

    public init(in_channels: Int, prev_output_channel: Int, out_channels: Int, num_layers: Int,
                add_upsample: Bool, settings: UNetBlockSettings) {
        self.in_channels = in_channels
        self.prev_output_channel = prev_output_channel
        self.out_channels = out_channels
        self.num_layers = num_layers
        resnets = upBlockResnetInputs(in_channels: in_channels, prev_output_channel: prev_output_channel,
                                      out_channels: out_channels, num_layers: num_layers)
            .map { settings.resnet($0, out_channels) }
        upsamplers = add_upsample ? [Upsample2D(channels: out_channels)] : nil
    }
}

/// As `UpBlock2D`, with a spatial transformer after each resnet.
public final class CrossAttnUpBlock2D: Module {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]
    public let upsamplers: [Upsample2D]?

    public let in_channels: Int, prev_output_channel: Int, out_channels: Int, num_layers: Int
    public let num_attention_heads: Int

    public init(in_channels: Int, prev_output_channel: Int, out_channels: Int, num_layers: Int,
                transformer_layers_per_block: Int, num_attention_heads: Int, add_upsample: Bool,
                settings: UNetBlockSettings) {
        self.in_channels = in_channels
        self.prev_output_channel = prev_output_channel
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        attentions = (0..<num_layers).map { _ in
            settings.transformer(out_channels, heads: num_attention_heads, layers: transformer_layers_per_block)
        }
        resnets = upBlockResnetInputs(in_channels: in_channels, prev_output_channel: prev_output_channel,
                                      out_channels: out_channels, num_layers: num_layers)
            .map { settings.resnet($0, out_channels) }
        upsamplers = add_upsample ? [Upsample2D(channels: out_channels)] : nil
    }
}
