import CBLAS
import CDGKernels
import Foundation

/// Matrix products on our own AVX-512 kernels (Sources/CDGKernels) when the CPU has them, else on
/// OpenBLAS. The C kernel is single-threaded; `gemm` splits C between `Parallel.threads` threads
/// (columns when there are enough of them, else rows). Every element of C is computed in the same
/// order however C is split, so results do not depend on the thread count.
///
/// A is read in place through strides; B is described by a `dg_bsource`: a strided matrix, the
/// implicit im2col matrix of a convolution (never materialised on the AVX-512 path), its transpose,
/// or panels packed beforehand (`pack`).
public enum GEMM {
    /// The one switch of every AVX-512 path (products, convolution, attention, the element-wise
    /// kernels: `Kernels.avx512` is the same switch): true when the CPU and OS support AVX-512 and
    /// it is not switched off. DGINSTYLE_GEMM=openblas switches it off before the first call
    /// (`dg_has_avx512` reads it in C, whichever kernel asks first). Tests switch it off to check the
    /// portable paths (OpenBLAS and the scalar packing code); it cannot be switched on where the CPU
    /// lacks AVX-512. Atomic; the C entry points check it too and abort when called with it off.
    public static var vectorized: Bool {
        get { dg_has_avx512() != 0 }
        set { dg_allow_avx512(newValue ? 1 : 0) }
    }

    /// Products below this many multiply-adds run on one thread.
    static let parallelThreshold = 1 << 20

    /// True while our own threads run several products at once (each must then stay on its thread):
    /// an atomic count of the callers inside `Kernels.withSingleThreadedBLAS`, so overlapping callers
    /// on different threads do not switch it off under each other.
    static var serial: Bool { dg_setting(Int32(DG_SETTING_SERIAL)) > 0 }

    // MARK: sources

    /// B(p, j) = b[p * rowStride + j * columnStride] (one of the strides must be 1).
    public static func matrix(_ b: UnsafePointer<Float>, rowStride: Int, columnStride: Int) -> dg_bsource {
        var s = dg_bsource()
        s.kind = Int32(DG_B_MATRIX)
        s.b = b
        s.rs = rowStride
        s.cs = columnStride
        return s
    }

    /// The im2col matrix of one sample x [cin, h, w] (`transposed`: its transpose).
    static func im2col(_ g: Kernels.ConvGeometry, _ x: UnsafePointer<Float>, transposed: Bool = false) -> dg_bsource {
        var s = dg_bsource()
        s.kind = Int32(transposed ? DG_B_IM2COL_T : DG_B_IM2COL)
        s.b = x
        s.cin = g.cin; s.h = g.h; s.w = g.w; s.kh = g.kh; s.kw = g.kw
        s.stride = g.stride; s.pad = g.padding; s.hout = g.hout; s.wout = g.wout
        return s
    }

    /// Panels packed by `pack` (k rows, panel width nr).
    static func packed(_ p: UnsafePointer<Float>, k: Int, nr: Int) -> dg_bsource {
        var s = dg_bsource()
        s.kind = Int32(DG_B_PACKED)
        s.b = p
        s.rs = nr
        s.cs = k
        return s
    }

    /// Floats `pack` writes for k x n, and the panel width it uses.
    static func packedSize(k: Int, n: Int) -> (count: Int, nr: Int) {
        let nr = dg_panel_width(n)
        return ((n + nr - 1) / nr * nr * k, nr)
    }

    /// Packs B (k rows, n columns) once, for several products that share it (vectorized only).
    static func pack(_ b: dg_bsource, k: Int, n: Int, into dst: UnsafeMutablePointer<Float>) -> dg_bsource {
        var b = b
        let nr = dg_panel_width(n)
        dg_pack(&b, k, 0, n, nr, dst)
        return packed(dst, k: k, nr: nr)
    }

    // MARK: the backend rule

