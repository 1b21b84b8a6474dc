import Foundation

/// Scaled dot-product attention, softmax(scale q k^T [causal mask]) v, computed a block of query rows
/// at a time so that memory is O(block x Lk), never B x Lq x Lk. The backward pass recomputes each
/// block's probabilities from the saved log-sum-exp (as flash attention does).
///
/// Threads take whole (head, query block) items and call single-threaded sgemm, so that the
/// products, the exponentials and the reuse of the block buffer all stay in one core's cache.
extension Kernels {
    /// Query rows per block; nil: automatic (`attentionRows`).
    nonisolated(unsafe) static var attentionBlock: Int? = nil

    /// About 2^18 scores per block (1 MB, one core's L2), 16 to 1024 rows: 64 rows for
    /// self-attention at L = 4096, 1024 for cross-attention over 77 text tokens (where small
    /// blocks would make the sgemm calls too small to be efficient).
    static func attentionRows(_ lk: Int) -> Int {
        attentionBlock ?? Swift.max(16, Swift.min(1024, (1 << 18) / Swift.max(1, lk)))
    }

    struct AttentionShape {
        let b, lq, lk, d, dv: Int
        init(_ q: Tensor, _ k: Tensor, _ v: Tensor) {
            precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention: q, k, v must be [B, L, D]")
            b = q.shape[0]; lq = q.shape[1]; d = q.shape[2]; lk = k.shape[1]; dv = v.shape[2]
            if k.shape[0] != b || v.shape[0] != b || k.shape[2] != d || v.shape[1] != lk {
                fatalError("attention: q \(q.shape), k \(k.shape), v \(v.shape) do not agree")
            }
        }
        /// Keys a block of query rows [i0, i0 + rows) may see, and those row r may see.
        @inline(__always) func keys(_ i0: Int, _ rows: Int, causal: Bool) -> Int { causal ? Swift.min(lk, i0 + rows) : lk }
        @inline(__always) func visible(_ i: Int, _ keys: Int, causal: Bool) -> Int { causal ? Swift.min(keys, i + 1) : keys }
    }

