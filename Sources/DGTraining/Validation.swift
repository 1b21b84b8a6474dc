import DGBase
import DGCheckpoint
import DGDiffusion
import DGEval
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Train ids (0..<classes, 255 for the last, "ignore" channel) from one-hot maps [N, C, H, W].
public func labelsFromOneHot(_ condition: Tensor, index: Int) -> [UInt8] {
    let c = condition.shape[1], plane = condition.shape[2] * condition.shape[3]
    let v = condition.slice(axis: 0, index..<(index + 1)).contiguous().floats
    return (0..<plane).map { p in
        var best = 0
        for k in 1..<c where v[k * plane + p] > v[best * plane + p] { best = k }
        return best == c - 1 ? 255 : UInt8(best)
    }
}

/// One validation sample rendered: its labels, caption, the source image, and one generated
/// image per UNet (values in [0, 1], [1, 3, H, W]) with its mask alignment in image space and
/// in latent space (the final latents against the mask at latent resolution: meaningful even
/// when the VAE is untrained, as in the tiny test models).
public struct ValidationRow {
    public var labels: [UInt8]
    public var width: Int, height: Int
    public var caption: String
    public var source: Tensor
    public var generated: [(name: String, image: Tensor, alignment: Double, latentAlignment: Double)]
}

/// Validation images with Style Swap: the ControlNet being trained generates each fixed
/// validation mask twice with the same starting noise — on the UNet it trains with (U^S) and
/// on the base UNet (U^P), the pairing used at inference — and the mask alignment of each
/// image is logged, so the metrics show the ControlNet learning to follow masks.
public final class StyleSwapValidator: TrainingValidator {
    /// U^P; nil when the run trains on the base UNet itself (then only one image per mask).
    public let baseUNet: UNet2DConditionModel?
    public let samples: TrainingBatch
    public let scheduler: DDIMScheduler
    public var guidanceScale: Float = 7.5
    public let seed: UInt64
    /// Writes the rows as one picture at `path` (the command supplies a PNG writer).
    public let compose: ([ValidationRow], String) throws -> Void

    public init(baseUNet: UNet2DConditionModel?, samples: TrainingBatch, scheduler: DDIMScheduler, seed: UInt64,
                compose: @escaping ([ValidationRow], String) throws -> Void) {
        self.baseUNet = baseUNet
        self.samples = samples
        self.scheduler = scheduler
        self.seed = seed
        self.compose = compose
    }

    public func render(trainer: DiffusionTrainer) -> [ValidationRow] {
        guard let controlnet = trainer.controlnet, let condition = samples.condition else { return [] }
        let (h, w) = (samples.pixels.shape[2], samples.pixels.shape[3])
        var unets: [(String, UNet2DConditionModel)] = [("U^S", trainer.unet)]
        if let baseUNet { unets.append(("U^P", baseUNet)) }
        return (0..<samples.count).map { i in
            let cond = condition.slice(axis: 0, i..<(i + 1)).contiguous()
            let labels = labelsFromOneHot(condition, index: i)
            let text = encodePrompts(["", samples.captions[i]], tokenizer: trainer.tokenizer, textEncoder: trainer.textEncoder)
            let shape = [1, trainer.unet.in_channels, h / 8, w / 8]
            // The same starting noise at every validation: changes come from the weights only.
            let start = Tensor(shape: shape, floats: RandomStream(seed: seed, 0x7A11, UInt64(i)).normals(shape.reduce(1, *)))
            let small = downsampleLabels(labels, width: w, height: h, factor: 8)
            var denoiserResults: [(String, Tensor, Double, Double)] = []
            for (name, unet) in unets {
                var d = GuidedDenoiser(unet: unet, controlnet: controlnet, scheduler: scheduler)
                d.guidanceScale = guidanceScale
                let latents = d.denoise(start, text: text, condition: cond)
                let image = trainer.vae.decodeToImage(latents)
                denoiserResults.append((name, image, maskAlignment(image: image, labels: labels), maskAlignment(image: latents, labels: small)))
            }
            let source = Tensor(shape: [1, 3, h, w], floats: samples.pixels.slice(axis: 0, i..<(i + 1)).contiguous().floats.map { min(max($0 / 2 + 0.5, 0), 1) })
            return ValidationRow(labels: labels, width: w, height: h, caption: samples.captions[i], source: source,
                                 generated: denoiserResults.map { (name: $0.0, image: $0.1, alignment: $0.2, latentAlignment: $0.3) })
        }
    }

    /// The denoising loss of the validation crops (fixed noise and timesteps) given their own
    /// masks, and given each other's masks (rolled by one). Equal for a ControlNet that ignores
    /// its input — as at initialisation, where its output convolutions are zero — so the gap
    /// measures how much the ControlNet uses the mask, without sampling.
    public func maskLosses(trainer: DiffusionTrainer) throws -> (own: Double, swapped: Double)? {
        guard let condition = samples.condition, samples.count > 1 else { return nil }
        let n = samples.count
        var swapped = samples
        swapped.condition = Kernels.concat([condition.slice(axis: 0, 1..<n), condition.slice(axis: 0, 0..<1)], axis: 0)
        let first = Self.evaluationSamples
        return (try trainer.evaluateLoss(samples, firstSample: first), try trainer.evaluateLoss(swapped, firstSample: first))
    }

    /// Noise of "samples" the training never reaches, for evaluation.
    static let evaluationSamples = 1 << 40

    public func validate(step: Int, trainer: RunnableTrainer, directory: String) throws -> (path: String, metrics: JSON) {
        guard let trainer = trainer as? DiffusionTrainer else { throw TrainingError.badInput("Style Swap validation needs a diffusion trainer") }
        let rows = render(trainer: trainer)
        let path = directory + "/" + String(format: "step-%08d.png", step)
        try compose(rows, path)
        var metrics: JSON = [:]
        if let (own, swapped) = try maskLosses(trainer: trainer) {
            metrics.set("loss_own_mask", .double(own))
            metrics.set("loss_swapped_mask", .double(swapped))
        }
        for name in rows.first?.generated.map(\.name) ?? [] {
            let results = rows.compactMap { $0.generated.first { $0.name == name } }
            let suffix = name.replacingOccurrences(of: "^", with: "").lowercased()
            metrics.set("mask_alignment_" + suffix, .double(results.map(\.alignment).reduce(0, +) / Double(max(results.count, 1))))
            metrics.set("latent_alignment_" + suffix, .double(results.map(\.latentAlignment).reduce(0, +) / Double(max(results.count, 1))))
        }
        return (path, metrics)
    }
}
