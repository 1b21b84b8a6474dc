import DGCheckpoint
import DGTensor
import Foundation

/// A sampler over a fixed list of timesteps. Steps are addressed by index (0 = the noisiest),
/// which is what multistep solvers and image-to-image (which starts part-way) need.
public protocol Scheduler {
    var schedule: NoiseSchedule { get }
    var timesteps: [Int] { get }
    /// Forgets the history of a previous run (multistep solvers keep the last model outputs).
    mutating func reset()
    /// The latents at the input of step `index + 1` from those at the input of step `index` and
    /// the model's noise estimate there. `noise` supplies fresh noise to stochastic samplers.
    mutating func step(_ eps: Tensor, index: Int, sample: Tensor, noise: NoiseGenerator?) -> Tensor
    /// Clean latents noised to the level of the input of step `index`; `index == timesteps.count`
    /// is the level after the last step.
    func addNoise(_ x0: Tensor, noise: Tensor, index: Int) -> Tensor
}

extension Scheduler {
    /// The first step that image-to-image runs at `strength` (diffusers' get_timesteps: the last
    /// int(steps * strength) steps run). Strength 1 starts from pure noise at step 0.
    public func startIndex(strength: Double) -> Int {
        let steps = timesteps.count
        let run = min(Int(Double(steps) * strength), steps)
        return max(steps - run, 0)
    }
}

/// Which sampler `makeScheduler` builds.
public enum SchedulerKind: String, CaseIterable, Sendable {
    case ddim
    /// DPM-Solver++ (2M): diffusers' DPMSolverMultistepScheduler with its defaults.
    case dpmSolver = "dpm++2m"
}

/// A scheduler of `kind` over `schedule` (read from any diffusers scheduler config, as
/// `SomeScheduler.from_config(pipe.scheduler.config)` does).
public func makeScheduler(_ kind: SchedulerKind, _ schedule: NoiseSchedule, steps: Int, eta: Float = 0) throws -> any Scheduler {
    switch kind {
    case .ddim: return try DDIMScheduler(schedule, steps: steps, eta: eta)
    case .dpmSolver:
        guard eta == 0 else { throw NoiseSchedule.ConfigError(description: "eta applies to DDIM only") }
        return try DPMSolverMultistepScheduler(schedule, steps: steps)
    }
}

/// DDIM (Song et al.) as diffusers' DDIMScheduler: timesteps spaced over the training range,
/// deterministic for eta = 0, and with eta > 0 the stochastic sampler that adds
/// eta * sigma_t(DDPM) of fresh noise each step.
public struct DDIMScheduler: Scheduler, Sendable {
    public let schedule: NoiseSchedule
    public let timesteps: [Int]
    public let eta: Float
    let stepRatio: Int

    public init(_ schedule: NoiseSchedule, steps: Int, eta: Float = 0) throws {
        guard steps > 0, steps <= schedule.trainTimesteps else {
            throw NoiseSchedule.ConfigError(description: "DDIM needs between 1 and \(schedule.trainTimesteps) steps, not \(steps)")
        }
        guard eta >= 0, eta.isFinite else { throw NoiseSchedule.ConfigError(description: "DDIM eta must be >= 0, not \(eta)") }
        self.schedule = schedule
        self.eta = eta
        let n = schedule.trainTimesteps
        stepRatio = n / steps
        switch schedule.timestepSpacing {
        case "leading":
            timesteps = (0..<steps).reversed().map { $0 * (n / steps) + schedule.stepsOffset }
        case "trailing":
            let r = Double(n) / Double(steps)
            // np.round rounds halves to even.
            timesteps = stride(from: Double(n), to: 0, by: -r).map { Int($0.rounded(.toNearestOrEven)) - 1 }
        case "linspace":
            timesteps = linspace(0, Double(n - 1), steps).reversed().map { Int($0.rounded(.toNearestOrEven)) }
        default:
            throw NoiseSchedule.ConfigError(description: "timestep_spacing \"\(schedule.timestepSpacing)\" is not supported (leading, trailing, linspace)")
        }
    }

    public mutating func reset() {}

    func alphaPrev(_ t: Int) -> Float {
        let prev = t - stepRatio
        return prev >= 0 ? schedule.alphasCumprod[prev] : (schedule.setAlphaToOne ? 1 : schedule.alphasCumprod[0])
    }

