import DGTensor
import Foundation

public enum ResizeFilter: String, Sendable, CaseIterable {
    /// The source pixel whose centre is nearest (PIL's NEAREST): labels, and conditions
    /// upsampled by whole factors, where it replicates pixels exactly.
    case nearest
    /// Triangle filter (PIL's BILINEAR): plain bilinear interpolation when upsampling,
    /// antialiased when downsampling.
    case bilinear
    /// Lanczos, a = 3 (PIL's LANCZOS); MRLF's float-tensor resize (`Resize.lanczos`) uses this kernel too.
    case lanczos

    /// Half-width of the kernel in source pixels at scale 1.
    public var support: Double { self == .lanczos ? 3 : 1 }

    /// The kernel at offset `x` (in source pixels at scale 1), as Pillow defines it.
    public func weight(_ x: Double) -> Double {
        switch self {
        case .nearest: return 0
        case .bilinear: return max(0, 1 - abs(x))
        case .lanczos:
            guard -3 <= x && x < 3 else { return 0 }  // Pillow's half-open support
            return sinc(x) * sinc(x / 3)
        }
    }

    private func sinc(_ x: Double) -> Double {
        guard x != 0 else { return 1 }
        let px = Double.pi * x
        return sin(px) / px
    }
}

// MARK: tensors

extension Image {
    /// [1, C, H, W] float32 in [-1, 1]: (p / 255 - 0.5) / 0.5, as torchvision's ToTensor +
    /// Normalize([0.5], [0.5]) computes it in diffusers' training scripts.
    public func tensor() -> Tensor { Image.batchTensor([self]) }

    /// [N, C, H, W] of images of one size and channel count.
    public static func batchTensor(_ images: [Image]) -> Tensor {
        guard let first = images.first else { return Tensor(zeros: [0, 3, 1, 1]) }
        let (c, h, w) = (first.channels, first.height, first.width)
        let plane = h * w
        let out = Tensor(zeros: [images.count, c, h, w])
        out.withMutableFloats { o in
            for (n, image) in images.enumerated() {
                guard image.channels == c, image.height == h, image.width == w else {
                    fatalError("batchTensor: image \(n) is \(image.width)x\(image.height)x\(image.channels), not \(w)x\(h)x\(c)")
                }
                image.pixels.withUnsafeBufferPointer { src in
                    for p in 0..<plane {
                        for ch in 0..<c { o[(n * c + ch) * plane + p] = (Float(src[p * c + ch]) / 255 - 0.5) / 0.5 }
                    }
                }
            }
        }
        return out
    }

    /// Item `index` of a [N, C, H, W] (or [C, H, W]) tensor in [-1, 1] with C = 1 or 3, as
    /// diffusers' postprocessing does it: round(clamp(x / 2 + 0.5, 0, 1) * 255); NaN -> 0.
    public init(tensor: Tensor, index: Int = 0) {
        let t = tensor.rank == 3 ? tensor.reshaped([1] + tensor.shape) : tensor
        guard t.rank == 4, t.shape[1] == 1 || t.shape[1] == 3, (0..<t.shape[0]).contains(index) else {
            fatalError("Image(tensor:): expected [N, 1 or 3, H, W] with item \(index), got \(tensor.shape)")
        }
        let (c, h, w) = (t.shape[1], t.shape[2], t.shape[3])
        let item = t.slice(axis: 0, index..<(index + 1)).converted(to: .f32).contiguous()
        var pixels = [UInt8](repeating: 0, count: c * h * w)
        item.withFloats { src in
            for ch in 0..<c {
                for p in 0..<(h * w) {
                    let x = src[ch * h * w + p]
                    let v = x.isNaN ? 0 : min(max(x / 2 + 0.5, 0), 1)
                    pixels[p * c + ch] = UInt8((v * 255).rounded())
                }
            }
        }
        self.init(width: w, height: h, channels: c, pixels: pixels)
    }
}

extension LabelMap {
    /// [1, H, W] float32 ids, the input of `SemanticCondition.oneHot`.
    public func tensor() -> Tensor { LabelMap.batchTensor([self]) }

    /// [N, H, W] float32 ids of label maps of one size.
    public static func batchTensor(_ maps: [LabelMap]) -> Tensor {
        guard let first = maps.first else { return Tensor(zeros: [0, 1, 1]) }
        let out = Tensor(zeros: [maps.count, first.height, first.width])
        out.withMutableFloats { o in
            for (n, m) in maps.enumerated() {
                guard m.width == first.width, m.height == first.height else {
                    fatalError("batchTensor: label map \(n) is \(m.width)x\(m.height), not \(first.width)x\(first.height)")
                }
                for (p, id) in m.ids.enumerated() { o[n * m.ids.count + p] = Float(id) }
            }
        }
        return out
    }
}

