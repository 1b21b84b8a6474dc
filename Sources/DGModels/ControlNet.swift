import DGBase
import DGCheckpoint
import DGLayers

/// Turns the conditioning image (here a one-hot label map) into features of the UNet's first
/// width at latent resolution: a 3x3 conv, then pairs of (3x3 conv, stride-2 3x3 conv) — one
/// pair per step of `block_out_channels`, each halving the resolution — then `conv_out`, which
/// starts at zero in training so the ControlNet initially changes nothing.
public final class ControlNetConditioningEmbedding: Module {
    public let conv_in: Conv2d
    public let blocks: [Conv2d]
    public let conv_out: Conv2d

    public let conditioning_channels: Int
    public let conditioning_embedding_channels: Int
    public let block_out_channels: [Int]

    public init(conditioning_embedding_channels: Int, conditioning_channels: Int, block_out_channels: [Int]) {
        self.conditioning_channels = conditioning_channels
        self.conditioning_embedding_channels = conditioning_embedding_channels
        self.block_out_channels = block_out_channels
        conv_in = Conv2d(conditioning_channels, block_out_channels[0], kernel: 3, padding: 1)
        blocks = zip(block_out_channels, block_out_channels.dropFirst()).flatMap { channel_in, channel_out in
            [Conv2d(channel_in, channel_in, kernel: 3, padding: 1),
             Conv2d(channel_in, channel_out, kernel: 3, stride: 2, padding: 1)]
        }
        conv_out = Conv2d(block_out_channels.last!, conditioning_embedding_channels, kernel: 3, padding: 1)
    }
}

/// A trainable copy of the UNet's encoder half (diffusers `ControlNetModel`). Its down and mid
/// features pass through 1x1 "zero" convolutions and are added to the UNet's skip connections
/// and mid-block output.
public final class ControlNetModel: Module {
    public let conv_in: Conv2d
    public let time_proj: Timesteps
    public let time_embedding: TimestepEmbedding
    public let controlnet_cond_embedding: ControlNetConditioningEmbedding
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, as in the UNet.
    public let down_blocks: [Module]
    /// One per UNet skip connection: conv_in's output, each resnet's, each downsampler's.
    public let controlnet_down_blocks: [Conv2d]
    public let controlnet_mid_block: Conv2d
    public let mid_block: UNetMidBlock2DCrossAttn

    public let config: JSON
    public let in_channels: Int
    public let block_out_channels: [Int]
    public let cross_attention_dim: [Int]
    public let conditioning_channels: Int
    public let conditioning_embedding_out_channels: [Int]
    /// "rgb", or "bgr": the forward pass then reverses the condition's channel order.
    public let controlnet_conditioning_channel_order: String
    /// When true the forward pass averages every output over its spatial positions.
    public let global_pool_conditions: Bool

    public init(config: JSON) throws {
        let r = try ConfigReader(config, model: "ControlNetModel")
        let spec = try UNetSpec(r, controlNet: true)
        in_channels = spec.in_channels
        block_out_channels = spec.block_out_channels
        cross_attention_dim = spec.cross_attention_dim
        conditioning_channels = try r.positiveInt("conditioning_channels", default: 3)
        conditioning_embedding_out_channels = try r.positiveInts("conditioning_embedding_out_channels", default: [16, 32, 96, 256])
        controlnet_conditioning_channel_order = try r.string("controlnet_conditioning_channel_order", default: "rgb")
        try r.require("controlnet_conditioning_channel_order", in: ["rgb", "bgr"])
        global_pool_conditions = try r.bool("global_pool_conditions", default: false)
        self.config = config

        // diffusers' ControlNet always uses a 3x3 conv_in, whatever the UNet's conv_in_kernel.
        conv_in = Conv2d(in_channels, block_out_channels[0], kernel: 3, padding: 1)
        time_proj = spec.timeProj()
        time_embedding = spec.timeEmbedding()
        controlnet_cond_embedding = ControlNetConditioningEmbedding(
            conditioning_embedding_channels: block_out_channels[0], conditioning_channels: conditioning_channels,
            block_out_channels: conditioning_embedding_out_channels)
        down_blocks = spec.downBlocks()

        var zeroConvs = [Conv2d(block_out_channels[0], block_out_channels[0], kernel: 1)]
        for (i, c) in block_out_channels.enumerated() {
            let outputs = spec.layers_per_block[i] + (i == block_out_channels.count - 1 ? 0 : 1)
            zeroConvs += (0..<outputs).map { _ in Conv2d(c, c, kernel: 1) }
        }
        controlnet_down_blocks = zeroConvs
        let mid = block_out_channels.last!
        controlnet_mid_block = Conv2d(mid, mid, kernel: 1)
        mid_block = spec.midBlock()!
    }

