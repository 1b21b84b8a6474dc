import DGBase
import DGCheckpoint
import DGTensor
import Foundation
import XCTest
@testable import DGDiffusion

enum Fixture {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static let tinySD = root + "/sd-tiny/tiny-sd"
    static let tinyControlNet = root + "/sd-tiny/tiny-controlnet"

    static let schedulers: JSON = {
        do { return try JSON.parse(bytes: Data(contentsOf: URL(fileURLWithPath: root + "/schedulers.json"))) } catch {
            fatalError("cannot read schedulers.json: \(error)")
        }
    }()

    static func floats(_ j: JSON?) -> [Float] { j?.array?.compactMap(\.double).map(Float.init) ?? [] }
    static func ints(_ j: JSON?) -> [Int] { j?.array?.compactMap(\.int) ?? [] }

    static func schedule(spacing: String? = nil) throws -> NoiseSchedule {
        var config = schedulers["config"]!
        if let spacing { config.set("timestep_spacing", .string(spacing)) }
        return try NoiseSchedule(config: config)
    }
}

/// Largest |a - b| relative to the largest |b|.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var worst = 0.0, scale = 0.0
    for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - Double(y))); scale = max(scale, abs(Double(y))) }
    return worst / max(scale, 1e-30)
}

final class SchedulerTests: XCTestCase {
    let shape = Fixture.ints(Fixture.schedulers["shape"])

    /// DDIM and DPM-Solver++ timesteps for every spacing, and DPM's sigmas, exactly as diffusers.
    func testTimestepsAndSigmasMatchDiffusers() throws {
        for (key, value) in Fixture.schedulers["ddim"]!["timesteps"]!.objectPairs! {
            let parts = key.split(separator: "/")
            let ddim = try DDIMScheduler(try Fixture.schedule(spacing: String(parts[0])), steps: Int(parts[1])!)
            XCTAssertEqual(ddim.timesteps, Fixture.ints(value), "DDIM \(key)")
        }
        for (key, value) in Fixture.schedulers["dpm"]!["timesteps"]!.objectPairs! {
            let parts = key.split(separator: "/")
            let dpm = try DPMSolverMultistepScheduler(try Fixture.schedule(spacing: String(parts[0])), steps: Int(parts[1])!)
            XCTAssertEqual(dpm.timesteps, Fixture.ints(value), "DPM \(key)")
            let sigmas = Fixture.floats(Fixture.schedulers["dpm"]!["sigmas"]![key])
            XCTAssertEqual(dpm.sigmas.count, sigmas.count)
            XCTAssertLessThan(relativeError(dpm.sigmas, sigmas), 1e-6, "DPM sigmas \(key)")
        }
    }

    /// A whole DDIM run with eta 0.5, given diffusers' model outputs and variance noise.
    func testDDIMWithEtaMatchesDiffusers() throws {
        let run = Fixture.schedulers["ddim"]!["eta_run"]!
        var ddim: any Scheduler = try DDIMScheduler(try Fixture.schedule(), steps: run["steps"]!.int!, eta: Float(run["eta"]!.double!))
        let xs = run["x"]!.array!.map(Fixture.floats)
        var x = Tensor(shape: shape, floats: xs[0])
        for i in 0..<ddim.timesteps.count {
            let eps = Tensor(shape: shape, floats: Fixture.floats(run["eps"]!.array![i]))
            // The run's noise, through a generator stub: the step draws exactly one tensor.
            let noise = Tensor(shape: shape, floats: Fixture.floats(run["noise"]!.array![i]))
            let ddimStruct = ddim as! DDIMScheduler
            x = ddimStruct.step(noise: eps, timestep: ddim.timesteps[i], sample: x, variance: noise)
            XCTAssertLessThan(relativeError(x.floats, xs[i + 1]), 2e-6, "step \(i)")
        }
        // Through the protocol the noise comes from the generator; eta 0 needs none and is the
        // fixture's deterministic DDIM.
        let g = NoiseGenerator(seed: 1)
        _ = ddim.step(Tensor(zeros: shape), index: 0, sample: Tensor(zeros: shape), noise: g)
        XCTAssertEqual(g.offset, UInt64((shape.reduce(1, *) + 1) / 2), "eta > 0 draws one tensor per step")
    }

