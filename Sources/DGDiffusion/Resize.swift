import DGData
import DGTensor
import Foundation

/// Image resizing on float tensors [N, C, H, W] for the MRLF pass. Lanczos works in float so
/// that the 2x upsample that MRLF encodes is not rounded to 8 bits first.
public enum Resize {
    /// Lanczos-3 resampling with PIL's kernel, support and pixel-centre convention (support
    /// widened by the scale factor when shrinking, which antialiases), separable: rows, then
    /// columns. Values are not clamped.
    public static func lanczos(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let src = x.converted(to: .f32).contiguous()
        let wx = coefficients(inSize: w, outSize: width), wy = coefficients(inSize: h, outSize: height)
        let mid = Tensor(zeros: [n, c, h, width]), out = Tensor(zeros: [n, c, height, width])
        src.withFloats { s in mid.withMutableFloats { m in
            let (s, m) = (s, m)
            Parallel.forEach(n * c * h, minimumChunk: 64) { rows in
                for row in rows {
                    for (ox, (start, weights)) in wx.enumerated() {
                        var acc: Double = 0
                        for (k, wt) in weights.enumerated() { acc += Double(s[row * w + start + k]) * wt }
                        m[row * width + ox] = Float(acc)
                    }
                }
            }
        } }
        mid.withFloats { m in out.withMutableFloats { o in
            let (m, o) = (m, o)
            Parallel.forEach(n * c, minimumChunk: 1) { planes in
                for p in planes {
                    for (oy, (start, weights)) in wy.enumerated() {
                        for ox in 0..<width {
                            var acc: Double = 0
                            for (k, wt) in weights.enumerated() { acc += Double(m[(p * h + start + k) * width + ox]) * wt }
                            o[(p * height + oy) * width + ox] = Float(acc)
                        }
                    }
                }
            }
        } }
        return out
    }

    /// For each output position: the first input index and the normalised weights (PIL's
    /// precompute_coeffs with the Lanczos filter).
    static func coefficients(inSize: Int, outSize: Int) -> [(Int, [Double])] {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = ResizeFilter.lanczos.support * filterScale
        return (0..<outSize).map { o in
            let center = (Double(o) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), inSize)
            var weights = (lo..<hi).map { ResizeFilter.lanczos.weight((Double($0) - center + 0.5) / filterScale) }
            let total = weights.reduce(0, +)
            if total != 0 { weights = weights.map { $0 / total } }
            return (lo, weights)
        }
    }

    /// Nearest-neighbour resampling as torch's `interpolate(mode="nearest")`: output pixel i
    /// takes input pixel floor(i * in / out).
    public static func nearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let src = x.converted(to: .f32).contiguous()
        let out = Tensor(zeros: [n, c, height, width])
        let xs = (0..<width).map { $0 * w / width }, ys = (0..<height).map { $0 * h / height }
        src.withFloats { s in out.withMutableFloats { o in
            let (s, o) = (s, o)
            Parallel.forEach(n * c, minimumChunk: 1) { planes in
                for p in planes {
                    for oy in 0..<height {
                        let rowIn = (p * h + ys[oy]) * w, rowOut = (p * height + oy) * width
                        for ox in 0..<width { o[rowOut + ox] = s[rowIn + xs[ox]] }
                    }
                }
            }
        } }
        return out
    }

    /// Nearest-neighbour resampling of a label map (row-major ids).
    public static func nearest(labels: [UInt8], width: Int, height: Int, toWidth: Int, toHeight: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: toWidth * toHeight)
        for y in 0..<toHeight {
            let sy = y * height / toHeight
            for x in 0..<toWidth { out[y * toWidth + x] = labels[sy * width + x * width / toWidth] }
        }
        return out
    }

    /// Values clamped to [lo, hi].
    public static func clamp(_ x: Tensor, _ lo: Float = 0, _ hi: Float = 1) -> Tensor {
        scaledSum(x, 1, x, 0, exact: { v, _ in min(max(v, lo), hi) })
    }
}

extension Resize {
    /// Pixel values in [0, 1] (as decoded here) -> [-1, 1] (as images are stored for the models).
    public static func toSigned(_ x: Tensor) -> Tensor { scaledSum(x, 2, x, 0, exact: { v, _ in v * 2 - 1 }) }

    /// [-1, 1] -> [0, 1].
    public static func toUnit(_ x: Tensor) -> Tensor { scaledSum(x, 0.5, x, 0, exact: { v, _ in v * 0.5 + 0.5 }) }
}
