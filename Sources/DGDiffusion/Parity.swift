import DGAutograd
import DGBase
import DGLayers
import DGCheckpoint
import DGModels
import DGTensor
import Foundation

/// One comparison of ours against the reference.
public struct ParityCheck: Sendable {
    public let name: String
    public let maxAbs: Double
    public let relative: Double
    public let tolerance: Double
    public var passed: Bool { relative <= tolerance && maxAbs.isFinite }

    public var line: String {
        let pad = name.padding(toLength: max(name.count, 48), withPad: " ", startingAt: 0)
        return "\(pad) max abs \(String(format: "%.3e", maxAbs))  rel \(String(format: "%.3e", relative))  (tol \(String(format: "%.0e", tolerance)))  \(passed ? "pass" : "FAIL")"
    }

    public init(_ name: String, ours: Tensor, reference: Tensor, tolerance: Double) {
        self.name = name
        self.tolerance = tolerance
        guard ours.shape == reference.shape || ours.count == reference.count else {
            maxAbs = .infinity
            relative = .infinity
            return
        }
        let a = ours.floats, b = reference.floats
        var diff = 0.0, norm = 0.0, worst = 0.0
        for (x, y) in zip(a, b) {
            let d = Double(x) - Double(y)
            diff += d * d
            norm += Double(y) * Double(y)
            worst = max(worst, abs(d))
        }
        maxAbs = a.contains { !$0.isFinite } ? .infinity : worst
        relative = norm > 0 ? (diff / norm).squareRoot() : diff.squareRoot()
    }
}

/// Runs every check a fixture folder describes (see `dginstyle parity --help`).
public struct ParityRun {
    /// Relative error allowed everywhere (exact where integers are compared). Float32 with a
    /// different summation order than PyTorch's gives ~1e-6 on these models (forwards, one
    /// training step's gradients, the 4-step sampling run); 2e-5 leaves a 10x margin and still
    /// catches any real mistake, which shows up as 1e-3 or worse.
    public static let tolerance = 2e-5

    /// Relative error allowed for the forwards and the sampling run with bf16 weights and bf16
    /// products (`dtype` bf16) against the same f32 references: bf16 keeps 8 significant bits
    /// (rounding error up to 2^-9 = 2e-3 relative per weight and per activation at each product's
    /// input), which a network of a few dozen layers compounds to ~1e-2. 5e-2 admits that and still
    /// fails a wrong kernel, whose error is of the order of the output itself (relative ~1).
    public static let bf16Tolerance = 5e-2

    let fixture: String
    let io: SafeTensorsFile
    /// How the models' weights are held: f32 (every check, at `tolerance`), or bf16 (forwards and
    /// the sampling run at `bf16Tolerance`; the scheduler as in f32; no gradient checks, since
    /// training keeps f32 masters of what it trains).
    public let dtype: DType

    public init(fixture: String, dtype: DType = .f32) throws {
        self.fixture = fixture
        self.dtype = dtype
        io = try SafeTensorsFile(path: fixture + "/io.safetensors")
    }

    /// The tolerance of the checks whose results depend on how the weights are held.
    var modelTolerance: Double { dtype == .f32 ? Self.tolerance : Self.bf16Tolerance }

    func ref(_ name: String) throws -> Tensor { try io.tensor(name).converted(to: .f32).copied() }

