import Foundation

/// Concatenation along an axis and its inverse, `split`.
extension Kernels {
    public static func concat(_ xs: [Tensor], axis: Int) -> Tensor {
        guard let first = xs.first else { fatalError("concat: no tensors") }
        let rank = first.rank
        let ax = axis < 0 ? axis + rank : axis
        precondition(ax >= 0 && ax < rank, "concat: axis \(axis) out of range for rank \(rank)")
        for t in xs where t.rank != rank || (0..<rank).contains(where: { $0 != ax && t.shape[$0] != first.shape[$0] }) {
            fatalError("concat: shapes \(first.shape) and \(t.shape) differ off axis \(ax)")
        }
        var shape = first.shape
        shape[ax] = xs.reduce(0) { $0 + $1.shape[ax] }
        let out = Tensor(uninitialized: shape)
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *)
        let rowOut = shape[ax] * inner
        let op = pointer(out)
        var start = 0
        for t in xs {
            let tc = f32(t)
            let rowIn = t.shape[ax] * inner
            withExtendedLifetime(tc) {
                let tp = pointer(tc), s = start
                Parallel.forEach(outer, minimumChunk: grain(rowIn, work: 65536)) { r in
                    for o in r { (op + o * rowOut + s).update(from: tp + o * rowIn, count: rowIn) }
                }
            }
            start += rowIn
        }
        return out
    }

    /// Splits x along `axis` into pieces of the given sizes (fresh contiguous tensors).
    public static func split(_ x: Tensor, sizes: [Int], axis: Int) -> [Tensor] {
        let ax = axis < 0 ? axis + x.rank : axis
        precondition(ax >= 0 && ax < x.rank, "split: axis \(axis) out of range for rank \(x.rank)")
        if sizes.reduce(0, +) != x.shape[ax] { fatalError("split: sizes \(sizes) do not add up to \(x.shape[ax])") }
        var start = 0
        return sizes.map { n in
            defer { start += n }
            return f32(x.slice(axis: ax, start..<(start + n))).copied()
        }
    }
}

