import DGAutograd
import DGLayers
import DGModels
import DGTensor

/// Text features for prompts: tokenized (padded to 77 with the end token) and encoded.
public func encodePrompts(_ prompts: [String], tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel) -> Tensor {
    let ids = prompts.flatMap { tokenizer($0).map(Float.init) }
    let tokens = Tensor(shape: [prompts.count, ids.count / max(prompts.count, 1)], floats: ids).converted(to: .i64)
    return Autograd.noGrad { textEncoder(tokens).value }
}

/// The denoising loop of diffusers' StableDiffusion(ControlNet)Pipeline with classifier-free
/// guidance: each step runs the (ControlNet-steered) UNet on [unconditional, conditional]
/// together and moves the latents by the scheduler along the guided noise estimate.
public struct GuidedDenoiser {
    public let unet: UNet2DConditionModel
    public let controlnet: ControlNetModel?
    public var scheduler: any Scheduler
    public var guidanceScale: Float = 7.5
    public var conditioningScale: Float = 1

    public init(unet: UNet2DConditionModel, controlnet: ControlNetModel?, scheduler: any Scheduler) {
        self.unet = unet
        self.controlnet = controlnet
        self.scheduler = scheduler
    }

    /// One guided noise estimate for latents [N, C, h, w] at timestep `t`. `text` holds the
    /// unconditional features of all N samples first, then the conditional ones ([2N, L, D]);
    /// `condition` is the ControlNet input for the N samples, whose embedding the first call makes
    /// and later steps reuse (the same values: it does not depend on the timestep).
    public func noise(_ latents: Tensor, timestep t: Int, text: Tensor, condition: ControlInput?) -> Tensor {
        Autograd.noGrad {
            let n = latents.shape[0]
            let guided = guidanceScale > 1
            let input = Var(guided ? Kernels.concat([latents, latents], axis: 0) : latents)
            let ts = [Float](repeating: Float(t), count: input.shape[0])
            let embeds = Var(guided ? text : text.slice(axis: 0, n..<(2 * n)).contiguous())
            var control: ControlResiduals?
            if let controlnet, let condition {
                // Embedded once per sample; both halves of the guided batch share it.
                let e = condition.embedding(controlnet)
                let c = guided ? Kernels.concat([e, e], axis: 0) : e
                control = controlnet(input, timesteps: ts, text: embeds, embeddedCondition: Var(c), conditioningScale: conditioningScale)
            }
            let eps = unet(input, timesteps: ts, text: embeds, control: control).value
            guard guided else { return eps }
            let uncond = eps.slice(axis: 0, 0..<n).contiguous(), cond = eps.slice(axis: 0, n..<(2 * n)).contiguous()
            return Kernels.addScaled(uncond, Kernels.sub(cond, uncond), guidanceScale)
        }
    }

    /// Runs the scheduler's steps from `start` (image-to-image starts part-way) on `latents`,
    /// which must be at the noise level of that step; `onStep(i, latents)` after each. `noise`
    /// feeds stochastic samplers (DDIM with eta > 0).
    public func denoise(_ latents: Tensor, text: Tensor, condition: Tensor?, from start: Int = 0, noise: NoiseGenerator? = nil,
                        onStep: (Int, Tensor) -> Void = { _, _ in }) -> Tensor {
        var x = latents
        var scheduler = self.scheduler
        scheduler.reset()
        let control = condition.map(ControlInput.init)
        for i in start..<scheduler.timesteps.count {
            let eps = self.noise(x, timestep: scheduler.timesteps[i], text: text, condition: control)
            x = scheduler.step(eps, index: i, sample: x, noise: noise)
            onStep(i, x)
        }
        return x
    }
}

/// A ControlNet's input over a sampling loop: the condition [N, channels, 8h, 8w] and, from the
/// first step on, what the ControlNet's conditioning embedding makes of it.
public final class ControlInput {
    public let condition: Tensor
    private var embedded: Tensor?

    public init(_ condition: Tensor) { self.condition = condition }

    func embedding(_ controlnet: ControlNetModel) -> Tensor {
        if let embedded { return embedded }
        let e = Autograd.noGrad { controlnet.embed(condition: Var(condition)).value }
        embedded = e
        return e
    }
}

/// Text features [2, L, D] (unconditional, conditional) repeated for n samples: [2n, L, D] with
/// the n unconditional rows first, as `GuidedDenoiser.noise` takes them.
public func repeatText(_ text: Tensor, _ n: Int) -> Tensor {
    guard n > 1 else { return text }
    let uncond = text.slice(axis: 0, 0..<1), cond = text.slice(axis: 0, 1..<2)
    return Kernels.concat([Tensor](repeating: uncond, count: n) + [Tensor](repeating: cond, count: n), axis: 0)
}

/// Runs a VAE pass between empty buffer pools. Its activations have other sizes than the UNet's
/// (at 512 px several are 134 MB), so the UNet's pooled buffers would sit unused beside them, and
/// the VAE's beside the next image's UNet passes: measured on a 512 px ControlNet image in bf16,
/// 5.09 GB peak RSS with the pool kept, 3.53 GB with no pool at all. The price is the page faults
/// of the first UNet step after it (a fraction of a second, once per image).
func betweenDrainedPools<T>(_ body: () -> T) -> T {
    BlockPool.shared.drain()
    defer { BlockPool.shared.drain() }
    return body()
}

extension AutoencoderKL {
    /// Latents (scaled, as the UNet sees them) -> image in [0, 1].
    public func decodeToImage(_ latents: Tensor) -> Tensor {
        betweenDrainedPools { Autograd.noGrad {
            let decoded = decode(Var(Kernels.scale(latents, 1 / scaling_factor))).value
            return Tensor(shape: decoded.shape, floats: decoded.floats.map { min(max($0 / 2 + 0.5, 0), 1) })
        } }
    }
}

extension AutoencoderKL {
    /// Image in [0, 1] -> latents as the UNet sees them: a sample of the posterior (noise from
    /// `generator`, as diffusers' `latent_dist.sample(generator)`), times the scaling factor.
    public func encodeToLatents(_ image: Tensor, generator: NoiseGenerator) -> Tensor {
        betweenDrainedPools { Autograd.noGrad {
            let moments = encodeMoments(Var(Resize.toSigned(image))).value
            let posterior = DiagonalGaussian(moments: moments)
            let z = posterior.sample(noise: generator.normal(posterior.mean.shape))
            return Kernels.scale(z, scaling_factor)
        } }
    }
}
