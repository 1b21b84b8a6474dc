import DGBase
import DGTensor
import Foundation

/// A pinhole camera looking down a street: X to the right, Y up from the ground, Z forward (metres).
struct Camera: Sendable {
    var focal: Double      // pixels
    var cx: Double         // vanishing point column
    var horizon: Double    // horizon row
    var height: Double     // camera height above the ground

    @inline(__always)
    func project(_ x: Double, _ y: Double, _ z: Double) -> SIMD2<Double> {
        SIMD2(cx + focal * x / z, horizon + focal * (height - y) / z)
    }

    /// Pixels per metre at depth z.
    func scale(_ z: Double) -> Double { focal / z }
}

/// How the photo style recovers a pixel's depth (for fog): per item, or from the ground plane
/// or a facade plane through the pixel.
enum Surface: Sendable {
    case sky
    case ground
    case facade(x: Double)
    case flat
}

/// One shape of one object, with everything the renderers need.
struct PaintItem: Sendable {
    var shape: Shape
    var label: UInt8       // Cityscapes label id
    var tone: UInt8        // index into the label's tones
    var depth: Float       // metres, for the flat surfaces
    var surface: Surface
    var light: Float       // face orientation shading of the photo style (1 = facing the camera)
    var variation: UInt16  // per-object colour variation of the photo style
    var object: Int32      // which object (instance) the shape belongs to; -1 for the background
}

enum Weather: String, Sendable, CaseIterable {
    case clear, overcast, fog, rain, night
}

/// The layout of one street scene: street widths, what lines it, and the camera.
struct StreetLayout: Sendable {
    enum Kind { case urban, suburban, rural }
    var kind: Kind
    var roadLeft: Double, roadRight: Double          // road spans -roadLeft...roadRight
    var walkLeft: Double, walkRight: Double          // sidewalk widths, 0 = none
    var setbackLeft: Double, setbackRight: Double    // sidewalk edge to building line
    var zFar: Double                                 // end of the street
    var crossing: ClosedRange<Double>?               // a cross street's z range
    var tram: Double?                                // lateral position of a tram line
    var bridge: Double?                              // z of a railway bridge across the street
    var night: Bool

    func curb(_ side: Double) -> Double { side < 0 ? -roadLeft : roadRight }
    func walkEdge(_ side: Double) -> Double { side < 0 ? -(roadLeft + walkLeft) : roadRight + walkRight }
    func buildingLine(_ side: Double) -> Double {
        side < 0 ? -(roadLeft + walkLeft + setbackLeft) : roadRight + walkRight + setbackRight
    }
    func walk(_ side: Double) -> Double { side < 0 ? walkLeft : walkRight }
    func inCrossing(_ z0: Double, _ z1: Double, margin: Double = 0) -> Bool {
        guard let c = crossing else { return false }
        return z1 > c.lowerBound - margin && z0 < c.upperBound + margin
    }
}

/// Collects paint items: the background (sky, ground) first, in order, then groups (one per
/// object) drawn far to near — the painter's algorithm. Rank 0 groups (facades, walls, fences at
/// the edge of the street) come before rank 1 (everything standing in the street).
struct SceneBuilder {
    var rng: SplitMix64
    let width: Int
    let height: Int
    let cam: Camera
    var layout: StreetLayout
    var background: [PaintItem] = []
    private var groups: [(rank: Int, z: Double, order: Int, items: [PaintItem])] = []
    private var current: [PaintItem] = []
    private var variation: UInt16 = 0

    init(rng: SplitMix64, width: Int, height: Int, cam: Camera, layout: StreetLayout) {
        self.rng = rng
        self.width = width
        self.height = height
        self.cam = cam
        self.layout = layout
    }

    /// All items in drawing order.
    func items() -> [PaintItem] {
        let sorted = groups.sorted { a, b in
            if a.rank != b.rank { return a.rank < b.rank }
            if a.z != b.z { return a.z > b.z }
            return a.order < b.order
        }
        return background + sorted.flatMap(\.items)
    }

    // MARK: emitting

    mutating func beginObject() {
        current = []
        variation = UInt16(truncatingIfNeeded: rng.next())
    }

    mutating func endObject(rank: Int, z: Double) {
        if !current.isEmpty { groups.append((rank, z, groups.count, current)) }
        current = []
    }

    mutating func emit(_ shape: Shape, _ label: UInt8, _ tone: UInt8, depth: Double, surface: Surface = .flat, light: Float = 1) {
        current.append(PaintItem(shape: shape, label: label, tone: tone, depth: Float(depth), surface: surface, light: light,
                                 variation: variation, object: Int32(groups.count)))
    }

