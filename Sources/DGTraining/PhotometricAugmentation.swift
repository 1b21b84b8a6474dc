import DGBase
import DGData
import Foundation

/// Photometric augmentation of segmentation training crops: the cheap, diffusion-free way to vary
/// appearance, so that a gain from generated data has to beat it (the control arm of the
/// experiment's claim 3). Colour as mmsegmentation's PhotoMetricDistortion does it with its
/// defaults, then blur and noise as albumentations' GaussianBlur and GaussNoise (the wrappers
/// segmentation codebases add them with):
///
/// 1. brightness: with probability 1/2, add a delta uniform in [-32, 32];
/// 2. contrast (before the saturation with probability 1/2, else after the hue): with probability
///    1/2, multiply by a factor uniform in [0.5, 1.5];
/// 3. saturation: with probability 1/2, multiply HSV saturation by a factor uniform in [0.5, 1.5];
/// 4. hue: with probability 1/2, shift the hue by an integer in [-18, 18] of OpenCV's 180 steps
///    (2 degrees each);
/// 5. blur: with probability 1/2, a Gaussian of sigma uniform in [0.1, 2] (kernel radius
///    ceil(3 sigma), edges replicated);
/// 6. noise: with probability 1/2, Gaussian noise per pixel and channel of a variance uniform in
///    [10, 50] (8-bit units).
///
/// Every step clips to [0, 255] and rounds to 8 bits as the uint8 pipelines do; HSV is computed
/// in floating point (mmseg goes through OpenCV's 8-bit HSV, which quantises the hue to 2 degrees).
/// The labels are untouched. Every draw comes from `stream`, so a crop's augmentation is fixed by
/// the run's seed and the crop's index.
public enum PhotometricAugmentation {
    /// What a run's options record (a change to the recipe above must change this name).
    public static let name = "mmseg-photometric+blur+noise"

    public static func apply(_ image: Image, stream: RandomStream) -> Image {
        precondition(image.channels == 3, "photometric augmentation needs RGB")
        var px = image.pixels.map(Float.init)
        // Slots of `stream` below 16 are the callers'; these start at 16.
        func chance(_ slot: Int) -> Bool { stream.bits(slot) & 1 == 1 }
        func uniform(_ slot: Int, _ a: Float, _ b: Float) -> Float { a + (b - a) * Float(stream.uniform(slot)) }

        if chance(16) { let beta = uniform(17, -32, 32); affine(&px, alpha: 1, beta: beta) }
        let contrastFirst = chance(18)
        func contrast() { if chance(19) { affine(&px, alpha: uniform(20, 0.5, 1.5), beta: 0) } }
        if contrastFirst { contrast() }
        let saturation: Float? = chance(21) ? uniform(22, 0.5, 1.5) : nil
        let hue: Int? = chance(23) ? Int(stream.bits(24) % 37) - 18 : nil
        if saturation != nil || hue != nil { adjustHSV(&px, saturation: saturation ?? 1, hueShiftDegrees: Float(2 * (hue ?? 0))) }
        if !contrastFirst { contrast() }
        if chance(25) { px = gaussianBlur(px, width: image.width, height: image.height, sigma: uniform(26, 0.1, 2)) }
        if chance(27) {
            let sd = uniform(28, 10, 50).squareRoot()
            let noise = RandomStream(seed: stream.bits(29), 0x0015E).normals(px.count)
            for i in px.indices { px[i] = quantised(px[i] + sd * noise[i]) }
        }
        return Image(width: image.width, height: image.height, channels: 3, pixels: px.map { UInt8($0) })
    }

    /// mmseg's convert: x * alpha + beta, clipped to [0, 255], back to uint8.
    static func affine(_ px: inout [Float], alpha: Float, beta: Float) {
        for i in px.indices { px[i] = quantised(px[i] * alpha + beta) }
    }

    static func quantised(_ v: Float) -> Float { min(max(v, 0), 255).rounded(.towardZero) }

    /// Saturation scaled (clipped to 1) and hue rotated, per pixel through HSV.
    static func adjustHSV(_ px: inout [Float], saturation: Float, hueShiftDegrees: Float) {
        for p in stride(from: 0, to: px.count, by: 3) {
            let (r, g, b) = (px[p], px[p + 1], px[p + 2])
            let v = max(r, g, b), m = min(r, g, b), c = v - m
            var s = v > 0 ? c / v : 0
            var h: Float = 0
            if c > 0 {
                if v == r { h = 60 * (g - b) / c } else if v == g { h = 120 + 60 * (b - r) / c } else { h = 240 + 60 * (r - g) / c }
            }
            s = min(s * saturation, 1)
            h = (h + hueShiftDegrees).truncatingRemainder(dividingBy: 360)
            if h < 0 { h += 360 }
            // HSV back to RGB.
            let chroma = v * s, hp = h / 60
            let x = chroma * (1 - abs(hp.truncatingRemainder(dividingBy: 2) - 1))
            let (r1, g1, b1): (Float, Float, Float)
            switch Int(hp) {
            case 0: (r1, g1, b1) = (chroma, x, 0)
            case 1: (r1, g1, b1) = (x, chroma, 0)
            case 2: (r1, g1, b1) = (0, chroma, x)
            case 3: (r1, g1, b1) = (0, x, chroma)
            case 4: (r1, g1, b1) = (x, 0, chroma)
            default: (r1, g1, b1) = (chroma, 0, x)
            }
            let shift = v - chroma
            px[p] = quantised((r1 + shift).rounded())
            px[p + 1] = quantised((g1 + shift).rounded())
            px[p + 2] = quantised((b1 + shift).rounded())
        }
    }

    /// A separable Gaussian of `sigma` (normalised kernel of radius ceil(3 sigma)), edges replicated.
    static func gaussianBlur(_ px: [Float], width: Int, height: Int, sigma: Float) -> [Float] {
        let radius = max(1, Int((3 * sigma).rounded(.up)))
        var kernel = (-radius...radius).map { d in exp(-Float(d * d) / (2 * sigma * sigma)) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        func pass(_ src: [Float], horizontal: Bool) -> [Float] {
            var out = [Float](repeating: 0, count: src.count)
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<3 {
                        var acc: Float = 0
                        for (k, w) in kernel.enumerated() {
                            let d = k - radius
                            let sx = horizontal ? min(max(x + d, 0), width - 1) : x
                            let sy = horizontal ? y : min(max(y + d, 0), height - 1)
                            acc += w * src[(sy * width + sx) * 3 + c]
                        }
                        out[(y * width + x) * 3 + c] = acc
                    }
                }
            }
            return out
        }
        return pass(pass(px, horizontal: true), horizontal: false).map { quantised($0.rounded()) }
    }
}
