import CDGKernels
import Foundation

/// Scaled dot-product attention, softmax(scale q k^T [causal mask]) v, over `heads` heads laid out
/// side by side in the last dimension (q [B, Lq, H d], k [B, Lk, H d], v [B, Lk, H dv], out
/// [B, Lq, H dv]: the layout of the projections, so heads are never split into copies). Computed a
/// block of query rows at a time, so memory is O(block x Lk), never B x Lq x Lk; the backward pass
/// recomputes each block's probabilities from the saved log-sum-exp, a block of keys at a time (as
/// flash attention does).
///
/// Threads take whole (head, query block) items and run single-threaded products, so that the
/// products, the exponentials and the reuse of the block buffer all stay in one core's cache. On the
/// AVX-512 path the forward pass runs 32 queries at a time, transposed, in C (`dg_attention_panel`).
extension Kernels {
    /// Query rows per block; nil: automatic (`attentionRows`). Atomic (tests change it).
    public static var attentionBlock: Int? {
        get { let v = dg_setting(Int32(DG_SETTING_ATTENTION_BLOCK)); return v > 0 ? v : nil }
        set { dg_set_setting(Int32(DG_SETTING_ATTENTION_BLOCK), Swift.max(0, newValue ?? 0)) }
    }

    /// About 2^18 scores per block (1 MB, one core's L2), 16 to 1024 rows: 64 rows for
    /// self-attention at L = 4096, 1024 for cross-attention over 77 text tokens (where small
    /// blocks would make the products too small to be efficient).
    static func attentionRows(_ lk: Int) -> Int {
        attentionBlock ?? Swift.max(16, Swift.min(1024, (1 << 18) / Swift.max(1, lk)))
    }

    /// Keys per block of the backward; nil: automatic (`attentionBackwardKeys`). Atomic (tests change it).
    public static var attentionBackwardKeyBlock: Int? {
        get { let v = dg_setting(Int32(DG_SETTING_ATTENTION_BACKWARD_KEYS)); return v > 0 ? v : nil }
        set { dg_set_setting(Int32(DG_SETTING_ATTENTION_BACKWARD_KEYS), Swift.max(0, newValue ?? 0)) }
    }

    /// The backward's keys per block: all of them up to 256, else blocks of 256 (a multiple of 32, the
    /// packed panels' width, so a block starts on a panel). Each (query block, key block) pair runs the
    /// five products on its own; its two blocks of scores (P and dS) and its keys' dK, dV sums then stay
    /// in one core's L2 instead of streaming [rows, Lk] score rows and the head's [Lk, d] sums per
    /// query block. Measured on SD 1.5's 512 px shapes (`bench sgemm --backward`, AMD EPYC, 2026-12-05,
    /// 128-row query blocks): L = 4096 all keys 152-156 GFLOP/s, 512-key blocks 160, 256 168-171, 128
    /// 166-168; L = 1024 all keys 175-191, 256-key blocks 192-198. Causal attention (the text encoder's,
    /// at most 77 keys) always takes all keys.
    public static func attentionBackwardKeys(_ lk: Int) -> Int {
        if let k = attentionBackwardKeyBlock { return Swift.max(32, (k + 31) / 32 * 32) }
        return Swift.min(lk, 256)
    }

    /// The backward's query rows per block: as `attentionRows` for a key block, at most 128. Its five
    /// products per block keep two blocks of scores (P and dS) and the key block's dK, dV sums; measured
    /// on SD 1.5's 512 px shapes (`bench sgemm --backward`, AMD EPYC, 2026-12-05), whole-head blocks at
    /// L = 256 ran at 86-108 GFLOP/s against 150-163 with 128 rows, the 77-key cross-attention at 82-87
    /// against 97-107, L = 1024 (256 rows) 141-151 against 155-160.
    static func attentionBackwardRows(_ lk: Int) -> Int {
        attentionBlock ?? Swift.min(128, attentionRows(Swift.min(lk, attentionBackwardKeys(lk))))
    }

    struct AttentionShape {
        let batch, heads, lq, lk, d, dv: Int
        /// Row strides of q (and k), and of v (and out).
        var ldq: Int { heads * d }
        var ldv: Int { heads * dv }
        /// Items of work: (batch x heads) heads.
        var count: Int { batch * heads }

