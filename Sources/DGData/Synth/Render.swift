import DGBase
import DGTensor
import Foundation

/// Turns painted items into an image. The label map comes from the same item buffer, so a
/// pixel's label is by construction the class of the object painted there; the styles only
/// choose colours, and the photo style's effects (noise, light, fog, rain, glow) change colours,
/// never which object a pixel shows.
struct SceneRenderer {
    let width: Int
    let height: Int
    let camera: Camera
    let items: [PaintItem]
    let buffer: [Int32]

    init(width: Int, height: Int, camera: Camera, items: [PaintItem]) {
        self.width = width
        self.height = height
        self.camera = camera
        self.items = items
        var raster = Raster(width: width, height: height)
        for (k, item) in items.enumerated() { raster.fill(item.shape, item: Int32(k)) }
        buffer = raster.items
    }

    /// Cityscapes label ids (sky where nothing was painted, which the full-frame sky prevents).
    func labelIds() -> [UInt8] { buffer.map { $0 < 0 ? LID.sky : items[Int($0)].label } }

    /// Flat, saturated colours from the game palette: the GTA-like source domain.
    func game() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for (p, k) in buffer.enumerated() {
            let item = k < 0 ? nil : items[Int(k)]
            let c = item.map { Palette.game[$0.label]![Int($0.tone)] } ?? Palette.game[LID.sky]![0]
            out[p * 3] = c.0; out[p * 3 + 1] = c.1; out[p * 3 + 2] = c.2
        }
        return out
    }

    /// Natural colours under light, texture and weather: the "real" target domain.
    func photo(weather: Weather, rng: inout SplitMix64) -> [UInt8] {
        let seed = UInt32(truncatingIfNeeded: rng.next())
        let visibility = weather == .fog ? rng.uniform(25, 70) : 450
        let fogColor: RGB = weather == .fog ? RGB(188, 192, 198) : weather == .night ? RGB(12, 14, 24) : RGB(200, 212, 225)
        let skyTop: RGB, skyBottom: RGB
        switch weather {
        case .clear: (skyTop, skyBottom) = (RGB(70, 120, 190), RGB(195, 212, 230))
        case .overcast: (skyTop, skyBottom) = (RGB(150, 155, 162), RGB(205, 207, 210))
        case .fog: (skyTop, skyBottom) = (RGB(175, 180, 186), RGB(192, 196, 200))
        case .rain: (skyTop, skyBottom) = (RGB(95, 100, 110), RGB(150, 155, 162))
        case .night: (skyTop, skyBottom) = (RGB(5, 6, 14), RGB(28, 30, 48))
        }
        let tint: RGB = weather == .clear ? RGB(1.06, 1.0, 0.93) : weather == .rain ? RGB(0.92, 0.96, 1.04) : RGB(1, 1, 1)
        let exposure: Float = weather == .rain ? 0.78 : weather == .overcast ? 0.92 : weather == .night ? 0.16 : 1
        let saturation: Float = weather == .overcast || weather == .rain ? 0.65 : weather == .fog ? 0.75 : 1
        var out = [Float](repeating: 0, count: width * height * 3)
        let horizon = max(camera.horizon, 1)
        for y in 0..<height {
            for x in 0..<width {
                let p = y * width + x, k = buffer[p]
                var c: RGB
                var depth: Double
                if k < 0 || items[Int(k)].label == LID.sky {
                    let t = Float(min(1, max(0, (Double(y) + 0.5) / horizon)))
                    c = skyTop + (skyBottom - skyTop) * t + RGB(repeating: noise(x, y, seed) * 1.5)
                    out[p * 3] = c.x; out[p * 3 + 1] = c.y; out[p * 3 + 2] = c.z
                    continue
                }
                let item = items[Int(k)]
                let tone = Palette.tones[item.label]![Int(item.tone)]
                c = RGB(Float(tone.photo.0), Float(tone.photo.1), Float(tone.photo.2))
                let v = item.variation
                c *= 0.86 + 0.28 * Float(v & 0xFF) / 255
                c += RGB(Float((v >> 8) & 7) - 3.5, Float((v >> 11) & 7) - 3.5, Float((v >> 13) & 7) - 3.5) * 1.6
                let grain = noise(x, y, seed), blotch = noise(x / 3, y / 3, seed &+ 7)
                c += RGB(repeating: grain * amplitude(item.label) + blotch * amplitude(item.label) * 0.8)
                depth = pixelDepth(item, x, y)
                if !tone.emissive {
                    c *= item.light
                    if case .ground = item.surface {
                        c *= 0.88 + 0.2 * Float(min(1, max(0, (Double(y) - horizon) / max(1, Double(height) - horizon))))
                    }
                    let mean = (c.x + c.y + c.z) / 3
                    c = RGB(repeating: mean) + (c - RGB(repeating: mean)) * saturation
                    c *= tint * exposure
                }
                let haze = Float(1 - exp(-depth / visibility)) * (weather == .fog ? 1 : 0.55)
                c = c + (fogColor - c) * haze
                out[p * 3] = c.x; out[p * 3 + 1] = c.y; out[p * 3 + 2] = c.z
            }
        }
        if weather == .night { addGlows(&out) }
        if weather == .rain { addRain(&out, &rng) }
        vignette(&out)
        return out.map { UInt8(max(0, min(255, $0.rounded()))) }
    }

    private func amplitude(_ label: UInt8) -> Float {
        switch label {
        case LID.vegetation: return 16
        case LID.terrain: return 11
        case LID.road, LID.sidewalk: return 7
        case LID.building, LID.wall: return 6
        default: return 4
        }
    }

    private func pixelDepth(_ item: PaintItem, _ x: Int, _ y: Int) -> Double {
        switch item.surface {
        case .sky: return 5000
        case .flat: return Double(item.depth)
        case .ground:
            let dy = Double(y) + 0.5 - camera.horizon
            return dy > 0 ? min(5000, camera.focal * camera.height / dy) : 5000
        case .facade(let fx):
            let dx = Double(x) + 0.5 - camera.cx
            let z = dx != 0 ? camera.focal * fx / dx : -1
            return z > 0 ? min(5000, max(1, z)) : Double(item.depth)
        }
    }

    /// Light sources bloom at night: a soft halo around every emissive item.
    private func addGlows(_ out: inout [Float]) {
        for item in items where Palette.tones[item.label]![Int(item.tone)].emissive {
            let (lo, hi) = item.shape.bounds
            let centre = (lo + hi) / 2
            let size = max(hi.x - lo.x, hi.y - lo.y)
            guard size < Double(width) / 4, centre.x > -20, centre.y > -20, centre.x < Double(width) + 20, centre.y < Double(height) + 20 else { continue }
            let r = size + 1.5
            let tone = Palette.tones[item.label]![Int(item.tone)].photo
            let glow = RGB(Float(tone.0), Float(tone.1), Float(tone.2)) * 0.3
            let x0 = max(0, Int(centre.x - 3 * r)), x1 = min(width - 1, Int(centre.x + 3 * r))
            let y0 = max(0, Int(centre.y - 3 * r)), y1 = min(height - 1, Int(centre.y + 3 * r))
            guard x0 <= x1, y0 <= y1 else { continue }
            for y in y0...y1 {
                for x in x0...x1 {
                    let dx = Double(x) + 0.5 - centre.x, dy = Double(y) + 0.5 - centre.y
                    let w = Float(exp(-(dx * dx + dy * dy) / (2 * r * r)))
                    let p = (y * width + x) * 3
                    out[p] += glow.x * w; out[p + 1] += glow.y * w; out[p + 2] += glow.z * w
                }
            }
        }
    }

    /// Slanted bright streaks over everything.
    private func addRain(_ out: inout [Float], _ rng: inout SplitMix64) {
        let count = width * height / 120
        let slope = rng.uniform(-0.35, 0.35)
        for _ in 0..<count {
            let x0 = rng.uniform(-10, Double(width) + 10), y0 = rng.uniform(-10, Double(height))
            let length = rng.uniform(4, 12) * Double(height) / 128
            let strength = Float(rng.uniform(18, 45))
            var t = 0.0
            while t < length {
                let x = Int(x0 + slope * t), y = Int(y0 + t)
                if x >= 0, x < width, y >= 0, y < height {
                    for ch in 0..<3 { out[(y * width + x) * 3 + ch] += strength }
                }
                t += 1
            }
        }
    }

    private func vignette(_ out: inout [Float]) {
        let cx = Double(width) / 2, cy = Double(height) / 2, r2 = cx * cx + cy * cy
        for y in 0..<height {
            for x in 0..<width {
                let dx = Double(x) + 0.5 - cx, dy = Double(y) + 0.5 - cy
                let f = Float(1 - 0.22 * (dx * dx + dy * dy) / r2)
                let p = (y * width + x) * 3
                out[p] *= f; out[p + 1] *= f; out[p + 2] *= f
            }
        }
    }
}

/// Deterministic white noise in [-1, 1] per pixel.
@inline(__always)
func noise(_ x: Int, _ y: Int, _ seed: UInt32) -> Float {
    var h = UInt32(truncatingIfNeeded: x) &* 0x8DA6_B343 ^ UInt32(truncatingIfNeeded: y) &* 0xD816_3841 ^ seed &* 0xCB1A_B31F
    h ^= h >> 13
    h = h &* 0x5BD1_E995
    h ^= h >> 15
    return Float(h & 0xFFFF) / 32767.5 - 1
}