    /// The checkpoints of the folder, grouped as (label, pipeline, controlnet).
    func layouts() throws -> [(String, Checkpoint, Checkpoint?)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: fixture).sorted()
        var pipeline: String?, controlnet: String?, ldm: String?, controlLDM: String?
        for name in names {
            let path = fixture + "/" + name
            if FileManager.default.fileExists(atPath: path + "/model_index.json") { pipeline = path; continue }
            if let data = FileManager.default.contents(atPath: path + "/config.json"),
               (try? JSON.parse(bytes: Array(data)))?["_class_name"]?.string == "ControlNetModel" { controlnet = path; continue }
            let singleFile = [".safetensors", ".ckpt", ".pth", ".pt"].contains { name.hasSuffix($0) }
            guard singleFile, let ck = try? Checkpoint.open(path, options: .init(configDirectory: pipeline)) else { continue }
            if ck.layout == .ldm { ldm = path }
            if ck.layout == .controlnetLDM { controlLDM = path }
        }
        guard let pipeline else { throw FileError(fixture, "holds no diffusers pipeline folder (model_index.json)") }
        var out: [(String, Checkpoint, Checkpoint?)] = [("diffusers", try Checkpoint.open(pipeline), try controlnet.map { try Checkpoint.open($0) })]
        if let ldm {
            out.append(("ldm", try Checkpoint.open(ldm, options: .init(configDirectory: pipeline)),
                        try controlLDM.map { try Checkpoint.open($0, options: .init(configDirectory: controlnet)) }))
        }
        return out
    }

    public func run(progress: (ParityCheck) -> Void = { _ in }) throws -> [ParityCheck] {
        var checks: [ParityCheck] = []
        func add(_ c: ParityCheck) { checks.append(c); progress(c) }
        let layouts = try layouts()
        for (label, ck, cn) in layouts {
            var models = try LoadedPipeline(ck, dtype: dtype)
            if let cn { models.controlnet = try LoadedPipeline(cn, dtype: dtype).controlnet }
            try forwardChecks(label, models, add)
            if dtype == .f32 { try gradientChecks(label, models, add) }
            if label == layouts[0].0 { try schedulerChecks(ck, models, add) }
            try samplingCheck(label, ck, models, add)
        }
        return checks
    }

    func forwardChecks(_ label: String, _ m: LoadedPipeline, _ add: (ParityCheck) -> Void) throws {
        let f = modelTolerance
        try Autograd.noGrad {
            if let tokenizer = m.tokenizer, let data = FileManager.default.contents(atPath: fixture + "/prompts.json"),
               let prompts = try JSON.parse(bytes: Array(data)).array?.compactMap(\.string) {
                let ids = Tensor(shape: [prompts.count, 77], floats: prompts.flatMap { tokenizer($0).map(Float.init) })
                add(ParityCheck("[\(label)] tokenizer clip.input_ids", ours: ids, reference: try ref("clip.input_ids"), tolerance: 0))
            }
            if let clip = m.textEncoder {
                let out = clip(try io.tensor("clip.input_ids")).value
                add(ParityCheck("[\(label)] text_encoder clip.last_hidden_state", ours: out, reference: try ref("clip.last_hidden_state"), tolerance: f))
            }
            let sample = Var(try ref("unet.sample")), text = Var(try ref("unet.encoder_hidden_states"))
            let t = try ref("unet.timestep").floats
            if let unet = m.unet {
                add(ParityCheck("[\(label)] unet unet.out", ours: unet(sample, timesteps: t, text: text).value, reference: try ref("unet.out"), tolerance: f))
            }
            if let cn = m.controlnet {
                let cond = try ref("controlnet.cond")
                add(ParityCheck("[\(label)] one-hot controlnet.labels -> controlnet.cond",
                                ours: SemanticCondition.oneHot(try io.tensor("controlnet.labels"), classes: cn.conditioning_channels - 1),
                                reference: cond, tolerance: 0))
                let r = cn(sample, timesteps: t, text: text, condition: Var(cond))
                for (i, d) in r.down.enumerated() {
                    add(ParityCheck("[\(label)] controlnet controlnet.down.\(i)", ours: d.value, reference: try ref("controlnet.down.\(i)"), tolerance: f))
                }
                add(ParityCheck("[\(label)] controlnet controlnet.mid", ours: r.mid.value, reference: try ref("controlnet.mid"), tolerance: f))
                if let unet = m.unet {
                    add(ParityCheck("[\(label)] unet+controlnet unet_with_control.out",
                                    ours: unet(sample, timesteps: t, text: text, control: r).value,
                                    reference: try ref("unet_with_control.out"), tolerance: f))
                }
            }
            if let vae = m.vae {
                add(ParityCheck("[\(label)] vae vae.moments", ours: vae.encodeMoments(Var(try ref("vae.image"))).value, reference: try ref("vae.moments"), tolerance: f))
                add(ParityCheck("[\(label)] vae vae.decoded", ours: vae.decode(Var(try ref("vae.latent"))).value, reference: try ref("vae.decoded"), tolerance: f))
            }
        }
    }

    /// One training step's loss and gradients: the UNet alone, and the ControlNet with the UNet frozen.
    func gradientChecks(_ label: String, _ m: LoadedPipeline, _ add: (ParityCheck) -> Void) throws {
        guard let unet = m.unet else { return }
        let g = Self.tolerance
        let text = Var(try ref("unet.encoder_hidden_states"))
        let noise = Var(try ref("ddpm.noise").slice(axis: 0, 0..<2).contiguous())
        let timesteps: [Float] = [250, 999]
        let unetParameters = unet.namedParameters()
        for (file, model) in [("unet_step_grads", unet as Module), ("controlnet_step_grads", m.controlnet as Module?)] {
            let path = fixture + "/" + file + ".safetensors"
            guard let model, FileManager.default.fileExists(atPath: path) else { continue }
            let grads = try SafeTensorsFile(path: path)
            let noisy = Var(try grads.tensor("noisy").copied())
            let training = model === unet
            for (_, p) in unetParameters { p.requiresGrad = training; p.grad = nil }
            let params = model.namedParameters()
            for (_, p) in params { p.requiresGrad = true; p.grad = nil }
            var control: ControlResiduals?
            if let cn = model as? ControlNetModel {
                control = cn(noisy, timesteps: timesteps, text: text, condition: Var(try ref("controlnet.cond")))
            }
            let loss = mseLoss(unet(noisy, timesteps: timesteps, text: text, control: control), noise)
            Autograd.backward(loss)
            add(ParityCheck("[\(label)] \(file) loss", ours: loss.value, reference: try grads.tensor("loss").copied(), tolerance: Self.tolerance))
            var worst: ParityCheck?
            for (name, p) in params {
                let reference = try grads.tensor("grad." + name).copied()
                let c = ParityCheck("[\(label)] \(file) grad.\(name)", ours: p.grad ?? Tensor(zeros: p.shape), reference: reference, tolerance: g)
                if !c.passed { add(c) }
                if worst == nil || c.relative > worst!.relative { worst = c }
            }
            if let worst {
                add(ParityCheck(summary: "[\(label)] \(file) all \(params.count) gradients (worst: \(worst.name.split(separator: " ").last!))", worst))
            }
            for (_, p) in unetParameters { p.requiresGrad = true; p.grad = nil }
            for (_, p) in params { p.grad = nil }
        }
    }

    func schedulerChecks(_ ck: Checkpoint, _ m: LoadedPipeline, _ add: (ParityCheck) -> Void) throws {
        guard let bytes = ck.file("scheduler/scheduler_config.json") else { return }
        let schedule = try NoiseSchedule(config: try JSON.parse(bytes: bytes))
        let f = Self.tolerance
        add(ParityCheck("scheduler sched.alphas_cumprod", ours: Tensor(shape: [schedule.alphasCumprod.count], floats: schedule.alphasCumprod),
                        reference: try ref("sched.alphas_cumprod"), tolerance: f))
        let x0 = try ref("ddpm.x0"), noise = try ref("ddpm.noise")
        let t = try ref("ddpm.t").floats.map { Int($0) }
        add(ParityCheck("scheduler ddpm.noisy (add_noise)", ours: schedule.addNoise(x0, noise: noise, timesteps: t), reference: try ref("ddpm.noisy"), tolerance: f))
        for steps in [20, 50] {
            let ddim = try DDIMScheduler(schedule, steps: steps)
            add(ParityCheck("scheduler ddim\(steps).timesteps", ours: Tensor(shape: [steps], floats: ddim.timesteps.map(Float.init)),
                            reference: try ref("ddim\(steps).timesteps"), tolerance: 0))
        }
        let ddim = try DDIMScheduler(schedule, steps: 20)
        for name in io.entries.map(\.name) where name.hasPrefix("ddim20.step.t") {
            let step = Int(name.dropFirst("ddim20.step.t".count))!
            add(ParityCheck("scheduler \(name)", ours: ddim.step(noise: try ref("ddim.eps"), timestep: step, sample: try ref("ddim.sample")),
                            reference: try ref(name), tolerance: f))
        }
    }
}

