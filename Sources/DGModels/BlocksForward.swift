import DGLayers
import Foundation

// The forward passes of the blocks in Blocks.swift, in the same order, as diffusers computes them.

extension Timesteps {
    /// Sinusoidal embedding of the timesteps [N] -> [N, num_channels], computed in float32 as
    /// diffusers' get_timestep_embedding does (exp of a float32 ramp, then sin / cos).
    public func callAsFunction(_ timesteps: [Float]) -> Var {
        let half = num_channels / 2
        let frequencies = (0..<half).map { i -> Float in
            let exponent = -Float(log(Double(max_period))) * Float(i)
            return Float(exp(Double(exponent / (Float(half) - downscale_freq_shift))))
        }
        var out = [Float](repeating: 0, count: timesteps.count * num_channels)
        for (n, t) in timesteps.enumerated() {
            for (i, f) in frequencies.enumerated() {
                let arg = scale * (t * f)
                let (s, c) = (Float(sin(Double(arg))), Float(cos(Double(arg))))
                out[n * num_channels + i] = flip_sin_to_cos ? c : s
                out[n * num_channels + half + i] = flip_sin_to_cos ? s : c
            }
        }
        return Var(Tensor(shape: [timesteps.count, num_channels], floats: out))
    }
}

extension TimestepEmbedding {
    public func callAsFunction(_ x: Var) -> Var { linear_2(silu(linear_1(x))) }
}

extension ResnetBlock2D {
    public func callAsFunction(_ x: Var, _ temb: Var?) -> Var {
        var h = conv1(silu(norm1(x)))
        if let temb, let time_emb_proj {
            let t = time_emb_proj(silu(temb))
            h = h + t.reshaped(t.shape + [1, 1])
        }
        h = conv2(dropout(silu(norm2(h))))
        let shortcut = conv_shortcut.map { $0(x) } ?? x
        let out = shortcut + h
        return output_scale_factor == 1 ? out : out * (1 / output_scale_factor)
    }
}

extension Downsample2D {
    public func callAsFunction(_ x: Var) -> Var {
        guard padding == 0 else { return conv(x) }
        // diffusers pads (left 0, right 1, top 0, bottom 1) before an unpadded stride-2 conv.
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let wide = concat([x, Var(Tensor(zeros: [n, c, h, 1]))], axis: 3)
        return conv(concat([wide, Var(Tensor(zeros: [n, c, 1, w + 1]))], axis: 2))
    }
}

extension Upsample2D {
    public func callAsFunction(_ x: Var) -> Var { conv(upsampleNearest2x(x)) }
}

/// [B, L, heads*d] -> [B*heads, L, d]
func splitHeads(_ x: Var, _ heads: Int) -> Var {
    let (b, l, inner) = (x.shape[0], x.shape[1], x.shape[2])
    return x.reshaped([b, l, heads, inner / heads]).permuted([0, 2, 1, 3]).reshaped([b * heads, l, inner / heads])
}

/// [B*heads, L, d] -> [B, L, heads*d]
func mergeHeads(_ x: Var, _ heads: Int) -> Var {
    let (bh, l, d) = (x.shape[0], x.shape[1], x.shape[2])
    return x.reshaped([bh / heads, heads, l, d]).permuted([0, 2, 1, 3]).reshaped([bh / heads, l, heads * d])
}

extension Attention {
    /// Token attention: x [B, L, query_dim], context [B, Lc, cross_attention_dim] (nil: self-attention).
    public func callAsFunction(_ x: Var, context: Var? = nil) -> Var {
        let ctx = context ?? x
        let q = splitHeads(to_q(x), heads), k = splitHeads(to_k(ctx), heads), v = splitHeads(to_v(ctx), heads)
        let h = mergeHeads(attention(q, k, v, scale: scale), heads)
        return to_out[1].asDropout(out_proj(h))
    }

    /// The VAE's spatial self-attention: GroupNorm, attention over the H*W positions, residual.
    public func spatial(_ x: Var) -> Var {
        let (b, c, hh, ww) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var h = group_norm.map { $0(x) } ?? x
        h = h.reshaped([b, c, hh * ww]).transposed(1, 2)
        h = self(h)
        h = h.transposed(1, 2).reshaped([b, c, hh, ww])
        if residual_connection { h = h + x }
        return rescale_output_factor == 1 ? h : h * (1 / rescale_output_factor)
    }
}

extension Module {
    func asDropout(_ x: Var) -> Var { (self as? Dropout)?(x) ?? x }
}

extension GEGLU {
    public func callAsFunction(_ x: Var) -> Var {
        let parts = proj(x).chunked(2, axis: x.shape.count - 1)
        return parts[0] * activate(parts[1], .geluErf)
    }
}

extension FeedForward {
    public func callAsFunction(_ x: Var) -> Var { proj_out(net[1].asDropout(geglu(x))) }
}

extension BasicTransformerBlock {
    public func callAsFunction(_ x: Var, context: Var) -> Var {
        var h = attn1(norm1(x)) + x
        h = attn2(norm2(h), context: context) + h
        return ff(norm3(h)) + h
    }
}