        init(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int) {
            precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention: q, k, v must be [B, L, H D]")
            if heads < 1 || q.shape[2] % heads != 0 || v.shape[2] % heads != 0 {
                fatalError("attention: \(heads) heads do not divide q \(q.shape), v \(v.shape)")
            }
            batch = q.shape[0]; self.heads = heads; lq = q.shape[1]; d = q.shape[2] / heads
            lk = k.shape[1]; dv = v.shape[2] / heads
            if k.shape[0] != batch || v.shape[0] != batch || k.shape[2] != q.shape[2] || v.shape[1] != lk {
                fatalError("attention: q \(q.shape), k \(k.shape), v \(v.shape) do not agree")
            }
        }
        /// Offsets of head `item` (= b heads + h) in q / k and in v / out, in elements.
        @inline(__always) func qOffset(_ item: Int, row: Int) -> Int { ((item / heads) * lq + row) * ldq + (item % heads) * d }
        @inline(__always) func kOffset(_ item: Int) -> Int { (item / heads) * lk * ldq + (item % heads) * d }
        @inline(__always) func vOffset(_ item: Int) -> Int { (item / heads) * lk * ldv + (item % heads) * dv }
        @inline(__always) func oOffset(_ item: Int, row: Int) -> Int { ((item / heads) * lq + row) * ldv + (item % heads) * dv }
        /// Keys a block of query rows [i0, i0 + rows) may see, and those row r may see.
        @inline(__always) func keys(_ i0: Int, _ rows: Int, causal: Bool) -> Int { causal ? Swift.min(lk, i0 + rows) : lk }
        @inline(__always) func visible(_ i: Int, _ keys: Int, causal: Bool) -> Int { causal ? Swift.min(keys, i + 1) : keys }
    }