    /// x_{t-1} from x_t and the predicted noise (eta = 0); `noise` is needed only for eta > 0.
    public func step(noise eps: Tensor, timestep t: Int, sample: Tensor, variance: Tensor? = nil) -> Tensor {
        let a = schedule.alphasCumprod[t]
        let aPrev = alphaPrev(t)
        let b = 1 - a
        let clip = schedule.clipSample, range = schedule.clipSampleRange
        // The same float32 operations in the same order as diffusers.
        let std = eta * (((1 - aPrev) / b) * (1 - a / aPrev)).squareRoot()
        let direction = (1 - aPrev - std * std).squareRoot()
        let out = Tensor(zeros: sample.shape)
        let x = sample.contiguous(), e = eps.contiguous()
        let z = variance?.contiguous()
        x.withFloats { xp in
            e.withFloats { ep in
                out.withMutableFloats { op in
                    let (xp, ep, op) = (xp, ep, op)
                    func body(_ zp: UnsafeBufferPointer<Float>?) {
                        Parallel.forEach(op.count, minimumChunk: 65536) { r in
                            for i in r {
                                var x0 = (xp[i] - b.squareRoot() * ep[i]) / a.squareRoot()
                                if clip { x0 = min(max(x0, -range), range) }
                                var v = aPrev.squareRoot() * x0 + direction * ep[i]
                                if let zp { v += std * zp[i] }
                                op[i] = v
                            }
                        }
                    }
                    if let z, std > 0 { z.withFloats { body($0) } } else { body(nil) }
                }
            }
        }
        return out
    }

    public mutating func step(_ eps: Tensor, index: Int, sample: Tensor, noise: NoiseGenerator?) -> Tensor {
        var variance: Tensor?
        if eta > 0 {
            guard let noise else { fatalError("DDIM with eta > 0 needs a noise generator") }
            variance = noise.normal(sample.shape)
        }
        return step(noise: eps, timestep: timesteps[index], sample: sample, variance: variance)
    }

    public func addNoise(_ x0: Tensor, noise: Tensor, index: Int) -> Tensor {
        let ac = index < timesteps.count ? schedule.alphasCumprod[timesteps[index]] : alphaPrev(timesteps[timesteps.count - 1])
        return scaledSum(x0, ac.squareRoot(), noise, (1 - ac).squareRoot())
    }
}

/// DPM-Solver++ (Lu et al. 2022) as diffusers' DPMSolverMultistepScheduler with its default
/// configuration: algorithm "dpmsolver++" (the solver works on the x0 estimate), solver order 2
/// with the "midpoint" second-order update, lower_order_final (a first-order last step, always
/// so with final_sigmas_type "zero"), no Karras sigmas. Timestep spacing as diffusers spaces
/// them for this scheduler (note "leading" divides by steps + 1, unlike DDIM).
public struct DPMSolverMultistepScheduler: Scheduler, Sendable {
    public let schedule: NoiseSchedule
    public let timesteps: [Int]
    /// sigma_i = sqrt((1 - ᾱ) / ᾱ) at each timestep, then the final sigma (0).
    public let sigmas: [Float]
    public let solverOrder: Int
    public let lowerOrderFinal: Bool
    public let eulerAtFinal: Bool
    public let finalSigmaZero: Bool

    var previousX0: Tensor?
    var lowerOrderNums = 0

