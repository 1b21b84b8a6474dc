import Foundation
import DGTensor

// The differentiable ops Stable Diffusion needs. Each computes its value with a kernel and
// records the kernel's backward.

// MARK: element-wise

public func + (a: Var, b: Var) -> Var {
    let (sa, sb) = (a.shape, b.shape)
    return record("add", Kernels.add(a.value, b.value), [a, b]) { g, need in
        [need[0] ? Kernels.sumToShape(g, sa) : nil, need[1] ? Kernels.sumToShape(g, sb) : nil]
    }
}

public func - (a: Var, b: Var) -> Var {
    let (sa, sb) = (a.shape, b.shape)
    return record("sub", Kernels.sub(a.value, b.value), [a, b]) { g, need in
        [need[0] ? Kernels.sumToShape(g, sa) : nil, need[1] ? Kernels.sumToShape(Kernels.scale(g, -1), sb) : nil]
    }
}

public func * (a: Var, b: Var) -> Var {
    let (va, vb) = (a.value, b.value)
    return record("mul", Kernels.mul(va, vb), [a, b]) { g, need in
        [need[0] ? Kernels.sumToShape(Kernels.mul(g, vb), va.shape) : nil,
         need[1] ? Kernels.sumToShape(Kernels.mul(g, va), vb.shape) : nil]
    }
}

public func / (a: Var, b: Var) -> Var {
    let (va, vb) = (a.value, b.value)
    let out = Profiler.measure("div") { Kernels.div(va, vb) }
    return record("div", out, timed: false, [a, b]) { g, need in
        [need[0] ? Kernels.sumToShape(Kernels.div(g, vb), va.shape) : nil,
         need[1] ? Kernels.sumToShape(Kernels.scale(Kernels.div(Kernels.mul(g, out), vb), -1), vb.shape) : nil]
    }
}

public func * (a: Var, s: Float) -> Var {
    record("mul", Kernels.scale(a.value, s), [a]) { g, _ in [Kernels.scale(g, s)] }
}

public prefix func - (a: Var) -> Var { a * -1 }

public enum Activation: Sendable {
    case silu, geluTanh, geluErf, quickGELU

    var kernel: Kernels.Activation {
        switch self {
        case .silu: return .silu
        case .geluTanh: return .geluTanh
        case .geluErf: return .geluErf
        case .quickGELU: return .quickGELU
        }
    }
}

public func activate(_ x: Var, _ a: Activation) -> Var {
    let v = x.value
    return record("activate", Kernels.activate(v, a.kernel), [x]) { g, _ in [Kernels.activateBackward(g, x: v, a.kernel)] }
}

public func silu(_ x: Var) -> Var { activate(x, .silu) }

// MARK: linear algebra

/// A weight kept for backward in its stored (possibly 16-bit) form, as float32 again.
@inline(__always)
func widened(_ t: Tensor) -> Tensor { t.dtype == .f32 ? t : t.converted(to: .f32) }

/// A tensor of the given shape with no values, standing for an operand a backward pass does not read.
func placeholder(_ shape: [Int]) -> Tensor {
    Tensor(storage: TensorStorage(uninitializedByteCount: 0), dtype: .f32, shape: shape)
}

/// y = x Wᵀ + b over the last dimension of x (PyTorch's Linear): x [..., in], w [out, in].
public func linear(_ x: Var, _ w: Var, _ b: Var?) -> Var {
    let (vx, ws) = (x.value, w.saved)
    var inputs = [x, w]
    if let b { inputs.append(b) }
    let keepX: Tensor? = w.requiresGrad ? vx : nil, keepW: Tensor? = x.requiresGrad ? ws : nil   // (see conv2d)
    let xShape = vx.shape, wShape = ws.shape
    return record("linear", Kernels.linear(vx, Autocast.forwardWeight(w), b?.value), inputs) { g, need in
        let r = Kernels.linearBackward(g, x: keepX ?? placeholder(xShape), w: keepW.map(widened) ?? placeholder(wShape),
                                       needInput: need[0] && keepW != nil, needWeight: need[1] && keepX != nil,
                                       needBias: need.count > 2 && need[2])
        return need.count > 2 ? [r.x, r.w, r.bias] : [r.x, r.w]
    }
}

