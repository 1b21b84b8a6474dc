import CBLAS
import CDGKernels
import Foundation

/// The numerical kernels of Stable Diffusion, forward and backward, as pure functions on float32
/// tensors. Inputs may be any strided views (they are made contiguous, or converted to f32, as
/// needed); outputs are fresh contiguous f32 tensors. All threading goes through `Parallel`, whose
/// chunking depends only on the problem size and the thread count, and every reduction combines
/// its partial results in a fixed order: the same input and thread count give bit-identical output.
///
/// One file per family: Conv, Normalization, Softmax, Activation, Upsample, Attention,
/// Elementwise, Embedding, Concat.
public enum Kernels {}

// MARK: - Access

extension Kernels {
    /// Flops (2 per multiply-add) of the forward matrix products run so far — convolutions, linear
    /// and per-pixel layers, attention — counted from their shapes, for `bench model`'s share of the
    /// CPU's peak. Backward products are not counted.
    public static var forwardFlops: Int { dg_setting(Int32(DG_SETTING_FLOPS)) }
    @inline(__always)
    static func countFlops(_ multiplyAdds: Int) { _ = dg_add_setting(Int32(DG_SETTING_FLOPS), 2 * multiplyAdds) }

    /// `t` as a contiguous float32 tensor (itself when it already is one).
    @inline(__always)
    static func f32(_ t: Tensor) -> Tensor { t.dtype == .f32 ? t.contiguous() : t.converted(to: .f32) }

    /// A weight as the forward products read it: as stored where it is bf16 and the bf16 products run
    /// (`GEMM.bf16`: `GEMM.gemmBF16`, the activations then rounded to bf16 at the product's input),
    /// else converted to f32 once per op — on CPUs where the bf16 products do not pay, one vectorized
    /// conversion costs less than widening the weight element by element as the product packs it
    /// (docs/PERFORMANCE.md, "8-bit AdamW state"). Gradients (backward products) always use `f32`.
    static func productWeight(_ w: Tensor) -> Tensor { w.dtype == .bf16 && GEMM.bf16 ? w.contiguous() : f32(w) }

    /// C [m, n] = W B + rowBias with a weight W [m, k] (row-major, from `productWeight`) as A.
    static func gemm(m: Int, n: Int, k: Int, weight w: Tensor, b: dg_bsource, c: UnsafeMutablePointer<Float>, ldc: Int,
                     rowBias: UnsafePointer<Float>?) {
        if w.dtype == .bf16 {
            GEMM.gemmBF16(m: m, n: n, k: k, a: w.rawPointer, aBF16: true, ars: k, aks: 1, b: b, c: c, ldc: ldc, rowBias: rowBias)
        } else {
            GEMM.gemm(m: m, n: n, k: k, a: pointer(w), ars: k, aks: 1, b: b, c: c, ldc: ldc, rowBias: rowBias)
        }
    }

    /// C [m, n] = A W^T + colBias with a weight W [n, k] (row-major, from `productWeight`) read
    /// transposed as B, and A(i, p) = a[i ars + p aks] in f32.
    static func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, ars: Int, aks: Int, weightT w: Tensor,
                     c: UnsafeMutablePointer<Float>, ldc: Int, colBias: UnsafePointer<Float>?) {
        if w.dtype == .bf16 {
            GEMM.gemmBF16(m: m, n: n, k: k, a: a, aBF16: false, ars: ars, aks: aks,
                          b: GEMM.matrix(bf16: w.rawPointer.assumingMemoryBound(to: UInt16.self), rowStride: 1, columnStride: k),
                          c: c, ldc: ldc, colBias: colBias)
        } else {
            GEMM.gemm(m: m, n: n, k: k, a: a, ars: ars, aks: aks, b: GEMM.matrix(pointer(w), rowStride: 1, columnStride: k),
                      c: c, ldc: ldc, colBias: colBias)
        }
    }

    /// The first element of a float32 tensor. Valid only while its storage lives: callers keep the
    /// tensor alive (`withExtendedLifetime`) for as long as they use the pointer.
    @inline(__always)
    static func pointer(_ t: Tensor) -> UnsafeMutablePointer<Float> { t.rawPointer.assumingMemoryBound(to: Float.self) }
}

extension Kernels {
    /// Runs `body(chunkIndex, range)` over the deterministic chunks of 0..<count, in parallel, and
    /// returns the number of chunks (so callers can combine per-chunk partials in order).
    /// `perThread` > 1 splits finer: the threads take chunks as they come, so a thread that wakes
    /// late (tens of microseconds here) still takes its share of a job of ~100 microseconds.
    @discardableResult
    static func forEachChunk(_ count: Int, minimumChunk: Int, perThread: Int = 1, _ body: (Int, Range<Int>) -> Void) -> Int {
        let parts = Parallel.chunks(count, minimumChunk: max(1, minimumChunk), perThread: perThread)
        parts.withUnsafeBufferPointer { ps in
            let ps = ps
            Parallel.run(ps.count) { body($0, ps[$0]) }
        }
        return parts.count
    }