// MARK: geometry

extension Image {
    /// The pixels of `rect`, which must lie inside the image.
    public func cropped(_ rect: CropRect) -> Image {
        checkInside(rect, width, height)
        return Image(width: rect.width, height: rect.height, channels: channels,
              pixels: cropRows(pixels, width: width, channels: channels, rect: rect))
    }

    /// Left and right swapped (the horizontal flip of training augmentation).
    public func mirrored() -> Image {
        Image(width: width, height: height, channels: channels, pixels: mirrorRows(pixels, width: width, channels: channels))
    }

    public func resized(width newWidth: Int, height newHeight: Int, filter: ResizeFilter) -> Image {
        if newWidth == width && newHeight == height { return self }
        let out = filter == .nearest
            ? resizeNearest(pixels, width, height, channels, newWidth, newHeight)
            : resample(pixels, width, height, channels, newWidth, newHeight, filter)
        return Image(width: newWidth, height: newHeight, channels: channels, pixels: out)
    }

    /// Grey images as RGB; RGB unchanged.
    public func rgb() -> Image {
        guard channels == 1 else { return self }
        var out = [UInt8](repeating: 0, count: pixels.count * 3)
        for (p, v) in pixels.enumerated() { out[p * 3] = v; out[p * 3 + 1] = v; out[p * 3 + 2] = v }
        return Image(width: width, height: height, channels: 3, pixels: out)
    }

    /// `self` * (1 - alpha) + `other` * alpha, rounded (both RGB or both grey, one size).
    public func blended(with other: Image, alpha: Double) -> Image {
        guard other.width == width, other.height == height, other.channels == channels else {
            fatalError("blended: \(other.width)x\(other.height)x\(other.channels) image over \(width)x\(height)x\(channels)")
        }
        var out = pixels
        for i in out.indices { out[i] = UInt8((Double(pixels[i]) * (1 - alpha) + Double(other.pixels[i]) * alpha).rounded()) }
        return Image(width: width, height: height, channels: channels, pixels: out)
    }

    /// Images side by side, top-aligned, on black (grey ones converted to RGB).
    public static func sideBySide(_ images: [Image]) -> Image {
        let rgbs = images.map { $0.rgb() }
        let width = rgbs.reduce(0) { $0 + $1.width }, height = rgbs.map(\.height).max() ?? 0
        var out = [UInt8](repeating: 0, count: width * height * 3)
        var x0 = 0
        for im in rgbs {
            for y in 0..<im.height {
                let dst = (y * width + x0) * 3
                out.replaceSubrange(dst..<(dst + im.width * 3), with: im.pixels[(y * im.width * 3)..<((y + 1) * im.width * 3)])
            }
            x0 += im.width
        }
        return Image(width: width, height: height, channels: 3, pixels: out)
    }
}

extension LabelMap {
    public func cropped(_ rect: CropRect) -> LabelMap {
        checkInside(rect, width, height)
        return LabelMap(width: rect.width, height: rect.height, ids: cropRows(ids, width: width, channels: 1, rect: rect))
    }

    /// Left and right swapped, as `Image.mirrored` swaps the pixels.
    public func mirrored() -> LabelMap { LabelMap(width: width, height: height, ids: mirrorRows(ids, width: width, channels: 1)) }

    /// Nearest-neighbour only: ids cannot be interpolated.
    public func resized(width newWidth: Int, height newHeight: Int) -> LabelMap {
        if newWidth == width && newHeight == height { return self }
        return LabelMap(width: newWidth, height: newHeight, ids: resizeNearest(ids, width, height, 1, newWidth, newHeight))
    }
}

/// Release builds drop array bounds checks (-Ounchecked): an explicit test keeps a bad
/// rectangle from reading past the pixels.
private func checkInside(_ rect: CropRect, _ width: Int, _ height: Int) {
    guard rect.x >= 0, rect.y >= 0, rect.width > 0, rect.height > 0, rect.x + rect.width <= width, rect.y + rect.height <= height else {
        fatalError("crop \(rect) is not inside the \(width)x\(height) image")
    }
}

private func cropRows(_ src: [UInt8], width: Int, channels: Int, rect: CropRect) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: rect.width * rect.height * channels)
    let rowBytes = rect.width * channels
    src.withUnsafeBufferPointer { s in
        out.withUnsafeMutableBufferPointer { o in
            for y in 0..<rect.height {
                let from = ((rect.y + y) * width + rect.x) * channels
                for i in 0..<rowBytes { o[y * rowBytes + i] = s[from + i] }
            }
        }
    }
    return out
}

