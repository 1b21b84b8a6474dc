import DGBase
import DGTensor
/// The street itself: sky, ground (road, markings, sidewalks, terrain, rails), the buildings,
/// walls, fences and vegetation lining it, and the backdrop at its end.
extension SceneBuilder {
    static func randomLayout(_ rng: inout SplitMix64, night: Bool) -> StreetLayout {
        let kind: StreetLayout.Kind = [.urban, .urban, .urban, .suburban, .suburban, .rural][rng.int(below: 6)]
        let walk = { (r: inout SplitMix64) -> Double in
            kind == .rural && r.chance(0.6) ? 0 : r.uniform(1.5, 5)
        }
        let setback = { (r: inout SplitMix64) -> Double in
            switch kind {
            case .urban: return r.chance(0.7) ? 0 : r.uniform(0.5, 3)
            case .suburban: return r.uniform(2, 8)
            case .rural: return r.uniform(3, 15)
            }
        }
        let roadLeft = rng.uniform(1.8, 9), roadRight = rng.uniform(1.8, 9)
        let walkLeft = walk(&rng), walkRight = walk(&rng)
        let setbackLeft = setback(&rng), setbackRight = setback(&rng)
        let zFar = rng.uniform(50, 160)
        var crossing: ClosedRange<Double>? = nil
        if rng.chance(0.45) {
            let z0 = rng.uniform(14, min(60, zFar - 20))
            crossing = z0...(z0 + rng.uniform(8, 16))
        }
        let tram: Double? = rng.chance(0.3) && roadLeft + roadRight > 6 ? rng.uniform(-roadLeft + 1.5, roadRight - 1.5) : nil
        let bridge: Double? = rng.chance(0.18) ? rng.uniform(30, min(110, zFar)) : nil
        return StreetLayout(kind: kind, roadLeft: roadLeft, roadRight: roadRight, walkLeft: walkLeft, walkRight: walkRight,
                            setbackLeft: setbackLeft, setbackRight: setbackRight, zFar: zFar, crossing: crossing,
                            tram: tram, bridge: bridge, night: night)
    }

    /// Sky in horizontal bands (posterised in the game style, a gradient in the photo style),
    /// covering the whole frame; everything else is drawn over it.
    mutating func addSky() {
        let bands = 6
        let bottom = max(cam.horizon, 1)
        for k in 0..<bands {
            let y0 = k == 0 ? -1 : bottom * Double(k) / Double(bands)
            let y1 = k == bands - 1 ? Double(height) + 1 : bottom * Double(k + 1) / Double(bands)
            let w = Double(width)
            emitBackground(.polygon([SIMD2(-1, y0), SIMD2(w + 1, y0), SIMD2(w + 1, y1), SIMD2(-1, y1)]), LID.sky, UInt8(k), surface: .sky)
        }
    }

    mutating func addGround(zNear: Double) {
        let far = 5000.0, wide = 3000.0
        let L = layout
        // Beyond the sidewalks: paved plazas in town, grass and dirt elsewhere.
        let outer: (UInt8, UInt8) = L.kind == .urban && rng.chance(0.6) ? (LID.sidewalk, 1) : (LID.terrain, UInt8(rng.int(below: 3)))
        emitBackground(groundQuad(-wide, wide, zNear, far), outer.0, outer.1, surface: .ground)
        for side in [-1.0, 1.0] {
            let edge = L.walkEdge(side), line = L.buildingLine(side)
            if abs(line - edge) > 0.3 && rng.chance(0.7) {
                emitBackground(groundQuad(min(edge, line), max(edge, line), zNear, L.zFar + 30), LID.terrain, UInt8(rng.int(below: 2)), surface: .ground)
            }
            let curb = L.curb(side)
            if L.walk(side) > 0 {
                emitBackground(groundQuad(min(curb, edge), max(curb, edge), zNear, far), LID.sidewalk, UInt8(rng.int(below: 3)), surface: .ground)
                let c1 = curb + side * 0.25
                emitBackground(groundQuad(min(curb, c1), max(curb, c1), zNear, far), LID.sidewalk, T.curb, surface: .ground)
            } else if rng.chance(0.5) {
                let dirt = curb + side * rng.uniform(0.5, 2)
                emitBackground(groundQuad(min(curb, dirt), max(curb, dirt), zNear, far), LID.terrain, 2, surface: .ground)
            }
        }
        emitBackground(groundQuad(-L.roadLeft, L.roadRight, zNear, far), LID.road, UInt8(rng.int(below: 3)), surface: .ground)
        for _ in 0..<rng.int(in: 0...4) {
            let x = rng.uniform(-L.roadLeft, L.roadRight - 1), z = rng.uniform(zNear + 2, 60)
            emitBackground(groundQuad(x, x + rng.uniform(0.6, 3), z, z + rng.uniform(1, 6)), LID.road, T.roadPatch, surface: .ground)
        }
        addMarkings(zNear: zNear)
        if let x = L.tram {
            emitBackground(groundQuad(x - 1.0, x + 1.0, zNear, far), LID.railTrack, 1, surface: .ground)
            for r in [-0.72, 0.72] {
                emitBackground(groundQuad(x + r - 0.06, x + r + 0.06, zNear, far), LID.railTrack, 0, surface: .ground)
            }
        }
        if let c = L.crossing {
            emitBackground(groundQuad(-wide, wide, c.lowerBound, c.upperBound), LID.road, 0, surface: .ground)
            // Zebra crossing just before the junction.
            var x = -L.roadLeft + 0.3
            while x + 0.5 < L.roadRight {
                emitBackground(groundQuad(x, x + 0.5, c.lowerBound - 4, c.lowerBound - 1), LID.road, T.roadMarking, surface: .ground)
                x += 1.0
            }
        }
    }

