import CDGKernels
import Foundation

/// Fully connected layers as single products, with the bias added by the product itself, and the
/// same layer applied per pixel between the two layouts a UNet uses: channels-first images
/// [N, C, H, W] and tokens [N, H W, C]. The products read both layouts in place (a transposed
/// operand is just other strides), so no permuted copies are made either way.
extension Kernels {
    // MARK: linear on the last dimension

    /// Few rows against a large weight: the product is taken transposed, y^T = W x^T, so that the weight
    /// is read in place (in the broadcast role) instead of being copied into panels every call, which
    /// would cost as much as the product itself when each panel serves only a few rows.
    static func transposedIsCheaper(rows: Int, weight: Int) -> Bool { GEMM.vectorized && rows <= 128 && weight >= 1 << 16 }

    /// dst [cols, rows] = src [rows, cols]^T (contiguous).
    static func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        if avx512 {
            Parallel.forEach((rows + 15) / 16, minimumChunk: grain(16 * cols)) { r in
                let i0 = r.lowerBound * 16, n = Swift.min(rows, r.upperBound * 16) - i0
                dg_transpose(src + i0 * cols, n, cols, cols, dst + i0, rows)
            }
            return
        }
        Parallel.forEach(rows, minimumChunk: grain(cols)) { r in
            for i in r { for j in 0..<cols { dst[j * rows + i] = src[i * cols + j] } }
        }
    }

    /// y = x W^T + b over the last dimension: x [..., in], w [out, in], b [out] -> [..., out].
    public static func linear(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        let (outF, inF) = (w.shape[0], w.shape[1])
        if x.shape.last != inF { fatalError("linear: input \(x.shape) does not end in \(inF)") }
        if let b, b.count != outF { fatalError("linear: bias has \(b.count) values for \(outF) outputs") }
        let xc = f32(x), wc = productWeight(w), bc = b.map(f32)
        let rows = x.count / Swift.max(1, inF)
        let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [outF])
        defer { withExtendedLifetime((xc, wc, bc, y)) {} }
        countFlops(rows * inF * outF)
        if transposedIsCheaper(rows: rows, weight: outF * inF) {   // y^T [out, rows] = W x^T
            let t = UnsafeMutablePointer<Float>.allocate(capacity: outF * rows)
            defer { t.deallocate() }
            gemm(m: outF, n: rows, k: inF, weight: wc, b: GEMM.matrix(pointer(xc), rowStride: 1, columnStride: inF), c: t, ldc: rows,
                 rowBias: bc.map { UnsafePointer(pointer($0)) })
            transpose(t, rows: outF, cols: rows, into: pointer(y))
            return y
        }
        gemm(m: rows, n: outF, k: inF, a: pointer(xc), ars: inF, aks: 1, weightT: wc,
             c: pointer(y), ldc: outF, colBias: bc.map { UnsafePointer(pointer($0)) })
        return y
    }

    /// Gradients of `linear` for gy [..., out]: dx = gy W, dW = gy^T x, db = column sums of gy.
    public static func linearBackward(_ gy: Tensor, x: Tensor, w: Tensor, needInput: Bool, needWeight: Bool,
                                      needBias: Bool) -> (x: Tensor?, w: Tensor?, bias: Tensor?) {
        let (outF, inF) = (w.shape[0], w.shape[1])
        let rows = x.count / Swift.max(1, inF)
        let gc = f32(gy)
        var dx: Tensor?, dw: Tensor?
        withExtendedLifetime(gc) {
            if needInput {
                let wc = f32(w), t = Tensor(uninitialized: x.shape)
                withExtendedLifetime((wc, t)) {
                    if transposedIsCheaper(rows: rows, weight: outF * inF) {   // dx^T [in, rows] = W^T gy^T
                        let tt = UnsafeMutablePointer<Float>.allocate(capacity: inF * rows)
                        defer { tt.deallocate() }
                        GEMM.gemm(m: inF, n: rows, k: outF, a: pointer(wc), ars: 1, aks: inF,
                                  b: GEMM.matrix(pointer(gc), rowStride: 1, columnStride: outF), c: tt, ldc: rows)
                        transpose(tt, rows: inF, cols: rows, into: pointer(t))
                    } else {
                        GEMM.gemm(m: rows, n: inF, k: outF, a: pointer(gc), ars: outF, aks: 1,
                                  b: GEMM.matrix(pointer(wc), rowStride: inF, columnStride: 1), c: pointer(t), ldc: inF)
                    }
                }
                dx = t
            }
            if needWeight {
                let xc = f32(x), t = Tensor(uninitialized: w.shape)
                withExtendedLifetime((xc, t)) {
                    GEMM.gemm(m: outF, n: inF, k: rows, a: pointer(gc), ars: 1, aks: outF,
                              b: GEMM.matrix(pointer(xc), rowStride: inF, columnStride: 1), c: pointer(t), ldc: inF)
                }
                dw = t
            }
        }
        return (dx, dw, needBias ? sumToShape(gc.reshaped([rows, outF]), [outF]) : nil)
    }

    // MARK: per-pixel linear between layouts

    /// The weight of a per-pixel layer, [O, C] or [O, C, 1, 1], as (O, C).
    static func pointwiseShape(_ w: Tensor) -> (Int, Int) {
        if !(w.rank == 2 || (w.rank == 4 && w.shape[2] == 1 && w.shape[3] == 1)) {
            fatalError("pointwise layer: weight must be [O, C] or [O, C, 1, 1], got \(w.shape)")
        }
        return (w.shape[0], w.shape[1])
    }

    /// x [N, C, H, W] -> tokens [N, H W, O] = x_n^T W^T + b (a 1x1 convolution, or a linear layer on
    /// the pixels, written as tokens).
    public static func pointwiseToTokens(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        let (o, c) = pointwiseShape(w)
        precondition(x.rank == 4 && x.shape[1] == c, "pointwiseToTokens: x \(x.shape), weight \(w.shape)")
        let n = x.shape[0], plane = x.shape[2] * x.shape[3]
        let xc = f32(x), wc = productWeight(w), bc = b.map(f32)
        let y = Tensor(uninitialized: [n, plane, o])
        defer { withExtendedLifetime((xc, wc, bc, y)) {} }
        countFlops(n * plane * c * o)
        let xp = pointer(xc), yp = pointer(y)
        if transposedIsCheaper(rows: plane, weight: o * c) {   // y_s^T [O, HW] = W x_s, then transposed
            let t = UnsafeMutablePointer<Float>.allocate(capacity: o * plane)
            defer { t.deallocate() }
            for s in 0..<n {
                gemm(m: o, n: plane, k: c, weight: wc, b: GEMM.matrix(xp + s * c * plane, rowStride: plane, columnStride: 1),
                     c: t, ldc: plane, rowBias: bc.map { UnsafePointer(pointer($0)) })
                transpose(t, rows: o, cols: plane, into: yp + s * plane * o)
            }
            return y
        }
        for s in 0..<n {   // y_s [HW, O] = x_s^T [HW, C] W^T [C, O]
            gemm(m: plane, n: o, k: c, a: xp + s * c * plane, ars: 1, aks: plane, weightT: wc,
                 c: yp + s * plane * o, ldc: o, colBias: bc.map { UnsafePointer(pointer($0)) })
        }
        return y
    }

    /// Gradients of `pointwiseToTokens` for gy [N, H W, O].
    public static func pointwiseToTokensBackward(_ gy: Tensor, x: Tensor, w: Tensor, needInput: Bool, needWeight: Bool,
                                                 needBias: Bool) -> (x: Tensor?, w: Tensor?, bias: Tensor?) {
        let (o, c) = pointwiseShape(w)
        let n = x.shape[0], plane = x.shape[2] * x.shape[3]
        let gc = f32(gy)
        var dx: Tensor?, dw: Tensor?
        withExtendedLifetime(gc) {
            let gp = pointer(gc)
            if needInput {   // dx_s [C, HW] = W^T [C, O] gy_s^T [O, HW]
                let wc = f32(w), t = Tensor(uninitialized: x.shape)
                withExtendedLifetime((wc, t)) {
                    for s in 0..<n {
                        GEMM.gemm(m: c, n: plane, k: o, a: pointer(wc), ars: 1, aks: c,
                                  b: GEMM.matrix(gp + s * plane * o, rowStride: 1, columnStride: o),
                                  c: pointer(t) + s * c * plane, ldc: plane)
                    }
                }
                dx = t
            }
            if needWeight {   // dW [O, C] = sum_s gy_s^T [O, HW] x_s^T [HW, C]
                let xc = f32(x), t = Tensor(uninitialized: [o, c])
                withExtendedLifetime((xc, t)) {
                    for s in 0..<n {
                        GEMM.gemm(m: o, n: c, k: plane, a: gp + s * plane * o, ars: 1, aks: o,
                                  b: GEMM.matrix(pointer(xc) + s * c * plane, rowStride: 1, columnStride: plane),
                                  beta: s == 0 ? 0 : 1, c: pointer(t), ldc: c)
                    }
                }
                dw = t.reshaped(w.shape)
            }
        }
        return (dx, dw, needBias ? sumToShape(gc.reshaped([n * plane, o]), [o]) : nil)
    }

    /// tokens t [N, H W, C] -> [N, O, H, W] = W t_n^T + b (the inverse layout change of
    /// `pointwiseToTokens`).
    public static func tokensToPointwise(_ t: Tensor, _ w: Tensor, _ b: Tensor?, height: Int, width: Int) -> Tensor {
        let (o, c) = pointwiseShape(w)
        precondition(t.rank == 3 && t.shape[2] == c && t.shape[1] == height * width, "tokensToPointwise: t \(t.shape), weight \(w.shape)")
        let n = t.shape[0], plane = height * width
        let tc = f32(t), wc = productWeight(w), bc = b.map(f32)
        let y = Tensor(uninitialized: [n, o, height, width])
        defer { withExtendedLifetime((tc, wc, bc, y)) {} }
        countFlops(n * plane * c * o)
        let tp = pointer(tc), yp = pointer(y)
        for s in 0..<n {   // y_s [O, HW] = W [O, C] t_s^T [C, HW]
            gemm(m: o, n: plane, k: c, weight: wc, b: GEMM.matrix(tp + s * plane * c, rowStride: 1, columnStride: c),
                 c: yp + s * o * plane, ldc: plane, rowBias: bc.map { UnsafePointer(pointer($0)) })
        }
        return y
    }

    /// Gradients of `tokensToPointwise` for gy [N, O, H, W].
    public static func tokensToPointwiseBackward(_ gy: Tensor, t: Tensor, w: Tensor, needInput: Bool, needWeight: Bool,
                                                 needBias: Bool) -> (t: Tensor?, w: Tensor?, bias: Tensor?) {
        let (o, c) = pointwiseShape(w)
        let n = t.shape[0], plane = t.shape[1]
        let gc = f32(gy)
        var dt: Tensor?, dw: Tensor?
        withExtendedLifetime(gc) {
            let gp = pointer(gc)
            if needInput {   // dt_s [HW, C] = gy_s^T [HW, O] W [O, C]
                let wc = f32(w), r = Tensor(uninitialized: t.shape)
                withExtendedLifetime((wc, r)) {
                    for s in 0..<n {
                        GEMM.gemm(m: plane, n: c, k: o, a: gp + s * o * plane, ars: 1, aks: plane,
                                  b: GEMM.matrix(pointer(wc), rowStride: c, columnStride: 1),
                                  c: pointer(r) + s * plane * c, ldc: c)
                    }
                }
                dt = r
            }
            if needWeight {   // dW [O, C] = sum_s gy_s [O, HW] t_s [HW, C]
                let tc = f32(t), r = Tensor(uninitialized: [o, c])
                withExtendedLifetime((tc, r)) {
                    for s in 0..<n {
                        GEMM.gemm(m: o, n: c, k: plane, a: gp + s * o * plane, ars: plane, aks: 1,
                                  b: GEMM.matrix(pointer(tc) + s * plane * c, rowStride: c, columnStride: 1),
                                  beta: s == 0 ? 0 : 1, c: pointer(r), ldc: c)
                    }
                }
                dw = r.reshaped(w.shape)
            }
        }
        return (dt, dw, needBias ? sumToShape(gc.reshaped([n, o, plane]), [1, o, 1]).reshaped([o]) : nil)
    }

    // MARK: GEGLU

    /// h [..., 2 D] -> a * gelu(g) [..., D], with a, g the two halves of the last dimension
    /// (PyTorch's erf GELU, computed exactly as `activate(g, .geluErf)` followed by a product).
    public static func geglu(_ h: Tensor) -> Tensor {
        let two = h.shape.last ?? 0
        if two % 2 != 0 { fatalError("geglu: last dimension \(two) is odd") }
        let d = two / 2, rows = h.count / Swift.max(1, two)
        let hc = f32(h), y = Tensor(uninitialized: Array(h.shape.dropLast()) + [d])
        defer { withExtendedLifetime((hc, y)) {} }
        let hp = pointer(hc), yp = pointer(y)
        Parallel.forEach(rows, minimumChunk: grain(8 * d)) { r in
            if avx512 { dg_geglu(hp + r.lowerBound * two, yp + r.lowerBound * d, r.count, d); return }
            for i in r {
                let a = hp + i * two, g = a + d, o = yp + i * d
                for k in 0..<d { let v = g[k]; let gelu = v * normalCDF(v); o[k] = a[k] * gelu }
            }
        }
        return y
    }

    public static func gegluBackward(_ gy: Tensor, h: Tensor) -> Tensor {
        let two = h.shape.last ?? 0, d = two / 2, rows = h.count / Swift.max(1, two)
        let gc = f32(gy), hc = f32(h), dh = Tensor(uninitialized: h.shape)
        defer { withExtendedLifetime((gc, hc, dh)) {} }
        let gp = pointer(gc), hp = pointer(hc), dp = pointer(dh)
        Parallel.forEach(rows, minimumChunk: grain(16 * d)) { r in
            if avx512 { dg_geglu_backward(gp + r.lowerBound * d, hp + r.lowerBound * two, dp + r.lowerBound * two, r.count, d); return }
            for i in r {
                let a = hp + i * two, g = a + d, go = gp + i * d, da = dp + i * two, dg = da + d
                for k in 0..<d {
                    let v = g[k]
                    // d/da = gy gelu(g); d/dg = (gy a) gelu'(g)
                    da[k] = go[k] * (v * normalCDF(v))
                    dg[k] = (go[k] * a[k]) * geluDerivative(v)
                }
            }
        }
        return dh
    }
}
