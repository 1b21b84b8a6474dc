import Foundation

/// diffusers' `get_scheduler` learning-rate schedules, as multipliers of the base rate. The
/// multiplier for optimizer update k (0-based) is lambda(k), because PyTorch's LambdaLR sets
/// lambda(0) at construction and advances once after every update; so with warm-up the very
/// first update has rate 0, exactly as in the diffusers training scripts.
public enum LRScheduleKind: String, CaseIterable, Sendable {
    case constant
    case constantWithWarmup = "constant_with_warmup"
    case linear
    case cosine
    case polynomial
}

public struct LRSchedule: Sendable, Equatable {
    public var kind: LRScheduleKind
    public var warmupSteps: Int
    /// Optimizer updates in the whole run (the decaying schedules end there).
    public var totalSteps: Int
    /// cosine: periods of the cosine over the decay (diffusers' num_cycles; 0.5 is one half-cosine from 1 to 0).
    public var cycles: Double = 0.5
    /// polynomial: the rate reached at `totalSteps`, and the power of the decay.
    public var endLearningRate: Double = 1e-7
    public var power: Double = 1

    public init(_ kind: LRScheduleKind, warmupSteps: Int = 0, totalSteps: Int,
                cycles: Double = 0.5, endLearningRate: Double = 1e-7, power: Double = 1) {
        self.kind = kind
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.cycles = cycles
        self.endLearningRate = endLearningRate
        self.power = power
    }

    /// Whether the rates depend on `totalSteps` (a resumed run may then not change it).
    public var dependsOnTotal: Bool { kind != .constant && kind != .constantWithWarmup }

    /// lambda(step): the factor applied to the base rate for update `step`. In double precision,
    /// as the Python lambdas compute it.
    public func multiplier(step: Int, baseLearningRate: Double) -> Double {
        let s = Double(step), w = Double(warmupSteps), n = Double(totalSteps)
        switch kind {
        case .constant:
            return 1
        case .constantWithWarmup:
            return step < warmupSteps ? s / max(1, w) : 1
        case .linear:
            if step < warmupSteps { return s / max(1, w) }
            return max(0, (n - s) / max(1, n - w))
        case .cosine:
            if step < warmupSteps { return s / max(1, w) }
            let progress = (s - w) / max(1, n - w)
            return max(0, 0.5 * (1 + cos(Double.pi * cycles * 2 * progress)))
        case .polynomial:
            // diffusers refuses lr_end > lr_init; the caller checks that.
            if step < warmupSteps { return s / max(1, w) }
            if step > totalSteps { return endLearningRate / baseLearningRate }
            let range = baseLearningRate - endLearningRate
            let decaySteps = n - w
            let remaining = 1 - (s - w) / decaySteps
            return (range * pow(remaining, power) + endLearningRate) / baseLearningRate
        }
    }

    public func learningRate(step: Int, base: Double) -> Double { base * multiplier(step: step, baseLearningRate: base) }
}
