import Foundation

/// 2-D convolution (cross-correlation, as PyTorch's Conv2d) by im2col + sgemm.
///
/// x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout]; output [N, Cout, Hout, Wout] with
/// Hout = (H + 2 padding - kh) / stride + 1.
///
/// The work is cut into passes, each one im2col into a reused buffer and one sgemm
/// W [Cout, Cin kh kw] x cols [Cin kh kw, columns]:
/// - large planes: a band of output rows of one sample, as many rows as fit `columnBudget` (the
///   VAE decoder at 512x512 would otherwise need a 1.2 GB column matrix); the sgemm writes the band
///   in place (ldc = Hout Wout). A 1x1, stride-1, unpadded convolution skips im2col (x is its own
///   column matrix).
/// - small planes (the UNet's 8x8 and 16x16 levels): several whole samples side by side, so that the
///   sgemm is wide enough to run at full speed; results go through a small packed buffer.
extension Kernels {
    /// Upper bound, in bytes, for one im2col buffer (at least one output row is always used).
    nonisolated(unsafe) static var columnBudget = 16 << 20

    struct ConvGeometry {
        let n, cin, h, w, cout, kh, kw, stride, padding, hout, wout: Int
        var kdim: Int { cin * kh * kw }
        var plane: Int { hout * wout }
        var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && padding == 0 }

        init(x: [Int], w wshape: [Int], stride: Int, padding: Int) {
            if x.count != 4 || wshape.count != 4 { fatalError("conv2d: x must be [N, Cin, H, W] and w [Cout, Cin, kh, kw], got \(x) and \(wshape)") }
            if x[1] != wshape[1] { fatalError("conv2d: input has \(x[1]) channels, weight expects \(wshape[1])") }
            if stride < 1 || padding < 0 { fatalError("conv2d: bad stride \(stride) / padding \(padding)") }
            n = x[0]; cin = x[1]; h = x[2]; w = x[3]
            cout = wshape[0]; kh = wshape[2]; kw = wshape[3]
            self.stride = stride; self.padding = padding
            if h + 2 * padding < kh || w + 2 * padding < kw { fatalError("conv2d: kernel \(kh)x\(kw) larger than padded input \(h)x\(w)") }
            hout = (h + 2 * padding - kh) / stride + 1
            wout = (w + 2 * padding - kw) / stride + 1
        }

        /// One pass: samples s0..<s0+count (count > 1 only with whole planes), output rows oy0..<oy1.
        struct Pass { let s0, count, oy0, oy1: Int }

        /// Samples packed per pass (> 1 when several whole column matrices fit the budget).
        var samplesPerPass: Int {
            let perSample = Swift.max(1, kdim * plane * 4)
            return n > 1 && 2 * perSample <= Kernels.columnBudget ? Swift.min(n, Kernels.columnBudget / perSample) : 1
        }

        var passes: [Pass] {
            let per = samplesPerPass
            if per > 1 {
                return Swift.stride(from: 0, to: n, by: per).map { Pass(s0: $0, count: Swift.min(per, n - $0), oy0: 0, oy1: hout) }
            }
            let band = Swift.max(1, Swift.min(hout, Kernels.columnBudget / Swift.max(1, kdim * wout * 4)))
            var out: [Pass] = []
            for s in 0..<n {
                for oy0 in Swift.stride(from: 0, to: hout, by: band) { out.append(Pass(s0: s, count: 1, oy0: oy0, oy1: Swift.min(hout, oy0 + band))) }
            }
            return out
        }

        /// The largest number of columns a pass uses.
        var maxColumns: Int { passes.map { $0.count * ($0.oy1 - $0.oy0) * wout }.max() ?? 0 }

