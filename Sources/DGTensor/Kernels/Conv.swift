import Foundation

/// 2-D convolution (cross-correlation, as PyTorch's Conv2d) by im2col + sgemm.
///
/// x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout]; output [N, Cout, Hout, Wout] with
/// Hout = (H + 2 padding - kh) / stride + 1. A 1x1, stride-1, unpadded convolution is one sgemm per
/// sample. Otherwise each sample's columns [Cin kh kw, rows x Wout] are built for a band of output
/// rows at a time (so the buffer stays within `columnBudget` bytes, e.g. the VAE decoder at 512x512
/// would otherwise need a 1.2 GB column matrix), and one sgemm per band writes that band.
extension Kernels {
    /// Upper bound, in bytes, for one im2col buffer (at least one output row is always used).
    nonisolated(unsafe) static var columnBudget = 24 << 20

    struct ConvGeometry {
        let n, cin, h, w, cout, kh, kw, stride, padding, hout, wout: Int
        var kdim: Int { cin * kh * kw }
        var plane: Int { hout * wout }
        var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && padding == 0 }

        init(x: [Int], w wshape: [Int], stride: Int, padding: Int) {
            precondition(x.count == 4 && wshape.count == 4, "conv2d: x must be [N, Cin, H, W] and w [Cout, Cin, kh, kw]")
            if x[1] != wshape[1] { fatalError("conv2d: input has \(x[1]) channels, weight expects \(wshape[1])") }
            if stride < 1 || padding < 0 { fatalError("conv2d: bad stride \(stride) / padding \(padding)") }
            n = x[0]; cin = x[1]; h = x[2]; w = x[3]
            cout = wshape[0]; kh = wshape[2]; kw = wshape[3]
            self.stride = stride; self.padding = padding
            hout = (h + 2 * padding - kh) / stride + 1
            wout = (w + 2 * padding - kw) / stride + 1
            if h + 2 * padding < kh || w + 2 * padding < kw { fatalError("conv2d: kernel larger than padded input") }
        }

        /// Output rows per band so that the column buffer fits the budget.
        var bandRows: Int {
            let perRow = kdim * wout * 4
            return Swift.max(1, Swift.min(hout, Kernels.columnBudget / Swift.max(1, perRow)))
        }

