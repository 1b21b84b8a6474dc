import Foundation

/// Nearest-neighbour 2x upsampling of [N, C, H, W] (each pixel becomes a 2x2 block).
extension Kernels {
    public static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "upsampleNearest2x: x must be [N, C, H, W]")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let xc = f32(x), y = Tensor(uninitialized: [n, c, 2 * h, 2 * w])
        defer { withExtendedLifetime((xc, y)) {} }
        let xp = pointer(xc), yp = pointer(y)
        Parallel.forEach(n * c * h, minimumChunk: grain(4 * w)) { r in
            for row in r {   // one input row -> two output rows
                let s = xp + row * w, o = yp + row * 4 * w
                for j in 0..<w { o[2 * j] = s[j]; o[2 * j + 1] = s[j] }
                (o + 2 * w).update(from: o, count: 2 * w)
            }
        }
        return y
    }

    public static func upsampleNearest2xBackward(_ gy: Tensor) -> Tensor {
        precondition(gy.rank == 4 && gy.shape[2] % 2 == 0 && gy.shape[3] % 2 == 0, "upsampleNearest2xBackward: gy must be [N, C, 2H, 2W]")
        let (n, c, h, w) = (gy.shape[0], gy.shape[1], gy.shape[2] / 2, gy.shape[3] / 2)
        let gc = f32(gy), dx = Tensor(uninitialized: [n, c, h, w])
        defer { withExtendedLifetime((gc, dx)) {} }
        let gp = pointer(gc), dp = pointer(dx)
        Parallel.forEach(n * c * h, minimumChunk: grain(4 * w)) { r in
            for row in r {
                let a = gp + row * 4 * w, b = a + 2 * w, o = dp + row * w
                for j in 0..<w { o[j] = (a[2 * j] + a[2 * j + 1]) + (b[2 * j] + b[2 * j + 1]) }
            }
        }
        return dx
    }
}
