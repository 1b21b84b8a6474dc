import DGAutograd
import DGBase
import DGCheckpoint
import DGData
import DGLayers
import DGModels
import DGTensor
import Foundation

/// Training of an AutoencoderKL (encoder, decoder, quant convs) as a reconstruction model:
/// loss = mean |x - decode(z)| + klWeight * KL(q(z|x) || N(0, I)) with z a reparameterised
/// sample of the posterior. The L1 term is the pixel term of LDM's LPIPSWithDiscriminator;
/// the perceptual and adversarial terms are left out (a tiny model on flat synthetic scenes
/// does not need them, and they would need networks we do not have). Both terms are means
/// over elements, so --kl-weight does not depend on the crop size.
/// With `decoderOnly` the encoder and quant_conv stay frozen (the loss is then the L1 term
/// alone): the latents every model downstream was trained on stay exactly as they are while
/// the decoder sharpens, as Stability's ft-MSE decoders were made for SD 1.x.
public final class VAETrainer: ComponentTrainer {
    public let vae: AutoencoderKL
    public let options: TrainingOptions
    public let klWeight: Float
    public let decoderOnly: Bool
    public let source: TrainingBatchSource
    public let optimizer: AdamW
    public private(set) var step = 0
    let trainableParameters: [(name: String, parameter: Parameter)]

    public init(vae: AutoencoderKL, source: TrainingBatchSource, klWeight: Float, decoderOnly: Bool = false,
                options: TrainingOptions) throws {
        try options.validate()
        guard klWeight >= 0, klWeight.isFinite else { throw TrainingError.badInput("the KL weight must not be negative, not \(klWeight)") }
        self.vae = vae
        self.options = options
        self.klWeight = klWeight
        self.decoderOnly = decoderOnly
        self.source = source
        if decoderOnly {
            freeze(vae.encoder)
            if let q = vae.quant_conv { freeze(q) }
            trainableParameters = vae.namedParameters().filter { $0.name.hasPrefix("decoder.") || $0.name.hasPrefix("post_quant_conv.") }
        } else {
            trainableParameters = vae.namedParameters()
        }
        try makeTrainable(trainableParameters)
        optimizer = options.makeOptimizer(trainableParameters)
    }

    public var modelName: String { "vae" }
    public var currentLearningRate: Double { options.schedule.learningRate(step: step, base: options.learningRate) }

    @discardableResult
    public func trainStep() throws -> StepResult {
        let lr = currentLearningRate
        let accumulation = options.gradientAccumulation
        var lossSum = 0.0, recSum = 0.0, klSum = 0.0, sdSum = 0.0
        for a in 0..<accumulation {
            let batch = try source.next(options.batchSize)
            let firstSample = (step * accumulation + a) * options.batchSize
            let (loss, rec, kl, sd) = try Autocast.bf16(options.mixedPrecisionBF16) { try lossGraph(batch.pixels, firstSample: firstSample) }
            let value = loss.value.floats[0]
            guard value.isFinite else {
                optimizer.zeroGrad()
                throw TrainingError.nonFinite(step: step, what: "the loss is \(value)")
            }
            Autograd.backward(accumulation == 1 ? loss : loss * (1 / Float(accumulation)))
            lossSum += Double(value)
            recSum += Double(rec)
            klSum += Double(kl)
            sdSum += sd
        }
        let norm = try clippedGradientNorm(optimizer, maxNorm: options.maxGradNorm, step: step)
        applyUpdate(optimizer, learningRate: lr)
        step += 1
        let n = Double(accumulation)
        var result = StepResult(step: step, loss: lossSum / n, learningRate: lr, gradientNorm: norm)
        // The posterior's spread against its means' tells whether the latents carry the image
        // or mostly noise (early on the decoder sees mostly noise and learns a blurred mean).
        result.terms = [("l1", recSum / n), ("kl", klSum / n), ("posterior_std", sdSum / n)]
        return result
    }

