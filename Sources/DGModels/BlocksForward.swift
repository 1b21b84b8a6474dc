import DGAutograd
import DGLayers
import DGTensor
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
        var h = conv1(norm1.withSiLU(x))
        if let temb, let time_emb_proj {
            let t = time_emb_proj(silu(temb))
            h = h + t.reshaped(t.shape + [1, 1])
        }
        h = conv2(dropout(norm2.withSiLU(h)))
        let shortcut = conv_shortcut.map { $0(x) } ?? x
        let out = shortcut + h
        return output_scale_factor == 1 ? out : out * (1 / output_scale_factor)
    }
}

extension Downsample2D {
    public func callAsFunction(_ x: Var) -> Var {
        guard padding == 0 else { return conv(x) }
        // diffusers pads (left 0, right 1, top 0, bottom 1) before an unpadded stride-2 conv: the
        // convolution takes that padding itself (no padded copy of x).
        let y = conv2d(x, conv.weight.v, conv.bias?.v, stride: conv.stride, padding: conv.padding, paddingEnd: 1)
        return conv.loraDelta(x, paddingEnd: 1).map { y + $0 } ?? y
    }
}

extension Upsample2D {
    public func callAsFunction(_ x: Var) -> Var { conv(upsampleNearest2x(x)) }
}

extension Attention {
    /// Token attention: x [B, L, query_dim], context [B, Lc, cross_attention_dim] (nil: self-attention).
    public func callAsFunction(_ x: Var, context: Var? = nil) -> Var {
        let ctx = context ?? x
        let h = attention(to_q(x), to_k(ctx), to_v(ctx), heads: heads, scale: scale, bf16: to_q.bf16)
        return to_out[1].asDropout(out_proj(h))
    }

    /// The VAE's spatial self-attention: GroupNorm, attention over the H*W positions, residual.
    public func spatial(_ x: Var) -> Var {
        let (hh, ww) = (x.shape[2], x.shape[3])
        let n = group_norm.map { $0(x) } ?? x
        // Projections straight from the image layout to tokens and back (no transposed copies).
        let q = pointwiseToTokens(n, to_q.weight.v, to_q.bias?.v), k = pointwiseToTokens(n, to_k.weight.v, to_k.bias?.v)
        let v = pointwiseToTokens(n, to_v.weight.v, to_v.bias?.v)
        var h = attention(q, k, v, heads: heads, scale: scale, bf16: to_q.bf16)
        h = tokensToPointwise(h, out_proj.weight.v, out_proj.bias?.v, height: hh, width: ww)
        if residual_connection { h = h + x }
        return rescale_output_factor == 1 ? h : h * (1 / rescale_output_factor)
    }
}

extension Module {
    func asDropout(_ x: Var) -> Var { (self as? Dropout)?(x) ?? x }
}

extension GEGLU {
    public func callAsFunction(_ x: Var) -> Var { geglu(proj(x)) }
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
    /// The weight and bias of a per-pixel layer (Conv2d 1x1 or Linear).
    static func pointwise(_ m: Module) -> (Var, Var?) {
        if let c = m as? Conv2d { return (c.weight.v, c.bias?.v) }
        let l = m as! Linear
        return (l.weight.v, l.bias?.v)
    }

    public func callAsFunction(_ x: Var, context: Var) -> Var {
        let (b, hh, ww) = (x.shape[0], x.shape[2], x.shape[3])
        _ = b
        // proj_in and proj_out are per-pixel layers (1x1 convolutions, or linear layers on the pixels
        // with use_linear_projection): both run straight between the image and token layouts.
        let (wIn, bIn) = Self.pointwise(proj_in), (wOut, bOut) = Self.pointwise(proj_out)
        let normed = norm(x)
        var h = pointwiseToTokens(normed, wIn, bIn)
        // LoRA adapters of these layers are per-pixel too: A from the image layout to rank-wide
        // tokens, B on tokens (proj_in); A on tokens, B back to the image layout (proj_out).
        if let f = (proj_in as? LoRAAdaptable)?.loraFactors {
            h = h + linear(pointwiseToTokens(normed, f.down.v, nil) * f.scale, f.up.v.reshaped(Array(f.up.shape.prefix(2))), nil)
        }
        for block in transformer_blocks { h = block(h, context: context) }
        var out = tokensToPointwise(h, wOut, bOut, height: hh, width: ww)
        if let f = (proj_out as? LoRAAdaptable)?.loraFactors {
            out = out + tokensToPointwise(linear(h, f.down.v.reshaped(Array(f.down.shape.prefix(2))), nil) * f.scale, f.up.v, nil,
                                          height: hh, width: ww)
        }
        return out + x
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