    /// Whether a product of this shape runs on OpenBLAS rather than on our kernels: the rule, per
    /// shape class, measured with `dginstyle bench sgemm --backends` (table and rule in
    /// docs/PERFORMANCE.md, "GEMM backend per shape class"). On the CPU measured (Intel Xeon, family 6
    /// model 207, AVX-512; OpenBLAS 0.3.21 does not know it and picks its generic "Prescott" SSE3
    /// kernels) ours won at every class an SD 1.5 UNet runs: linear layers, text k/v, 1x1
    /// convolutions, attention's QK^T and PV (1.7-12x), the implicit-GEMM 3x3 convolutions and the fused
    /// attention against their OpenBLAS paths (1.6-10x), and the memory-bound small-n products of the
    /// time embedding (0.94-3.1x: ties under load, 1.2-2.4x on an idle machine). So: ours wherever the
    /// switch allows; OpenBLAS for every product
    /// where the CPU lacks AVX-512 or DGINSTYLE_GEMM=openblas. A class OpenBLAS is measured to win goes
    /// here, by shape, and nowhere else (never a packed source: only our kernels read those).
    @inline(__always)
    static func usesOpenBLAS(m: Int, n: Int, k: Int) -> Bool { !vectorized }

    // MARK: products

    /// C[m, n] (row stride ldc) = alpha A B + beta C + rowBias[i] + colBias[j], where
    /// A(i, p) = a[i * ars + p * aks] (aks == 1 or ars == 1) and B is `b` from column `j0` on.
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, ars: Int, aks: Int,
                            b: dg_bsource, j0: Int = 0, beta: Float = 0,
                            c: UnsafeMutablePointer<Float>, ldc: Int,
                            rowBias: UnsafePointer<Float>? = nil, colBias: UnsafePointer<Float>? = nil) {
        if m <= 0 || n <= 0 { return }
        if usesOpenBLAS(m: m, n: n, k: k) {
            fallback(m: m, n: n, k: k, alpha: alpha, a: a, ars: ars, aks: aks, b: b, j0: j0, beta: beta,
                     c: c, ldc: ldc, rowBias: rowBias, colBias: colBias)
            return
        }
        var source = b
        withUnsafePointer(to: &source) { src in
            split(m: m, n: n, k: k) { r0, rows, c0, cols in
                dg_gemm(rows, cols, k, alpha, a + r0 * ars, ars, aks, src, j0 + c0, beta, c + r0 * ldc + c0, ldc,
                        rowBias.map { $0 + r0 }, colBias.map { $0 + c0 })
            }
        }
    }

    /// Whether products with bf16 weights run in bf16 (`gemmBF16`): the AVX-512 switch is on, the CPU
    /// has AVX512-BF16, and DGINSTYLE_BF16 is "on", or unset / "auto" and vdpbf16ps out-runs the f32
    /// FMAs on this CPU (`bf16DotRates`; see `dg_has_avx512_bf16`). Where false, `gemmBF16` widens
    /// bf16 operands to f32 as it packs them and runs the f32 products. Setting it forces it on (where
    /// the CPU has AVX512-BF16) or off; atomic; tests switch it to check both paths.
    public static var bf16: Bool {
        get { dg_has_avx512_bf16() != 0 }
        set { dg_allow_avx512_bf16(newValue ? 1 : 0) }
    }

    /// Multiply-adds per TSC cycle of vdpbf16ps and of vfmadd231ps on this CPU, as timed once for
    /// the "auto" choice of `bf16` (0 and 0 without AVX512-BF16).
    public static var bf16DotRates: (bf16: Double, f32: Double) {
        var b = 0.0, f = 0.0
        dg_bf16_dot_rates(&b, &f)
        return (b, f)
    }

    /// The time-stamp counter's rate in GHz, the clock of `bf16DotRates`' cycles (0 without one).
    public static var tscGHz: Double { dg_tsc_ghz() }

    /// The bf16 product's blocking and micro-tiles, for `dginstyle bench sgemm`.
    public static var bf16Blocking: String {
        var kc = 0, mc = 0, nc = 0
        dg_gemm_bf16_blocking(&kc, &mc, &nc)
        return "k blocks of \(kc), A blocks of \(mc) rows, B blocks of \(nc) columns; tiles 12 x 32 and 24 x 16 (as f32)"
    }

    /// B(p, j) = b[p * rowStride + j * columnStride], bf16 values (a weight stored in bf16; only
    /// `gemmBF16` reads it).
    public static func matrix(bf16 b: UnsafePointer<UInt16>, rowStride: Int, columnStride: Int) -> dg_bsource {
        var s = matrix(UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), rowStride: rowStride, columnStride: columnStride)
        s.bf16 = 1
        return s
    }

    /// The product of `gemm` with bf16 operands (A where `aBF16`, B a `matrix(bf16:...)`; needs
    /// `vectorized`): where `bf16`, in bfloat16, A and B rounded to bf16 at the product's input with
    /// f32 accumulation; else the f32 product with the bf16 operands widened as they are packed (no
    /// f32 copy of a weight). Split between threads as `gemm` splits, with the same guarantee: results
    /// do not depend on the thread count.
    public static func gemmBF16(m: Int, n: Int, k: Int, alpha: Float = 1,
                                a: UnsafeRawPointer, aBF16: Bool, ars: Int, aks: Int,
                                b: dg_bsource, j0: Int = 0, beta: Float = 0,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                rowBias: UnsafePointer<Float>? = nil, colBias: UnsafePointer<Float>? = nil) {
        if m <= 0 || n <= 0 { return }
        precondition(vectorized, "GEMM.gemmBF16 needs the AVX-512 kernels (GEMM.vectorized)")
        let size = aBF16 ? 2 : 4
        var source = b
        withUnsafePointer(to: &source) { src in
            split(m: m, n: n, k: k) { r0, rows, c0, cols in
                dg_gemm_bf16(rows, cols, k, alpha, a + r0 * ars * size, aBF16 ? 1 : 0, ars, aks, src, j0 + c0, beta,
                             c + r0 * ldc + c0, ldc, rowBias.map { $0 + r0 }, colBias.map { $0 + c0 })
            }
        }
    }

    /// Splits C [m, n] between `Parallel.threads` threads and calls body(firstRow, rows, firstColumn,
    /// columns) once per part: columns in whole 32-column panels when there are enough of them (packed
    /// sources need panel-aligned splits), else rows in multiples of 24 (whole micro-tiles of either
    /// panel width); one part on the calling thread for small products or in serial sections.
    static func split(m: Int, n: Int, k: Int, _ body: (Int, Int, Int, Int) -> Void) {
        let threads = serial ? 1 : Parallel.threads
        if threads == 1 || m * n * k < parallelThreshold {
            body(0, m, 0, n)
        } else if n >= 128 * threads || m < 48 {
            let per = (n + threads - 1) / threads
            let step = Swift.max(32, (per + 31) / 32 * 32)
            Parallel.run((n + step - 1) / step) { t in
                let lo = t * step
                body(0, m, lo, Swift.min(n, lo + step) - lo)
            }
        } else {
            let per = (m + threads - 1) / threads
            let step = Swift.max(24, (per + 23) / 24 * 24)
            Parallel.run((m + step - 1) / step) { t in
                let lo = t * step
                body(lo, Swift.min(m, lo + step) - lo, 0, n)
            }
        }
    }

    /// dx [cin, n] = W'^T im2col(gy) for a stride-1 convolution with weights w [cout, cin, kh, kw]
    /// (kk = kh kw): the product with the kernel flipped and transposed, W'[c, (o, t)] =
    /// w[o, c, kk - 1 - t], read in place on the AVX-512 path (the portable path makes the copy).
    static func gemmConvTransposed(cin: Int, cout: Int, kk: Int, n: Int, w: UnsafePointer<Float>, b: dg_bsource,
                                   c: UnsafeMutablePointer<Float>, ldc: Int) {
        let k = cout * kk
        if cin <= 0 || n <= 0 { return }
        if !vectorized {
            let flipped = UnsafeMutablePointer<Float>.allocate(capacity: cin * k)
            defer { flipped.deallocate() }
            Parallel.forEach(cin, minimumChunk: Kernels.grain(k)) { r in
                for ch in r {
                    for o in 0..<cout {
                        let src = w + (o * cin + ch) * kk, dst = flipped + (ch * cout + o) * kk
                        for t in 0..<kk { dst[t] = src[kk - 1 - t] }
                    }
                }
            }
            gemm(m: cin, n: n, k: k, a: flipped, ars: k, aks: 1, b: b, c: c, ldc: ldc)
            return
        }
        var source = b
        withUnsafePointer(to: &source) { src in
            split(m: cin, n: n, k: k) { r0, rows, c0, cols in
                dg_gemm_conv_t(rows, cols, k, w, cin, kk, r0, src, c0, c + r0 * ldc + c0, ldc)
            }
        }
    }

    /// C[m, n] = A[m, k] B[k, n] (row-major, contiguous) by OpenBLAS itself, whatever `vectorized`
    /// says: the reference `dginstyle bench sgemm` compares against.
    public static func openBLAS(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                                c: UnsafeMutablePointer<Float>) {
        _ = Parallel.threads
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                    b, Int32(n), 0, c, Int32(n))
    }

    /// OpenBLAS's name for the kernels it chose for this CPU (e.g. "Haswell", "SkylakeX", "Prescott").
    public static var openBLASCoreName: String { String(cString: openblas_get_corename()) }

    /// The same product through OpenBLAS (im2col sources materialised in blocks of at most
    /// `Kernels.columnBudget` bytes). Public for `dginstyle bench sgemm --backends`.
    public static func fallback(m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, ars: Int, aks: Int,
                                b: dg_bsource, j0: Int = 0, beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int,
                                rowBias: UnsafePointer<Float>? = nil, colBias: UnsafePointer<Float>? = nil) {
        _ = Parallel.threads  // make sure OpenBLAS has been told the thread count
        var beta = beta
        if rowBias != nil || colBias != nil {
            for i in 0..<m {
                let ci = c + i * ldc, r = rowBias?[i] ?? 0
                for j in 0..<n { ci[j] = (beta == 0 ? 0 : beta * ci[j]) + r + (colBias?[j] ?? 0) }
            }
            beta = 1
        }
        if k == 0 {
            if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } } }
            return
        }
        let transA = aks != 1
        let lda = transA ? Swift.max(aks, m) : Swift.max(ars, k)
        func blas(_ transB: Bool, _ bp: UnsafePointer<Float>, _ ldb: Int, _ rows: Int, _ a0: UnsafePointer<Float>,
                  _ cols: Int, _ c0: UnsafeMutablePointer<Float>, _ beta: Float) {
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(cols), Int32(rows), alpha, a0, Int32(lda), bp, Int32(ldb), beta, c0, Int32(ldc))
        }
        var src = b
        switch Int(b.kind) {
        case Int(DG_B_MATRIX):
            if b.cs == 1 {
                blas(false, b.b + j0, Swift.max(b.rs, n), k, a, n, c, beta)
            } else {
                blas(true, b.b + j0 * b.cs, Swift.max(b.cs, k), k, a, n, c, beta)
            }
        case Int(DG_B_IM2COL):
            // Column blocks of the im2col matrix, each complete in k.
            let cols = Swift.max(1, Swift.min(n, Kernels.columnBudget / Swift.max(1, 4 * k)))
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: k * cols)
            defer { buffer.deallocate() }
            for j in stride(from: 0, to: n, by: cols) {
                let nb = Swift.min(cols, n - j)
                dg_pack_block(&src, 0, k, j0 + j, nb, nb, buffer)
                blas(false, buffer, nb, k, a, nb, c + j, beta)
            }
        case Int(DG_B_IM2COL_T):
            // Row blocks (over k), accumulated in order.
            let rows = Swift.max(1, Swift.min(k, Kernels.columnBudget / Swift.max(1, 4 * n)))
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: rows * n)
            defer { buffer.deallocate() }
            for p in stride(from: 0, to: k, by: rows) {
                let kb = Swift.min(rows, k - p)
                dg_pack_block(&src, p, kb, j0, n, n, buffer)
                let a0 = transA ? a + p * aks : a + p
                cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, CblasNoTrans,
                            Int32(m), Int32(n), Int32(kb), alpha, a0, Int32(lda), buffer, Int32(n),
                            p == 0 ? beta : 1, c, Int32(ldc))
            }
        default:
            fatalError("GEMM: packed sources need the vectorized kernels")
        }
    }
}