private func mirrorRows(_ src: [UInt8], width: Int, channels: Int) -> [UInt8] {
    var out = src
    let rows = width > 0 ? src.count / (width * channels) : 0
    for y in 0..<rows {
        for x in 0..<width {
            let from = (y * width + x) * channels, to = (y * width + width - 1 - x) * channels
            for c in 0..<channels { out[to + c] = src[from + c] }
        }
    }
    return out
}

/// Source index of output pixel `i`: the pixel under its centre, as PIL's NEAREST picks it.
private func nearestIndex(_ i: Int, _ inSize: Int, _ outSize: Int) -> Int {
    min(inSize - 1, Int((Double(i) + 0.5) * Double(inSize) / Double(outSize)))
}

private func resizeNearest(_ src: [UInt8], _ w: Int, _ h: Int, _ c: Int, _ nw: Int, _ nh: Int) -> [UInt8] {
    let xs = (0..<nw).map { nearestIndex($0, w, nw) }
    var out = [UInt8](repeating: 0, count: nw * nh * c)
    for y in 0..<nh {
        let sy = nearestIndex(y, h, nh)
        for x in 0..<nw { for ch in 0..<c { out[(y * nw + x) * c + ch] = src[(sy * w + xs[x]) * c + ch] } }
    }
    return out
}

/// Per output pixel, the first source index and fixed-point weights, exactly as Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc` define them: the kernel widens by the scale
/// when downsampling (antialiasing), weights are normalised, then scaled to 22 fraction bits.
private func coefficients(_ inSize: Int, _ outSize: Int, _ filter: ResizeFilter) -> [(start: Int, weights: [Int])] {
    let scale = Double(inSize) / Double(outSize)
    let filterScale = max(scale, 1)
    let support = filter.support * filterScale
    return (0..<outSize).map { i in
        let centre = (Double(i) + 0.5) * scale
        let lo = max(Int(centre - support + 0.5), 0)
        let hi = min(Int(centre + support + 0.5), inSize)
        var w = (lo..<max(lo, hi)).map { filter.weight((Double($0) - centre + 0.5) / filterScale) }
        let total = w.reduce(0, +)
        if total != 0 { w = w.map { $0 / total } }
        let one = Double(1 << precisionBits)
        return (lo, w.map { $0 < 0 ? Int(-0.5 + $0 * one) : Int(0.5 + $0 * one) })
    }
}

private let precisionBits = 22

@inline(__always)
private func clip8(_ v: Int) -> UInt8 {
    v >= (1 << (precisionBits + 8)) ? 255 : v <= 0 ? 0 : UInt8(v >> precisionBits)
}

/// Pillow's 8-bit separable resampling, bit for bit: a horizontal pass to 8 bits (when the
/// width changes), then a vertical pass (when the height changes), integer arithmetic.
private func resample(_ src: [UInt8], _ w: Int, _ h: Int, _ c: Int, _ nw: Int, _ nh: Int, _ filter: ResizeFilter) -> [UInt8] {
    var rows = src
    if nw != w {
        let cx = coefficients(w, nw, filter)
        var out = [UInt8](repeating: 0, count: nw * h * c)
        out.withUnsafeMutableBufferPointer { buffer in
            let o = buffer
            Parallel.forEach(h, minimumChunk: max(1, 16384 / max(1, nw * c))) { range in
                for y in range {
                    for x in 0..<nw {
                        let (start, weights) = cx[x]
                        for ch in 0..<c {
                            var acc = 1 << (precisionBits - 1)
                            for (k, wk) in weights.enumerated() { acc += wk * Int(src[(y * w + start + k) * c + ch]) }
                            o[(y * nw + x) * c + ch] = clip8(acc)
                        }
                    }
                }
            }
        }
        rows = out
    }
    guard nh != h else { return rows }
    let cy = coefficients(h, nh, filter)
    let rowBytes = nw * c
    var out = [UInt8](repeating: 0, count: nh * rowBytes)
    out.withUnsafeMutableBufferPointer { buffer in
        let o = buffer
        rows.withUnsafeBufferPointer { r in
            Parallel.forEach(nh, minimumChunk: max(1, 16384 / max(1, rowBytes))) { range in
                for y in range {
                    let (start, weights) = cy[y]
                    for i in 0..<rowBytes {
                        var acc = 1 << (precisionBits - 1)
                        for (k, wk) in weights.enumerated() { acc += wk * Int(r[(start + k) * rowBytes + i]) }
                        o[y * rowBytes + i] = clip8(acc)
                    }
                }
            }
        }
    }
    return out
}
