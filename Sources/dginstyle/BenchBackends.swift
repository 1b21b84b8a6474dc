import DGBase
import DGTensor
import Foundation

/// `dginstyle bench sgemm --backends`: our kernels against OpenBLAS (with its own kernel choice for
/// this CPU) at every class of product an SD 1.5 UNet pass runs, at the operand layouts the layers
/// use, measured alternately (A B, B A, A B, ...) so that drift and other processes on the machine
/// hit both sides alike; the best sample of each side is kept. The table the per-shape backend rule
/// in GEMM.swift comes from (docs/PERFORMANCE.md).
extension Bench.Sgemm {
    struct BackendRow {
        let shapeClass: String, what: String, resolution: Int, m: Int, n: Int, k: Int
        let ours: Double, openblas: Double
    }

    /// Best-of-`repeats` GFLOP/s of `a` and of `b`, samples alternating and each a batch of calls
    /// lasting about 20 ms, after a pause: OpenBLAS's threads keep spinning for a while after a call
    /// and would take a core from the sample that follows.
    func alternate(_ flops: Double, _ a: () -> Void, _ b: () -> Void) -> (Double, Double) {
        func calls(_ body: () -> Void) -> Int {
            body()
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            return Swift.max(1, Int(20_000_000 / Swift.max(1, DispatchTime.now().uptimeNanoseconds - t0)))
        }
        let ca = calls(a), cb = calls(b)
        var best = (Double.infinity, Double.infinity)
        func sample(_ body: () -> Void, _ count: Int) -> Double {
            usleep(100_000)
            let t = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<count { body() }
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 / Double(count)
        }
        for r in 0..<repeats {
            if r % 2 == 0 {
                best.0 = Swift.min(best.0, sample(a, ca)); best.1 = Swift.min(best.1, sample(b, cb))
            } else {
                best.1 = Swift.min(best.1, sample(b, cb)); best.0 = Swift.min(best.0, sample(a, ca))
            }
        }
        return (flops / best.0 / 1e9, flops / best.1 / 1e9)
    }