    private mutating func addMarkings(zNear: Double) {
        let L = layout
        let lanes = max(1, Int(((L.roadLeft + L.roadRight) / 3.2).rounded()))
        let laneWidth = (L.roadLeft + L.roadRight) / Double(lanes)
        let centre = lanes > 1 ? lanes / 2 : -1
        for k in 1..<max(lanes, 1) {
            let x = -L.roadLeft + Double(k) * laneWidth
            let yellow = k == centre && rng.chance(0.3)
            var z = zNear + rng.uniform(0, 6)
            while z < min(L.zFar, 120) {
                if !L.inCrossing(z, z + 3, margin: 4) {
                    emitBackground(groundQuad(x - 0.08, x + 0.08, z, z + 3), LID.road, yellow ? T.roadYellow : T.roadMarking, surface: .ground)
                }
                z += 9
            }
        }
        if rng.chance(0.6) {
            for x in [-L.roadLeft + 0.3, L.roadRight - 0.3] {
                emitBackground(groundQuad(x - 0.07, x + 0.07, zNear, min(L.zFar, 150)), LID.road, T.roadMarking, surface: .ground)
            }
        }
    }

    // MARK: the street's edges

    /// Segments of buildings, walls, fences, hedges and open land along both sides.
    mutating func addEdges() {
        for side in [-1.0, 1.0] {
            var z = 1.0
            while z < layout.zFar {
                let length = rng.uniform(6, 30)
                var z1 = min(z + length, layout.zFar)
                if let c = layout.crossing, z1 > c.lowerBound - 3 && z < c.upperBound + 3 {
                    if z < c.lowerBound - 3 { z1 = c.lowerBound - 3 } else { z = c.upperBound + 3; continue }
                }
                addEdgeSegment(side: side, z0: z, z1: z1)
                z = z1
            }
        }
    }

    private mutating func addEdgeSegment(side: Double, z0: Double, z1: Double) {
        let u = rng.uniform()
        switch layout.kind {
        case .urban:
            if u < 0.78 { addBuilding(side: side, z0: z0, z1: z1, tall: true) } else if u < 0.86 { addWall(side: side, z0: z0, z1: z1) }
            else if u < 0.93 { addFence(side: side, z0: z0, z1: z1); addTreeRow(side: side, z0: z0, z1: z1) }
            else { addTreeRow(side: side, z0: z0, z1: z1) }
        case .suburban:
            if u < 0.4 { addBuilding(side: side, z0: z0, z1: z1, tall: false) } else if u < 0.55 { addHedge(side: side, z0: z0, z1: z1) }
            else if u < 0.7 { addWall(side: side, z0: z0, z1: z1) } else if u < 0.85 { addFence(side: side, z0: z0, z1: z1) }
            else { addTreeRow(side: side, z0: z0, z1: z1) }
            if rng.chance(0.5) { addTreeRow(side: side, z0: z0, z1: z1, behind: true) }
        case .rural:
            if u < 0.4 { addTreeRow(side: side, z0: z0, z1: z1, behind: true) } else if u < 0.6 { addFence(side: side, z0: z0, z1: z1) }
            else if u < 0.7 { addWall(side: side, z0: z0, z1: z1) } else if u < 0.8 { addBuilding(side: side, z0: z0, z1: z1, tall: false) }
        }
    }