        /// Valid output columns [lo, hi) for kernel column kj: those reading inside the image.
        func columnRange(_ kj: Int) -> (Int, Int) {
            // ox*stride - padding + kj in [0, w)
            let lo = Swift.max(0, ceilDiv(padding - kj, stride))
            let hi = Swift.min(wout, floorDiv(w - 1 + padding - kj, stride) + 1)
            return (lo, Swift.max(lo, hi))
        }
    }

    @inline(__always) static func ceilDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? (a + b - 1) / b : -((-a) / b) }
    @inline(__always) static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// cols[(c kh + ki) kw + kj, (oy - oy0) wout + ox] = x[c, oy s - p + ki, ox s - p + kj] (0 outside),
    /// for output rows oy0..<oy1 of one sample `x` [Cin, H, W].
    static func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ oy0: Int, _ oy1: Int, _ cols: UnsafeMutablePointer<Float>) {
        let ld = (oy1 - oy0) * g.wout
        let ranges = (0..<g.kw).map { g.columnRange($0) }
        ranges.withUnsafeBufferPointer { ranges in
            let ranges = ranges
            Parallel.forEach(g.cin, minimumChunk: grain(g.kh * g.kw * ld)) { cr in
                for c in cr {
                    let xc = x + c * g.h * g.w
                    for ki in 0..<g.kh {
                        for kj in 0..<g.kw {
                            let row = cols + ((c * g.kh + ki) * g.kw + kj) * ld
                            let (lo, hi) = ranges[kj]
                            let shift = kj - g.padding
                            for oy in oy0..<oy1 {
                                let dst = row + (oy - oy0) * g.wout
                                let iy = oy * g.stride - g.padding + ki
                                if iy < 0 || iy >= g.h || lo >= hi {
                                    dst.update(repeating: 0, count: g.wout)
                                    continue
                                }
                                if lo > 0 { dst.update(repeating: 0, count: lo) }
                                if hi < g.wout { (dst + hi).update(repeating: 0, count: g.wout - hi) }
                                let src = xc + iy * g.w + shift
                                if g.stride == 1 {
                                    (dst + lo).update(from: src + lo, count: hi - lo)
                                } else {
                                    let s = g.stride
                                    for ox in lo..<hi { dst[ox] = src[ox * s] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: dx[c, iy, ix] += cols[...] over the same positions.
    static func col2im(_ g: ConvGeometry, _ cols: UnsafePointer<Float>, _ oy0: Int, _ oy1: Int, _ dx: UnsafeMutablePointer<Float>) {
        let ld = (oy1 - oy0) * g.wout
        let ranges = (0..<g.kw).map { g.columnRange($0) }
        ranges.withUnsafeBufferPointer { ranges in
            let ranges = ranges
            Parallel.forEach(g.cin, minimumChunk: grain(g.kh * g.kw * ld)) { cr in
                for c in cr {
                    let xc = dx + c * g.h * g.w
                    for ki in 0..<g.kh {
                        for kj in 0..<g.kw {
                            let row = cols + ((c * g.kh + ki) * g.kw + kj) * ld
                            let (lo, hi) = ranges[kj]
                            if lo >= hi { continue }
                            let shift = kj - g.padding
                            for oy in oy0..<oy1 {
                                let iy = oy * g.stride - g.padding + ki
                                if iy < 0 || iy >= g.h { continue }
                                let src = row + (oy - oy0) * g.wout
                                let dst = xc + iy * g.w + shift
                                if g.stride == 1 {
                                    for ox in lo..<hi { dst[ox] += src[ox] }
                                } else {
                                    let s = g.stride
                                    for ox in lo..<hi { dst[ox * s] += src[ox] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    public static func conv2d(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding)
        let xc = x.f32Contiguous, wc = w.f32Contiguous, bc = bias?.f32Contiguous
        if let bc, bc.count != g.cout { fatalError("conv2d: bias has \(bc.count) values for \(g.cout) channels") }
        let out = Tensor(zeros: [g.n, g.cout, g.hout, g.wout])
        defer { withExtendedLifetime((xc, wc, bc, out)) {} }
        let xp = xc.floatPointer, wp = wc.floatPointer, op = out.floatPointer
        let plane = g.plane
        if let bc {
            let bp = bc.floatPointer
            Parallel.forEach(g.n * g.cout, minimumChunk: grain(plane)) { r in
                for i in r { (op + i * plane).update(repeating: bp[i % g.cout], count: plane) }
            }
        }
        let beta: Float = bc == nil ? 0 : 1
        if g.isPointwise {
            for s in 0..<g.n {
                BLAS.sgemm(m: g.cout, n: plane, k: g.cin, a: wp, lda: g.cin,
                           b: xp + s * g.cin * plane, ldb: plane, beta: beta, c: op + s * g.cout * plane, ldc: plane)
            }
            return out
        }
        let band = g.bandRows
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.kdim * band * g.wout)
        defer { cols.deallocate() }
        for s in 0..<g.n {
            let xs = xp + s * g.cin * g.h * g.w, os = op + s * g.cout * plane
            for oy0 in Swift.stride(from: 0, to: g.hout, by: band) {
                let oy1 = Swift.min(g.hout, oy0 + band), ncols = (oy1 - oy0) * g.wout
                im2col(g, xs, oy0, oy1, cols)
                BLAS.sgemm(m: g.cout, n: ncols, k: g.kdim, a: wp, lda: g.kdim, b: cols, ldb: ncols,
                           beta: beta, c: os + oy0 * g.wout, ldc: plane)
            }
        }
        return out
    }

    public static func conv2dBackward(_ gy: Tensor, x: Tensor, w: Tensor, stride: Int, padding: Int,
                                      needInput: Bool, needWeight: Bool, needBias: Bool) -> (x: Tensor?, w: Tensor?, bias: Tensor?) {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding)
        if gy.shape != [g.n, g.cout, g.hout, g.wout] {
            fatalError("conv2dBackward: gradient shape \(gy.shape), expected \([g.n, g.cout, g.hout, g.wout])")
        }
        let gc = gy.f32Contiguous
        let xc = needWeight ? x.f32Contiguous : x
        let wc = needInput ? w.f32Contiguous : w
        let dx = needInput ? Tensor(zeros: x.shape) : nil
        let dw = needWeight ? Tensor(zeros: w.shape) : nil
        let db = needBias ? Tensor(zeros: [g.cout]) : nil
        defer { withExtendedLifetime((gc, xc, wc, dx, dw, db)) {} }
        let gp = gc.floatPointer, plane = g.plane

        if let db {
            let dbp = db.floatPointer
            Parallel.forEach(g.cout, minimumChunk: grain(g.n * plane)) { r in
                for c in r {
                    var s = 0.0
                    for b in 0..<g.n { s += sum(gp + (b * g.cout + c) * plane, plane) }
                    dbp[c] = Float(s)
                }
            }
        }
        if !needInput && !needWeight { return (nil, nil, db) }

        let xp = needWeight ? xc.floatPointer : nil
        let wp = needInput ? wc.floatPointer : nil
        let dxp = dx?.floatPointer, dwp = dw?.floatPointer
        if g.isPointwise {
            for s in 0..<g.n {
                let gs = gp + s * g.cout * plane
                if let dwp, let xp {   // dW[Cout, Cin] += gy_s [Cout, HW] x_s^T
                    BLAS.sgemm(transB: true, m: g.cout, n: g.cin, k: plane, a: gs, lda: plane,
                               b: xp + s * g.cin * plane, ldb: plane, beta: s == 0 ? 0 : 1, c: dwp, ldc: g.cin)
                }
                if let dxp, let wp {   // dx_s [Cin, HW] = W^T gy_s
                    BLAS.sgemm(transA: true, m: g.cin, n: plane, k: g.cout, a: wp, lda: g.cin,
                               b: gs, ldb: plane, c: dxp + s * g.cin * plane, ldc: plane)
                }
            }
            return (dx, dw, db)
        }
        let band = g.bandRows
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.kdim * band * g.wout)
        defer { cols.deallocate() }
        var first = true
        for s in 0..<g.n {
            let gs = gp + s * g.cout * plane
            for oy0 in Swift.stride(from: 0, to: g.hout, by: band) {
                let oy1 = Swift.min(g.hout, oy0 + band), ncols = (oy1 - oy0) * g.wout
                if let dwp, let xp {   // dW[Cout, K] += gy_band [Cout, ncols] cols^T
                    im2col(g, xp + s * g.cin * g.h * g.w, oy0, oy1, cols)
                    BLAS.sgemm(transB: true, m: g.cout, n: g.kdim, k: ncols, a: gs + oy0 * g.wout, lda: plane,
                               b: cols, ldb: ncols, beta: first ? 0 : 1, c: dwp, ldc: g.kdim)
                    first = false
                }
                if let dxp, let wp {   // dcols [K, ncols] = W^T gy_band, scattered back
                    BLAS.sgemm(transA: true, m: g.kdim, n: ncols, k: g.cout, a: wp, lda: g.kdim,
                               b: gs + oy0 * g.wout, ldb: plane, c: cols, ldc: ncols)
                    col2im(g, cols, oy0, oy1, dxp + s * g.cin * g.h * g.w)
                }
            }
        }
        return (dx, dw, db)
    }
}
