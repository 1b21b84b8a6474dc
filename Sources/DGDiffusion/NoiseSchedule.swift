import DGBase
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
    /// DDIM clamps its x0 estimate to ±clipSampleRange when set (pixel-space models; false for SD).
    public let clipSample: Bool
    public let clipSampleRange: Float
    /// The whole scheduler config, for the keys a particular solver reads.
    public let config: JSON

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
        clipSample = config["clip_sample"]?.bool ?? false
        clipSampleRange = Float(config["clip_sample_range"]?.double ?? 1)
        if config["thresholding"]?.bool ?? false {
            throw ConfigError(description: "scheduler config: thresholding (dynamic thresholding) is not supported")
        }
        self.config = config
    }

    /// The SD 1.5 scheduler (diffusers' DDIMScheduler config of runwayml/stable-diffusion-v1-5).
    public static func stableDiffusion() -> NoiseSchedule {
        try! NoiseSchedule(config: [
            "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading",
        ])
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

