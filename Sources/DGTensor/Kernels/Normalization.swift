import CDGKernels
import Foundation

/// Group norm and layer norm. Statistics are accumulated in Double (two passes: mean, then the sum
/// of squared deviations, so a large mean costs no precision); the variance is the biased one.
extension Kernels {
    // MARK: group norm

    /// x [N, C, *spatial]: each sample's channels are split into `groups` groups, normalised over
    /// (C/groups x spatial), then scaled and shifted per channel. Returns mean and rstd [N*groups].
    /// `silu`: y = silu(groupNorm(x)) in the same pass (the ResNet blocks' norm + activation).
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float,
                                 silu: Bool = false) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        precondition(x.rank >= 2, "groupNorm: x must be [N, C, ...]")
        let n = x.shape[0], c = x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
        if groups < 1 || c % groups != 0 { fatalError("groupNorm: \(c) channels do not split into \(groups) groups") }
        let cg = c / groups, seg = cg * s
        let xc = f32(x), wc = weight.map(f32), bc = bias.map(f32)
        if let wc, wc.count != c { fatalError("groupNorm: weight has \(wc.count) values for \(c) channels") }
        if let bc, bc.count != c { fatalError("groupNorm: bias has \(bc.count) values for \(c) channels") }
        let y = Tensor(uninitialized: x.shape), mean = Tensor(uninitialized: [n * groups]), rstd = Tensor(uninitialized: [n * groups])
        defer { withExtendedLifetime((xc, wc, bc, y, mean, rstd)) {} }
        let xp = pointer(xc), yp = pointer(y), mp = pointer(mean), rp = pointer(rstd)
        let wp = wc.map(pointer), bp = bc.map(pointer)
        Parallel.forEach(n * groups, minimumChunk: grain(2 * seg)) { r in
            for i in r {
                let xs = xp + i * seg
                let m = sum(xs, seg) / Double(seg)
                let v = sumSquaredDeviations(xs, seg, Float(m)) / Double(seg)
                let rs = 1 / (v + Double(eps)).squareRoot()
                mp[i] = Float(m); rp[i] = Float(rs)
                // The scale and shift from the stored (float) statistics, so that a backward pass can
                // recompute the output exactly (`siluThroughGroupNorm`).
                let (ms, rss) = (Double(mp[i]), Double(rp[i]))
                let g = i % groups
                for j in 0..<cg {
                    let ch = g * cg + j
                    let a = Float(rss * Double(wp?[ch] ?? 1))
                    let b = Float(Double(bp?[ch] ?? 0) - ms * Double(a))
                    let src = xs + j * s, dst = yp + i * seg + j * s
                    if avx512 {
                        dg_affine(src, dst, s, a, b, silu ? 1 : 0)
                    } else if silu {
                        for k in 0..<s { let v = src[k] * a + b; dst[k] = v / (1 + exp(-v)) }
                    } else {
                        for k in 0..<s { dst[k] = src[k] * a + b }
                    }
                }
            }
        }
        return (y, mean, rstd)
    }

    /// With xhat = (x - mean) rstd and g = gy w: dx = rstd (g - mean_group(g) - xhat mean_group(g xhat)),
    /// dweight = sum over N and spatial of gy xhat, dbias = sum of gy.
    ///
    /// `silu` (the fused norm + activation; needs `bias`): gy is first taken back through the SiLU,
    /// at the pre-activation values recomputed exactly as the forward pass computed them.
    public static func groupNormBackward(_ gy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, groups: Int, weight: Tensor?,
                                         silu: Bool = false, bias: Tensor? = nil) -> (x: Tensor, weight: Tensor?, bias: Tensor?) {
        let n = x.shape[0], c = x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
        let cg = c / groups, seg = cg * s
        precondition(gy.shape == x.shape && mean.count == n * groups && rstd.count == n * groups, "groupNormBackward: shapes")
        let gc = silu ? siluThroughGroupNorm(gy, x: x, mean: mean, rstd: rstd, groups: groups, weight: weight, bias: bias)
                      : f32(gy)
        let xc = f32(x), mc = f32(mean), rc = f32(rstd)
        let wc = weight.map(f32)
        let dx = Tensor(uninitialized: x.shape)
        let dw = Tensor(uninitialized: [c]), db = Tensor(uninitialized: [c])
        defer { withExtendedLifetime((gc, xc, mc, rc, wc, dx, dw, db)) {} }
        let gp = pointer(gc), xp = pointer(xc), mp = pointer(mc), rp = pointer(rc)
        let wp = wc.map(pointer), dxp = pointer(dx)

        // Per (sample, channel): sum gy and sum gy x.
        var sgy = [Double](repeating: 0, count: n * c), sgyx = sgy
        sgy.withUnsafeMutableBufferPointer { sgy in
            sgyx.withUnsafeMutableBufferPointer { sgyx in
                let (sgy, sgyx) = (sgy, sgyx)
                Parallel.forEach(n * c, minimumChunk: grain(2 * s)) { r in
                    for i in r {
                        sgy[i] = sum(gp + i * s, s)
                        sgyx[i] = dot(gp + i * s, xp + i * s, s)
                    }
                }
            }
        }
        // Per channel (samples in order): dweight and dbias.
        let dwp = pointer(dw), dbp = pointer(db)
        for ch in 0..<c {
            var a = 0.0, b = 0.0
            for b0 in 0..<n {
                let gi = b0 * groups + ch / cg, i = b0 * c + ch
                a += Double(rp[gi]) * (sgyx[i] - Double(mp[gi]) * sgy[i])
                b += sgy[i]
            }
            dwp[ch] = Float(a); dbp[ch] = Float(b)
        }
        // Per (sample, channel): dx = A gy + B (x - mean) + C (centred, so that a mean far from 0
        // costs no precision).
        var coefficients = [Float](repeating: 0, count: 4 * n * c)
        for i in 0..<(n * groups) {
            let g = i % groups, b0 = i / groups
            let m = Double(mp[i]), rs = Double(rp[i])
            var sg = 0.0, sgx = 0.0   // sum of g and of g xhat over the group
            for j in 0..<cg {
                let ch = g * cg + j, k = b0 * c + ch
                let wv = Double(wp?[ch] ?? 1)
                sg += wv * sgy[k]
                sgx += wv * rs * (sgyx[k] - m * sgy[k])
            }
            let mg = sg / Double(seg), mgx = sgx / Double(seg)
            for j in 0..<cg {
                let ch = g * cg + j, k = b0 * c + ch
                coefficients[4 * k] = Float(rs * Double(wp?[ch] ?? 1))
                coefficients[4 * k + 1] = Float(-rs * rs * mgx)
                coefficients[4 * k + 2] = Float(-rs * mg)
                coefficients[4 * k + 3] = Float(m)
            }
        }
        coefficients.withUnsafeBufferPointer { co in
            let co = co
            Parallel.forEach(n * c, minimumChunk: grain(s)) { r in
                for k in r {
                    let a = co[4 * k], b = co[4 * k + 1], c0 = co[4 * k + 2], m = co[4 * k + 3]
                    let g = gp + k * s, xv = xp + k * s, d = dxp + k * s
                    if avx512 { dg_norm_backward_row(g, xv, d, s, a, b, c0, m); continue }
                    for t in 0..<s { d[t] = a * g[t] + b * (xv[t] - m) + c0 }
                }
            }
        }
        return (dx, weight == nil ? nil : dw, db)
    }

    /// gy silu'(z), z = groupNorm(x) recomputed with the forward pass's arithmetic.
    static func siluThroughGroupNorm(_ gy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, groups: Int, weight: Tensor?,
                                     bias: Tensor?) -> Tensor {
        let n = x.shape[0], c = x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
        let cg = c / groups
        let gc = f32(gy), xc = f32(x), mc = f32(mean), rc = f32(rstd), wc = weight.map(f32), bc = bias.map(f32)
        let dz = Tensor(uninitialized: x.shape)
        defer { withExtendedLifetime((gc, xc, mc, rc, wc, bc, dz)) {} }
        let gp = pointer(gc), xp = pointer(xc), mp = pointer(mc), rp = pointer(rc), dp = pointer(dz)
        let wp = wc.map(pointer), bp = bc.map(pointer)
        Parallel.forEach(n * c, minimumChunk: grain(4 * s)) { r in
            for k in r {
                let ch = k % c, gi = (k / c) * groups + ch / cg
                let m = Double(mp[gi]), rs = Double(rp[gi])
                let a = Float(rs * Double(wp?[ch] ?? 1))
                let b = Float(Double(bp?[ch] ?? 0) - m * Double(a))
                let xs = xp + k * s, g = gp + k * s, o = dp + k * s
                if avx512 { dg_affine_silu_backward(xs, g, o, s, a, b); continue }
                for t in 0..<s {
                    let v = xs[t] * a + b, sg = 1 / (1 + exp(-v))
                    o[t] = g[t] * sg * (1 + v * (1 - sg))
                }
            }
        }
        return dz
    }

    // MARK: layer norm

    /// Normalises over the last dimension. Returns mean and rstd [rows] (rows = count / last dim).
    public static func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        let d = x.shape.last ?? 1, rows = x.count / Swift.max(1, d)
        let xc = f32(x), wc = weight.map(f32), bc = bias.map(f32)
        if let wc, wc.count != d { fatalError("layerNorm: weight has \(wc.count) values for dimension \(d)") }
        if let bc, bc.count != d { fatalError("layerNorm: bias has \(bc.count) values for dimension \(d)") }
        let y = Tensor(uninitialized: x.shape), mean = Tensor(uninitialized: [rows]), rstd = Tensor(uninitialized: [rows])
        defer { withExtendedLifetime((xc, wc, bc, y, mean, rstd)) {} }
        let xp = pointer(xc), yp = pointer(y), mp = pointer(mean), rp = pointer(rstd)
        let wp = wc.map(pointer), bp = bc.map(pointer)
        Parallel.forEach(rows, minimumChunk: grain(3 * d)) { r in
            for i in r {
                let xs = xp + i * d, ys = yp + i * d
                let m = sum(xs, d) / Double(d)
                let v = sumSquaredDeviations(xs, d, Float(m)) / Double(d)
                let rs = 1 / (v + Double(eps)).squareRoot()
                mp[i] = Float(m); rp[i] = Float(rs)
                let mf = Float(m), rf = Float(rs)
                switch (wp, bp) {
                case let (w?, b?): for k in 0..<d { ys[k] = (xs[k] - mf) * rf * w[k] + b[k] }
                case let (w?, nil): for k in 0..<d { ys[k] = (xs[k] - mf) * rf * w[k] }
                case let (nil, b?): for k in 0..<d { ys[k] = (xs[k] - mf) * rf + b[k] }
                case (nil, nil): for k in 0..<d { ys[k] = (xs[k] - mf) * rf }
                }
            }
        }
        return (y, mean, rstd)
    }

    public static func layerNormBackward(_ gy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor?) -> (x: Tensor, weight: Tensor?, bias: Tensor?) {
        let d = x.shape.last ?? 1, rows = x.count / Swift.max(1, d)
        precondition(gy.shape == x.shape && mean.count == rows && rstd.count == rows, "layerNormBackward: shapes")
        let gc = f32(gy), xc = f32(x), mc = f32(mean), rc = f32(rstd)
        let wc = weight.map(f32)
        let dx = Tensor(uninitialized: x.shape), dw = Tensor(uninitialized: [d]), db = Tensor(uninitialized: [d])
        defer { withExtendedLifetime((gc, xc, mc, rc, wc, dx, dw, db)) {} }
        let gp = pointer(gc), xp = pointer(xc), mp = pointer(mc), rp = pointer(rc)
        let wp = wc.map(pointer), dxp = pointer(dx)
        let parts = Parallel.chunks(rows, minimumChunk: grain(4 * d))
        // Per chunk: partial dweight and dbias (Double), combined in chunk order below.
        var partials = [Double](repeating: 0, count: parts.count * 2 * d)
        partials.withUnsafeMutableBufferPointer { pb in
            let pb = pb
            forEachChunk(rows, minimumChunk: grain(4 * d)) { ci, r in
                let pw = pb.baseAddress! + ci * 2 * d, pbias = pw + d
                let t = UnsafeMutablePointer<Float>.allocate(capacity: d)
                defer { t.deallocate() }
                for i in r {
                    let g = gp + i * d, xs = xp + i * d, dxs = dxp + i * d
                    let m = mp[i], rs = rp[i]
                    if let wp { for k in 0..<d { t[k] = g[k] * wp[k] } } else { t.update(from: g, count: d) }
                    let sg = sum(t, d), sgx = dot(t, xs, d)
                    let mg = sg / Double(d)
                    let mgx = Double(rs) * (sgx - Double(m) * sg) / Double(d)
                    // dx = rstd t - rstd^2 mean(g xhat)/rstd (x - mean) - rstd mean(g), centred.
                    let a = rs, b = Float(-Double(rs) * Double(rs) * mgx), c0 = Float(-Double(rs) * mg)
                    for k in 0..<d { dxs[k] = a * t[k] + b * (xs[k] - m) + c0 }
                    for k in 0..<d {
                        pw[k] += Double(g[k] * ((xs[k] - m) * rs))
                        pbias[k] += Double(g[k])
                    }
                }
            }
        }
        let dwp = pointer(dw), dbp = pointer(db)
        for k in 0..<d {
            var a = 0.0, b = 0.0
            for ci in 0..<parts.count { a += partials[ci * 2 * d + k]; b += partials[ci * 2 * d + d + k] }
            dwp[k] = Float(a); dbp[k] = Float(b)
        }
        return (dx, weight == nil ? nil : dw, db)
    }
}
