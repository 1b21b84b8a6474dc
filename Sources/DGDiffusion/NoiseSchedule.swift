import DGLayers
import DGCheckpoint
import DGTensor
import Foundation

/// The training noise schedule of a diffusers scheduler config: betas, cumulative alphas, and
/// the forward process x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε. Computed in float32 in the same
/// order as diffusers, so ᾱ agrees bit for bit.
public struct NoiseSchedule: Sendable {
    public let trainTimesteps: Int
    public let alphasCumprod: [Float]
    public let predictionType: String
    public let stepsOffset: Int
    public let setAlphaToOne: Bool
    public let timestepSpacing: String

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(config: JSON) throws {
        trainTimesteps = config["num_train_timesteps"]?.int ?? 1000
        let start = config["beta_start"]?.double ?? 0.0001
        let end = config["beta_end"]?.double ?? 0.02
        let schedule = config["beta_schedule"]?.string ?? "linear"
        guard config["trained_betas"]?.isNull ?? true else {
            throw ConfigError(description: "scheduler config: trained_betas is not supported")
        }
        var betas: [Float]
        switch schedule {
        // The ends are Python floats (double) handed to a float32 linspace.
        case "linear": betas = NoiseSchedule.linspace(Float(start), Float(end), trainTimesteps)
        case "scaled_linear":
            betas = NoiseSchedule.linspace(Float(start.squareRoot()), Float(end.squareRoot()), trainTimesteps).map { $0 * $0 }
        default: throw ConfigError(description: "scheduler config: beta_schedule \"\(schedule)\" is not supported (linear, scaled_linear)")
        }
        // torch.cumprod accumulates float32 input in double on the CPU.
        var product: Double = 1
        alphasCumprod = betas.map { b in product *= Double(1 - b); return Float(product) }
        predictionType = config["prediction_type"]?.string ?? "epsilon"
        guard predictionType == "epsilon" else {
            throw ConfigError(description: "scheduler config: prediction_type \"\(predictionType)\" is not supported (epsilon)")
        }
        stepsOffset = config["steps_offset"]?.int ?? 0
        setAlphaToOne = config["set_alpha_to_one"]?.bool ?? true
        timestepSpacing = config["timestep_spacing"]?.string ?? "leading"
    }

    /// torch.linspace in float32: start + i * step for the first half, end - (n-1-i) * step for
    /// the second, which is how PyTorch keeps both ends exact.
    static func linspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        guard n > 1 else { return [start] }
        let step = (end - start) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in i < half ? start + step * Float(i) : end - step * Float(n - 1 - i) }
    }

    /// x_t for each sample of x0 [N, ...] at its own timestep.
    public func addNoise(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        let n = x0.shape[0], per = x0.count / n
        let a = x0.floats, e = noise.floats
        var out = [Float](repeating: 0, count: x0.count)
        for s in 0..<n {
            let ac = alphasCumprod[timesteps[s]]
            let sa = ac.squareRoot(), sb = (1 - ac).squareRoot()
            for i in (s * per)..<((s + 1) * per) { out[i] = sa * a[i] + sb * e[i] }
        }
        return Tensor(shape: x0.shape, floats: out)
    }
}

/// DDIM (Song et al.) as diffusers' DDIMScheduler: timesteps spaced over the training range,
/// deterministic for eta = 0.
public struct DDIMScheduler: Sendable {
    public let schedule: NoiseSchedule
    public let timesteps: [Int]
    let stepRatio: Int

    public init(_ schedule: NoiseSchedule, steps: Int) throws {
        guard steps > 0, steps <= schedule.trainTimesteps else {
            throw NoiseSchedule.ConfigError(description: "DDIM needs between 1 and \(schedule.trainTimesteps) steps, not \(steps)")
        }
        self.schedule = schedule
        let n = schedule.trainTimesteps
        switch schedule.timestepSpacing {
        case "leading":
            let ratio = n / steps
            stepRatio = ratio
            timesteps = (0..<steps).reversed().map { $0 * ratio + schedule.stepsOffset }
        case "trailing":
            stepRatio = n / steps
            let r = Double(n) / Double(steps)
            timesteps = stride(from: Double(n), to: 0, by: -r).map { Int($0.rounded()) - 1 }
        default:
            throw NoiseSchedule.ConfigError(description: "timestep_spacing \"\(schedule.timestepSpacing)\" is not supported (leading, trailing)")
        }
    }

    /// x_{t-1} from x_t and the predicted noise (eta = 0).
    public func step(noise eps: Tensor, timestep t: Int, sample: Tensor) -> Tensor {
        let prev = t - stepRatio
        let a = schedule.alphasCumprod[t]
        let aPrev = prev >= 0 ? schedule.alphasCumprod[prev] : (schedule.setAlphaToOne ? 1 : schedule.alphasCumprod[0])
        let b = 1 - a
        let x = sample.floats, e = eps.floats
        let out = zip(x, e).map { xv, ev -> Float in
            let x0 = (xv - b.squareRoot() * ev) / a.squareRoot()
            return aPrev.squareRoot() * x0 + (1 - aPrev).squareRoot() * ev
        }
        return Tensor(shape: sample.shape, floats: out)
    }
}