    /// The loss of pixels [B, 3, H, W] in [-1, 1]; the posterior noise of run sample s is a
    /// pure function of (seed, s), as in diffusion training.
    func lossGraph(_ pixels: Tensor, firstSample: Int) throws -> (Var, Float, Float, Double) {
        let s = pixels.shape
        guard s.count == 4, s[1] == vae.in_channels, s[2] % 8 == 0, s[3] % 8 == 0 else {
            throw TrainingError.badInput("the data gives pixel batches of shape \(s), expected [B, \(vae.in_channels), H, W] with H, W multiples of 8")
        }
        let x = Var(pixels)
        let moments = decoderOnly ? Var(Autograd.noGrad { vae.encodeMoments(x).value }) : vae.encodeMoments(x)
        let per = moments.value.count / s[0] / 2
        var noise: [Float] = []
        for b in 0..<s[0] { noise += RandomStream(seed: options.seed, 1, UInt64(firstSample + b)).normals(per) }
        let m = moments.shape
        let z = gaussianSample(moments, noise: Tensor(shape: [m[0], m[1] / 2, m[2], m[3]], floats: noise))
        let reconstruction = l1Loss(vae.decode(z), x)
        let kl = gaussianKL(moments)
        let logvar = DiagonalGaussian(moments: moments.value).logvar.floats
        let sd = logvar.reduce(0.0) { $0 + exp(Double($1) / 2) } / Double(max(logvar.count, 1))
        return (klWeight > 0 && !decoderOnly ? reconstruction + kl * klWeight : reconstruction, reconstruction.value.floats[0], kl.value.floats[0], sd)
    }

    /// Mean L1 reconstruction error of `pixels` through the posterior mean (no sampling).
    public func reconstructionError(_ pixels: Tensor) -> (error: Double, reconstruction: Tensor) {
        Autograd.noGrad {
            let moments = vae.encodeMoments(Var(pixels)).value
            let mean = DiagonalGaussian(moments: moments).mean
            let out = vae.decode(Var(mean)).value
            return (Double(l1Loss(Var(out), Var(pixels)).value.floats[0]), out)
        }
    }

    /// 1 / the standard deviation of the posterior means of `pixels`: Stable Diffusion's
    /// scaling_factor (0.18215 for SD 1.5's VAE), so that scaled latents have unit variance
    /// as the diffusion schedule assumes.
    public func latentScalingFactor(_ pixels: Tensor) -> Double {
        let mean = Autograd.noGrad { DiagonalGaussian(moments: vae.encodeMoments(Var(pixels)).value).mean.floats }
        let mu = mean.reduce(0.0) { $0 + Double($1) } / Double(mean.count)
        let variance = mean.reduce(0.0) { $0 + (Double($1) - mu) * (Double($1) - mu) } / Double(mean.count)
        return 1 / max(variance.squareRoot(), 1e-6)
    }

    /// Fixed crops (the source's validation batch) that set scaling_factor at export; nil keeps
    /// the config's value.
    public var scalingSamples: Tensor?

    public func saveCheckpoint(to path: String, extra: JSON) throws {
        try state.save(to: path, step: step, extra: extra)
    }

    @discardableResult
    public func restore(from path: String) throws -> JSON { try state.restore(from: path, step: &step) }

    var state: TrainerState {
        TrainerState(name: "vae", className: "AutoencoderKL", config: vae.config, weights: vae.namedParameters(), parameters: trainableParameters,
                     optimizer: optimizer, options: options, source: source)
    }

    public var totalSteps: Int { options.totalSteps }

    public func exportComponent() throws -> Component {
        var config = vae.config
        if let samples = scalingSamples, !decoderOnly {
            config.set("scaling_factor", .double((latentScalingFactor(samples) * 1e5).rounded() / 1e5))
        }
        return try Component(model: vae, config: config)
    }
}

/// Reconstructions of fixed crops: one PNG per validation (a row per crop: original |
/// reconstruction through the posterior mean) and their mean L1 error.
public final class VAEReconstructionValidator: TrainingValidator {
    public let samples: Tensor

    public init(samples: Tensor) { self.samples = samples }