/// A per-pixel linear layer (a 1x1 convolution) from an image x [N, C, H, W] to tokens [N, H W, O];
/// w is [O, C] or [O, C, 1, 1]. The same as conv2d followed by a permute, without the copy.
public func pointwiseToTokens(_ x: Var, _ w: Var, _ b: Var?) -> Var {
    let (vx, ws) = (x.value, w.saved)
    var inputs = [x, w]
    if let b { inputs.append(b) }
    return record("pointwiseToTokens", Kernels.pointwiseToTokens(vx, Autocast.forwardWeight(w), b?.value), inputs) { g, need in
        let r = Kernels.pointwiseToTokensBackward(g, x: vx, w: widened(ws), needInput: need[0], needWeight: need[1],
                                                  needBias: need.count > 2 && need[2])
        return need.count > 2 ? [r.x, r.w, r.bias] : [r.x, r.w]
    }
}

/// The inverse layout change: tokens t [N, H W, C] through a per-pixel linear layer to an image
/// [N, O, H, W].
public func tokensToPointwise(_ t: Var, _ w: Var, _ b: Var?, height: Int, width: Int) -> Var {
    let (vt, ws) = (t.value, w.saved)
    var inputs = [t, w]
    if let b { inputs.append(b) }
    return record("tokensToPointwise", Kernels.tokensToPointwise(vt, Autocast.forwardWeight(w), b?.value, height: height, width: width), inputs) { g, need in
        let r = Kernels.tokensToPointwiseBackward(g, t: vt, w: widened(ws), needInput: need[0], needWeight: need[1],
                                                  needBias: need.count > 2 && need[2])
        return need.count > 2 ? [r.t, r.w, r.bias] : [r.t, r.w]
    }
}

/// h [..., 2 D] -> a * gelu(g), a and g the halves of the last dimension (diffusers' GEGLU after
/// its projection).
public func geglu(_ h: Var) -> Var {
    let v = h.value
    return record("geglu", Kernels.geglu(v), [h]) { g, _ in [Kernels.gegluBackward(g, h: v)] }
}

/// Batched matrix product [.., m, k] x [.., k, n].
public func matmul(_ a: Var, _ b: Var, transposeB: Bool = false) -> Var {
    let (va, vb) = (a.value, b.value)
    return record("matmul", va.matmul(vb, transposeB: transposeB), [a, b]) { g, need in
        [need[0] ? g.matmul(vb, transposeB: !transposeB) : nil,
         need[1] ? (transposeB ? g.matmul(va, transposeA: true) : va.matmul(g, transposeA: true)) : nil]
    }
}

// MARK: convolution and normalisation

/// `paddingEnd`: that much more zero padding at the bottom and on the right.
public func conv2d(_ x: Var, _ w: Var, _ b: Var?, stride: Int = 1, padding: Int = 0, paddingEnd: Int = 0) -> Var {
    let (vx, ws) = (x.value, w.saved)
    var inputs = [x, w]
    if let b { inputs.append(b) }
    // The backward pass needs x only for the weight's gradient, and w only for x's: a frozen layer
    // does not keep its input alive. A 16-bit weight is kept as stored and widened in backward.
    let keepX: Tensor? = w.requiresGrad ? vx : nil, keepW: Tensor? = x.requiresGrad ? ws : nil
    let xShape = vx.shape, wShape = ws.shape
    return record("conv2d", Kernels.conv2d(vx, Autocast.forwardWeight(w), b?.value, stride: stride, padding: padding, paddingEnd: paddingEnd), inputs) { g, need in
        let r = Kernels.conv2dBackward(g, x: keepX ?? placeholder(xShape), w: keepW.map(widened) ?? placeholder(wShape),
                                       stride: stride, padding: padding, paddingEnd: paddingEnd,
                                       needInput: need[0] && keepW != nil, needWeight: need[1] && keepX != nil,
                                       needBias: need.count > 2 && need[2])
        return need.count > 2 ? [r.x, r.w, r.bias] : [r.x, r.w]
    }
}

