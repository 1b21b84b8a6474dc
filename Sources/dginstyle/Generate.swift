import ArgumentParser
import DGBase
import DGData
import DGDiffusion
import DGTensor
import Foundation

extension SchedulerKind: ExpressibleByArgument {}

/// `--shard I/N`.
struct Shard: ExpressibleByArgument {
    let index: Int, count: Int
    init?(argument: String) {
        let parts = argument.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n > 0, (0..<n).contains(i) else { return nil }
        index = i
        count = n
    }
}

/// The defaults of a command's sampling options: diffusers' for Stable Diffusion, and the shipped
/// miniature's where a command exists to show it.
protocol SamplingDefaults {
    static var guidance: Float { get }
}

enum StableDiffusionSampling: SamplingDefaults {
    static let guidance: Float = 7.5
}

/// Measured on the miniature (docs/EXPERIMENT.md, "The retrained chain and its sampling"): at 3 its
/// Style Swap images are more photo-like, follow their masks better and are rated higher by the
/// photo-trained judge than at 7.5, which over-saturates these tiny models. tools/run-experiment.sh's
/// GUIDANCE default is the same decision and changes with it.
enum MiniatureSampling: SamplingDefaults {
    static let guidance: Float = 3
}

/// Options shared by `generate`, `sample` and `demo`.
struct SamplingArguments<Defaults: SamplingDefaults>: ParsableArguments {
    @Option(help: "Denoising steps.")
    var steps = 20

    @Option(help: "Classifier-free guidance scale (1 disables guidance).")
    var guidance: Float = Defaults.guidance

    @Option(help: "Scale of the ControlNet's residuals.")
    var conditioningScale: Float = 1

    @Option(help: "Sampler: ddim or dpm++2m (DPM-Solver++ 2M).")
    var scheduler: SchedulerKind = .ddim

    @Option(help: "DDIM eta (0: deterministic DDIM; > 0 adds seeded noise each step).")
    var eta: Float = 0

    @Option(help: "Negative prompt (the unconditional side of guidance).")
    var negativePrompt = ""

    @Option(help: "Hold the weights as f32 or bf16 (bf16: products in bf16 with f32 sums where the CPU has AVX512-BF16; norms, softmax and the scheduler stay f32).")
    var dtype: DType = .f32

    func validate() throws {
        guard [.f32, .bf16].contains(dtype) else { throw ValidationError("--dtype must be f32 or bf16") }
    }

    var options: SamplingOptions {
        var o = SamplingOptions()
        o.steps = steps
        o.guidanceScale = guidance
        o.conditioningScale = conditioningScale
        o.scheduler = scheduler
        o.eta = eta
        o.negativePrompt = negativePrompt
        return o
    }
}

extension MRLFAnchorNoise: ExpressibleByArgument {}

/// MRLF's settings, shared by generate and sample.
struct MRLFArguments: ParsableArguments {
    @Option(help: "MRLF window stride in latents, at 512 px.")
    var stride = 16

    @Option(help: "MRLF: connected components of more pixels than this (at 512 px) keep the low-resolution latents.")
    var largeArea = 30000

    @Option(help: "MRLF: level the anchored low-resolution latents are noised to after a step from timestep t: t-1 (the reference code's) or next (the level the step reached).")
    var mrlfAnchorNoise: MRLFAnchorNoise = .reference

    func options(resolution: Int) -> MRLFOptions {
        var o = MRLFOptions.scaled(resolution: resolution, strideAt512: stride, largeAreaAt512: largeArea)
        o.anchorNoise = mrlfAnchorNoise
        return o
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a labelled street-scene dataset (DGInStyle) from label maps.",
        discussion: """
        LABELS is a dataset root (GTA5 or Cityscapes layout), a folder of label maps (*_labelTrainIds.png train \
        ids, *_labelIds.png or palette PNGs with Cityscapes label ids, RGB masks in the train-id palette), one \
        such file, or a gen_file.json list of \
        {"class": C, "file_name": F} (C a train id or class name: the crop is centred on a random pixel of C, \
        redrawn until C covers more than 1% of it). Item i uses label source i mod the number of sources, with a \
        seed derived from --seed and i alone, so --shard I/N runs (any N, any order, any machines) produce exactly \
        the items of one run (bit for bit when every shard runs with the same DGINSTYLE_THREADS: the kernels' \
        float reductions are split by thread count); a rerun skips finished items. Output: images/, labels/ (train ids of the crop), vis/ \
        (image | colours | overlay), records/ (one JSON per item, written last), generation.jsonl (all records in \
        index order) and run.json (the settings; a rerun must match them). MRLF (default) runs a second pass at \
        twice the resolution over windows of the base latent size; --stride and --large-area are given at 512 px \
        and scale with --resolution (16 latents and 30000 px at 512 are 4 and 1875 at 128).
        """)

    @Option(help: "Stable Diffusion pipeline (diffusers folder or native file; a `swap` export needs no --controlnet).")
    var pipeline: String

    @Option(help: "The semantic ControlNet (20 condition channels).")
    var controlnet: String?

    @Option(help: "A UNet to use instead of the pipeline's (Style Swap).")
    var unet: String?

    @OptionGroup var lora: UNetLoRAArguments

