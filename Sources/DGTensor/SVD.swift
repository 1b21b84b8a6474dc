import CBLAS

/// Singular value decompositions, by LAPACK's sgesdd (in OpenBLAS).
public enum SVD {
    /// The thin SVD of a row-major [m, n] matrix: A = U diag(S) Vt with U [m, k], S [k] (largest
    /// first), Vt [k, n], k = min(m, n); nil if LAPACK reports no convergence.
    public static func thin(_ a: Tensor) -> (u: Tensor, s: [Float], vt: Tensor)? {
        precondition(a.rank == 2, "SVD of a \(a.shape) tensor")
        let (m, n) = (a.shape[0], a.shape[1]), k = min(m, n)
        guard k > 0 else { return (Tensor(zeros: [m, 0]), [], Tensor(zeros: [0, n])) }
        // LAPACK is column-major: the row-major A is the column-major n x m matrix A^T = V S U^T,
        // so LAPACK's "U" is our Vt (row-major k x n) and its "VT" our U (row-major m x k).
        var work = a.converted(to: .f32).contiguous().floats
        var s = [Float](repeating: 0, count: k)
        var v = [Float](repeating: 0, count: n * k), u = [Float](repeating: 0, count: k * m)
        var iwork = [blasint](repeating: 0, count: 8 * k)
        var (rows, cols, lda, ldu, ldvt, info) = (blasint(n), blasint(m), blasint(n), blasint(n), blasint(k), blasint(0))
        var query: Float = 0
        var lwork: blasint = -1
        sgesdd_("S", &rows, &cols, &work, &lda, &s, &v, &ldu, &u, &ldvt, &query, &lwork, &iwork, &info, 1)
        guard info == 0 else { return nil }
        lwork = blasint(query)
        var scratch = [Float](repeating: 0, count: Int(lwork))
        sgesdd_("S", &rows, &cols, &work, &lda, &s, &v, &ldu, &u, &ldvt, &scratch, &lwork, &iwork, &info, 1)
        guard info == 0 else { return nil }
        return (Tensor(shape: [m, k], floats: u), s, Tensor(shape: [k, n], floats: v))
    }
}