    /// Runs `body` with OpenBLAS restricted to one thread, for kernels that call sgemm from
    /// several of our own threads at once (each call then runs in its caller's thread).
    @discardableResult
    static func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
        let threads = Parallel.threads
        if threads == 1 { return body() }
        dg_add_setting(Int32(DG_SETTING_SERIAL), 1)
        defer { dg_add_setting(Int32(DG_SETTING_SERIAL), -1) }
        // OpenBLAS is only used when our kernels are off (and resizing its pool is not free).
        if GEMM.vectorized { return body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threads)) }
        return body()
    }

    /// The number of items per chunk that makes a chunk about `work` units of work (≥ 1).
    @inline(__always)
    static func grain(_ itemCost: Int, work: Int = 32768) -> Int { max(1, work / max(1, itemCost)) }

    static func checkF32(_ t: Tensor, _ what: String) {
        if !t.dtype.isFloatingPoint { fatalError("\(what): expected a floating-point tensor, got \(t.dtype.name)") }
    }
}

// MARK: - Vector math
//
// Plain loops over pointers that LLVM vectorises (no calls, no traps under -Ounchecked), and
// SIMD accumulators for the reductions (a scalar floating-point reduction is never vectorised,
// since that would reorder additions).

extension Kernels {
    /// exp(x) in float32, vectorisable: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, and the
    /// Cephes polynomial for e^r (about 2 ulp). Returns 0 below -87.3 (where e^x is subnormal) and
    /// saturates at e^88 above 88.
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        let xc = Swift.min(Swift.max(x, -87.33654), 88.0)
        let n = (xc * 1.44269504088896341 + 12582912.0) - 12582912.0  // round to nearest
        let r = (xc - n * 0.693359375) + n * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        let scale = Float(bitPattern: UInt32(bitPattern: (Int32(n) + 127) << 23))
        return x < -87.33654 ? 0 : p * scale
    }

    /// 1 / (1 + e^-x).
    @inline(__always)
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// True when the element-wise kernels run on their AVX-512 versions (Sources/CDGKernels/
    /// elementwise.c, same results): with the matrix kernels (`GEMM.vectorized`).
    @inline(__always)
    static var avx512: Bool { dg_has_avx512() != 0 }

    /// Sum of n floats, accumulated in float SIMD lanes over short runs and in Double across runs.
    @inline(__always)
    static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
        if n >= 64 && avx512 { return dg_sum(p, n) }
        var total = 0.0
        var i = 0
        let vn = n & ~15
        while i < vn {
            let end = Swift.min(vn, i + 512)
            var a = SIMD16<Float>(), b = SIMD16<Float>()
            while i + 32 <= end {
                a += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
                b += UnsafeRawPointer(p + i + 16).loadUnaligned(as: SIMD16<Float>.self)
                i += 32
            }
            if i < end {
                a += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
                i += 16
            }
            let s = a + b
            for l in 0..<16 { total += Double(s[l]) }
        }
        while i < n { total += Double(p[i]); i += 1 }
        return total
    }

    /// Sum of (p[i] - c)^2.
    @inline(__always)
    static func sumSquaredDeviations(_ p: UnsafePointer<Float>, _ n: Int, _ c: Float) -> Double {
        if n >= 64 && avx512 { return dg_sum_sq_dev(p, n, c) }
        var total = 0.0
        var i = 0
        let vn = n & ~15
        let cv = SIMD16<Float>(repeating: c)
        while i < vn {
            let end = Swift.min(vn, i + 512)
            var a = SIMD16<Float>()
            while i < end {
                let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) - cv
                a += d * d
                i += 16
            }
            for l in 0..<16 { total += Double(a[l]) }
        }
        while i < n { let d = Double(p[i]) - Double(c); total += d * d; i += 1 }
        return total
    }

    /// Sum of p[i] * q[i].
    @inline(__always)
    static func dot(_ p: UnsafePointer<Float>, _ q: UnsafePointer<Float>, _ n: Int) -> Double {
        if n >= 64 && avx512 { return dg_dot(p, q, n) }
        var total = 0.0
        var i = 0
        let vn = n & ~15
        while i < vn {
            let end = Swift.min(vn, i + 512)
            var a = SIMD16<Float>()
            while i < end {
                a += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
                    * UnsafeRawPointer(q + i).loadUnaligned(as: SIMD16<Float>.self)
                i += 16
            }
            for l in 0..<16 { total += Double(a[l]) }
        }
        while i < n { total += Double(p[i]) * Double(q[i]); i += 1 }
        return total
    }

    /// The largest of n >= 1 floats.
    @inline(__always)
    static func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var i = 0
        var m = -Float.infinity
        let vn = n & ~15
        if vn > 0 {
            var a = SIMD16<Float>(repeating: -.infinity)
            while i < vn {   // (`pointwiseMax` is scalarised; this select is not)
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
                a = a.replacing(with: v, where: v .> a)
                i += 16
            }
            m = a.max()
        }
        while i < n { m = Swift.max(m, p[i]); i += 1 }
        return m
    }
}