        /// Valid output columns [lo, hi) for kernel column kj: those reading inside the image.
        func columnRange(_ kj: Int) -> (Int, Int) {
            // ox stride - padding + kj in [0, w)
            let lo = Swift.max(0, Kernels.ceilDiv(padding - kj, stride))
            let hi = Swift.min(wout, Kernels.floorDiv(w - 1 + padding - kj, stride) + 1)
            return (lo, Swift.max(lo, hi))
        }
    }

    @inline(__always) static func ceilDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? (a + b - 1) / b : -((-a) / b) }
    @inline(__always) static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// For output rows oy0..<oy1 of one sample `x` [Cin, H, W]:
    /// cols[((c kh + ki) kw + kj) ld + (oy - oy0) wout + ox] = x[c, oy s - p + ki, ox s - p + kj] (0 outside).
    /// Padding is handled by precomputed column ranges and whole-row tests, no per-element checks.
    static func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ oy0: Int, _ oy1: Int,
                       _ cols: UnsafeMutablePointer<Float>, ld: Int) {
        let ranges = (0..<g.kw).map { g.columnRange($0) }
        ranges.withUnsafeBufferPointer { ranges in
            let ranges = ranges
            Parallel.forEach(g.cin, minimumChunk: grain(g.kh * g.kw * (oy1 - oy0) * g.wout)) { cr in
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

    /// The adjoint of `im2col`: dx[c, iy, ix] += cols[...] over the same positions (threads own
    /// channels, so there are no races and the order of additions is fixed).
    static func col2im(_ g: ConvGeometry, _ cols: UnsafePointer<Float>, _ oy0: Int, _ oy1: Int,
                       _ dx: UnsafeMutablePointer<Float>, ld: Int) {
        let ranges = (0..<g.kw).map { g.columnRange($0) }
        ranges.withUnsafeBufferPointer { ranges in
            let ranges = ranges
            Parallel.forEach(g.cin, minimumChunk: grain(g.kh * g.kw * (oy1 - oy0) * g.wout)) { cr in
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

    /// Copies `count` samples' [rows, plane] blocks (sample stride `stride`) into / out of a packed
    /// [rows, count plane] matrix.
    static func pack(_ src: UnsafePointer<Float>, stride: Int, rows: Int, plane: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        Parallel.forEach(rows, minimumChunk: grain(count * plane)) { r in
            for c in r { for j in 0..<count { (dst + (c * count + j) * plane).update(from: src + j * stride + c * plane, count: plane) } }
        }
    }

    static func unpack(_ src: UnsafePointer<Float>, rows: Int, plane: Int, count: Int, into dst: UnsafeMutablePointer<Float>, stride: Int, add: Bool) {
        Parallel.forEach(rows, minimumChunk: grain(count * plane)) { r in
            for c in r {
                for j in 0..<count {
                    let s = src + (c * count + j) * plane, d = dst + j * stride + c * plane
                    if add { for t in 0..<plane { d[t] += s[t] } } else { d.update(from: s, count: plane) }
                }
            }
        }
    }

    public static func conv2d(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding)
        let xc = f32(x), wc = f32(w), bc = bias.map(f32)
        if let bc, bc.count != g.cout { fatalError("conv2d: bias has \(bc.count) values for \(g.cout) channels") }
        let out = Tensor(uninitialized: [g.n, g.cout, g.hout, g.wout])
        defer { withExtendedLifetime((xc, wc, bc, out)) {} }
        if out.count == 0 { return out }
        convolve(g, pointer(xc), pointer(wc), bc.map { UnsafePointer(pointer($0)) }, pointer(out))
        return out
    }

    /// out[s] = W im2col(x[s]) + bias, sample by sample: one product W [Cout, Cin kh kw] x the
    /// implicit im2col matrix, which the AVX-512 kernel packs straight from x (a pointwise
    /// convolution reads x as it is).
    static func convolve(_ g: ConvGeometry, _ xp: UnsafePointer<Float>, _ wp: UnsafePointer<Float>,
                         _ bias: UnsafePointer<Float>?, _ op: UnsafeMutablePointer<Float>) {
        let plane = g.plane, inPlane = g.cin * g.h * g.w, outSample = g.cout * plane
        for s in 0..<g.n {
            let source = g.isPointwise ? GEMM.matrix(xp + s * inPlane, rowStride: plane, columnStride: 1)
                                       : GEMM.im2col(g, xp + s * inPlane)
            GEMM.gemm(m: g.cout, n: plane, k: g.kdim, a: wp, ars: g.kdim, aks: 1, b: source,
                      c: op + s * outSample, ldc: plane, rowBias: bias)
        }
    }

    /// Gradients of `conv2d` for the upstream gradient gy [N, Cout, Hout, Wout]: only the requested
    /// ones. dW = sum over samples of gy_s im2col(x_s)^T (accumulated in sample order);
    /// dx: for stride 1, the convolution of gy with the flipped, transposed kernel (padding kh-1-p);
    /// else col2im(W^T gy_s); dbias = sum of gy over samples and positions.
    public static func conv2dBackward(_ gy: Tensor, x: Tensor, w: Tensor, stride: Int, padding: Int,
                                      needInput: Bool, needWeight: Bool, needBias: Bool) -> (x: Tensor?, w: Tensor?, bias: Tensor?) {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding)
        if gy.shape != [g.n, g.cout, g.hout, g.wout] {
            fatalError("conv2dBackward: gradient shape \(gy.shape), expected \([g.n, g.cout, g.hout, g.wout])")
        }
        let gc = f32(gy)
        let xc = needWeight ? f32(x) : x
        let wc = needInput ? f32(w) : w
        let dx = needInput ? Tensor(uninitialized: x.shape) : nil
        let dw = needWeight ? Tensor(uninitialized: w.shape) : nil
        let db = needBias ? Tensor(uninitialized: [g.cout]) : nil
        defer { withExtendedLifetime((gc, xc, wc, dx, dw, db)) {} }
        if let t = dx, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if let t = dw, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if let t = db, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if gy.count == 0 { return (dx, dw, db) }
        let gp = pointer(gc), plane = g.plane, inPlane = g.cin * g.h * g.w, outSample = g.cout * plane

        if let db {
            let dbp = pointer(db)
            Parallel.forEach(g.cout, minimumChunk: grain(g.n * plane)) { r in
                for c in r {
                    var s = 0.0
                    for b in 0..<g.n { s += sum(gp + (b * g.cout + c) * plane, plane) }
                    dbp[c] = Float(s)
                }
            }
        }
        if let dw {   // dW [Cout, K] (+)= gy_s [Cout, HW] im2col(x_s)^T [HW, K]
            let xp = pointer(xc), dwp = pointer(dw)
            for s in 0..<g.n {
                let source = g.isPointwise ? GEMM.matrix(xp + s * inPlane, rowStride: 1, columnStride: plane)
                                           : GEMM.im2col(g, xp + s * inPlane, transposed: true)
                GEMM.gemm(m: g.cout, n: g.kdim, k: plane, a: gp + s * outSample, ars: plane, aks: 1, b: source,
                          beta: s == 0 ? 0 : 1, c: dwp, ldc: g.kdim)
            }
        }
        guard let dx else { return (nil, dw, db) }
        let wp = pointer(wc), dxp = pointer(dx)
        if g.isPointwise {   // dx_s [Cin, HW] = W^T gy_s
            for s in 0..<g.n {
                GEMM.gemm(m: g.cin, n: plane, k: g.cout, a: wp, ars: 1, aks: g.cin,
                          b: GEMM.matrix(gp + s * outSample, rowStride: plane, columnStride: 1),
                          c: dxp + s * inPlane, ldc: plane)
            }
        } else if g.stride == 1 && g.kh == g.kw && g.padding <= g.kh - 1 {
            // dx = gy convolved with W'[c, o, ki, kj] = W[o, c, kh-1-ki, kw-1-kj], padding kh-1-p.
            let flipped = UnsafeMutablePointer<Float>.allocate(capacity: g.cout * g.kdim)
            defer { flipped.deallocate() }
            let kk = g.kh * g.kw
            Parallel.forEach(g.cin, minimumChunk: grain(g.cout * kk)) { r in
                for c in r {
                    for o in 0..<g.cout {
                        let src = wp + (o * g.cin + c) * kk, dst = flipped + (c * g.cout + o) * kk
                        for t in 0..<kk { dst[t] = src[kk - 1 - t] }
                    }
                }
            }
            let h = ConvGeometry(x: [g.n, g.cout, g.hout, g.wout], w: [g.cin, g.cout, g.kh, g.kw],
                                 stride: 1, padding: g.kh - 1 - g.padding)
            precondition(h.hout == g.h && h.wout == g.w, "conv2dBackward: transposed geometry")
            convolve(h, gp, flipped, nil, dxp)
        } else {
            // dcols [K, band] = W^T gy_s (band of output rows), scattered back by col2im.
            dxp.initialize(repeating: 0, count: g.n * inPlane)
            let band = Swift.max(1, Swift.min(g.hout, Kernels.columnBudget / Swift.max(1, g.kdim * g.wout * 4)))
            let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.kdim * band * g.wout)
            defer { cols.deallocate() }
            for s in 0..<g.n {
                for oy0 in Swift.stride(from: 0, to: g.hout, by: band) {
                    let oy1 = Swift.min(g.hout, oy0 + band), ncols = (oy1 - oy0) * g.wout
                    GEMM.gemm(m: g.kdim, n: ncols, k: g.cout, a: wp, ars: 1, aks: g.kdim,
                              b: GEMM.matrix(gp + s * outSample + oy0 * g.wout, rowStride: plane, columnStride: 1),
                              c: cols, ldc: ncols)
                    col2im(g, cols, oy0, oy1, dxp + s * inPlane, ld: ncols)
                }
            }
        }
        return (dx, dw, db)
    }
}