    mutating func addBuilding(side: Double, z0: Double, z1: Double, tall: Bool, lateral: Double? = nil) {
        let x = lateral ?? layout.buildingLine(side) + side * (rng.chance(0.3) ? rng.uniform(0, 2) : 0)
        let h = tall ? rng.uniform(8, 40) : rng.uniform(4, 11)
        let facade = UInt8(rng.int(below: 6))
        beginObject()
        emit(frontQuadBlock(x: x, side: side, h: h, z: z0), LID.building, facade, depth: z0, light: 1)
        emit(sideQuad(x: x, 0, h, z0, z1), LID.building, facade, depth: z0, surface: .facade(x: x), light: side < 0 ? 1.05 : 0.8)
        if visible(0.6, at: z0) {
            emit(sideQuad(x: x, h - 0.6, h, z0, z1), LID.building, T.trim, depth: z0, surface: .facade(x: x))
        }
        addWindows(x: x, h: h, z0: z0, z1: z1)
        endObject(rank: 0, z: z0)
    }

    /// The face of a building block towards the camera, running away from the street.
    private func frontQuadBlock(x: Double, side: Double, h: Double, z: Double) -> Shape {
        frontQuad(min(x, x + side * 60), max(x, x + side * 60), 0, h, z: z)
    }

    private mutating func addWindows(x: Double, h: Double, z0: Double, z1: Double) {
        let spacing = rng.uniform(2.6, 4.2), width = spacing * rng.uniform(0.4, 0.65)
        let floor = rng.uniform(2.8, 3.4), tall = floor * rng.uniform(0.45, 0.6)
        let lit = layout.night ? 0.45 : 0.04
        var z = z0 + rng.uniform(0.5, spacing)
        while z + width < z1 - 0.3 {
            // Ground floor: a door or a shop window.
            if rng.chance(0.5) {
                let door = rng.chance(0.4)
                emit(sideQuad(x: x, 0, door ? 2.2 : 2.6, z, z + width), LID.building, door ? T.door : (rng.chance(lit) ? T.litWindow : T.window),
                     depth: z, surface: .facade(x: x))
            }
            var y = floor + (floor - tall) / 2
            guard visible(tall, at: z) else { z += spacing; continue }
            while y + tall < h - 0.8 {
                emit(sideQuad(x: x, y, y + tall, z, z + width), LID.building, rng.chance(lit) ? T.litWindow : T.window, depth: z, surface: .facade(x: x))
                y += floor
            }
            z += spacing
        }
    }

    mutating func addWall(side: Double, z0: Double, z1: Double) {
        let x = layout.walkEdge(side) + side * rng.uniform(0, 0.8)
        if rng.chance(0.6) { addBuilding(side: side, z0: z0, z1: z1, tall: layout.kind == .urban, lateral: layout.buildingLine(side) + side * rng.uniform(2, 6)) }
        let h = rng.uniform(0.8, 3.2), tone = UInt8(rng.int(below: 3))
        beginObject()
        let x0 = side < 0 ? x - 0.3 : x, x1 = side < 0 ? x : x + 0.3
        box(x0, x1, 0, h, z0, z1, LID.wall, front: tone)
        endObject(rank: 0, z: z0 - 0.01)
    }

    mutating func addFence(side: Double, z0: Double, z1: Double) {
        let x = layout.walkEdge(side) + side * rng.uniform(0, 0.5)
        let h = rng.uniform(0.9, 2.2), tone = UInt8(rng.int(below: 2))
        beginObject()
        emit(sideQuad(x: x, 0.05, h, z0, z1), LID.fence, tone, depth: z0, surface: .facade(x: x))
        var z = z0
        while z < z1 && visible(0.1, at: z) {
            emit(sideQuad(x: x, 0, h + 0.1, z, z + 0.1), LID.fence, 2, depth: z, surface: .facade(x: x))
            z += 2.5
        }
        if visible(0.05, at: z0) {
            emit(sideQuad(x: x, h * 0.45, h * 0.45 + 0.07, z0, z1), LID.fence, 2, depth: z0, surface: .facade(x: x))
        }
        endObject(rank: 0, z: z0 - 0.02)
    }