    /// DPM-Solver++ 2M runs (text-to-image and image-to-image from part-way) against diffusers.
    func testDPMSolverRunsMatchDiffusers() throws {
        for run in Fixture.schedulers["dpm"]!["runs"]!.array! {
            let steps = run["steps"]!.int!, strength = run["strength"]!.double!
            var dpm = try DPMSolverMultistepScheduler(try Fixture.schedule(spacing: run["spacing"]!.string!), steps: steps)
            let start = dpm.startIndex(strength: strength)
            XCTAssertEqual(start, run["start"]!.int!)
            let xs = run["x"]!.array!.map(Fixture.floats)
            var x = Tensor(shape: shape, floats: xs[0])
            if strength < 1 {
                let noisy = dpm.addNoise(Tensor(shape: shape, floats: Fixture.floats(run["clean"])),
                                         noise: Tensor(shape: shape, floats: Fixture.floats(run["noise"])), index: start)
                XCTAssertLessThan(relativeError(noisy.floats, xs[0]), 1e-6, "add_noise")
            }
            dpm.reset()
            for (k, i) in (start..<steps).enumerated() {
                x = dpm.step(Tensor(shape: shape, floats: Fixture.floats(run["eps"]!.array![k])), index: i, sample: x, noise: nil)
                XCTAssertLessThan(relativeError(x.floats, xs[k + 1]), 5e-6, "\(run["spacing"]!.string!) \(steps) steps from \(start): step \(i)")
            }
        }
    }

    /// The formulas by hand, in double precision: a first-order DPM-Solver++ step is a DDIM step
    /// (alpha_t x0 + sigma_t eps); the second-order midpoint step adds half the divided difference
    /// of the x0 estimates; the last step lands on x0 (sigma = 0).
    func testDPMSolverStepsFollowTheFormulas() throws {
        let schedule = try Fixture.schedule()
        var dpm = try DPMSolverMultistepScheduler(schedule, steps: 4)
        let ac = schedule.alphasCumprod.map(Double.init)
        let ts = dpm.timesteps
        func vp(_ t: Int?) -> (Double, Double) { t.map { (ac[$0].squareRoot(), (1 - ac[$0]).squareRoot()) } ?? (1, 0) }
        let n = 6
        let g = NoiseGenerator(seed: 7)
        var x = g.normal([1, 1, 2, 3])
        var previousX0: [Double] = []
        for i in 0..<4 {
            let eps = g.normal([1, 1, 2, 3])
            let (aS, sS) = vp(ts[i])
            let (aT, sT) = vp(i + 1 < 4 ? ts[i + 1] : nil)
            let xv = x.floats.map(Double.init), ev = eps.floats.map(Double.init)
            let x0 = (0..<n).map { (xv[$0] - sS * ev[$0]) / aS }
            var expected: [Double]
            if i == 0 || i == 3 {
                // DDIM from s to t with the same noise estimate (and x0 itself at sigma = 0).
                expected = (0..<n).map { aT * x0[$0] + sT * (xv[$0] - aS * x0[$0]) / sS }
            } else {
                let (aP, sP) = vp(ts[i - 1])
                let lambda = { (a: Double, s: Double) in Foundation.log(a / s) }
                let h = lambda(aT, sT) - lambda(aS, sS), h0 = lambda(aS, sS) - lambda(aP, sP)
                expected = (0..<n).map { j in
                    let d1 = (x0[j] - previousX0[j]) * h / h0
                    return sT / sS * xv[j] - aT * (Foundation.exp(-h) - 1) * (x0[j] + 0.5 * d1)
                }
            }
            x = dpm.step(eps, index: i, sample: x, noise: nil)
            XCTAssertLessThan(relativeError(x.floats, expected.map(Float.init)), 1e-5, "step \(i)")
            previousX0 = x0
        }
    }

