import Foundation
import XCTest
@testable import DGTensor
import CBLAS
import DGBase

/// Rough timings of the kernels at Stable Diffusion 1.5 sizes (512x512 image, 64x64 latent).
/// Skipped unless DGINSTYLE_BENCH is set: `DGINSTYLE_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter KernelBenchmarks`.
final class KernelBenchmarks: XCTestCase {
    /// Process CPU time (all threads), seconds.
    func cpuTime() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }

    /// Best wall time of `repeats` runs, and the CPU time of that run (which, on a shared machine,
    /// says what the wall time would be with every thread on its own core: cpu / threads).
    func time(_ what: String, flops: Double = 0, repeats: Int = 3, _ body: () -> Void) {
        if benchmarkFilter.map({ !what.contains($0) }) ?? false { return }
        body()   // warm up
        var best = Double.infinity, cpu = 0.0
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuTime()
            body()
            let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if t < best { best = t; cpu = cpuTime() - c0 }
        }
        let rate = flops > 0 ? String(format: "  %6.1f GFLOP/s", flops / best / 1e9) : ""
        print(String(format: "%-52@ %9.2f ms (cpu %8.2f ms)", what as NSString, best * 1000, cpu * 1000) + rate)
    }

    let benchmarkFilter = ProcessInfo.processInfo.environment["DGINSTYLE_BENCH_FILTER"]

    func randomTensor(_ shape: [Int]) -> Tensor {
        var rng = SplitMix64(seed: 7)
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, floats: (0..<n).map { _ in Float.random(in: -1...1, using: &rng) })
    }

    func testBenchmarks() throws {
        try XCTSkipIf(ProcessInfo.processInfo.environment["DGINSTYLE_BENCH"] == nil, "set DGINSTYLE_BENCH=1 to run")
        let savedBudget = Kernels.columnBudget
        defer { Kernels.columnBudget = savedBudget }
        if let budget = ProcessInfo.processInfo.environment["DGINSTYLE_COLUMN_BUDGET"].flatMap(Int.init) {
            Kernels.columnBudget = budget
        }
        print("threads: \(Parallel.threads), OpenBLAS threads \(openblas_get_num_threads()), column budget \(Kernels.columnBudget)")
        for (c, hw, k, n) in [(320, 64, 3, 1), (640, 32, 3, 1), (1280, 16, 3, 1), (1280, 8, 3, 1), (1280, 8, 3, 2),
                              (320, 64, 1, 1), (128, 256, 3, 1)] {
            let x = randomTensor([n, c, hw, hw]), w = randomTensor([c, c, k, k]), b = randomTensor([c])
            let flops = 2.0 * Double(n * c * c * k * k * hw * hw)
            var y = x
            time("conv \(c)->\(c) \(k)x\(k) at \(n)x\(hw)x\(hw) fwd", flops: flops) { y = Kernels.conv2d(x, w, b, stride: 1, padding: k / 2) }
            time("conv \(c)->\(c) \(k)x\(k) at \(n)x\(hw)x\(hw) bwd (dx, dw, db)", flops: 2 * flops) {
                _ = Kernels.conv2dBackward(y, x: x, w: w, stride: 1, padding: k / 2, needInput: true, needWeight: true, needBias: true)
            }
            time("conv \(c)->\(c) \(k)x\(k) at \(n)x\(hw)x\(hw) bwd dx only", flops: flops) {
                _ = Kernels.conv2dBackward(y, x: x, w: w, stride: 1, padding: k / 2, needInput: true, needWeight: false, needBias: false)
            }
            time("conv \(c)->\(c) \(k)x\(k) at \(n)x\(hw)x\(hw) bwd dw only", flops: flops) {
                _ = Kernels.conv2dBackward(y, x: x, w: w, stride: 1, padding: k / 2, needInput: false, needWeight: true, needBias: false)
            }
        }
        do {
            let x = randomTensor([1, 320, 64, 64]), w = randomTensor([320, 320, 3, 3])
            time("conv 320->320 3x3 stride 2 at 64x64 fwd", flops: 2.0 * 320 * 2880 * 1024) { _ = Kernels.conv2d(x, w, nil, stride: 2, padding: 1) }
        }
        for (lq, lk, d, heads) in [(4096, 4096, 40, 8), (4096, 77, 40, 8), (1024, 1024, 80, 8), (4096, 4096, 512, 1)] {
            let q = randomTensor([heads, lq, d]), k = randomTensor([heads, lk, d]), v = randomTensor([heads, lk, d])
            let scale = 1 / Float(d).squareRoot()
            let flops = 4.0 * Double(heads * lq * lk * d)
            var r = Kernels.attention(q: q, k: k, v: v, scale: scale, causal: false)
            time("attention \(heads)x[\(lq), \(lk), \(d)] fwd", flops: flops, repeats: 2) { r = Kernels.attention(q: q, k: k, v: v, scale: scale, causal: false) }
            time("attention \(heads)x[\(lq), \(lk), \(d)] bwd", flops: 2.5 * flops, repeats: 2) {
                _ = Kernels.attentionBackward(r.out, q: q, k: k, v: v, out: r.out, logsumexp: r.logsumexp, scale: scale, causal: false)
            }
        }
        do {
            let x = randomTensor([1, 320, 64, 64]), w = randomTensor([320]), b = randomTensor([320])
            var r = Kernels.groupNorm(x, groups: 32, weight: w, bias: b, eps: 1e-5)
            time("groupNorm [1, 320, 64, 64] / 32 fwd") { r = Kernels.groupNorm(x, groups: 32, weight: w, bias: b, eps: 1e-5) }
            time("groupNorm [1, 320, 64, 64] / 32 bwd") { _ = Kernels.groupNormBackward(x, x: x, mean: r.mean, rstd: r.rstd, groups: 32, weight: w) }
            time("silu [1, 320, 64, 64] fwd") { _ = Kernels.activate(x, .silu) }
            time("silu [1, 320, 64, 64] bwd") { _ = Kernels.activateBackward(x, x: x, .silu) }
            time("add [1, 320, 64, 64] + [1, 320, 1, 1]") { _ = Kernels.add(x, b.reshaped([1, 320, 1, 1])) }
            time("add [1, 320, 64, 64] + [1, 320, 64, 64]") { _ = Kernels.add(x, x) }
            time("sumToShape [1, 320, 64, 64] -> [1, 320, 1, 1]") { _ = Kernels.sumToShape(x, [1, 320, 1, 1]) }
            time("upsample [1, 320, 64, 64] fwd") { _ = Kernels.upsampleNearest2x(x) }
            time("concat 2 x [1, 320, 64, 64] axis 1") { _ = Kernels.concat([x, x], axis: 1) }
        }
        do {
            let x = randomTensor([1, 4096, 1280])
            time("geluErf [4096, 1280] fwd") { _ = Kernels.activate(x, .geluErf) }
            time("geluErf [4096, 1280] bwd") { _ = Kernels.activateBackward(x, x: x, .geluErf) }
            let h = randomTensor([1, 4096, 320]), w = randomTensor([320]), b = randomTensor([320])
            var r = Kernels.layerNorm(h, weight: w, bias: b, eps: 1e-5)
            time("layerNorm [4096, 320] fwd") { r = Kernels.layerNorm(h, weight: w, bias: b, eps: 1e-5) }
            time("layerNorm [4096, 320] bwd") { _ = Kernels.layerNormBackward(h, x: h, mean: r.mean, rstd: r.rstd, weight: w) }
            time("sumToShape [1, 4096, 320] -> [320]") { _ = Kernels.sumToShape(h, [320]) }
            let s = randomTensor([8, 4096, 77])
            time("softmax [8, 4096, 77]") { _ = Kernels.softmax(s) }
        }
    }
}