public func groupNorm(_ x: Var, groups: Int, weight: Var?, bias: Var?, eps: Float, silu: Bool = false) -> Var {
    let vx = x.value, vw = weight?.value, vb = bias?.value
    let r = Profiler.measure("groupNorm") { Kernels.groupNorm(vx, groups: groups, weight: vw, bias: vb, eps: eps, silu: silu) }
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    return record("groupNorm", r.y, timed: false, inputs) { g, _ in
        let b = Kernels.groupNormBackward(g, x: vx, mean: r.mean, rstd: r.rstd, groups: groups, weight: vw, silu: silu, bias: vb)
        var grads: [Tensor?] = [b.x]
        if weight != nil { grads.append(b.weight) }
        if bias != nil { grads.append(b.bias) }
        return grads
    }
}

public func layerNorm(_ x: Var, weight: Var?, bias: Var?, eps: Float) -> Var {
    let vx = x.value, vw = weight?.value
    let r = Profiler.measure("layerNorm") { Kernels.layerNorm(vx, weight: vw, bias: bias?.value, eps: eps) }
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    return record("layerNorm", r.y, timed: false, inputs) { g, _ in
        let b = Kernels.layerNormBackward(g, x: vx, mean: r.mean, rstd: r.rstd, weight: vw)
        var grads: [Tensor?] = [b.x]
        if weight != nil { grads.append(b.weight) }
        if bias != nil { grads.append(b.bias) }
        return grads
    }
}

public func softmax(_ x: Var) -> Var {
    let y = Profiler.measure("softmax") { Kernels.softmax(x.value) }
    return record("softmax", y, timed: false, [x]) { g, _ in [Kernels.softmaxBackward(g, y: y)] }
}

/// Scaled dot-product attention over [B, L, H D] tensors: H heads side by side in the last dimension
/// (as the projections produce them), out [B, Lq, H Dv]. bf16 (a layer whose projections compute in
/// bf16), or under bf16 autocast: both products in bf16 where the CPU's bf16 products run
/// (`Kernels.attention`), and the backward pass recomputes the scores by the same bf16 product, so the
/// probabilities it rebuilds from the log-sum-exp are the forward's.
public func attention(_ q: Var, _ k: Var, _ v: Var, heads: Int = 1, scale: Float, causal: Bool = false,
                      bf16: Bool = false) -> Var {
    let (vq, vk, vv) = (q.value, k.value, v.value)
    let bf16 = bf16 || Autocast.isBF16
    let r = Profiler.measure("attention") {
        Kernels.attention(q: vq, k: vk, v: vv, heads: heads, scale: scale, causal: causal, bf16: bf16)
    }
    return record("attention", r.out, timed: false, [q, k, v]) { g, _ in
        let b = Kernels.attentionBackward(g, q: vq, k: vk, v: vv, out: r.out, logsumexp: r.logsumexp, heads: heads,
                                          scale: scale, causal: causal, bf16: bf16)
        return [b.q, b.k, b.v]
    }
}

public func upsampleNearest2x(_ x: Var) -> Var {
    record("upsampleNearest2x", Kernels.upsampleNearest2x(x.value), [x]) { g, _ in [Kernels.upsampleNearest2xBackward(g)] }
}

public func embedding(_ table: Var, ids: Tensor) -> Var {
    let vocabulary = table.shape[0]
    return record("embedding", Kernels.embedding(table.value, ids: ids), [table]) { g, _ in
        [Kernels.embeddingBackward(g, ids: ids, vocabulary: vocabulary)]
    }
}