extension ParityRun {
    /// The whole ControlNet sampling run of the fixture: prompt 0, negative prompt "", guidance
    /// 7.5, DDIM with 4 steps from `pipe.latents_init`, decoded.
    func samplingCheck(_ label: String, _ ck: Checkpoint, _ m: LoadedPipeline, _ add: (ParityCheck) -> Void) throws {
        guard let unet = m.unet, let vae = m.vae, let clip = m.textEncoder, let tokenizer = m.tokenizer,
              io.contains("pipe.latents_final"), let bytes = ck.file("scheduler/scheduler_config.json"),
              let data = FileManager.default.contents(atPath: fixture + "/prompts.json"),
              let prompt = try JSON.parse(bytes: Array(data)).array?.first?.string else { return }
        let scheduler = try DDIMScheduler(try NoiseSchedule(config: try JSON.parse(bytes: bytes)), steps: 4)
        let text = encodePrompts(["", prompt], tokenizer: tokenizer, textEncoder: clip)
        let denoiser = GuidedDenoiser(unet: unet, controlnet: m.controlnet, scheduler: scheduler)
        let latents = denoiser.denoise(try ref("pipe.latents_init"), text: text, condition: try ref("pipe.cond"))
        add(ParityCheck("[\(label)] pipeline pipe.latents_final (4 DDIM steps)", ours: latents, reference: try ref("pipe.latents_final"), tolerance: modelTolerance))
        add(ParityCheck("[\(label)] pipeline pipe.image", ours: vae.decodeToImage(latents), reference: try ref("pipe.image"), tolerance: modelTolerance))
    }
}

extension ParityCheck {
    init(summary name: String, _ worst: ParityCheck) {
        self.name = name
        maxAbs = worst.maxAbs
        relative = worst.relative
        tolerance = worst.tolerance
    }
}