    public static func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, causal: Bool) -> (out: Tensor, logsumexp: Tensor) {
        let s = AttentionShape(q, k, v)
        let qc = f32(q), kc = f32(k), vc = f32(v)
        let out = Tensor(zeros: [s.b, s.lq, s.dv]), lse = Tensor(zeros: [s.b, s.lq])
        defer { withExtendedLifetime((qc, kc, vc, out, lse)) {} }
        let qp = pointer(qc), kp = pointer(kc), vp = pointer(vc)
        let op = pointer(out), lp = pointer(lse)
        if s.lk == 0 { return (out, lse) }
        let block = Swift.max(1, attentionRows(s.lk))
        let nb = (s.lq + block - 1) / block
        withSingleThreadedBLAS {
            forEachChunk(s.b * nb, minimumChunk: 1) { _, items in
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: block * s.lk)
                let inverse = UnsafeMutablePointer<Float>.allocate(capacity: block)
                defer { buffer.deallocate(); inverse.deallocate() }
                for item in items {
                    let h = item / nb, i0 = (item % nb) * block
                    let rows = Swift.min(block, s.lq - i0), keys = s.keys(i0, rows, causal: causal)
                    let qb = qp + (h * s.lq + i0) * s.d, kb = kp + h * s.lk * s.d, vb = vp + h * s.lk * s.dv
                    BLAS.sgemm(transB: true, m: rows, n: keys, k: s.d, alpha: scale, a: qb, lda: s.d,
                               b: kb, ldb: s.d, c: buffer, ldc: keys)
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
                    let ob = op + (h * s.lq + i0) * s.dv
                    BLAS.sgemm(m: rows, n: s.dv, k: keys, a: buffer, lda: keys, b: vb, ldb: s.dv, c: ob, ldc: s.dv)
                    for r in 0..<rows {
                        let o = ob + r * s.dv, f = inverse[r]
                        for t in 0..<s.dv { o[t] *= f }
                    }
                }
            }
        }
        return (out, lse)
    }

    public static func attentionBackward(_ gOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, logsumexp: Tensor,
                                         scale: Float, causal: Bool) -> (q: Tensor, k: Tensor, v: Tensor) {
        let s = AttentionShape(q, k, v)
        precondition(gOut.shape == [s.b, s.lq, s.dv] && out.shape == gOut.shape && logsumexp.count == s.b * s.lq,
                     "attentionBackward: shapes")
        let gc = f32(gOut), qc = f32(q), kc = f32(k), vc = f32(v)
        let oc = f32(out), lc = f32(logsumexp)
        let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        defer { withExtendedLifetime((gc, qc, kc, vc, oc, lc, dq, dk, dv)) {} }
        let gp = pointer(gc), qp = pointer(qc), kp = pointer(kc), vp = pointer(vc)
        let lp = pointer(lc), dqp = pointer(dq), dkp = pointer(dk), dvp = pointer(dv)
        if s.lk == 0 || s.lq == 0 { return (dq, dk, dv) }

        // delta_i = sum_j dO_ij O_ij: the row term of the softmax backward.
        let delta = UnsafeMutablePointer<Float>.allocate(capacity: s.b * s.lq)
        defer { delta.deallocate() }
        let op = pointer(oc)
        Parallel.forEach(s.b * s.lq, minimumChunk: grain(s.dv)) { r in
            for i in r { delta[i] = Float(dot(gp + i * s.dv, op + i * s.dv, s.dv)) }
        }

        let block = Swift.max(1, attentionRows(s.lk))
        let nb = (s.lq + block - 1) / block
        // Query blocks `blocks` of head h: writes their rows of dq, and adds their share of dk, dv of
        // head h into dkh [Lk, D] and dvh [Lk, Dv].
        func run(_ h: Int, _ blocks: Range<Int>, _ dkh: UnsafeMutablePointer<Float>, _ dvh: UnsafeMutablePointer<Float>) {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block * s.lk)
            defer { p.deallocate() }
            let dp = p + block * s.lk
            let kb = kp + h * s.lk * s.d, vb = vp + h * s.lk * s.dv
            for blk in blocks {
                let i0 = blk * block, rows = Swift.min(block, s.lq - i0), keys = s.keys(i0, rows, causal: causal)
                let qb = qp + (h * s.lq + i0) * s.d, gb = gp + (h * s.lq + i0) * s.dv
                // P = exp(scale q k^T - lse), zero where masked.
                BLAS.sgemm(transB: true, m: rows, n: keys, k: s.d, alpha: scale, a: qb, lda: s.d,
                           b: kb, ldb: s.d, c: p, ldc: keys)
                for r in 0..<rows {
                    let row = p + r * keys, n = s.visible(i0 + r, keys, causal: causal)
                    let l = lp[h * s.lq + i0 + r]
                    for j in 0..<n { row[j] = exp(row[j] - l) }
                    if n < keys { (row + n).update(repeating: 0, count: keys - n) }
                }
                // dV += P^T dO
                BLAS.sgemm(transA: true, m: keys, n: s.dv, k: rows, a: p, lda: keys, b: gb, ldb: s.dv,
                           beta: 1, c: dvh, ldc: s.dv)
                // dP = dO V^T; dS = P (dP - delta)
                BLAS.sgemm(transB: true, m: rows, n: keys, k: s.dv, a: gb, lda: s.dv, b: vb, ldb: s.dv,
                           c: dp, ldc: keys)
                for r in 0..<rows {
                    let pr = p + r * keys, dr = dp + r * keys, dl = delta[h * s.lq + i0 + r]
                    for j in 0..<keys { dr[j] = pr[j] * (dr[j] - dl) }
                }
                // dQ = scale dS K; dK += scale dS^T Q
                BLAS.sgemm(m: rows, n: s.d, k: keys, alpha: scale, a: dp, lda: keys, b: kb, ldb: s.d,
                           c: dqp + (h * s.lq + i0) * s.d, ldc: s.d)
                BLAS.sgemm(transA: true, m: keys, n: s.d, k: rows, alpha: scale, a: dp, lda: keys, b: qb, ldb: s.d,
                           beta: 1, c: dkh, ldc: s.d)
            }
        }

        withSingleThreadedBLAS {
            if s.b >= Parallel.threads || nb == 1 {
                // Heads are independent: each thread owns whole heads.
                forEachChunk(s.b, minimumChunk: 1) { _, heads in
                    for h in heads { run(h, 0..<nb, dkp + h * s.lk * s.d, dvp + h * s.lk * s.dv) }
                }
            } else {
                // Few heads: split each head's query blocks; every part but the first accumulates into
                // its own dk, dv buffers, added in part order afterwards.
                let parts = Parallel.chunks(nb, minimumChunk: 1)
                let kSize = s.lk * s.d, vSize = s.lk * s.dv
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(1, (parts.count - 1) * (kSize + vSize)))
                defer { scratch.deallocate() }
                for h in 0..<s.b {
                    let dkh = dkp + h * kSize, dvh = dvp + h * vSize
                    scratch.update(repeating: 0, count: (parts.count - 1) * (kSize + vSize))
                    forEachChunk(nb, minimumChunk: 1) { ci, blocks in
                        if ci == 0 { run(h, blocks, dkh, dvh) } else {
                            let base = scratch + (ci - 1) * (kSize + vSize)
                            run(h, blocks, base, base + kSize)
                        }
                    }
                    for ci in 1..<parts.count {
                        let base = scratch + (ci - 1) * (kSize + vSize)
                        for i in 0..<kSize { dkh[i] += base[i] }
                        for i in 0..<vSize { dvh[i] += base[kSize + i] }
                    }
                }
            }
        }
        return (dq, dk, dv)
    }
}
