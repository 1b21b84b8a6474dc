import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

enum Tiny {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/sd-tiny").path
    static let pipeline = fixtures + "/tiny-sd"
    static let controlnet = fixtures + "/tiny-controlnet"

    /// Fresh models (every trainer changes the weights it trains, so each gets its own).
    static func models() throws -> (LoadedPipeline, NoiseSchedule) {
        let ck = try Checkpoint.open(pipeline)
        let models = try LoadedPipeline(ck)
        let schedule = try NoiseSchedule(config: try JSON.parse(bytes: ck.file("scheduler/scheduler_config.json")!))
        return (models, schedule)
    }

    /// The fixture's ControlNet, whose zero convolutions hold random values (so every
    /// parameter gets a non-trivial gradient).
    static func fixtureControlNet() throws -> ControlNetModel {
        try LoadedPipeline(try Checkpoint.open(controlnet)).controlnet!
    }

    /// Street-scene-like samples: a few horizontal bands of classes (sky, building, road) and
    /// a car box, each class in its own flat colour plus a little texture.
    static func samples(count: Int = 4, size: Int = 64, seed: UInt64 = 7) -> [InMemoryBatchSource.Sample] {
        let colours: [Int: [Float]] = [0: [0.5, 0.25, 0.5], 2: [0.27, 0.27, 0.27], 10: [0.27, 0.5, 0.7], 13: [0, 0, 0.55], 8: [0.4, 0.55, 0.14]]
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { i in
            let horizon = size / 3 + Int(rng.next() % UInt64(size / 4))
            let roadTop = horizon + size / 6
            let carX = Int(rng.next() % UInt64(size / 2)), carW = size / 4
            var labels = [Float](repeating: 0, count: size * size)
            var pixels = [Float](repeating: 0, count: 3 * size * size)
            for y in 0..<size {
                for x in 0..<size {
                    var c = y < horizon ? 10 : (y < roadTop ? (x % 16 < 12 ? 2 : 8) : 0)
                    if y >= roadTop - 4 && y < roadTop + size / 6 && x >= carX && x < carX + carW { c = 13 }
                    if i == 3 && x < 4 && y < 4 { c = 255 }
                    labels[y * size + x] = Float(c)
                    let rgb = colours[c] ?? [0, 0, 0]
                    let tex = Float(rng.next() % 1000) / 1000 * 0.1
                    for k in 0..<3 { pixels[(k * size + y) * size + x] = (rgb[k] + tex) * 2 - 1 }
                }
            }
            let condition = SemanticCondition.oneHot(Tensor(shape: [1, size, size], floats: labels))
            return .init(pixels: Tensor(shape: [3, size, size], floats: pixels),
                         condition: condition.reshaped([20, size, size]), caption: i % 2 == 0 ? "road building sky car" : "")
        }
    }

    static func options(steps: Int = 4, lr: Double = 1e-4, batch: Int = 1, accumulation: Int = 1) -> TrainingOptions {
        var o = TrainingOptions(learningRate: lr, schedule: LRSchedule(.constant, totalSteps: steps))
        o.batchSize = batch
        o.gradientAccumulation = accumulation
        o.seed = 42
        return o
    }

    /// A ControlNet trainer on fresh tiny models; `fixtureControlNet` uses the fixture's
    /// ControlNet instead of one initialised from the UNet.
    static func controlNetTrainer(_ options: TrainingOptions, source: TrainingBatchSource? = nil,
                                  fixtureControlNet useFixture: Bool = false) throws -> DiffusionTrainer {
        let (m, schedule) = try models()
        let cn = useFixture ? try fixtureControlNet() : try ControlNetModel.initialized(from: m.unet!, conditioningChannels: 20, seed: 3)
        return try DiffusionTrainer(target: .controlnet, unet: m.unet!, controlnet: cn, vae: m.vae!, textEncoder: m.textEncoder!,
                                    tokenizer: m.tokenizer!, noiseSchedule: schedule,
                                    source: source ?? InMemoryBatchSource(samples(), seed: 11), options: options)
    }

    static func unetTrainer(_ options: TrainingOptions, source: TrainingBatchSource? = nil) throws -> DiffusionTrainer {
        let (m, schedule) = try models()
        return try DiffusionTrainer(target: .unet, unet: m.unet!, controlnet: nil, vae: m.vae!, textEncoder: m.textEncoder!,
                                    tokenizer: m.tokenizer!, noiseSchedule: schedule,
                                    source: source ?? InMemoryBatchSource(samples().map { .init(pixels: $0.pixels, condition: nil, caption: "") }, seed: 11),
                                    options: options)
    }

    static func scratch() -> String {
        let dir = NSTemporaryDirectory() + "dginstyle-train-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Every parameter's bytes, by name.
func weightBytes(_ model: Module) -> [String: [UInt8]] {
    Dictionary(uniqueKeysWithValues: model.namedParameters().map { name, p in (name, p.value!.contiguous().withRawBytes { Array($0) }) })
}

func relativeDifference(_ a: Tensor, _ b: Tensor) -> Double {
    let x = a.floats, y = b.floats
    var d = 0.0, n = 0.0
    for (u, v) in zip(x, y) { d += Double(u - v) * Double(u - v); n += Double(v) * Double(v) }
    return n > 0 ? (d / n).squareRoot() : d.squareRoot()
}