    public func validate(step: Int, trainer: RunnableTrainer, directory: String) throws -> (path: String, metrics: JSON) {
        guard let trainer = trainer as? VAETrainer else { throw TrainingError.badInput("reconstruction validation needs a VAE trainer") }
        let (error, out) = trainer.reconstructionError(samples)
        let clamped = Tensor(shape: out.shape, floats: out.contiguous().floats.map { min(max($0, -1), 1) })
        var pixels: [UInt8] = []
        var width = 0, height = 0
        for i in 0..<samples.shape[0] {
            let row = Image.sideBySide([Image(tensor: samples, index: i), Image(tensor: clamped, index: i)])
            pixels += row.pixels
            width = row.width
            height += row.height
        }
        let path = directory + "/" + String(format: "step-%08d.png", step)
        try PNG.write(Image(width: width, height: height, channels: 3, pixels: pixels), to: path)
        return (path, ["reconstruction_l1": .double(error)])
    }
}

/// Random square crops of the images of one or more folders (GTA5 layout or plain), each
/// flipped left-right with probability 1/2: the autoencoder's data. Run position k fixes the
/// image, the crop and the flip through counter-based streams, so the whole state is k.
/// Decoded images are kept in memory (synthetic datasets are small).
public final class ImageCropSource: TrainingBatchSource {
    public let folders: [String]
    public let files: [String]
    public let resolution: Int
    let seed: UInt64
    public private(set) var drawn = 0
    private var cache: [Int: Image] = [:]

    public init(folders: [String], resolution: Int, seed: UInt64) throws {
        guard !folders.isEmpty else { throw TrainingError.badInput("no image folders given") }
        self.folders = folders
        files = try folders.flatMap { try Dataset.imageFiles(in: $0) }
        guard !files.isEmpty else { throw TrainingError.badInput("\(folders.joined(separator: ", ")): no images") }
        self.resolution = resolution
        self.seed = seed
    }

    func image(_ i: Int) throws -> Image {
        if let hit = cache[i] { return hit }
        let image = try PNG.read(files[i]).rgb()
        guard image.width >= resolution, image.height >= resolution else {
            throw FileError(files[i], "is \(image.width)x\(image.height), smaller than the \(resolution)x\(resolution) crop")
        }
        cache[i] = image
        return image
    }

    func crop(_ k: Int, seed: UInt64) throws -> Image {
        let stream = RandomStream(seed: seed, 0xC409, UInt64(k))
        let image = try self.image(Int(stream.bits(0) % UInt64(files.count)))
        let crop = image.cropped(.uniform(width: resolution, height: resolution, boundsWidth: image.width, boundsHeight: image.height,
                                          stream.bits(1), stream.bits(2)))
        return stream.bits(3) & 1 == 1 ? crop.mirrored() : crop
    }

    public func next(_ count: Int) throws -> TrainingBatch {
        var images: [Image] = []
        for _ in 0..<count {
            images.append(try crop(drawn, seed: seed))
            drawn += 1
        }
        return TrainingBatch(pixels: Image.batchTensor(images), condition: nil, captions: Array(repeating: "", count: count))
    }

    public func saveState() -> JSON { ["drawn": .int(drawn)] }

    public func restoreState(_ state: JSON) throws {
        guard let d = state["drawn"]?.int, d >= 0 else { throw TrainingError.resume("the checkpoint's data state is not an image-crop source's") }
        drawn = d
    }

    public var identity: JSON {
        ["image_folders": .array(folders.map { .string(URL(fileURLWithPath: $0).lastPathComponent) }), "files": .int(files.count),
         "resolution": .int(resolution)]
    }

    /// Crops of a stream of their own: the same at every validation.
    public func validationBatch(_ count: Int) throws -> TrainingBatch? {
        let images = try (0..<count).map { try crop($0, seed: seed ^ 0x5EED_7A11) }
        return TrainingBatch(pixels: Image.batchTensor(images), condition: nil, captions: Array(repeating: "", count: count))
    }
}