extension Transformer2DModel {
    public func callAsFunction(_ x: Var, context: Var) -> Var {
        let (b, hh, ww) = (x.shape[0], x.shape[2], x.shape[3])
        var h = norm(x)
        if use_linear_projection {
            h = (proj_in as! Linear)(h.permuted([0, 2, 3, 1]).reshaped([b, hh * ww, in_channels]))
        } else {
            h = (proj_in as! Conv2d)(h).permuted([0, 2, 3, 1]).reshaped([b, hh * ww, inner_dim])
        }
        for block in transformer_blocks { h = block(h, context: context) }
        if use_linear_projection {
            h = (proj_out as! Linear)(h).reshaped([b, hh, ww, in_channels]).permuted([0, 3, 1, 2])
        } else {
            h = (proj_out as! Conv2d)(h.reshaped([b, hh, ww, inner_dim]).permuted([0, 3, 1, 2]))
        }
        return h + x
    }
}

/// What a UNet block needs besides its input: the time embedding and the text features.
public struct BlockContext {
    public var temb: Var
    public var text: Var
    /// Recompute each block in backward instead of keeping its activations.
    public var checkpoint: Bool
}

/// Runs `body` on `x` and the block's trainable inputs, checkpointed when asked. A block with
/// nothing to differentiate — frozen weights and inputs that need no gradient, as the frozen
/// UNet's down and middle blocks under a ControlNet — records nothing either way, so it runs
/// plainly: a checkpoint would only recompute it in backward for nothing.
func maybeCheckpointed(_ block: Module, _ ctx: BlockContext, _ inputs: [Var], _ body: @escaping ([Var]) -> [Var]) -> [Var] {
    guard ctx.checkpoint, Autograd.isRecording else { return body(inputs) }
    if !inputs.contains(where: \.requiresGrad) && !block.namedParameters().contains(where: \.parameter.requiresGrad) {
        return body(inputs)
    }
    return checkpointed(inputs, body)
}

extension CrossAttnDownBlock2D {
    /// Returns the output and the skip connections it produced, in order.
    public func callAsFunction(_ x: Var, _ ctx: BlockContext) -> (Var, [Var]) {
        let out = maybeCheckpointed(self, ctx, [x, ctx.temb, ctx.text]) { v in
            var h = v[0], skips: [Var] = []
            for (resnet, attn) in zip(self.resnets, self.attentions) {
                h = attn(resnet(h, v[1]), context: v[2])
                skips.append(h)
            }
            if let down = self.downsamplers?.first {
                h = down(h)
                skips.append(h)
            }
            return [h] + skips
        }
        return (out[0], Array(out.dropFirst()))
    }
}

extension DownBlock2D {
    public func callAsFunction(_ x: Var, _ ctx: BlockContext) -> (Var, [Var]) {
        let out = maybeCheckpointed(self, ctx, [x, ctx.temb]) { v in
            var h = v[0], skips: [Var] = []
            for resnet in self.resnets {
                h = resnet(h, v[1])
                skips.append(h)
            }
            if let down = self.downsamplers?.first {
                h = down(h)
                skips.append(h)
            }
            return [h] + skips
        }
        return (out[0], Array(out.dropFirst()))
    }
}

extension UNetMidBlock2DCrossAttn {
    public func callAsFunction(_ x: Var, _ ctx: BlockContext) -> Var {
        maybeCheckpointed(self, ctx, [x, ctx.temb, ctx.text]) { v in
            var h = self.resnets[0](v[0], v[1])
            for (attn, resnet) in zip(self.attentions, self.resnets.dropFirst()) {
                h = resnet(attn(h, context: v[2]), v[1])
            }
            return [h]
        }[0]
    }
}

extension UpBlock2D {
    /// Consumes one skip connection per resnet from the end of `skips`.
    public func callAsFunction(_ x: Var, _ skips: inout [Var], _ ctx: BlockContext) -> Var {
        let mine = Array(skips.suffix(resnets.count).reversed())
        skips.removeLast(resnets.count)
        return maybeCheckpointed(self, ctx, [x, ctx.temb] + mine) { v in
            var h = v[0]
            for (i, resnet) in self.resnets.enumerated() { h = resnet(concat([h, v[2 + i]], axis: 1), v[1]) }
            if let up = self.upsamplers?.first { h = up(h) }
            return [h]
        }[0]
    }
}

extension CrossAttnUpBlock2D {
    public func callAsFunction(_ x: Var, _ skips: inout [Var], _ ctx: BlockContext) -> Var {
        let mine = Array(skips.suffix(resnets.count).reversed())
        skips.removeLast(resnets.count)
        return maybeCheckpointed(self, ctx, [x, ctx.temb, ctx.text] + mine) { v in
            var h = v[0]
            for (i, (resnet, attn)) in zip(self.resnets, self.attentions).enumerated() {
                h = attn(resnet(concat([h, v[3 + i]], axis: 1), v[1]), context: v[2])
            }
            if let up = self.upsamplers?.first { h = up(h) }
            return [h]
        }[0]
    }
}
