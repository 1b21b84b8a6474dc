import DGAutograd
import Foundation
import DGLayers
import DGTensor

// The four models' forward passes, top to bottom as diffusers / transformers run them.

/// The ControlNet's contribution to a UNet pass: one residual per skip connection, and one
/// for the middle block.
public struct ControlResiduals {
    public var down: [Var]
    public var mid: Var
}

extension UNet2DConditionModel {
    /// Predicts the noise in `sample` [N, C, H, W] at `timesteps` (one per sample) given the text
    /// features [N, L, cross_attention_dim], optionally steered by ControlNet residuals.
    public func callAsFunction(_ sample: Var, timesteps: [Float], text: Var, control: ControlResiduals? = nil,
                               checkpoint: Bool = false) -> Var {
        let temb = time_embedding(time_proj(timesteps))
        let ctx = BlockContext(temb: temb, text: text, checkpoint: checkpoint)
        var h = conv_in(center_input_sample ? sample * 2 - Var(Tensor(shape: [], floats: [1])) : sample)
        var skips = [h]
        for block in down_blocks {
            let (out, s) = runDown(block, h, ctx)
            h = out
            skips += s
        }
        if let control {
            precondition(control.down.count == skips.count, "ControlNet gives \(control.down.count) residuals for \(skips.count) skips")
            skips = zip(skips, control.down).map { $0 + $1 }
        }
        if let mid_block { h = mid_block(h, ctx) }
        if let control { h = h + control.mid }
        for block in up_blocks {
            if let b = block as? CrossAttnUpBlock2D { h = b(h, &skips, ctx) } else { h = (block as! UpBlock2D)(h, &skips, ctx) }
        }
        return conv_out(conv_norm_out.withSiLU(h))
    }
}

func runDown(_ block: Module, _ x: Var, _ ctx: BlockContext) -> (Var, [Var]) {
    if let b = block as? CrossAttnDownBlock2D { return b(x, ctx) }
    return (block as! DownBlock2D)(x, ctx)
}

extension ControlNetConditioningEmbedding {
    public func callAsFunction(_ condition: Var) -> Var {
        var h = silu(conv_in(condition))
        for block in blocks { h = silu(block(h)) }
        return conv_out(h)
    }
}

extension ControlNetModel {
    /// The residuals for the UNet, scaled by `conditioningScale`. `condition` is the image-sized
    /// conditioning [N, conditioning_channels, 8H, 8W] (here: one-hot labels).
    public func callAsFunction(_ sample: Var, timesteps: [Float], text: Var, condition: Var,
                               conditioningScale: Float = 1, checkpoint: Bool = false) -> ControlResiduals {
        callAsFunction(sample, timesteps: timesteps, text: text, embeddedCondition: embed(condition: condition),
                       conditioningScale: conditioningScale, checkpoint: checkpoint)
    }

    /// What the conditioning embedding makes of `condition`, at the latents' size. It depends on the
    /// condition alone, so a sampling loop computes it once for all its steps (at the miniature's
    /// size it cost more than the rest of the ControlNet and UNet together: it runs at the image's
    /// resolution, the UNet at the latents').
    public func embed(condition: Var) -> Var {
        var cond = condition
        if controlnet_conditioning_channel_order == "bgr" {
            cond = concat((0..<cond.shape[1]).reversed().map { cond.slice(axis: 1, $0..<($0 + 1)) }, axis: 1)
        }
        return controlnet_cond_embedding(cond)
    }

    /// The residuals from a condition already through `embed(condition:)`.
    public func callAsFunction(_ sample: Var, timesteps: [Float], text: Var, embeddedCondition: Var,
                               conditioningScale: Float = 1, checkpoint: Bool = false) -> ControlResiduals {
        let temb = time_embedding(time_proj(timesteps))
        let ctx = BlockContext(temb: temb, text: text, checkpoint: checkpoint)
        var h = conv_in(sample) + embeddedCondition
        var skips = [h]
        for block in down_blocks {
            let (out, s) = runDown(block, h, ctx)
            h = out
            skips += s
        }
        h = mid_block(h, ctx)
        let down = zip(skips, controlnet_down_blocks).map { $1($0) * conditioningScale }
        return ControlResiduals(down: down, mid: controlnet_mid_block(h) * conditioningScale)
    }
}

