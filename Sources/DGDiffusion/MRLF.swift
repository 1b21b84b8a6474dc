import DGLayers
import DGModels
import DGTensor
import Foundation

/// Settings of Multi-resolution Latent Fusion, in the units of the resolution it runs at.
public struct MRLFOptions: Sendable {
    /// Distance between neighbouring windows of the high-resolution pass, in latents.
    public var stride: Int
    /// Connected components of more than this many pixels (at base resolution) keep the
    /// low-resolution content.
    public var largeArea: Int
    /// Connectivity of those components (8 as the reference).
    public var connectivity = 8
    /// How many windows share one model call (memory against speed; fixed, so results do not
    /// depend on it being tuned at run time).
    public var windowBatch = 4
    /// The noise level the low-resolution anchor is brought to inside large components.
    public var anchorNoise = MRLFAnchorNoise.reference

    public init(stride: Int, largeArea: Int) {
        self.stride = stride
        self.largeArea = largeArea
    }

    /// The paper's settings (stride 16 latents, 30000 px at 512) scaled to `resolution`:
    /// stride with the side, area with the square of the side.
    public static func scaled(resolution: Int, strideAt512: Int = 16, largeAreaAt512: Int = 30000) -> MRLFOptions {
        let s = Double(resolution) / 512
        return MRLFOptions(stride: max(1, Int((Double(strideAt512) * s).rounded())),
                           largeArea: Int((Double(largeAreaAt512) * s * s).rounded()))
    }
}

/// To which level MRLF noises the low-resolution latents it writes into the large components
/// after a step from timestep t. The reference (DGInStyle's pipeline_refine.py) calls the
/// scheduler's add_noise at training timestep t - 1: about the level the step started from, so
/// the anchored regions stay one sampling step noisier than the latents around them, and after
/// the last step (t = 1 with SD's schedule) keep the small noise of ᾱ_0. `next` brings them to
/// the level the step reached instead (the next timestep; after the last step, the scheduler's
/// final level), which matches the surrounding latents; both are kept so they can be compared.
public enum MRLFAnchorNoise: String, CaseIterable, Sendable {
    case previousTimestep = "t-1"
    case next

    /// What the reference code does.
    public static let reference = MRLFAnchorNoise.previousTimestep

    /// The clean `anchor` noised with `noise` for the step at `index` of `scheduler`.
    public func noised(_ anchor: Tensor, noise: Tensor, scheduler: any Scheduler, index: Int) -> Tensor {
        switch self {
        case .next:
            return scheduler.addNoise(anchor, noise: noise, index: index + 1)
        case .previousTimestep:
            // The variance-preserving marginal at a training timestep, as DDIM's add_noise; the
            // timestep t - 1 is in no sampler's list, so it is read from the schedule directly.
            let ac = scheduler.schedule.alphasCumprod[max(scheduler.timesteps[index] - 1, 0)]
            return scaledSum(anchor, ac.squareRoot(), noise, (1 - ac).squareRoot())
        }
    }
}

/// Window origins along one axis of `size` latents: every `stride` from 0, plus a last window
/// flush with the end when the stride does not reach it, so every latent is covered.
public func windowStarts(size: Int, window: Int, stride: Int) -> [Int] {
    guard size > window else { return [0] }
    var starts = Array(Swift.stride(from: 0, through: size - window, by: max(1, stride)))
    if starts.last! + window < size { starts.append(size - window) }
    return starts
}

/// What one MRLF generation produced.
public struct MRLFResult {
    /// The final image at base resolution, [1, 3, H, W] in [0, 1].
    public let image: Tensor
    /// The first (low-resolution) pass, [1, 3, H, W].
    public let lowResolution: Tensor
    /// The fused high-resolution pass before resizing back, [1, 3, 2H, 2W].
    public let highResolution: Tensor
    /// Per base-resolution pixel: inside a large component.
    public let largeMask: [Bool]
}