    func runBackends() throws {
        guard GEMM.vectorized else {
            emit("bench sgemm --backends: the AVX-512 kernels are off (CPU without AVX-512, or DGINSTYLE_GEMM=openblas): nothing to compare")
            return
        }
        var rows: [BackendRow] = []
        func report(_ r: BackendRow) {
            rows.append(r)
            if json {
                emit(JSON.object([("class", .string(r.shapeClass)), ("what", .string(r.what)), ("resolution", .int(r.resolution)),
                                  ("m", .int(r.m)), ("n", .int(r.n)), ("k", .int(r.k)),
                                  ("ours", .double(r.ours)), ("openblas", .double(r.openblas))]).compact)
            }
        }
        /// A plain product C [m, n] = A B at a layer's layout: A row-major [m, k]; B row-major [k, n]
        /// or, `bTransposed`, the transpose of a row-major [n, k] (a weight read in place).
        func wanted(_ shapeClass: String) -> Bool { only.map { shapeClass.localizedCaseInsensitiveContains($0) } ?? true }
        func product(_ shapeClass: String, _ what: String, _ res: Int, _ m: Int, _ n: Int, _ k: Int, bTransposed: Bool) {
            guard wanted(shapeClass) else { return }
            let a = randomWeights([m, k], seed: 1, std: 1), b = randomWeights(bTransposed ? [n, k] : [k, n], seed: 2, std: 1)
            let c = Tensor(zeros: [m, n])
            withExtendedLifetime((a, b, c)) {
                let ap = a.rawPointer.assumingMemoryBound(to: Float.self), bp = b.rawPointer.assumingMemoryBound(to: Float.self)
                let cp = c.rawPointer.assumingMemoryBound(to: Float.self)
                let src = GEMM.matrix(bp, rowStride: bTransposed ? 1 : n, columnStride: bTransposed ? k : 1)
                let (ours, blas) = alternate(2.0 * Double(m) * Double(n) * Double(k)) {
                    GEMM.gemm(m: m, n: n, k: k, a: ap, ars: k, aks: 1, b: src, c: cp, ldc: n)
                } _: {
                    GEMM.fallback(m: m, n: n, k: k, a: ap, ars: k, aks: 1, b: src, c: cp, ldc: n)
                }
                report(BackendRow(shapeClass: shapeClass, what: what, resolution: res, m: m, n: n, k: k, ours: ours, openblas: blas))
            }
        }
        /// A whole kernel with our kernels on, and with them off (its OpenBLAS path).
        func kernel(_ shapeClass: String, _ what: String, _ res: Int, _ m: Int, _ n: Int, _ k: Int, flops: Double, _ body: @escaping () -> Void) {
            guard wanted(shapeClass) else { return }
            let (ours, blas) = alternate(flops, body) {
                GEMM.vectorized = false
                body()
                GEMM.vectorized = true
            }
            report(BackendRow(shapeClass: shapeClass, what: what, resolution: res, m: m, n: n, k: k, ours: ours, openblas: blas))
        }
        let levels = [320, 640, 1280]
        for res in resolutions {
            let s = res / 8
            let sides = [s, s / 2, s / 4]
            // Linear layers of the transformer blocks: tokens x features, weight [out, in] read transposed.
            for (c, side) in zip(levels, sides) where side >= 1 {
                let t = side * side
                product("linear (tokens x features)", "q/k/v/out \(c)ch", res, t, c, c, bTransposed: true)
                product("linear (tokens x features)", "GEGLU proj \(c)ch", res, t, 8 * c, c, bTransposed: true)
                product("linear (tokens x features)", "FF out \(c)ch", res, t, c, 4 * c, bTransposed: true)
            }
            // Cross-attention k/v: 77 text tokens (the same at every resolution).
            if res == resolutions.first {
                for c in levels { product("linear, 77 text tokens", "text k/v \(c)ch", 0, 77, c, 768, bTransposed: true) }
            }
            // 1x1 convolutions: proj_in/proj_out, and the ResNet shortcuts where channels change.
            for (c, side) in zip(levels, sides) where side >= 1 {
                product("1x1 conv (channels x pixels)", "proj_in/out \(c)ch", res, c, side * side, c, bTransposed: false)
            }
            for (cin, cout, side) in [(320, 640, s / 2), (640, 1280, s / 4), (960, 640, s / 2), (640, 320, s)] where side >= 1 {
                product("1x1 conv (channels x pixels)", "shortcut \(cin)->\(cout)", res, cout, side * side, cin, bTransposed: false)
            }
            // Attention's products as plain GEMMs (the backward pass runs these; the forward pass the fused kernel).
            for (c, side) in zip(levels, sides) where side >= 1 {
                let l = side * side, d = c / 8
                product("attention QK^T / PV (per head)", "QK^T \(c)ch L=\(l)", res, l, l, d, bTransposed: true)
                product("attention QK^T / PV (per head)", "PV \(c)ch L=\(l)", res, l, d, l, bTransposed: false)
            }
        }
        // Small-n products: the time embedding and each ResBlock's time projection, one sample (n = 1)
        // or a guided pair (n = 2), taken transposed (weight [out, in] times x^T).
        for (out, inF) in [(1280, 320), (1280, 1280), (320, 1280), (640, 1280)] {
            for rowsN in [1, 2] {
                product("small n (time embedding)", "\(inF)->\(out), \(rowsN) row\(rowsN > 1 ? "s" : "")", 0, out, rowsN, inF, bTransposed: true)
            }
        }
        // The kernels built on our products: implicit-GEMM 3x3 convolution and fused attention, against
        // their OpenBLAS paths (im2col in blocks + sgemm; blocked attention on sgemm).
        for res in resolutions {
            let s = res / 8
            for (c, side) in [(320, s), (640, s / 2), (1280, s / 4), (1280, s / 8)] where side >= 1 {
                let x = randomWeights([1, c, side, side], seed: 3, std: 1), w = randomWeights([c, c, 3, 3], seed: 4)
                let b = randomWeights([c], seed: 5)
                let (m, n, k) = (c, side * side, 9 * c)
                kernel("3x3 conv (implicit GEMM)", "conv 3x3 \(c)ch \(side)x\(side)", res, m, n, k, flops: 2.0 * Double(m * n) * Double(k)) {
                    _ = Kernels.conv2d(x, w, b, stride: 1, padding: 1)
                }
            }
            for (c, side) in [(320, s), (640, s / 2), (1280, s / 4)] where side >= 1 {
                let l = side * side, d = c / 8
                let q = randomWeights([1, l, c], seed: 6, std: 1), kk = randomWeights([1, l, c], seed: 7, std: 1)
                let v = randomWeights([1, l, c], seed: 8, std: 1)
                kernel("fused attention", "self-attention \(c)ch L=\(l)", res, l, l, d, flops: 4.0 * Double(l) * Double(l) * Double(c)) {
                    _ = Kernels.attention(q: q, k: kk, v: v, heads: 8, scale: 1 / Float(d).squareRoot(), causal: false)
                }
                let kt = randomWeights([1, 77, c], seed: 9, std: 1), vt = randomWeights([1, 77, c], seed: 10, std: 1)
                kernel("fused attention", "cross-attention \(c)ch L=\(l), 77 keys", res, l, 77, d, flops: 4.0 * Double(l) * 77 * Double(c)) {
                    _ = Kernels.attention(q: q, k: kt, v: vt, heads: 8, scale: 1 / Float(d).squareRoot(), causal: false)
                }
            }
        }
        if json { return }
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        emit("\(Parallel.threads) threads; OpenBLAS core \(GEMM.openBLASCoreName) (OPENBLAS_CORETYPE \(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset")); GFLOP/s, best of \(repeats) alternating samples")
        emit("")
        emit("| class | product | px | m x n x k | ours | OpenBLAS | ours / OpenBLAS |")
        emit("|---|---|---|---|---|---|---|")
        for r in rows {
            emit("| \(r.shapeClass) | \(r.what) | \(r.resolution == 0 ? "any" : String(r.resolution)) | \(r.m)x\(r.n)x\(r.k) | \(f(r.ours)) | \(f(r.openblas)) | \(String(format: "%.2f", r.ours / r.openblas)) |")
        }
    }
}