// MARK: shape

extension Var {
    public func reshaped(_ shape: [Int]) -> Var {
        let original = self.shape
        return record("reshaped", value.contiguous().reshaped(shape), [self]) { g, _ in [g.contiguous().reshaped(original)] }
    }

    /// A permuted copy (contiguous), so that kernels downstream read it sequentially.
    public func permuted(_ order: [Int]) -> Var {
        var inverse = [Int](repeating: 0, count: order.count)
        for (i, o) in order.enumerated() { inverse[o] = i }
        return record("permuted", value.permuted(order).contiguous(), [self]) { g, _ in [g.permuted(inverse).contiguous()] }
    }

    public func transposed(_ a: Int, _ b: Int) -> Var {
        var order = Array(0..<shape.count)
        order.swapAt(a, b)
        return permuted(order)
    }

    /// Elements `range` along `axis`, copied.
    public func slice(axis: Int, _ range: Range<Int>) -> Var {
        let original = shape
        return record("slice", value.slice(axis: axis, range).contiguous(), [self]) { g, _ in
            // The gradient of a slice is zero outside it.
            var parts: [Tensor] = []
            if range.lowerBound > 0 {
                var s = original; s[axis] = range.lowerBound
                parts.append(Tensor(zeros: s))
            }
            parts.append(g)
            if range.upperBound < original[axis] {
                var s = original; s[axis] = original[axis] - range.upperBound
                parts.append(Tensor(zeros: s))
            }
            return [parts.count == 1 ? g : Kernels.concat(parts, axis: axis)]
        }
    }

    /// Splits into `count` equal chunks along `axis` (PyTorch's chunk).
    public func chunked(_ count: Int, axis: Int) -> [Var] {
        let size = shape[axis] / count
        return (0..<count).map { slice(axis: axis, ($0 * size)..<(($0 + 1) * size)) }
    }
}

public func concat(_ xs: [Var], axis: Int) -> Var {
    let sizes = xs.map { $0.shape[axis] }
    return record("concat", Kernels.concat(xs.map(\.value), axis: axis), xs) { g, need in
        var start = 0
        return sizes.enumerated().map { i, n in
            defer { start += n }
            return need[i] ? g.slice(axis: axis, start..<(start + n)).contiguous() : nil
        }
    }
}

// MARK: reductions and losses

public func mean(_ x: Var) -> Var {
    let shape = x.shape, n = Float(x.value.count)
    return record("mean", Tensor(shape: [], floats: [Float(Kernels.mean(x.value))]), [x]) { g, _ in
        let s = g.floats[0] / n
        return [Kernels.add(Tensor(zeros: shape), Tensor(shape: [], floats: [s]))]
    }
}

public func sum(_ x: Var) -> Var {
    let shape = x.shape
    return record("sum", Tensor(shape: [], floats: [Float(Kernels.sum(x.value))]), [x]) { g, _ in
        [Kernels.add(Tensor(zeros: shape), g)]
    }
}

/// Mean squared error, averaged over all elements (PyTorch's default reduction).
public func mseLoss(_ prediction: Var, _ target: Var) -> Var {
    let d = prediction - target
    return mean(d * d)
}

// MARK: autoencoder losses

/// Mean absolute error over all elements (PyTorch's l1_loss); the gradient at a tie is 0.
public func l1Loss(_ prediction: Var, _ target: Var) -> Var {
    let p = prediction.value.contiguous().floats, t = target.value.contiguous().floats
    let shape = prediction.shape, n = Float(p.count)
    var total = 0.0
    for i in p.indices { total += Double(abs(p[i] - t[i])) }
    return record("l1_loss", Tensor(shape: [], floats: [Float(total / Double(p.count))]), [prediction, target]) { g, need in
        let s = g.floats[0] / n
        var d = [Float](repeating: 0, count: p.count)
        for i in p.indices { d[i] = p[i] > t[i] ? s : p[i] < t[i] ? -s : 0 }
        return [need[0] ? Tensor(shape: shape, floats: d) : nil, need[1] ? Tensor(shape: shape, floats: d.map { -$0 }) : nil]
    }
}