    mutating func emitBackground(_ shape: Shape, _ label: UInt8, _ tone: UInt8, surface: Surface, depth: Double = 1e4) {
        background.append(PaintItem(shape: shape, label: label, tone: tone, depth: Float(depth), surface: surface, light: 1,
                                    variation: UInt16(truncatingIfNeeded: rng.next()), object: -1))
    }

    /// Whether something `size` metres across at depth z is worth drawing (at least ~half a pixel).
    func visible(_ size: Double, at z: Double) -> Bool { cam.scale(z) * size >= 0.5 }

    // MARK: 3-D primitives

    /// A quad on the ground plane.
    func groundQuad(_ x0: Double, _ x1: Double, _ z0: Double, _ z1: Double) -> Shape {
        .polygon([cam.project(x0, 0, z0), cam.project(x1, 0, z0), cam.project(x1, 0, z1), cam.project(x0, 0, z1)])
    }

    /// A rectangle on the plane X = x (a facade, a fence), from z0 to z1 and y0 to y1.
    func sideQuad(x: Double, _ y0: Double, _ y1: Double, _ z0: Double, _ z1: Double) -> Shape {
        .polygon([cam.project(x, y0, z0), cam.project(x, y1, z0), cam.project(x, y1, z1), cam.project(x, y0, z1)])
    }

    /// A rectangle on the plane Z = z, facing the camera.
    func frontQuad(_ x0: Double, _ x1: Double, _ y0: Double, _ y1: Double, z: Double) -> Shape {
        .polygon([cam.project(x0, y0, z), cam.project(x1, y0, z), cam.project(x1, y1, z), cam.project(x0, y1, z)])
    }

    /// A filled ellipse on the plane Z = z centred at (x, y), radii in metres.
    func frontEllipse(_ x: Double, _ y: Double, z: Double, rx: Double, ry: Double) -> Shape {
        let s = cam.scale(z)
        return .ellipse(centre: cam.project(x, y, z), radii: SIMD2(rx * s, ry * s))
    }

    /// A thick line on the plane Z = z between (x0, y0) and (x1, y1).
    func frontSegment(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, z: Double, thickness: Double) -> Shape {
        let a = cam.project(x0, y0, z), b = cam.project(x1, y1, z)
        var d = b - a
        let len = (d * d).sum().squareRoot()
        d = len > 0 ? d / len : SIMD2(1, 0)
        let n = SIMD2(-d.y, d.x) * max(thickness * cam.scale(z), 0.6) / 2
        return .polygon([a + n, b + n, b - n, a - n])
    }

    /// The faces of an axis-aligned box the camera can see: the face towards the camera, the
    /// side facing the street's centre line, the top when below the camera (the bottom when
    /// above). Front-facing faces of a convex box never overlap, so their order is free.
    mutating func box(_ x0: Double, _ x1: Double, _ y0: Double, _ y1: Double, _ z0: Double, _ z1: Double,
                      _ label: UInt8, front: UInt8, side: UInt8? = nil, top: UInt8? = nil) {
        let depth = z0
        if y1 < cam.height {
            emit(.polygon([cam.project(x0, y1, z0), cam.project(x1, y1, z0), cam.project(x1, y1, z1), cam.project(x0, y1, z1)]),
                 label, top ?? front, depth: depth, light: 1.15)
        } else if y0 > cam.height {
            emit(.polygon([cam.project(x0, y0, z0), cam.project(x1, y0, z0), cam.project(x1, y0, z1), cam.project(x0, y0, z1)]),
                 label, top ?? front, depth: depth, light: 0.7)
        }
        if x1 < 0 {
            emit(sideQuad(x: x1, y0, y1, z0, z1), label, side ?? front, depth: depth, light: 0.8)
        } else if x0 > 0 {
            emit(sideQuad(x: x0, y0, y1, z0, z1), label, side ?? front, depth: depth, light: 1.1)
        }
        emit(frontQuad(x0, x1, y0, y1, z: z0), label, front, depth: depth)
    }

    /// A wheel seen on a side plane X = x (a vehicle driving along the street).
    mutating func sideWheel(x: Double, y: Double, z: Double, radius: Double, _ label: UInt8, _ tone: UInt8) {
        let c = cam.project(x, y, z)
        let a = cam.project(x, y, z - radius), b = cam.project(x, y, z + radius)
        let rx = abs(b.x - a.x) / 2, ry = radius * cam.scale(z)
        guard rx > 0.2 else { return }
        emit(.ellipse(centre: c, radii: SIMD2(rx, ry)), label, tone, depth: z)
    }
}
