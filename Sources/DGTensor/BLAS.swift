import CBLAS

/// Matrix multiply, row-major: our AVX-512 kernels where the CPU has them, else OpenBLAS (`GEMM`).
public enum BLAS {
    static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

    /// C[m,n] = alpha * op(A) op(B) + beta * C, with op(A) m x k and op(B) k x n.
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        GEMM.gemm(m: m, n: n, k: k, alpha: alpha, a: a, ars: transA ? 1 : lda, aks: transA ? lda : 1,
                  b: GEMM.matrix(b, rowStride: transB ? 1 : ldb, columnStride: transB ? ldb : 1),
                  beta: beta, c: c, ldc: ldc)
    }
}
