/// Matrix products on float32 tensors, through `GEMM` (our AVX-512 kernels, or OpenBLAS).
extension Tensor {
    /// [.., m, k] x [.., k, n] -> [.., m, n]; leading (batch) dimensions must agree, or `other`
    /// may be a plain [k, n] matrix shared by every batch entry.
    public func matmul(_ other: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(dtype == .f32 && other.dtype == .f32, "matmul computes in f32")
        precondition(rank >= 2 && other.rank >= 2, "matmul needs matrices")
        let a = contiguous(), b = other.contiguous()
        let (ar, ac) = (shape[rank - 2], shape[rank - 1])
        let (br, bc) = (other.shape[other.rank - 2], other.shape[other.rank - 1])
        let m = transposeA ? ac : ar, k = transposeA ? ar : ac
        let n = transposeB ? br : bc, kb = transposeB ? bc : br
        precondition(k == kb, "matmul: inner dimensions \(k) and \(kb) differ (\(shape) x \(other.shape))")
        let batchShape = Array(shape.dropLast(2))
        let batch = batchShape.reduce(1, *)
        let bBatch = other.shape.dropLast(2).reduce(1, *)
        precondition(bBatch == batch || other.rank == 2, "matmul: batch shapes \(shape) and \(other.shape) differ")
        let out = Tensor(uninitialized: batchShape + [m, n])
        let pa = a.rawPointer.assumingMemoryBound(to: Float.self)
        let pb = b.rawPointer.assumingMemoryBound(to: Float.self)
        let pc = out.rawPointer.assumingMemoryBound(to: Float.self)
        for i in 0..<batch {
            BLAS.sgemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
                       a: pa + i * ar * ac, lda: ac,
                       b: pb + (other.rank == 2 ? 0 : i * br * bc), ldb: bc,
                       c: pc + i * m * n, ldc: n)
        }
        return out
    }
}
