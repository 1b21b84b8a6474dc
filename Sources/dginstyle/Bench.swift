import ArgumentParser
import DGCheckpoint
import DGAutograd
import DGBase
import DGTensor
import DGTraining
import DGLayers
import DGModels
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks and the inputs they need (see docs/PERFORMANCE.md).",
        subcommands: [Suite.self, Model.self, Generation.self, TrainStep.self, Sgemm.self, Threads.self, MakeCheckpoint.self, Compression.self],
        defaultSubcommand: Suite.self)
}

extension Bench {
    /// One model workload at SD 1.5 size with random weights: time per run (median) and the
    /// process's peak memory. Run one workload per process so peak memory is its own.
    struct Model: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time an SD 1.5 workload (random weights): unet, controlnet (+unet), vae-encode, vae-decode, or a training step.",
            discussion: """
            The training steps (forward, backward, clipping, AdamW, as the trainers run them): \
            controlnet-train-step (the ControlNet learns on the frozen UNet), unet-train-step (every UNet weight \
            learns: a full fine-tune, as DreamBooth) and lora-train-step (LoRA adapters of --rank on the frozen \
            UNet's attention layers, as diffusers' DreamBooth-LoRA script).
            """)

        enum Workload: String, ExpressibleByArgument, CaseIterable {
            case unet, controlnet, vaeEncode = "vae-encode", vaeDecode = "vae-decode", controlnetTrainStep = "controlnet-train-step"
            case unetTrainStep = "unet-train-step", loraTrainStep = "lora-train-step"

            var isTraining: Bool { [.controlnetTrainStep, .unetTrainStep, .loraTrainStep].contains(self) }
        }

        @Argument(help: "The workload.")
        var workload: Workload

        @Option(help: "Image resolution in pixels (latents are 1/8).")
        var resolution = 512

        @Option(help: "Batch size (2 = classifier-free guidance's [uncond, cond]).")
        var batch = 1

        @Option(help: "Timed runs (after one warm-up run).")
        var runs = 3

        @Flag(help: "Gradient checkpointing in the training step.")
        var checkpointing = false

        @Option(help: "Weights of the forward workloads, or the frozen UNet of a ControlNet or LoRA step, as f32 or bf16 (bf16: products in bf16 where the CPU has AVX512-BF16).")
        var dtype: DType = .f32

        @Option(help: "Training steps: adamw, or adamw8bit (8-bit blockwise moments, as train-controlnet/finetune-unet --optimizer adamw8bit).")
        var optimizer: AdamW.StateStorage = .f32

        @Option(help: "Rank of the lora-train-step's adapters (alpha = rank).")
        var rank = 16

        @Flag(help: "With --dtype bf16: also run once with the f32 weights first and print the relative error ||bf16 - f32|| / ||f32|| of the output.")
        var accuracy = false

        func validate() throws {
            guard [.f32, .bf16].contains(dtype) else { throw ValidationError("--dtype must be f32 or bf16") }
            guard dtype == .f32 || workload != .unetTrainStep else {
                throw ValidationError("--dtype: a full fine-tune has no frozen weights; its trainable weights are f32")
            }
            guard !accuracy || !workload.isTraining else { throw ValidationError("--accuracy applies to the forward workloads") }
            guard rank > 0 else { throw ValidationError("--rank must be positive") }
        }

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let t0 = Date()
            let unetConfig = try JSON.parse(DefaultConfigs.unetText)
            let setup: () -> Void = {}
            let latent = resolution / 8
            let sample = Var(randomWeights([batch, 4, latent, latent], seed: 1, std: 1))
            let text = Var(randomWeights([batch, 77, 768], seed: 2, std: 1))
            let timesteps = [Float](repeating: 500, count: batch)
            var body: () -> Void
            // The forward workloads: their output, and the models whose weights --dtype sets.
            var forward: (() -> Tensor)?
            var held: [Module] = []
            switch workload {
            case .unet, .controlnet, .controlnetTrainStep, .unetTrainStep, .loraTrainStep:
                let unet = try UNet2DConditionModel(config: unetConfig)
                unet.initializeParameters(seed: 0)
                let withControl = workload == .controlnet || workload == .controlnetTrainStep
                let controlnet = withControl ? try ControlNetModel.initialized(from: unet, conditioningChannels: 20) : nil
                let cond = withControl ? Var(randomWeights([batch, 20, resolution, resolution], seed: 3, std: 1)) : nil
                if workload.isTraining {
                    // The trainers' own update, as train-controlnet / finetune-unet [--lora] run it.
                    var options = TrainingOptions(learningRate: 1e-5, schedule: LRSchedule(.constant, totalSteps: runs + 1))
                    options.gradientCheckpointing = checkpointing
                    options.frozenDType = dtype
                    options.optimizerState = optimizer
                    options.maxGradNorm = 1
                    if workload == .loraTrainStep { options.lora = LoRASettings(rank: rank, alpha: Float(rank), targets: .attn) }
                    let update = try DiffusionUpdate(unet: unet, controlnet: controlnet, options: options)
                    let inputs = DiffusionInputs(noisy: sample.value, noise: randomWeights(sample.shape, seed: 4, std: 1),
                                                 timesteps: timesteps, text: text.value, condition: cond?.value)
                    body = {
                        _ = update.accumulate(inputs)
                        _ = try? update.clippedNorm(step: 0)
                        update.apply(learningRate: options.learningRate)
                    }
                } else if let controlnet {
                    held = [unet, controlnet]
                    forward = {
                        Autograd.noGrad {
                            unet(sample, timesteps: timesteps, text: text,
                                 control: controlnet(sample, timesteps: timesteps, text: text, condition: cond!))
                        }.value
                    }
                    body = {}
                } else {
                    held = [unet]
                    forward = { Autograd.noGrad { unet(sample, timesteps: timesteps, text: text) }.value }
                    body = {}
                }
            case .vaeEncode, .vaeDecode:
                let vae = try AutoencoderKL(config: try JSON.parse(DefaultConfigs.vaeText))
                vae.initializeParameters(seed: 0)
                held = [vae]
                if workload == .vaeEncode {
                    let image = Var(randomWeights([batch, 3, resolution, resolution], seed: 5, std: 0.5))
                    forward = { Autograd.noGrad { vae.encodeMoments(image) }.value }
                } else {
                    forward = { Autograd.noGrad { vae.decode(sample) }.value }
                }
                body = {}
            }
            let reference = accuracy && dtype != .f32 ? forward?() : nil
            for m in held { m.storeParameters(as: dtype) }
            if let forward { body = { _ = forward() } }
            setup()
            let ready = Date().timeIntervalSince(t0)
            body()  // warm-up: first-touch of weights and buffers
            Profiler.reset()
            var times: [Double] = [], cpu: [Double] = []
            let flops0 = Kernels.forwardFlops
            for _ in 0..<runs {
                let t = Date(), c = processCPUTime()
                body()
                times.append(Date().timeIntervalSince(t))
                cpu.append(processCPUTime() - c)
            }
            let median = times.sorted()[times.count / 2]
            let medianCPU = cpu.sorted()[cpu.count / 2]
            let peakMB = peakRSS() / 1_048_576
            // A forward pass's matrix-product rate against the CPU's peak (a training step's backward
            // products are not counted, so it gets none).
            let gflop = forward == nil ? nil : Double(Kernels.forwardFlops - flops0) / Double(runs) / 1e9
            let peak = Self.peakGFLOPS()
            let shares = gflop.map { g in (f32: peak.f32 > 0 ? g / median / peak.f32 : nil, bf16: peak.bf16 > 0 ? g / median / peak.bf16 : nil) }
            if json {
                emit(JSON.object([
                    ("workload", .string(workload.rawValue)), ("resolution", .int(resolution)), ("batch", .int(batch)),
                    ("checkpointing", .bool(checkpointing)), ("dtype", .string(dtype.name)), ("bf16_kernel", .bool(GEMM.bf16)),
                    ("optimizer", .string(optimizer.rawValue)),
                    ("seconds", .double(median)), ("cpu_seconds", .double(medianCPU)),
                    ("runs", .array(times.map { .double($0) })), ("peak_rss_mb", .double(peakMB)),
                    ("threads", .int(Parallel.threads)), ("setup_seconds", .double(ready)),
                    ("gflop_per_run", gflop.map { .double($0) } ?? .null),
                    ("f32_peak_share", shares?.f32.map { .double($0) } ?? .null),
                    ("bf16_peak_share", shares?.bf16.map { .double($0) } ?? .null),
                ]).compact)
            } else {
                emit("\(workload.rawValue) \(resolution)px batch \(batch)\(checkpointing ? " checkpointed" : "")\(optimizer == .blockwise8bit ? " AdamW8bit" : "") \(dtype.name)\(dtype == .bf16 ? (GEMM.bf16 ? " (bf16 kernel)" : " (f32 compute)") : ""): median \(String(format: "%.3f", median)) s of \(runs) runs (CPU \(String(format: "%.2f", medianCPU)) s), peak RSS \(Int(peakMB)) MB, \(Parallel.threads) threads (setup \(String(format: "%.1f", ready)) s)")
            }
            if !json, let gflop {
                var line = String(format: "forward matrix products (counted from their shapes): %.1f GFLOP per run, %.0f GFLOP/s", gflop, gflop / median)
                if let share = shares?.f32 {
                    line += String(format: " = %.0f%% of this CPU's f32 peak (%.0f GFLOP/s: %.1f FMA multiply-adds per cycle x 2 x %d threads x %.2f GHz)",
                                   100 * share, peak.f32, GEMM.bf16DotRates.f32, Parallel.threads, GEMM.tscGHz)
                }
                if let share = shares?.bf16 { line += String(format: ", %.0f%% of its bf16 peak (%.0f GFLOP/s)", 100 * share, peak.bf16) }
                emit(line)
            }
            if let reference, let forward {
                let out = forward().floats, ref = reference.floats
                var diff = 0.0, norm = 0.0
                for (a, b) in zip(out, ref) { diff += (Double(a) - Double(b)) * (Double(a) - Double(b)); norm += Double(b) * Double(b) }
                emit(String(format: "relative error of the %@ output vs f32 weights: %.3e", dtype.name, (diff / Swift.max(norm, .leastNormalMagnitude)).squareRoot()))
            }
            if Profiler.enabled { emit("per run:\n" + Profiler.report(runs: runs)) }
        }

        /// This CPU's peak over the threads in use: the timed multiply-adds per TSC cycle
        /// (`GEMM.bf16DotRates`) x 2 flops x threads x the TSC's GHz; 0 where the rates are not timed
        /// (CPUs without AVX512-BF16).
        static func peakGFLOPS() -> (f32: Double, bf16: Double) {
            let rates = GEMM.bf16DotRates, scale = 2 * Double(Parallel.threads) * GEMM.tscGHz
            return (rates.f32 * scale, rates.bf16 * scale)
        }
    }

    /// Matrix-product rates at the shapes an SD 1.5 UNet pass runs, and the convolution and attention
    /// kernels built on them, against OpenBLAS's best on this machine (large square products).
    struct Sgemm: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GFLOP/s of sgemm at the UNet's shapes (ours and OpenBLAS), of the conv and attention kernels, and OpenBLAS at large squares.")

        @Option(help: "Latent resolutions to take shapes from, in image pixels.")
        var resolutions: [Int] = [256, 512]

        @Option(help: "Timed repetitions per measurement (the best is kept).")
        var repeats = 5

        @Flag(help: "Print one JSON object per line instead of the table.")
        var json = false

        @Flag(help: "Instead: our kernels against OpenBLAS at every UNet product class, alternating samples (the backend rule's table).")
        var backends = false

        @Option(help: "With --backends: only the product classes whose name contains this (e.g. \"small n\"); with --winograd: only the convolutions whose row contains it (e.g. \"16²\").")
        var only: String?

        @Flag(help: "Instead: 3x3 convolutions as Winograd F(2x2, 3x3) against implicit GEMM (forward and input gradient), and F(4x4, 3x3) against F(2x2, 3x3) (forward with f32 products, and input gradient), at SD 1.5's shapes: the measurements behind the Winograd rules.")
        var winograd = false

        @Flag(help: "With --winograd: the weights in bf16 (where the bf16 products run, the forward in bf16 on both routes).")
        var bf16 = false

        @Flag(help: "Instead: the training kernels' backward passes (convolution weight and input gradients, attention backward) against their forward, at the UNet's and the segmenter's shapes.")
        var backward = false

        func run() throws {
            if backends { return try runBackends() }
            if backward { return runBackward() }
            if winograd { return runWinograd() }
            // The bf16 columns time the vdpbf16ps product wherever the CPU has it, even where "auto"
            // leaves it off (what it would give is the point); the choice is printed with them.
            let chosen = GEMM.bf16
            GEMM.bf16 = true
            let measuredBF16 = GEMM.bf16
            defer { GEMM.bf16 = chosen }
            var rows: [String] = []
            var objects: [JSON] = []
            // A sample is a batch of calls lasting ~20 ms: small products take 0.01-0.1 ms, where one
            // timed call measures thread wake-up jitter (best-of-40 single calls of one attention
            // ranged 71-146% of the same sgemm).
            func gflops(_ flops: Double, _ body: () -> Void) -> Double {
                let t0 = DispatchTime.now().uptimeNanoseconds
                body()
                let calls = Swift.max(1, Int(20_000_000 / Swift.max(1, DispatchTime.now().uptimeNanoseconds - t0)))
                var best = Double.infinity
                for _ in 0..<repeats {
                    let t = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<calls { body() }
                    best = Swift.min(best, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 / Double(calls))
                }
                return flops / best / 1e9
            }
            // Our kernels and OpenBLAS on a plain product with random operands. OpenBLAS's threads
            // keep spinning for a while after each call (taking a core from whatever runs next), so
            // all of its measurements are made last, after ours (`openBLASRuns`).
            var openBLASRuns: [(Int, Int, Int, (Double) -> Void)] = []
            func plain(_ m: Int, _ n: Int, _ k: Int, openblas: @escaping (Double) -> Void) -> Double {
                openBLASRuns.append((m, n, k, openblas))
                let a = randomWeights([m, k], seed: 1, std: 1), b = randomWeights([k, n], seed: 2, std: 1)
                let c = Tensor(zeros: [m, n])
                let flops = 2.0 * Double(m) * Double(n) * Double(k)
                return withExtendedLifetime((a, b, c)) {
                    let ap = a.rawPointer.assumingMemoryBound(to: Float.self), bp = b.rawPointer.assumingMemoryBound(to: Float.self)
                    let cp = c.rawPointer.assumingMemoryBound(to: Float.self)
                    return GEMM.vectorized ? gflops(flops) {
                        GEMM.gemm(m: m, n: n, k: k, a: ap, ars: k, aks: 1, b: GEMM.matrix(bp, rowStride: n, columnStride: 1), c: cp, ldc: n)
                    } : .nan
                }
            }
            // The bf16 product as a linear layer runs it: A in f32 (rounded at the input), the weight
            // W [n, k] stored in bf16 and read transposed.
            func plainBF16(_ m: Int, _ n: Int, _ k: Int) -> Double {
                guard GEMM.bf16 else { return .nan }
                let a = randomWeights([m, k], seed: 1, std: 1), w = randomWeights([n, k], seed: 2, std: 1).converted(to: .bf16)
                let c = Tensor(zeros: [m, n])
                return withExtendedLifetime((a, w, c)) {
                    let wp = w.rawPointer.assumingMemoryBound(to: UInt16.self)
                    return gflops(2.0 * Double(m) * Double(n) * Double(k)) {
                        GEMM.gemmBF16(m: m, n: n, k: k, a: a.rawPointer, aBF16: false, ars: k, aks: 1,
                                      b: GEMM.matrix(bf16: wp, rowStride: 1, columnStride: k),
                                      c: c.rawPointer.assumingMemoryBound(to: Float.self), ldc: n)
                    }
                }
            }
            func runOpenBLAS() {
                for (m, n, k, report) in openBLASRuns {
                    let a = randomWeights([m, k], seed: 1, std: 1), b = randomWeights([k, n], seed: 2, std: 1)
                    let c = Tensor(zeros: [m, n])
                    report(withExtendedLifetime((a, b, c)) {
                        gflops(2.0 * Double(m) * Double(n) * Double(k)) {
                            GEMM.openBLAS(m: m, n: n, k: k, a: a.rawPointer.assumingMemoryBound(to: Float.self),
                                          b: b.rawPointer.assumingMemoryBound(to: Float.self), c: c.rawPointer.assumingMemoryBound(to: Float.self))
                        }
                    })
                }
            }
            func f(_ x: Double) -> String { x.isNaN ? "-" : String(format: "%.0f", x) }
            func pct(_ x: Double, _ y: Double) -> String { x.isNaN || y.isNaN ? "-" : String(format: "%.0f%%", 100 * x / y) }

            // Rows are filled in once OpenBLAS has been measured.
            struct Row { var what: String; var shape: String; var ours: Double; var kernel = Double.nan; var openblas = Double.nan
                         var bf16 = Double.nan; var kernelBF16 = Double.nan
                         var fields: [(String, JSON)] }
            var table: [Row] = []
            // kernel(dtype): the conv / attention kernel with its weights stored in that dtype (nil: none).
            func add(_ what: String, _ m: Int, _ n: Int, _ k: Int, extra: [(String, JSON)], shape: String? = nil,
                     kernel: ((DType) -> Double?)? = nil) {
                let i = table.count
                let ours = plain(m, n, k) { table[i].openblas = $0 }
                table.append(Row(what: what, shape: shape ?? "\(m)x\(n)x\(k)", ours: ours, kernel: kernel?(.f32) ?? .nan,
                                 bf16: shape == nil ? plainBF16(m, n, k) : .nan,
                                 kernelBF16: GEMM.bf16 ? kernel?(.bf16) ?? .nan : .nan,
                                 fields: extra + [("m", .int(m)), ("n", .int(n)), ("k", .int(k))]))
            }
            for size in [1024, 2048, 4096] {
                add("square \(size)", size, size, size, extra: [("what", .string("square"))])
            }
            for res in resolutions {
                let s = res / 8
                // 3x3 convolutions at each level (Cout = Cin), as im2col products and as the conv kernel.
                for (c, side) in [(320, s), (640, s / 2), (1280, s / 4), (1280, s / 8)] where side >= 1 {
                    let (m, n, k) = (c, side * side, c * 9)
                    add("\(res) px conv 3x3 \(c)ch \(side)x\(side)", m, n, k, extra: [("what", .string("conv3x3")), ("resolution", .int(res))]) {
                        let x = randomWeights([1, c, side, side], seed: 3, std: 1), w = randomWeights([c, c, 3, 3], seed: 4).converted(to: $0)
                        let b = randomWeights([c], seed: 5)
                        return gflops(2.0 * Double(m * n) * Double(k)) { _ = Kernels.conv2d(x, w, b, stride: 1, padding: 1) }
                    }
                }
                // Linear layers of the transformer blocks (tokens x features).
                for (c, side) in [(320, s), (640, s / 2), (1280, s / 4)] where side >= 1 {
                    let t = side * side
                    for (what, m, n, k) in [("q/k/v/out", t, c, c), ("GEGLU proj", t, 8 * c, c), ("FF out", t, c, 4 * c), ("text k/v", 77, c, 768)] {
                        add("\(res) px \(what) \(c)ch", m, n, k, extra: [("what", .string(what)), ("resolution", .int(res))])
                    }
                }
                // Self-attention (8 heads): the kernel against the product QK^T it is built on.
                for (c, side) in [(320, s), (640, s / 2), (1280, s / 4)] where side >= 1 {
                    let l = side * side, d = c / 8
                    add("\(res) px self-attention \(c)ch L=\(l)", l, l, d, extra: [("what", .string("attention")), ("resolution", .int(res))],
                        shape: "\(l)x\(l)x\(d) (QK^T)") { dtype in
                        // bf16: both products in bf16, as after projections with bf16 weights.
                        let q = randomWeights([1, l, c], seed: 6, std: 1), k = randomWeights([1, l, c], seed: 7, std: 1)
                        let v = randomWeights([1, l, c], seed: 8, std: 1)
                        return gflops(4.0 * Double(l) * Double(l) * Double(c)) {
                            _ = Kernels.attention(q: q, k: k, v: v, heads: 8, scale: 1 / Float(d).squareRoot(), causal: false,
                                                  bf16: dtype == .bf16)
                        }
                    }
                }
            }
            runOpenBLAS()
            let best = table.prefix(3).map(\.openblas).max() ?? .nan
            for r in table {
                rows.append("| \(r.what) | \(r.shape) | \(f(r.ours)) | \(f(r.kernel)) | \(pct(r.kernel, r.ours)) | \(f(r.openblas)) | \(pct(r.ours, best)) | \(f(r.bf16)) | \(pct(r.bf16, r.ours)) | \(f(r.kernelBF16)) | \(pct(r.kernelBF16, r.kernel)) |")
                objects.append(.object(r.fields + [("ours", .double(r.ours)), ("kernel", .double(r.kernel)), ("openblas", .double(r.openblas)),
                                                   ("bf16", .double(r.bf16)), ("kernel_bf16", .double(r.kernelBF16))]))
            }
            if json {
                for o in objects { emit(o.compact) }
                return
            }
            emit("\(Parallel.threads) threads; AVX-512 kernels \(GEMM.vectorized ? "on" : "off"); OpenBLAS core type \(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "auto"); GFLOP/s, best of \(repeats)")
            emit("OpenBLAS's best (large squares): \(f(best)) GFLOP/s\n")
            let rates = GEMM.bf16DotRates
            emit("bf16 weights: \(chosen ? "vdpbf16ps products" : "widened to f32, f32 products") (\(ProcessInfo.processInfo.environment["DGINSTYLE_BF16"].map { "DGINSTYLE_BF16=\($0)" } ?? "auto")); multiply-adds per cycle here: vdpbf16ps \(String(format: "%.1f", rates.bf16)), vfmadd231ps \(String(format: "%.1f", rates.f32))")
            emit(measuredBF16 ? "bf16 columns: the vdpbf16ps product (\(GEMM.bf16Blocking)), the weight stored in bf16, activations rounded at the input"
                              : "bf16 columns: - (no AVX512-BF16 on this CPU, or AVX-512 off)")
            emit("| product | m x n x k | our sgemm | conv / attention kernel | kernel vs our sgemm | OpenBLAS at this shape | our sgemm vs OpenBLAS's best | our bf16 GEMM | bf16 vs f32 GEMM | conv / attention kernel in bf16 | vs f32 kernel |")
            emit("|---|---|---|---|---|---|---|---|---|---|---|")
            emit(rows.joined(separator: "\n"))
        }
    }

    /// A checkpoint of the right names and shapes with random values: the full SD 1.5 sizes
    /// without downloading SD 1.5.
    struct MakeCheckpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "make-checkpoint",
            abstract: "Write a safetensors file with every tensor of a manifest section, random values.")

        @Option(help: "The parameter manifest (Tests/Fixtures/sd15-manifest.json).")
        var manifest: String

        @Option(help: "Manifest section: ldm_single_file, unet, vae, text_encoder, controlnet, controlnet_ldm.")
        var section = "ldm_single_file"

        @Option(help: "Element type of the tensors.")
        var dtype: DType = .f32

        @Option(help: "Seed of the values.")
        var seed: UInt64 = 0

        @Argument(help: "Output .safetensors file.")
        var output: String

        func run() throws {
            guard let data = FileManager.default.contents(atPath: manifest) else { throw FileError(manifest, "cannot read") }
            let json = try JSON.parse(bytes: Array(data))
            guard let pairs = json[section]?.objectPairs else { throw FileError(manifest, "has no section \(section)") }
            let entries = try pairs.map { name, shape -> TensorEntry in
                guard let dims = shape.array?.compactMap(\.int) else { throw FileError(manifest, "bad shape for \(name)") }
                return TensorEntry(name: name, dtype: dtype, shape: dims)
            }
            let total = entries.reduce(0) { $0 + $1.byteCount }
            let progress = ProgressBar("make-checkpoint", total: Double(total), unit: "B")
            let writer = try SafeTensorsWriter(path: output, entries: entries, metadata: [("format", "pt")])
            for (i, e) in entries.enumerated() {
                let t = randomWeights(e.shape, seed: seed &+ UInt64(i)).converted(to: dtype)
                try t.withRawBytes { try writer.write($0) }
                progress.advance(by: Double(e.byteCount))
            }
            try writer.finish()
            progress.finish()
            emit("wrote \(output): \(entries.count) tensors, \(ProgressBar.bytes(Double(total)))")
        }
    }

    /// What per-tensor zstd saves on f32 and f16 weights and what it costs to load.
    struct Compression: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure native-format compression (size, write and load time) on a checkpoint's weights.")

        @Argument(help: "Any checkpoint this program reads.")
        var source: String

        @Option(help: "Scratch directory for the native files.")
        var scratch = NSTemporaryDirectory()

        @Option(help: "zstd level.")
        var level: Int32 = 3

        func run() throws {
            let ck = try Checkpoint.open(source)
            var rows: [String] = ["| weights | stored as | size | vs raw | write | load + verify |", "|---|---|---|---|---|---|"]
            for dtype in [DType.f32, .f16] {
                var raw = 0.0
                for compress in [false, true] {
                    let path = scratch + "/bench-compression-\(getpid())-\(dtype.name)-\(compress).dginstyle"
                    defer { try? FileManager.default.removeItem(atPath: path) }
                    var options = WriteOptions(dtype: dtype, compress: compress, overwrite: true, progress: false)
                    options.compressionLevel = level
                    let t0 = Date()
                    try ck.write(to: path, format: .native, options: options)
                    let write = Date().timeIntervalSince(t0)
                    let size = Double((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
                    if !compress { raw = size }
                    // Load every tensor (verifying its checksum) and touch it, as a model load would.
                    let t1 = Date()
                    let back = try Checkpoint.open(path)
                    var sink: UInt8 = 0
                    for c in back.components {
                        for e in c.source.entries {
                            try c.source.tensor(e.name).withRawBytes { bytes in
                                var i = 0
                                while i < bytes.count { sink ^= bytes[i]; i += 4096 }
                            }
                        }
                    }
                    let load = Date().timeIntervalSince(t1)
                    rows.append("| \(dtype.name) | \(compress ? "zstd-\(level) (byte-split)" : "raw") | \(ProgressBar.bytes(size)) | \(String(format: "%.1f%%", 100 * size / raw)) | \(String(format: "%.2f s", write)) | \(String(format: "%.2f s", load))\(sink == 255 ? " " : "") |")
                }
            }
            emit(rows.joined(separator: "\n"))
        }
    }
}

/// Normal-ish values (sum of four uniforms) with the spread of initialised weights, from
/// counter-based SplitMix64 streams (one per 64 Ki block): independent of the thread count.
func randomWeights(_ shape: [Int], seed: UInt64, std: Float = 0.02) -> Tensor {
    let t = Tensor(zeros: shape)
    let n = t.count
    let chunk = 1 << 16
    t.withMutableFloats { out in
        let base = out.baseAddress!
        Parallel.forEach((n + chunk - 1) / chunk, minimumChunk: 4) { blocks in
            for b in blocks {
                var rng = SplitMix64(seed: SplitMix64.mix(seed) ^ UInt64(b))
                for i in (b * chunk)..<min(n, (b + 1) * chunk) {
                    var acc: Float = 0
                    for _ in 0..<4 { acc += Float(rng.next() >> 40) * (1.0 / Float(1 << 24)) }
                    base[i] = (acc - 2) * std * 1.7320508
                }
            }
        }
    }
    return t
}
