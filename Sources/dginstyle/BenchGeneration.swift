import ArgumentParser
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation

extension Bench {
    /// The cost of one generated image at SD 1.5 size, from timings of its parts: whole runs take
    /// minutes to hours on a CPU, and every part repeats identically (steps, windows).
    struct Generation: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generation",
            abstract: "Time a DDIM ControlNet image and an MRLF image at SD 1.5 size (random weights), from their parts.",
            discussion: """
            Builds the SD 1.5 UNet, a 20-channel ControlNet and the VAE from the manifest's configs with random \
            weights, then times one guided ControlNet step (batch 2: negative and positive prompt), one VAE decode at \
            the base size, one VAE encode and decode at twice the size, and one batch of MRLF windows at twice the \
            size; totals are steps x step + decode, and for MRLF the low-resolution image + encode + steps x \
            (windows / batch) x window batch + decode. --dtype bf16 stores all three models' weights in bf16, as \
            `sample --dtype bf16` loads them. tools/bench-generation.py times the same parts in PyTorch (--dtype \
            autocast: its bf16).
            """)

        @Option(help: "The parameter manifest (Tests/Fixtures/sd15-manifest.json).")
        var manifest: String

        @Option(help: "Base image side.")
        var resolution = 512

        @Option(help: "Denoising steps of the totals.")
        var steps = 20

        @Option(help: "MRLF window stride in latents at 512 px.")
        var stride = 16

        @Option(help: "Windows per model call (as MRLF runs them).")
        var windowBatch = 4

        @Option(help: "Weights of the UNet, ControlNet and VAE: f32, or bf16 (products in bf16 where the CPU has AVX512-BF16 and it pays).")
        var dtype: DType = .f32

        func validate() throws {
            guard [.f32, .bf16].contains(dtype) else { throw ValidationError("--dtype must be f32 or bf16") }
        }

        func run() throws {
            guard let data = FileManager.default.contents(atPath: manifest) else { throw FileError(manifest, "cannot read") }
            let configs = try JSON.parse(bytes: Array(data))["configs"]
            func config(_ name: String, _ cls: String) throws -> JSON {
                guard var c = configs?[name] else { throw FileError(manifest, "has no config for \(name)") }
                c.set("_class_name", .string(cls))
                return c
            }
            let unet = try UNet2DConditionModel(config: config("unet", "UNet2DConditionModel"))
            unet.initializeParameters(seed: 1)
            let controlnet = try ControlNetModel(config: config("controlnet", "ControlNetModel"))
            controlnet.initializeParameters(seed: 2)
            let vae = try AutoencoderKL(config: config("vae", "AutoencoderKL"))
            vae.initializeParameters(seed: 3)
            for m: Module in [unet, controlnet, vae] { m.storeParameters(as: dtype) }

            let g = NoiseGenerator(seed: 0)
            let r = resolution, l = r / 8
            let text = g.normal([2, 77, unet.cross_attention_dim[0]])
            let labels = (0..<(r * r)).map { UInt8($0 / r * 19 / r) }
            let condition = SemanticCondition.oneHot(ids: labels, width: r, height: r)
            var denoiser = GuidedDenoiser(unet: unet, controlnet: controlnet, scheduler: try DDIMScheduler(NoiseSchedule.stableDiffusion(), steps: steps))
            denoiser.guidanceScale = 7.5

            func time(_ label: String, repeats: Int = 1, _ body: () -> Void) -> Double {
                var best = Double.infinity
                for _ in 0..<repeats {
                    let t0 = Date()
                    body()
                    best = min(best, Date().timeIntervalSince(t0))
                }
                FileHandle.standardError.write(Data("\(label): \(String(format: "%.2f", best)) s\n".utf8))
                return best
            }
            let latents = g.normal([1, 4, l, l])
            // Best of two: the second reuses the condition's embedding, as the loop's steps after the first do.
            let control = ControlInput(condition)
            let step = time("guided ControlNet step \(r) px (batch 2)", repeats: 2) { _ = denoiser.noise(latents, timestep: 500, text: text, condition: control) }
            let decode = time("VAE decode \(r) px") { _ = vae.decodeToImage(latents) }
            let big = g.normal([1, 4, 2 * l, 2 * l])
            let image2x = vae.decodeToImage(big)
            let decode2x = time("VAE decode \(2 * r) px") { _ = vae.decodeToImage(big) }
            let encode2x = time("VAE encode \(2 * r) px") { _ = vae.encodeToLatents(image2x, generator: g) }
            let windowCrops = Kernels.concat([Tensor](repeating: latents, count: windowBatch), axis: 0)
            let windowConds = Kernels.concat([Tensor](repeating: condition, count: windowBatch), axis: 0)
            let windowControl = ControlInput(windowConds)
            let batch = time("MRLF window batch (\(windowBatch) windows, batch \(2 * windowBatch))", repeats: 2) {
                _ = denoiser.noise(windowCrops, timestep: 500, text: repeatText(text, windowBatch), condition: windowControl)
            }
            let options = MRLFOptions.scaled(resolution: r, strideAt512: stride)
            let windows = windowStarts(size: 2 * l, window: l, stride: options.stride).count
            let perStep = Double(windows * windows) / Double(windowBatch) * batch
            let plain = Double(steps) * step + decode
            let mrlf = plain + encode2x + Double(steps) * perStep + decode2x
            emit("""
            | \(r) px, \(steps) steps, \(dtype.name)\(dtype == .bf16 ? (GEMM.bf16 ? " (bf16 products)" : " (f32 products)") : ""), threads \(Parallel.threads) | seconds |
            |---|---|
            | guided ControlNet step (batch 2) | \(String(format: "%.2f", step)) |
            | VAE decode \(r) | \(String(format: "%.2f", decode)) |
            | VAE encode / decode \(2 * r) | \(String(format: "%.2f", encode2x)) / \(String(format: "%.2f", decode2x)) |
            | MRLF step: \(windows * windows) windows, \(windowBatch) per call | \(String(format: "%.2f", perStep)) |
            | **DDIM-\(steps) ControlNet image** | **\(String(format: "%.0f", plain))** |
            | **MRLF image** | **\(String(format: "%.0f", mrlf))** |
            """)
        }
    }
}
