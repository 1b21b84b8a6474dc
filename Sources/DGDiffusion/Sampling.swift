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
/// together and moves the latents by DDIM along the guided noise estimate.
public struct GuidedDenoiser {
    public let unet: UNet2DConditionModel
    public let controlnet: ControlNetModel?
    public let scheduler: DDIMScheduler
    public var guidanceScale: Float = 7.5
    public var conditioningScale: Float = 1

    public init(unet: UNet2DConditionModel, controlnet: ControlNetModel?, scheduler: DDIMScheduler) {
        self.unet = unet
        self.controlnet = controlnet
        self.scheduler = scheduler
    }

    /// One guided noise estimate for latents [N, C, h, w] at timestep `t`. `text` holds the
    /// unconditional features of all N samples first, then the conditional ones ([2N, L, D]);
    /// `condition` is the ControlNet input for the N samples.
    public func noise(_ latents: Tensor, timestep t: Int, text: Tensor, condition: Tensor?) -> Tensor {
        Autograd.noGrad {
            let n = latents.shape[0]
            let guided = guidanceScale > 1
            let input = Var(guided ? Kernels.concat([latents, latents], axis: 0) : latents)
            let ts = [Float](repeating: Float(t), count: input.shape[0])
            let embeds = Var(guided ? text : text.slice(axis: 0, n..<(2 * n)).contiguous())
            var control: ControlResiduals?
            if let controlnet, let condition {
                let c = guided ? Kernels.concat([condition, condition], axis: 0) : condition
                control = controlnet(input, timesteps: ts, text: embeds, condition: Var(c), conditioningScale: conditioningScale)
            }
            let eps = unet(input, timesteps: ts, text: embeds, control: control).value
            guard guided else { return eps }
            let uncond = eps.slice(axis: 0, 0..<n).contiguous(), cond = eps.slice(axis: 0, n..<(2 * n)).contiguous()
            return Kernels.addScaled(uncond, Kernels.sub(cond, uncond), guidanceScale)
        }
    }

    /// Runs every scheduler step from `latents`; `onStep(i, latents)` after each.
    public func denoise(_ latents: Tensor, text: Tensor, condition: Tensor?, onStep: (Int, Tensor) -> Void = { _, _ in }) -> Tensor {
        var x = latents
        for (i, t) in scheduler.timesteps.enumerated() {
            x = scheduler.step(noise: noise(x, timestep: t, text: text, condition: condition), timestep: t, sample: x)
            onStep(i, x)
        }
        return x
    }
}

extension AutoencoderKL {
    /// Latents (scaled, as the UNet sees them) -> image in [0, 1].
    public func decodeToImage(_ latents: Tensor) -> Tensor {
        Autograd.noGrad {
            let decoded = decode(Var(Kernels.scale(latents, 1 / scaling_factor))).value
            return Tensor(shape: decoded.shape, floats: decoded.floats.map { min(max($0 / 2 + 0.5, 0), 1) })
        }
    }
}