    /// Returns out [B, Lq, H dv] and the log-sum-exp of each row's scores [B H, Lq]. bf16: both products
    /// in bfloat16 where `GEMM.bf16` (q, k, v and the probabilities rounded to bf16 at the products'
    /// inputs; scores, softmax and the log-sum-exp in f32), else as f32.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int = 1, scale: Float, causal: Bool,
                                 bf16: Bool = false) -> (out: Tensor, logsumexp: Tensor) {
        let s = AttentionShape(q, k, v, heads: heads)
        let qc = f32(q), kc = f32(k), vc = f32(v)
        let out = Tensor(uninitialized: [s.batch, s.lq, s.ldv]), lse = Tensor(uninitialized: [s.count, s.lq])
        defer { withExtendedLifetime((qc, kc, vc, out, lse)) {} }
        // Scores each head computes: all lq x lk, or under the causal mask min(lk, i + 1) for query i.
        let scores = causal ? (0..<s.lq).reduce(0) { $0 + Swift.min(s.lk, $1 + 1) } : s.lq * s.lk
        countFlops(s.count * scores * (s.d + s.dv))
        let qp = pointer(qc), kp = pointer(kc), vp = pointer(vc)
        let op = pointer(out), lp = pointer(lse)
        if s.lk == 0 {
            op.initialize(repeating: 0, count: out.count)
            lp.initialize(repeating: 0, count: lse.count)
            return (out, lse)
        }
        if GEMM.vectorized {
            // Panels of 32 queries, computed transposed (`dg_attention_panel`): K and V are read in place
            // (in bf16: as `dg_attention_bf16_operands` rounded them, once per head).
            let panels = (s.lq + 31) / 32
            let lowPrecision = bf16 && GEMM.bf16
            let ldvt = (s.lk + 1) / 2 * 2
            let kb = UnsafeMutablePointer<UInt16>.allocate(capacity: lowPrecision ? s.count * s.lk * s.d : 0)
            let vt = UnsafeMutablePointer<UInt16>.allocate(capacity: lowPrecision ? s.count * s.dv * ldvt : 0)
            defer { kb.deallocate(); vt.deallocate() }
            withSingleThreadedBLAS {
                if lowPrecision {
                    forEachChunk(s.count, minimumChunk: 1) { _, items in
                        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: s.dv * (s.lk + 1))
                        defer { scratch.deallocate() }
                        for h in items {
                            dg_attention_bf16_operands(s.lk, s.d, s.dv, kp + s.kOffset(h), s.ldq, vp + s.vOffset(h), s.ldv,
                                                       kb + h * s.lk * s.d, vt + h * s.dv * ldvt, scratch)
                        }
                    }
                }
                forEachChunk(s.count * panels, minimumChunk: 1, perThread: 8) { _, items in
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: (s.lk + Swift.max(s.d, (s.lk + 1) / 2) + s.dv) * 32)
                    defer { scratch.deallocate() }
                    for item in items {
                        let h = item / panels, i0 = (item % panels) * 32, nq = Swift.min(32, s.lq - i0)
                        let qi = qp + s.qOffset(h, row: i0), oi = op + s.oOffset(h, row: i0), li = lp + h * s.lq + i0
                        if lowPrecision {
                            dg_attention_panel_bf16(s.lk, s.d, s.dv, scale, qi, s.ldq, nq, kb + h * s.lk * s.d,
                                                    vt + h * s.dv * ldvt, oi, s.ldv, li, causal ? 1 : 0, i0, scratch)
                        } else {
                            dg_attention_panel(s.lk, s.d, s.dv, scale, qi, s.ldq, nq, kp + s.kOffset(h), s.ldq,
                                               vp + s.vOffset(h), s.ldv, oi, s.ldv, li, causal ? 1 : 0, i0, scratch)
                        }
                    }
                }
            }
            return (out, lse)
        }
        let block = Swift.max(1, attentionRows(s.lk))
        let nb = (s.lq + block - 1) / block
        withSingleThreadedBLAS {
            forEachChunk(s.count * nb, minimumChunk: 1) { _, items in
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: block * s.lk)
                defer { buffer.deallocate() }
                let inverse = UnsafeMutablePointer<Float>.allocate(capacity: block)
                defer { inverse.deallocate() }
                for item in items {
                    let h = item / nb, i0 = (item % nb) * block
                    let rows = Swift.min(block, s.lq - i0), keys = s.keys(i0, rows, causal: causal)
                    let qb = qp + s.qOffset(h, row: i0), kb = kp + s.kOffset(h), vb = vp + s.vOffset(h)
                    BLAS.sgemm(transB: true, m: rows, n: keys, k: s.d, alpha: scale, a: qb, lda: s.ldq,
                               b: kb, ldb: s.ldq, c: buffer, ldc: keys)
                    // Unnormalised probabilities exp(s - max); the 1/sum goes on the output rows.
                    for r in 0..<rows {
                        let row = buffer + r * keys, n = s.visible(i0 + r, keys, causal: causal)
                        let m = maximum(row, n)
                        for j in 0..<n { row[j] = exp(row[j] - m) }
                        if n < keys { (row + n).update(repeating: 0, count: keys - n) }
                        let total = sum(row, n)
                        lp[h * s.lq + i0 + r] = m + Float(Foundation.log(total))
                        inverse[r] = Float(1 / total)
                    }
                    let ob = op + s.oOffset(h, row: i0)
                    BLAS.sgemm(m: rows, n: s.dv, k: keys, a: buffer, lda: keys, b: vb, ldb: s.ldv, c: ob, ldc: s.ldv)
                    for r in 0..<rows {
                        let o = ob + r * s.ldv, f = inverse[r]
                        for t in 0..<s.dv { o[t] *= f }
                    }
                }
            }
        }
        return (out, lse)
    }

    public static func attentionBackward(_ gOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, logsumexp: Tensor,
                                         heads: Int = 1, scale: Float, causal: Bool,
                                         bf16: Bool = false) -> (q: Tensor, k: Tensor, v: Tensor) {
        let s = AttentionShape(q, k, v, heads: heads)
        precondition(gOut.shape == [s.batch, s.lq, s.ldv] && out.shape == gOut.shape && logsumexp.count == s.count * s.lq,
                     "attentionBackward: shapes")
        let gc = f32(gOut), qc = f32(q), kc = f32(k), vc = f32(v)
        let oc = f32(out), lc = f32(logsumexp)
        let dq = Tensor(uninitialized: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        defer { withExtendedLifetime((gc, qc, kc, vc, oc, lc, dq, dk, dv)) {} }
        let gp = pointer(gc), qp = pointer(qc), kp = pointer(kc), vp = pointer(vc)
        let lp = pointer(lc), dqp = pointer(dq), dkp = pointer(dk), dvp = pointer(dv)
        if s.lk == 0 || s.lq == 0 {
            dqp.initialize(repeating: 0, count: dq.count)
            return (dq, dk, dv)
        }

        // delta_i = sum_j dO_ij O_ij: the row term of the softmax backward, [B H, Lq].
        let delta = UnsafeMutablePointer<Float>.allocate(capacity: s.count * s.lq)
        defer { delta.deallocate() }
        let op = pointer(oc)
        Parallel.forEach(s.count * s.lq, minimumChunk: grain(s.dv)) { r in
            for i in r {
                let h = i / s.lq, o = s.oOffset(h, row: i % s.lq)
                delta[i] = Float(dot(gp + o, op + o, s.dv))
            }
        }

        let block = Swift.max(1, attentionBackwardRows(s.lk))
        let nb = (s.lq + block - 1) / block
        let keyBlock = causal ? s.lk : Swift.min(s.lk, attentionBackwardKeys(s.lk))
        let vectorized = GEMM.vectorized
        // The forward's scores were the bf16 product's: recomputed by the same product (the same sums
        // in the same order, so bit for bit), the probabilities rebuilt from the log-sum-exp are the
        // forward's; the other products stay f32.
        let lowPrecision = bf16 && vectorized && GEMM.bf16
        // Query blocks `blocks` of head h: writes their rows of dq, and adds their share of dk, dv of
        // head h into dkh (row stride ldk) and dvh (row stride ldvh).
        func run(_ h: Int, _ blocks: Range<Int>, _ dkh: UnsafeMutablePointer<Float>, _ ldk: Int,
                 _ dvh: UnsafeMutablePointer<Float>, _ ldvh: Int) {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block * keyBlock)
            defer { p.deallocate() }
            let dp = p + block * keyBlock
            let kb = kp + s.kOffset(h), vb = vp + s.vOffset(h)
            var kt = GEMM.matrix(kb, rowStride: 1, columnStride: s.ldq)       // K^T [d, Lk]
            var vt = GEMM.matrix(vb, rowStride: 1, columnStride: s.ldv)       // V^T [dv, Lk]
            var kk = GEMM.matrix(kb, rowStride: s.ldq, columnStride: 1)       // K [Lk, d]
            var packs: [UnsafeMutablePointer<Float>] = []
            defer { for b in packs { b.deallocate() } }
            let kRounded = UnsafeMutablePointer<UInt16>.allocate(capacity: lowPrecision ? s.lk * s.d : 0)
            defer { kRounded.deallocate() }
            if lowPrecision {
                dg_attention_bf16_operands(s.lk, s.d, s.dv, kb, s.ldq, vb, s.ldv, kRounded, nil, nil)
                kt = GEMM.matrix(bf16: kRounded, rowStride: 1, columnStride: s.d)
            }
            if vectorized {
                func packed(_ m: dg_bsource, _ k: Int, _ n: Int) -> dg_bsource {
                    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: GEMM.packedSize(k: k, n: n).count)
                    packs.append(buffer)
                    return GEMM.pack(m, k: k, n: n, into: buffer)
                }
                if !lowPrecision { kt = packed(kt, s.d, s.lk) }
                vt = packed(vt, s.dv, s.lk); kk = packed(kk, s.lk, s.d)
            }
            for blk in blocks {
                let i0 = blk * block, rows = Swift.min(block, s.lq - i0), keys = s.keys(i0, rows, causal: causal)
                let qb = qp + s.qOffset(h, row: i0), gb = gp + s.oOffset(h, row: i0), dqb = dqp + s.qOffset(h, row: i0)
                let lse = lp + h * s.lq + i0, dl = delta + h * s.lq + i0
                // Keys j0..<j0 + n: everything below is exact per key block (delta and the log-sum-exp
                // are per row), so only dQ sums over the blocks.
                for j0 in stride(from: 0, to: keys, by: keyBlock) {
                    let n = Swift.min(keyBlock, keys - j0)
                    // K's rows from j0 on (a packed K keeps its rows nr floats apart within each panel).
                    var kj = kk
                    kj.b = kk.b + j0 * kk.rs
                    // P = exp(scale q k^T - lse), zero where masked.
                    Profiler.measure("attention.backward: scores") {
                    if lowPrecision {
                        GEMM.gemmBF16(m: rows, n: n, k: s.d, alpha: scale, a: qb, aBF16: false, ars: s.ldq, aks: 1, b: kt, j0: j0,
                                      c: p, ldc: n)
                    } else {
                        GEMM.gemm(m: rows, n: n, k: s.d, alpha: scale, a: qb, ars: s.ldq, aks: 1, b: kt, j0: j0, c: p, ldc: n)
                    }
                    if vectorized {
                        dg_attention_probabilities(rows, n, p, n, lse, causal ? 1 : 0, i0)
                    } else {
                        for r in 0..<rows {
                            let row = p + r * n, visible = s.visible(i0 + r, n, causal: causal)
                            let l = lse[r]
                            for j in 0..<visible { row[j] = exp(row[j] - l) }
                            if visible < n { (row + visible).update(repeating: 0, count: n - visible) }
                        }
                    }
                    }
                    // dV += P^T dO
                    Profiler.measure("attention.backward: dV") {
                    GEMM.gemm(m: n, n: s.dv, k: rows, a: p, ars: 1, aks: n,
                              b: GEMM.matrix(gb, rowStride: s.ldv, columnStride: 1), beta: 1, c: dvh + j0 * ldvh, ldc: ldvh)
                    }
                    // dP = dO V^T; dS = P (dP - delta)
                    Profiler.measure("attention.backward: dS") {
                    GEMM.gemm(m: rows, n: n, k: s.dv, a: gb, ars: s.ldv, aks: 1, b: vt, j0: j0, c: dp, ldc: n)
                    if vectorized {
                        dg_attention_score_gradient(rows, n, p, dp, n, dl)
                    } else {
                        for r in 0..<rows {
                            let pr = p + r * n, dr = dp + r * n, d0 = dl[r]
                            for j in 0..<n { dr[j] = pr[j] * (dr[j] - d0) }
                        }
                    }
                    }
                    // dQ (+)= scale dS K; dK += scale dS^T Q
                    Profiler.measure("attention.backward: dQ") {
                    GEMM.gemm(m: rows, n: s.d, k: n, alpha: scale, a: dp, ars: n, aks: 1, b: kj, beta: j0 == 0 ? 0 : 1,
                              c: dqb, ldc: s.ldq)
                    }
                    Profiler.measure("attention.backward: dK") {
                    GEMM.gemm(m: n, n: s.d, k: rows, alpha: scale, a: dp, ars: 1, aks: n,
                              b: GEMM.matrix(qb, rowStride: s.ldq, columnStride: 1), beta: 1, c: dkh + j0 * ldk, ldc: ldk)
                    }
                }
            }
        }

        withSingleThreadedBLAS {
            if s.count >= Parallel.threads || nb == 1 {
                // Heads are independent: each thread owns whole heads.
                forEachChunk(s.count, minimumChunk: 1) { _, items in
                    for h in items { run(h, 0..<nb, dkp + s.kOffset(h), s.ldq, dvp + s.vOffset(h), s.ldv) }
                }
            } else {
                // Few heads: split each head's query blocks; every part but the first accumulates into
                // its own dk, dv buffers ([Lk, d] and [Lk, dv]), added in part order afterwards.
                let parts = Parallel.chunks(nb, minimumChunk: 1)
                let kSize = s.lk * s.d, vSize = s.lk * s.dv
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(1, (parts.count - 1) * (kSize + vSize)))
                defer { scratch.deallocate() }
                for h in 0..<s.count {
                    let dkh = dkp + s.kOffset(h), dvh = dvp + s.vOffset(h)
                    scratch.update(repeating: 0, count: (parts.count - 1) * (kSize + vSize))
                    forEachChunk(nb, minimumChunk: 1) { ci, blocks in
                        if ci == 0 { run(h, blocks, dkh, s.ldq, dvh, s.ldv) } else {
                            let base = scratch + (ci - 1) * (kSize + vSize)
                            run(h, blocks, base, s.d, base + kSize, s.dv)
                        }
                    }
                    for ci in 1..<parts.count {
                        let base = scratch + (ci - 1) * (kSize + vSize)
                        for r in 0..<s.lk {
                            for t in 0..<s.d { dkh[r * s.ldq + t] += base[r * s.d + t] }
                            for t in 0..<s.dv { dvh[r * s.ldv + t] += base[kSize + r * s.dv + t] }
                        }
                    }
                }
            }
        }
        return (dq, dk, dv)
    }
}