    /// A ControlNet shaped like `unetConfig`'s UNet, as diffusers' `ControlNetModel.from_unet`
    /// makes it (the weights, which from_unet also copies, are not this type's concern).
    public convenience init(unetConfig: JSON, conditioningChannels: Int = 3,
                            conditioningEmbeddingOutChannels: [Int] = [16, 32, 96, 256],
                            channelOrder: String = "rgb") throws {
        try self.init(config: ControlNetModel.config(
            fromUNetConfig: unetConfig, conditioningChannels: conditioningChannels,
            conditioningEmbeddingOutChannels: conditioningEmbeddingOutChannels, channelOrder: channelOrder))
    }

    /// The `config.json` diffusers writes for `ControlNetModel.from_unet(unet, ...)`: the UNet's
    /// values for the keys from_unet copies (its defaults where the UNet config omits them), the
    /// ControlNet's own defaults for the rest, keys sorted as diffusers sorts them. The UNet
    /// config is checked first, so a UNet we could not build gives its own error here.
    public static func config(fromUNetConfig unetConfig: JSON, conditioningChannels: Int = 3,
                              conditioningEmbeddingOutChannels: [Int] = [16, 32, 96, 256],
                              channelOrder: String = "rgb") throws -> JSON {
        _ = try UNetSpec(ConfigReader(unetConfig, model: "UNet2DConditionModel"), controlNet: false)
        let copiedFromUNet: [(String, JSON)] = [
            ("encoder_hid_dim", nil), ("encoder_hid_dim_type", nil), ("addition_embed_type", nil),
            ("addition_time_embed_dim", nil), ("transformer_layers_per_block", 1), ("in_channels", 4),
            ("flip_sin_to_cos", true), ("freq_shift", 0),
            ("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
            ("only_cross_attention", false), ("block_out_channels", [320, 640, 1280, 1280]), ("layers_per_block", 2),
            ("downsample_padding", 1), ("mid_block_scale_factor", 1), ("act_fn", "silu"), ("norm_num_groups", 32),
            ("norm_eps", 1e-5), ("cross_attention_dim", 1280), ("attention_head_dim", 8), ("num_attention_heads", nil),
            ("use_linear_projection", false), ("class_embed_type", nil), ("num_class_embeds", nil),
            ("upcast_attention", false), ("resnet_time_scale_shift", "default"),
            ("projection_class_embeddings_input_dim", nil), ("mid_block_type", "UNetMidBlock2DCrossAttn"),
        ]
        var pairs: [(String, JSON)] = [("_class_name", "ControlNetModel")]
        if let version = unetConfig["_diffusers_version"] { pairs.append(("_diffusers_version", version)) }
        for (key, fallback) in copiedFromUNet { pairs.append((key, unetConfig[key] ?? fallback)) }
        pairs += [
            ("conditioning_channels", .int(conditioningChannels)),
            ("conditioning_embedding_out_channels", .array(conditioningEmbeddingOutChannels.map { .int($0) })),
            ("controlnet_conditioning_channel_order", .string(channelOrder)),
            ("addition_embed_type_num_heads", 64),
            ("global_pool_conditions", false),
        ]
        pairs.sort { $0.0 < $1.0 }
        return .object(pairs)
    }
}

extension ControlNetModel {
    /// A ControlNet made from a UNet as diffusers' `ControlNetModel.from_unet` makes it: the
    /// UNet's input convolution, time embedding, down blocks and middle block copied (into
    /// memory of its own, so training one never moves the other), the conditioning embedding
    /// freshly initialised with its last convolution zero, and every output 1x1 convolution
    /// zero, so that the untrained ControlNet leaves the UNet's prediction unchanged.
    public static func initialized(from unet: UNet2DConditionModel, conditioningChannels: Int = 20,
                                   conditioningEmbeddingOutChannels: [Int] = [16, 32, 96, 256],
                                   seed: UInt64 = 0) throws -> ControlNetModel {
        let config = try ControlNetModel.config(fromUNetConfig: unet.config, conditioningChannels: conditioningChannels,
                                                conditioningEmbeddingOutChannels: conditioningEmbeddingOutChannels)
        let controlnet = try ControlNetModel(config: config)
        controlnet.initializeParameters(seed: seed)
        let source = Dictionary(unet.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        for (name, p) in controlnet.namedParameters() {
            guard ["conv_in.", "time_embedding.", "down_blocks.", "mid_block."].contains(where: name.hasPrefix) else { continue }
            guard let from = source[name]?.value else {
                throw ModelConfigError(model: "ControlNetModel", key: name, problem: "has no loaded counterpart in the UNet")
            }
            p.value = from.copied()
        }
        controlnet.controlnet_cond_embedding.conv_out.zeroParameters()
        for block in controlnet.controlnet_down_blocks { block.zeroParameters() }
        controlnet.controlnet_mid_block.zeroParameters()
        return controlnet
    }
}