    mutating func addHedge(side: Double, z0: Double, z1: Double) {
        let x = layout.walkEdge(side) + side * rng.uniform(0, 1)
        let h = rng.uniform(0.8, 2.2), depthWidth = rng.uniform(0.8, 2)
        beginObject()
        box(side < 0 ? x - depthWidth : x, side < 0 ? x : x + depthWidth, 0, h, z0, z1, LID.vegetation, front: 2, side: 0, top: 1)
        endObject(rank: 0, z: z0 - 0.02)
    }

    mutating func addTreeRow(side: Double, z0: Double, z1: Double, behind: Bool = false) {
        let base = behind ? layout.buildingLine(side) + side * rng.uniform(1, 10) : layout.buildingLine(side) + side * rng.uniform(0, 3)
        var z = z0 + rng.uniform(0, 4)
        while z < z1 {
            addTree(x: base + side * rng.uniform(0, 4), z: z, rank: 0, size: rng.uniform(0.8, 1.8))
            z += rng.uniform(2.5, 7)
        }
    }

    /// A trunk and a crown of overlapping blobs.
    mutating func addTree(x: Double, z: Double, rank: Int, size: Double) {
        beginObject()
        let trunk = rng.uniform(1.8, 3.5) * size
        emit(frontQuad(x - 0.15 * size, x + 0.15 * size, 0, trunk + 0.5, z: z), LID.vegetation, T.trunk, depth: z)
        let radius = rng.uniform(1.3, 2.5) * size
        for k in 0..<rng.int(in: 3...6) {
            let dx = rng.uniform(-0.7, 0.7) * radius, dy = rng.uniform(-0.3, 0.8) * radius
            let r = radius * rng.uniform(0.55, 0.9)
            emit(frontEllipse(x + dx, trunk + radius * 0.7 + dy, z: z - 0.01 * Double(k), rx: r, ry: r * rng.uniform(0.8, 1.1)),
                 LID.vegetation, UInt8(rng.int(below: 3)), depth: z)
        }
        endObject(rank: rank, z: z)
    }

    // MARK: the end of the street

    /// What closes the view: a row of buildings across the street, a distant skyline, trees.
    mutating func addBackdrop() {
        let z = layout.zFar
        var x = -300.0
        let skyline = layout.kind == .urban ? 0.8 : layout.kind == .suburban ? 0.5 : 0.2
        while x < 300 {
            let w = rng.uniform(8, 40)
            beginObject()
            if rng.chance(skyline) {
                let h = layout.kind == .urban ? rng.uniform(8, 50) : rng.uniform(4, 14)
                emit(frontQuad(x, x + w, 0, h, z: z), LID.building, UInt8(rng.int(below: 6)), depth: z)
            } else if rng.chance(0.7) {
                for _ in 0..<3 {
                    let r = rng.uniform(2, 6)
                    emit(frontEllipse(x + rng.uniform(0, w), r * rng.uniform(0.6, 1.4), z: z, rx: r * rng.uniform(1, 2), ry: r),
                         LID.vegetation, UInt8(rng.int(below: 3)), depth: z)
                }
            }
            endObject(rank: 0, z: z + 100)
            x += w
        }
    }

    /// A railway bridge across the street, a train on it part of the time.
    mutating func addBridge(z: Double) {
        let deck = rng.uniform(5.5, 9)
        beginObject()
        emit(frontQuad(-400, 400, deck - 1.2, deck, z: z), LID.bridge, 0, depth: z)
        for side in [-1.0, 1.0] {
            let x = side < 0 ? -layout.roadLeft - layout.walkLeft : layout.roadRight + layout.walkRight
            box(x - 0.6, x + 0.6, 0, deck - 1.2, z, z + 1.5, LID.bridge, front: 1)
        }
        if rng.chance(0.85) {
            var x = rng.uniform(-120, -10)
            let cars = rng.int(in: 2...5), tone = UInt8(rng.int(below: 3))
            for _ in 0..<cars {
                let length = rng.uniform(14, 22)
                emit(frontQuad(x, x + length, deck, deck + 3.4, z: z - 0.5), LID.train, tone, depth: z)
                if visible(0.8, at: z) {
                    var wx = x + 1
                    while wx + 1.2 < x + length - 0.8 {
                        emit(frontQuad(wx, wx + 1.2, deck + 1.5, deck + 2.6, z: z - 0.5), LID.train, 3, depth: z)
                        wx += 2
                    }
                }
                x += length + 0.6
            }
        }
        endObject(rank: 0, z: z)
    }
}