    @Option(help: "Label maps: a folder, a PNG, or a gen_file.json.")
    var labels: String

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "Number of items (default: one per label source).")
    var count: Int?

    @Option(help: "Base seed; item i's seed derives from it and i.")
    var seed: UInt64 = 0

    @OptionGroup var sampling: SamplingArguments<StableDiffusionSampling>

    @Option(help: "Crop side in pixels (a multiple of 64).")
    var resolution = 512

    @Flag(inversion: .prefixedNo, help: "Multi-resolution Latent Fusion (a second pass at 2x).")
    var mrlf = true

    @OptionGroup var mrlfArguments: MRLFArguments

    @Option(help: "Render only items with index % N == I.")
    var shard: Shard?

    @Option(help: "Output layout: gta5 (images/X.png + labels/X_labelTrainIds.png, mmseg's GTADataset) or cityscapes (leftImg8bit/train/dginstyle/X_leftImg8bit.png + gtFine/train/dginstyle/X_gtFine_labelTrainIds.png, mmseg's CityscapesDataset).")
    var layout: OutputLayout = .gta5

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    func run() throws {
        var job = DatasetJob(pipeline: pipeline, controlnet: controlnet, unet: unet, labels: labels, out: out)
        job.count = count
        job.seed = seed
        job.sampling = sampling.options
        job.resolution = resolution
        job.mrlf = mrlf
        job.strideAt512 = mrlfArguments.stride
        job.largeAreaAt512 = mrlfArguments.largeArea
        job.anchorNoise = mrlfArguments.mrlfAnchorNoise
        job.layout = layout
        job.unetLoRA = lora.unetLora
        job.loraScale = lora.loraScale
        job.dtype = sampling.dtype
        if let shard {
            job.shardIndex = shard.index
            job.shardCount = shard.count
        }
        try DatasetGenerator(job).run(progress: !quiet) { emit($0) }
    }
}

extension OutputLayout: ExpressibleByArgument {}

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate one image: text-to-image or image-to-image, with a label-map ControlNet condition.",
        discussion: """
        With --labels the label map (train ids, label ids or palette colours; nearest-resized to the image size) \
        conditions the ControlNet. With --init-image the run starts from that image (Lanczos-resized), encoded \
        and noised to the level where the last int(steps * strength) steps begin. --mrlf needs --labels.
        """)

    @Option(help: "Stable Diffusion pipeline (diffusers folder or native file).")
    var pipeline: String

    @Option(help: "ControlNet (optional when the pipeline holds one).")
    var controlnet: String?

    @Option(help: "A UNet to use instead of the pipeline's.")
    var unet: String?

    @OptionGroup var lora: UNetLoRAArguments

    @Option(help: "The prompt.")
    var prompt: String

    @OptionGroup var sampling: SamplingArguments<StableDiffusionSampling>

    @Option(help: "Label map for the ControlNet.")
    var labels: String?

    @Option(help: "Start image for image-to-image.")
    var initImage: String?

    @Option(help: "Image-to-image strength in (0, 1].")
    var strength: Double = 0.8

    @Option(help: "Image width (default: the label map's or init image's, else 512).")
    var width: Int?

    @Option(help: "Image height (default: as width).")
    var height: Int?

    @Flag(help: "Multi-resolution Latent Fusion (needs --labels).")
    var mrlf = false

    @OptionGroup var mrlfArguments: MRLFArguments

    @Option(help: "Seed.")
    var seed: UInt64 = 0

    @Option(help: "Output PNG.")
    var out: String

    func run() throws {
        let labelMap = try labels.map { try DatasetGenerator.loadLabels($0) }
        let initial = try initImage.map { try PNG.read($0).rgb() }
        let w = width ?? labelMap?.width ?? initial?.width ?? 512
        let h = height ?? width.map { _ in w } ?? labelMap?.height ?? initial?.height ?? 512
        if mrlf && labelMap == nil { throw ValidationError("--mrlf needs --labels") }
        let pipe = try ControlNetPipeline(pipeline: pipeline, controlnet: controlnet, unet: unet, unetLoRA: lora.unetLora,
                                          loraScale: lora.loraScale, dtype: sampling.dtype)
        let text = pipe.encodeText(prompt: prompt, negativePrompt: sampling.negativePrompt)
        pipe.releaseTextEncoder()   // one prompt: its features are all the steps need
        let generator = NoiseGenerator(seed: seed)
        let ids = labelMap.map { $0.resized(width: w, height: h).ids }
        let image01: Tensor
        if mrlf, let ids {
            guard w == h else { throw ValidationError("--mrlf needs a square image") }
            image01 = try pipe.generateMRLF(text: text, labels: ids, height: h, width: w, generator: generator,
                                            options: sampling.options, mrlf: mrlfArguments.options(resolution: w)).image
        } else {
            let condition = try ids.map { ids -> Tensor in
                guard let cn = pipe.controlnet else { throw ValidationError("--labels needs a ControlNet (--controlnet)") }
                return SemanticCondition.oneHot(ids: ids, width: w, height: h, classes: cn.conditioning_channels - 1)
            }
            let start = initial.map { Resize.toUnit($0.resized(width: w, height: h, filter: .lanczos).tensor()) }
            image01 = try pipe.generate(text: text, condition: condition, height: h, width: w, generator: generator,
                                        options: sampling.options, initImage: start, strength: strength).image
        }
        let parent = URL(fileURLWithPath: out).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        try PNG.write(Image(tensor: Resize.toSigned(image01)), to: out)
        emit("wrote \(out) (\(w)x\(h), seed \(seed))")
    }
}