    public init(_ schedule: NoiseSchedule, steps: Int) throws {
        let c = schedule.config
        func fail(_ s: String) -> NoiseSchedule.ConfigError { NoiseSchedule.ConfigError(description: "DPM-Solver++: " + s) }
        guard steps > 0, steps <= schedule.trainTimesteps else { throw fail("needs between 1 and \(schedule.trainTimesteps) steps, not \(steps)") }
        let algorithm = c["algorithm_type"]?.string ?? "dpmsolver++"
        guard algorithm == "dpmsolver++" else { throw fail("algorithm_type \"\(algorithm)\" is not supported (dpmsolver++)") }
        let solverType = c["solver_type"]?.string ?? "midpoint"
        guard solverType == "midpoint" else { throw fail("solver_type \"\(solverType)\" is not supported (midpoint)") }
        solverOrder = c["solver_order"]?.int ?? 2
        guard [1, 2].contains(solverOrder) else { throw fail("solver_order \(solverOrder) is not supported (1, 2)") }
        for key in ["use_karras_sigmas", "use_lu_lambdas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "thresholding"]
        where c[key]?.bool ?? false {
            throw fail("\(key) is not supported")
        }
        if let v = c["variance_type"], !v.isNull { throw fail("variance_type is not supported") }
        if let l = c["lambda_min_clipped"]?.double, l.isFinite { throw fail("lambda_min_clipped is not supported") }
        lowerOrderFinal = c["lower_order_final"]?.bool ?? true
        eulerAtFinal = c["euler_at_final"]?.bool ?? false
        let finalType = c["final_sigmas_type"]?.string ?? "zero"
        guard ["zero", "sigma_min"].contains(finalType) else { throw fail("final_sigmas_type \"\(finalType)\" is not supported") }
        finalSigmaZero = finalType == "zero"
        self.schedule = schedule

        let n = schedule.trainTimesteps
        switch schedule.timestepSpacing {
        case "linspace":
            timesteps = Array(linspace(0, Double(n - 1), steps + 1).map { Int($0.rounded(.toNearestOrEven)) }.reversed().dropLast())
        case "leading":
            let ratio = n / (steps + 1)
            timesteps = (1...steps).reversed().map { $0 * ratio + schedule.stepsOffset }
        case "trailing":
            let r = Double(n) / Double(steps)
            timesteps = stride(from: Double(n), to: 0, by: -r).map { Int($0.rounded(.toNearestOrEven)) - 1 }
        default:
            throw fail("timestep_spacing \"\(schedule.timestepSpacing)\" is not supported (leading, trailing, linspace)")
        }
        let ac = schedule.alphasCumprod
        func sigma(_ a: Float) -> Float { ((1 - a) / a).squareRoot() }
        sigmas = timesteps.map { sigma(ac[$0]) } + [finalSigmaZero ? 0 : sigma(ac[0])]
    }

    public mutating func reset() {
        previousX0 = nil
        lowerOrderNums = 0
    }

    /// (alpha_t, sigma_t) of the VP process for sigma = sigma_t / alpha_t.
    static func alphaSigma(_ sigma: Float) -> (Float, Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    public mutating func step(_ eps: Tensor, index: Int, sample: Tensor, noise: NoiseGenerator?) -> Tensor {
        let last = index == timesteps.count - 1
        let firstOrderHere = solverOrder == 1 || lowerOrderNums < 1
            || (last && (eulerAtFinal || (lowerOrderFinal && timesteps.count < 15) || finalSigmaZero))
        let (alphaS0, sigmaS0) = Self.alphaSigma(sigmas[index])
        let x0 = scaledSum(sample, 1 / alphaS0, eps, -sigmaS0 / alphaS0, exact: { x, e in (x - sigmaS0 * e) / alphaS0 })
        let (alphaT, sigmaT) = Self.alphaSigma(sigmas[index + 1])
        let lambdaT = Foundation.log(alphaT) - Foundation.log(sigmaT)
        let lambdaS0 = Foundation.log(alphaS0) - Foundation.log(sigmaS0)
        let h = lambdaT - lambdaS0
        let ratio = sigmaT / sigmaS0
        let c = alphaT * (Foundation.exp(-h) - 1)
        let out: Tensor
        if firstOrderHere || previousX0 == nil {
            out = scaledSum(sample, ratio, x0, -c, exact: { x, d0 in ratio * x - c * d0 })
        } else {
            let (alphaS1, sigmaS1) = Self.alphaSigma(sigmas[index - 1])
            let lambdaS1 = Foundation.log(alphaS1) - Foundation.log(sigmaS1)
            let r0 = (lambdaS0 - lambdaS1) / h
            let m1 = previousX0!.contiguous()
            let xs = sample.contiguous(), m0 = x0
            let result = Tensor(zeros: sample.shape)
            xs.withFloats { xp in m0.withFloats { ap in m1.withFloats { bp in result.withMutableFloats { op in
                let (xp, ap, bp, op) = (xp, ap, bp, op)
                Parallel.forEach(op.count, minimumChunk: 65536) { r in
                    for i in r {
                        let d1 = (1 / r0) * (ap[i] - bp[i])
                        op[i] = ratio * xp[i] - c * ap[i] - 0.5 * c * d1
                    }
                }
            } } } }
            out = result
        }
        previousX0 = x0
        if lowerOrderNums < solverOrder { lowerOrderNums += 1 }
        return out
    }

    public func addNoise(_ x0: Tensor, noise: Tensor, index: Int) -> Tensor {
        let (alpha, sigma) = Self.alphaSigma(sigmas[min(index, sigmas.count - 1)])
        return scaledSum(x0, alpha, noise, sigma)
    }
}

/// a * x + b * y element-wise (or `exact(x, y)` when the formula must keep the reference's
/// order of operations), for tensors of one shape.
func scaledSum(_ x: Tensor, _ a: Float, _ y: Tensor, _ b: Float, exact: ((Float, Float) -> Float)? = nil) -> Tensor {
    precondition(x.shape == y.shape || x.count == y.count, "scaledSum: shapes \(x.shape) and \(y.shape) differ")
    let xs = x.converted(to: .f32).contiguous(), ys = y.converted(to: .f32).contiguous()
    let out = Tensor(zeros: x.shape)
    xs.withFloats { xp in ys.withFloats { yp in out.withMutableFloats { op in
        let (xp, yp, op) = (xp, yp, op)
        Parallel.forEach(op.count, minimumChunk: 65536) { r in
            if let exact {
                for i in r { op[i] = exact(xp[i], yp[i]) }
            } else {
                for i in r { op[i] = a * xp[i] + b * yp[i] }
            }
        }
    } } }
    return out
}

/// numpy.linspace in double precision: start + i * step, with the last value exactly `end`.
func linspace(_ start: Double, _ end: Double, _ n: Int) -> [Double] {
    guard n > 1 else { return n == 1 ? [start] : [] }
    let step = (end - start) / Double(n - 1)
    return (0..<n).map { $0 == n - 1 ? end : start + Double($0) * step }
}