extension ControlNetPipeline {
    /// Multi-resolution Latent Fusion (DGInStyle): (1) a normal pass at base resolution; (2) its
    /// image upsampled 2x (Lanczos) and encoded; (3) a pass at 2x from fresh noise over
    /// overlapping windows the size of the base latents (MultiDiffusion), each with its own crop
    /// of the 2x nearest-upsampled condition, the windows' noise estimates averaged per latent
    /// every step; (4) after every step, the latents inside large connected components (of the
    /// base-resolution label map) replaced by the encoded upsample noised to the current level;
    /// (5) decoded and resized back (Lanczos).
    ///
    /// The windows' estimates are averaged before one scheduler step on the whole latent, where
    /// the reference steps each window and averages the results: the same for DDIM with eta = 0
    /// (the step is affine in the estimate, per latent), and for multistep and stochastic
    /// samplers the only form that keeps one history and one noise per latent.
    public func generateMRLF(text: Tensor, labels: [UInt8], height: Int, width: Int, generator: NoiseGenerator,
                             options: SamplingOptions, mrlf: MRLFOptions,
                             onStep: (Int, Int) -> Void = { _, _ in }) throws -> MRLFResult {
        guard let controlnet else { throw GenerationError("MRLF needs a ControlNet") }
        guard labels.count == height * width else { throw GenerationError("label map of \(labels.count) pixels is not \(width)x\(height)") }
        let classes = controlnet.conditioning_channels - 1
        let condition = SemanticCondition.oneHot(ids: labels, width: width, height: height, classes: classes)
        let steps = options.steps

        // (1)
        let low = try generate(text: text, condition: condition, height: height, width: width, generator: generator,
                               options: options, onStep: { i, _ in onStep(i, 2 * steps) })
        // (2)
        let (H, W) = (2 * height, 2 * width)
        try checkSize(height: H, width: W)
        let upsampled = Resize.clamp(Resize.lanczos(low.image, height: H, width: W))
        let lowLatents = vae.encodeToLatents(upsampled, generator: generator)

        // (3)
        let f = vaeScaleFactor
        let (lh, lw) = (H / f, W / f)
        let (wh, ww) = (height / f, width / f)
        let ys = windowStarts(size: lh, window: wh, stride: mrlf.stride), xs = windowStarts(size: lw, window: ww, stride: mrlf.stride)
        let windows = ys.flatMap { y in xs.map { x in (y, x) } }
        let highCondition = Resize.nearest(condition, height: H, width: W)
        var coverage = [Float](repeating: 0, count: lh * lw)
        for (y, x) in windows { for i in y..<(y + wh) { for j in x..<(x + ww) { coverage[i * lw + j] += 1 } } }

        // (4) The mask on the high-resolution latent grid: nearest from the base-resolution map.
        let components = ConnectedComponents(ids: labels, width: width, height: height, connectivity: mrlf.connectivity)
        let large = components.mask(largerThan: mrlf.largeArea)
        var latentMask = [Bool](repeating: false, count: lh * lw)
        for i in 0..<lh { for j in 0..<lw { latentMask[i * lw + j] = large[(i * height / lh) * width + j * width / lw] } }

        let denoiser = try denoiser(options)
        var scheduler = denoiser.scheduler
        scheduler.reset()
        let channels = vae.latent_channels
        var x = generator.normal([1, channels, lh, lw])
        let batch = max(1, mrlf.windowBatch)
        let groups = Swift.stride(from: 0, to: windows.count, by: batch).map { windows[$0..<min($0 + batch, windows.count)] }
        // Each group's condition crops, embedded on the first step and reused by the others.
        let conditions = groups.map { group in
            ControlInput(Kernels.concat(group.map { y, x0 in
                highCondition.slice(axis: 2, (y * f)..<((y + wh) * f)).slice(axis: 3, (x0 * f)..<((x0 + ww) * f))
            }, axis: 0))
        }
        for step in 0..<scheduler.timesteps.count {
            let t = scheduler.timesteps[step]
            var sum = [Float](repeating: 0, count: channels * lh * lw)
            for (group, condition) in zip(groups, conditions) {
                let crops = group.map { y, x0 in
                    x.slice(axis: 2, y..<(y + wh)).slice(axis: 3, x0..<(x0 + ww))
                }
                let eps = denoiser.noise(Kernels.concat(crops, axis: 0), timestep: t, text: repeatText(text, group.count),
                                         condition: condition)
                eps.withFloats { e in
                    for (k, (y, x0)) in group.enumerated() {
                        for c in 0..<channels {
                            for i in 0..<wh {
                                let src = ((k * channels + c) * wh + i) * ww
                                let dst = (c * lh + y + i) * lw + x0
                                for j in 0..<ww { sum[dst + j] += e[src + j] }
                            }
                        }
                    }
                }
            }
            for c in 0..<channels { for p in 0..<(lh * lw) { sum[c * lh * lw + p] /= coverage[p] } }
            x = scheduler.step(Tensor(shape: [1, channels, lh, lw], floats: sum), index: step, sample: x, noise: generator)
            let anchor = mrlf.anchorNoise.noised(lowLatents, noise: generator.normal(lowLatents.shape), scheduler: scheduler, index: step)
            x = select(latentMask, anchor, else: x)
            onStep(steps + step, 2 * steps)
        }
        // (5)
        let high = vae.decodeToImage(x)
        let image = Resize.clamp(Resize.lanczos(high, height: height, width: width))
        return MRLFResult(image: image, lowResolution: low.image, highResolution: high, largeMask: large)
    }
}

/// Per latent position of a [1, C, h, w] tensor: `a` where `mask` holds, else `b`.
func select(_ mask: [Bool], _ a: Tensor, else b: Tensor) -> Tensor {
    let plane = mask.count
    let av = a.floats
    var out = b.floats
    for i in 0..<out.count where mask[i % plane] { out[i] = av[i] }
    return Tensor(shape: b.shape, floats: out)
}