extension UNetMidBlock2D {
    public func callAsFunction(_ x: Var) -> Var {
        var h = resnets[0](x, nil)
        for (i, resnet) in resnets.dropFirst().enumerated() {
            if i < attentions.count { h = attentions[i].spatial(h) }
            h = resnet(h, nil)
        }
        return h
    }
}

extension VAEEncoder {
    public func callAsFunction(_ x: Var) -> Var {
        var h = conv_in(x)
        for block in down_blocks {
            for resnet in block.resnets { h = resnet(h, nil) }
            if let down = block.downsamplers?.first { h = down(h) }
        }
        h = mid_block(h)
        return conv_out(conv_norm_out.withSiLU(h))
    }
}

extension VAEDecoder {
    public func callAsFunction(_ z: Var) -> Var {
        var h = mid_block(conv_in(z))
        for block in up_blocks {
            for resnet in block.resnets { h = resnet(h, nil) }
            if let up = block.upsamplers?.first { h = up(h) }
        }
        return conv_out(conv_norm_out.withSiLU(h))
    }
}

extension AutoencoderKL {
    /// The diagonal Gaussian over latents: mean and log-variance stacked on channels,
    /// [N, 2*latent_channels, H/8, W/8].
    public func encodeMoments(_ image: Var) -> Var {
        let h = encoder(image)
        return quant_conv.map { $0(h) } ?? h
    }

    public func decode(_ latents: Var) -> Var {
        decoder(post_quant_conv.map { $0(latents) } ?? latents)
    }
}

/// The posterior of the VAE encoder.
public struct DiagonalGaussian {
    public let mean: Tensor
    public let logvar: Tensor

    /// Splits moments [N, 2C, H, W]; the log-variance is clamped to [-30, 20] as diffusers does.
    public init(moments: Tensor) {
        let c = moments.shape[1] / 2
        mean = moments.slice(axis: 1, 0..<c).contiguous()
        logvar = Tensor(shape: mean.shape, floats: moments.slice(axis: 1, c..<(2 * c)).contiguous().floats.map { min(max($0, -30), 20) })
    }

    /// mean + exp(logvar / 2) * noise.
    public func sample(noise: Tensor) -> Tensor {
        let m = mean.floats, lv = logvar.floats, e = noise.floats
        let values = (0..<m.count).map { i in m[i] + Float(exp(Double(lv[i]) * 0.5)) * e[i] }
        return Tensor(shape: mean.shape, floats: values)
    }
}

extension CLIPTextModel {
    /// The last hidden state [N, L, hidden] for token ids [N, L] (causal self-attention, no
    /// padding mask: Stable Diffusion pads to 77 with the end token and attends to all of it).
    public func callAsFunction(_ ids: Tensor) -> Var {
        let l = ids.shape[1]
        let positions = Tensor(shape: [1, l], floats: (0..<l).map(Float.init)).converted(to: .i64)
        var h = embeddings.token_embedding(ids) + embeddings.position_embedding(positions)
        for layer in encoder.layers {
            let a = layer.self_attn
            let x = layer.layer_norm1(h)
            let q = a.q_proj(x), k = a.k_proj(x), v = a.v_proj(x)
            h = h + a.out_proj(attention(q, k, v, heads: a.num_heads, scale: a.scale, causal: true, bf16: a.q_proj.bf16))
            let m = layer.mlp
            h = h + m.fc2(activate(m.fc1(layer.layer_norm2(h)), m.hidden_act == .quickGELU ? .quickGELU : .geluErf))
        }
        return final_layer_norm(h)
    }
}