    /// DDIM with eta = 0 through the protocol equals the fixture-checked direct step, and
    /// addNoise at the end of the schedule is (almost) the clean sample.
    func testDDIMProtocolAndEndLevel() throws {
        var ddim: any Scheduler = try DDIMScheduler(try Fixture.schedule(), steps: 5)
        let g = NoiseGenerator(seed: 3)
        let x = g.normal(shape), e = g.normal(shape)
        let direct = (ddim as! DDIMScheduler).step(noise: e, timestep: ddim.timesteps[2], sample: x)
        XCTAssertEqual(ddim.step(e, index: 2, sample: x, noise: nil).floats, direct.floats)
        let clean = g.normal(shape)
        XCTAssertLessThan(relativeError(ddim.addNoise(clean, noise: g.normal(shape), index: 5).floats, clean.floats), 0.1)
        let dpm = try DPMSolverMultistepScheduler(try Fixture.schedule(), steps: 5)
        XCTAssertEqual(dpm.addNoise(clean, noise: g.normal(shape), index: 5).floats, clean.floats)
    }

    func testUnsupportedConfigsAreRefused() throws {
        var config = Fixture.schedulers["config"]!
        config.set("prediction_type", "v_prediction")
        XCTAssertThrowsError(try NoiseSchedule(config: config))
        var dpmConfig = Fixture.schedulers["config"]!
        dpmConfig.set("use_karras_sigmas", true)
        XCTAssertThrowsError(try DPMSolverMultistepScheduler(try NoiseSchedule(config: dpmConfig), steps: 10))
        XCTAssertThrowsError(try DDIMScheduler(try Fixture.schedule(), steps: 0))
        XCTAssertThrowsError(try makeScheduler(.dpmSolver, try Fixture.schedule(), steps: 10, eta: 0.5))
    }
}

final class NoiseTests: XCTestCase {
    /// The same values whatever the thread count, and in any split of the draws.
    func testNoiseIsIndependentOfThreadsAndChunking() {
        let saved = Parallel.threads
        defer { Parallel.setThreads(saved) }
        Parallel.setThreads(1)
        let one = NoiseGenerator(seed: 42).normal([3, 50_001]).floats
        Parallel.setThreads(4)
        let four = NoiseGenerator(seed: 42).normal([3, 50_001]).floats
        XCTAssertEqual(one, four)
        // Two draws continue the stream where the first stopped (pairs: an even split).
        let g = NoiseGenerator(seed: 42)
        let a = g.normal([1000]).floats, b = g.normal([2000]).floats
        XCTAssertEqual(a + b, Array(one.prefix(3000)))
        XCTAssertNotEqual(NoiseGenerator(seed: 43).normal([10]).floats, Array(one.prefix(10)))
    }

    func testNoiseIsStandardNormal() {
        let v = NoiseGenerator(seed: 9).normal([200_000]).floats.map(Double.init)
        let mean = v.reduce(0, +) / Double(v.count)
        let variance = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count)
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(variance, 1, accuracy: 0.01)
        let beyond2 = Double(v.filter { abs($0) > 2 }.count) / Double(v.count)
        XCTAssertEqual(beyond2, 0.0455, accuracy: 0.003)
    }

    func testItemSeedsAreDistinctAndStable() {
        let seeds = (0..<10_000).map { itemSeed(base: 5, index: $0) }
        XCTAssertEqual(Set(seeds).count, seeds.count)
        XCTAssertEqual(itemSeed(base: 5, index: 17), seeds[17])
        XCTAssertNotEqual(itemSeed(base: 6, index: 17), seeds[17])
    }
}
