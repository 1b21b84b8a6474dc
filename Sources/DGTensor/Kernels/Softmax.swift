import Foundation

/// Softmax over the last dimension, and its backward dx = y (gy - sum(gy y)).
extension Kernels {
    public static func softmax(_ x: Tensor) -> Tensor {
        let d = x.shape.last ?? 1, rows = x.count / Swift.max(1, d)
        let xc = f32(x), y = Tensor(uninitialized: x.shape)
        defer { withExtendedLifetime((xc, y)) {} }
        let xp = pointer(xc), yp = pointer(y)
        Parallel.forEach(rows, minimumChunk: grain(4 * d)) { r in
            for i in r { softmaxRow(xp + i * d, yp + i * d, d) }
        }
        return y
    }

    /// y = softmax(x) for one row (y may alias x); returns log(sum(exp(x))). A row whose maximum
    /// is -inf (everything masked) gives zeros.
    @inline(__always)
    @discardableResult
    static func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ d: Int) -> Float {
        let m = maximum(x, d)
        if m == -.infinity {
            y.update(repeating: 0, count: d)
            return -.infinity
        }
        if UnsafePointer(y) == x {
            // One pointer: a two-pointer loop on aliased memory fails the vectoriser's overlap check.
            for k in 0..<d { y[k] = exp(y[k] - m) }
        } else {
            for k in 0..<d { y[k] = exp(x[k] - m) }
        }
        let s = sum(y, d)
        let inv = Float(1 / s)
        for k in 0..<d { y[k] *= inv }
        return m + Float(Foundation.log(s))
    }

    public static func softmaxBackward(_ gy: Tensor, y: Tensor) -> Tensor {
        let d = y.shape.last ?? 1, rows = y.count / Swift.max(1, d)
        precondition(gy.shape == y.shape, "softmaxBackward: shapes \(gy.shape) and \(y.shape) differ")
        let gc = f32(gy), yc = f32(y), dx = Tensor(uninitialized: y.shape)
        defer { withExtendedLifetime((gc, yc, dx)) {} }
        let gp = pointer(gc), yp = pointer(yc), dp = pointer(dx)
        Parallel.forEach(rows, minimumChunk: grain(3 * d)) { r in
            for i in r {
                let g = gp + i * d, ys = yp + i * d, o = dp + i * d
                let s = Float(dot(g, ys, d))
                for k in 0..<d { o[k] = ys[k] * (g[k] - s) }
            }
        }
        return dx
    }
}
