/// A filled 2-D shape in pixel coordinates (pixel (i, j) is the square [i, i+1) x [j, j+1),
/// sampled at its centre). No antialiasing: a pixel belongs entirely to the last shape that
/// covers its centre, which is what makes the label maps exact.
enum Shape: Sendable {
    case polygon([SIMD2<Double>])
    case ellipse(centre: SIMD2<Double>, radii: SIMD2<Double>)
    /// The ellipse minus the same ellipse scaled by `inner` (0 < inner < 1): a wheel's tyre.
    case ring(centre: SIMD2<Double>, radii: SIMD2<Double>, inner: Double)

    /// Whether the point is inside: the reference the scanline fill must agree with. Polygons
    /// use the even-odd rule with half-open edges (a crossing at exactly the point counts).
    func contains(_ x: Double, _ y: Double) -> Bool {
        switch self {
        case .polygon(let points):
            var inside = false
            for k in points.indices {
                if let xc = crossing(points[k], points[k + 1 == points.count ? 0 : k + 1], y), xc <= x { inside.toggle() }
            }
            return inside
        case .ellipse(let c, let r):
            return inEllipse(x, y, c, r)
        case .ring(let c, let r, let inner):
            return inEllipse(x, y, c, r) && !inEllipse(x, y, c, r * inner)
        }
    }

    var bounds: (min: SIMD2<Double>, max: SIMD2<Double>) {
        switch self {
        case .polygon(let points):
            var lo = points[0], hi = points[0]
            for p in points { lo = pointwiseMin(lo, p); hi = pointwiseMax(hi, p) }
            return (lo, hi)
        case .ellipse(let c, let r), .ring(let c, let r, _):
            return (c - r, c + r)
        }
    }
}

private func inEllipse(_ x: Double, _ y: Double, _ c: SIMD2<Double>, _ r: SIMD2<Double>) -> Bool {
    guard r.x > 0, r.y > 0 else { return false }
    let dx = (x - c.x) / r.x, dy = (y - c.y) / r.y
    return dx * dx + dy * dy <= 1
}

/// Where the edge a-b crosses the horizontal line at `y`; edges include their lower-y end and
/// exclude the other, so a vertex shared by two edges is counted once.
@inline(__always)
private func crossing(_ a: SIMD2<Double>, _ b: SIMD2<Double>, _ y: Double) -> Double? {
    guard (a.y <= y && y < b.y) || (b.y <= y && y < a.y) else { return nil }
    return a.x + (y - a.y) * (b.x - a.x) / (b.y - a.y)
}

/// Paints shapes into a buffer of item indices, painter's order: later shapes cover earlier ones.
struct Raster {
    let width: Int
    let height: Int
    var items: [Int32]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        items = [Int32](repeating: -1, count: width * height)
    }

    mutating func fill(_ shape: Shape, item: Int32) {
        let (lo, hi) = shape.bounds
        guard hi.x >= 0, hi.y >= 0, lo.x < Double(width), lo.y < Double(height), lo.x.isFinite, hi.y.isFinite else { return }
        let y0 = max(0, Int(lo.y.rounded(.down)) - 1), y1 = min(height - 1, Int(hi.y.rounded(.up)))
        guard y0 <= y1 else { return }
        switch shape {
        case .polygon(let points):
            var xs: [Double] = []
            xs.reserveCapacity(points.count)
            for j in y0...y1 {
                let y = Double(j) + 0.5
                xs.removeAll(keepingCapacity: true)
                for k in points.indices {
                    if let xc = crossing(points[k], points[k + 1 == points.count ? 0 : k + 1], y) { xs.append(xc) }
                }
                guard xs.count >= 2 else { continue }
                xs.sort()
                var k = 0
                while k + 1 < xs.count {
                    fillSpan(row: j, from: xs[k], to: xs[k + 1], item: item)
                    k += 2
                }
            }
        case .ellipse, .ring:
            let x0 = max(0, Int(lo.x.rounded(.down)) - 1), x1 = min(width - 1, Int(hi.x.rounded(.up)))
            guard x0 <= x1 else { return }
            for j in y0...y1 {
                for i in x0...x1 where shape.contains(Double(i) + 0.5, Double(j) + 0.5) { items[j * width + i] = item }
            }
        }
    }

    /// Pixels whose centre c satisfies a <= c < b, the span the even-odd rule puts inside.
    private mutating func fillSpan(row: Int, from a: Double, to b: Double, item: Int32) {
        guard b > a, b > 0, a < Double(width) else { return }
        var start = max(0, Int(min(max(a - 0.5, -1), Double(width)).rounded(.up)))
        while start > 0 && Double(start - 1) + 0.5 >= a { start -= 1 }
        while start < width && Double(start) + 0.5 < a { start += 1 }
        var end = max(0, min(width, Int(min(max(b - 0.5, -1), Double(width)).rounded(.up))))
        while end > 0 && Double(end - 1) + 0.5 >= b { end -= 1 }
        while end < width && Double(end) + 0.5 < b { end += 1 }
        guard start < end else { return }
        let base = row * width
        for i in start..<end { items[base + i] = item }
    }
}