/// Splits VAE moments [N, 2C, H, W] into mean and log-variance, the latter clamped to
/// [-30, 20] as diffusers' DiagonalGaussianDistribution does (the clamp passes no gradient).
private func splitMoments(_ moments: Tensor) -> (mean: [Float], logvar: [Float], clamped: [Bool], shape: [Int]) {
    let s = moments.shape, c = s[1] / 2, plane = s[2] * s[3]
    let m = moments.contiguous().floats
    var mean: [Float] = [], logvar: [Float] = [], clamped: [Bool] = []
    mean.reserveCapacity(m.count / 2)
    for b in 0..<s[0] {
        let base = b * 2 * c * plane
        mean += m[base..<(base + c * plane)]
        for v in m[(base + c * plane)..<(base + 2 * c * plane)] {
            logvar.append(min(max(v, -30), 20))
            clamped.append(v < -30 || v > 20)
        }
    }
    return (mean, logvar, clamped, [s[0], c, s[2], s[3]])
}

/// Gathers per-latent gradients of mean and log-variance back into the moments' layout.
private func joinMoments(_ dMean: [Float], _ dLogvar: [Float], _ s: [Int]) -> Tensor {
    let plane = s[1] * s[2] * s[3]
    var out: [Float] = []
    out.reserveCapacity(2 * dMean.count)
    for b in 0..<s[0] {
        out += dMean[(b * plane)..<((b + 1) * plane)]
        out += dLogvar[(b * plane)..<((b + 1) * plane)]
    }
    return Tensor(shape: [s[0], 2 * s[1], s[2], s[3]], floats: out)
}

/// A reparameterised sample mean + exp(logvar / 2) * noise of the VAE posterior given by
/// `moments` [N, 2C, H, W]; differentiable in the moments.
public func gaussianSample(_ moments: Var, noise: Tensor) -> Var {
    let (m, lv, clamped, shape) = splitMoments(moments.value)
    let e = noise.contiguous().floats
    let sd = lv.map { Float(exp(Double($0) * 0.5)) }
    var z = [Float](repeating: 0, count: m.count)
    for i in m.indices { z[i] = m[i] + sd[i] * e[i] }
    return record("gaussian_sample", Tensor(shape: shape, floats: z), [moments]) { g, _ in
        let gz = g.contiguous().floats
        var dlv = [Float](repeating: 0, count: gz.count)
        for i in gz.indices where !clamped[i] { dlv[i] = gz[i] * 0.5 * sd[i] * e[i] }
        return [joinMoments(gz, dlv, shape)]
    }
}

/// KL(N(mean, exp(logvar)) || N(0, 1)) averaged over the latent elements:
/// 0.5 * (mean^2 + exp(logvar) - 1 - logvar). diffusers sums it per image; the mean keeps its
/// weight independent of the crop size.
public func gaussianKL(_ moments: Var) -> Var {
    let (m, lv, clamped, shape) = splitMoments(moments.value)
    let n = Float(m.count)
    var total = 0.0
    for i in m.indices { total += 0.5 * (Double(m[i] * m[i]) + exp(Double(lv[i])) - 1 - Double(lv[i])) }
    return record("gaussian_kl", Tensor(shape: [], floats: [Float(total / Double(m.count))]), [moments]) { g, _ in
        let s = g.floats[0] / n
        let dm = m.map { $0 * s }
        var dlv = [Float](repeating: 0, count: lv.count)
        for i in lv.indices where !clamped[i] { dlv[i] = 0.5 * (Float(exp(Double(lv[i]))) - 1) * s }
        return [joinMoments(dm, dlv, shape)]
    }
}
