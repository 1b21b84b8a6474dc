/// Cars, trucks, buses, trams and two-wheelers as stacks of 3-D boxes (driving along the
/// street) or as side views on a plane facing the camera (crossing it, parked on the sidewalk).
extension SceneBuilder {
    /// A car driving along the street, its near end at z; `oncoming` shows headlights.
    mutating func addCar(x: Double, z: Double, oncoming: Bool) {
        let w = rng.uniform(1.65, 1.95), length = rng.uniform(3.8, 4.8)
        let paint = UInt8(rng.int(below: 7)), roof = rng.uniform(1.35, 1.55)
        let (x0, x1) = (x - w / 2, x + w / 2)
        beginObject()
        // Cabin first: the body's top covers the cabin's lower edge.
        let inset = 0.12
        box(x0 + inset, x1 - inset, 0.95, roof, z + length * 0.3, z + length * 0.75, LID.car, front: T.carGlass, side: T.carGlass, top: paint)
        box(x0, x1, 0.28, 0.98, z, z + length, LID.car, front: paint)
        if visible(0.3, at: z) {
            for (a, b) in [(x0 + 0.12, x0 + 0.38), (x1 - 0.38, x1 - 0.12)] {
                emit(frontQuad(a, b, 0, 0.3, z: z + 0.6), LID.car, T.carTyre, depth: z)
            }
            for (a, b) in [(x0 + 0.05, x0 + 0.3), (x1 - 0.3, x1 - 0.05)] {
                emit(frontQuad(a, b, 0.7, 0.85, z: z), LID.car, oncoming ? T.carHead : T.carTail, depth: z)
            }
            let sideX = x1 < 0 ? x1 : x0 > 0 ? x0 : nil
            if let sx = sideX {
                for wz in [z + 0.8, z + length - 0.8] { sideWheel(x: sx, y: 0.32, z: wz, radius: 0.32, LID.car, T.carTyre) }
            }
        }
        endObject(rank: 1, z: z)
    }

    mutating func addTruck(x: Double, z: Double) {
        let w = 2.45, cargo = rng.uniform(5, 8), cabLength = 2.3
        let cab = UInt8(rng.int(below: 3)), box3 = UInt8(3 + rng.int(below: 2))
        let (x0, x1) = (x - w / 2, x + w / 2)
        beginObject()
        box(x0 + 0.05, x1 - 0.05, 0.5, 2.9, z + cargo + 0.2, z + cargo + 0.2 + cabLength, LID.truck, front: cab)
        box(x0, x1, 0.9, rng.uniform(3.2, 3.9), z, z + cargo, LID.truck, front: box3)
        emit(frontQuad(x0 + 0.2, x1 - 0.2, 0.5, 0.9, z: z + 0.3), LID.truck, 1, depth: z)
        if visible(0.3, at: z) {
            for (a, b) in [(x0 + 0.1, x0 + 0.55), (x1 - 0.55, x1 - 0.1)] { emit(frontQuad(a, b, 0, 0.5, z: z + 0.5), LID.truck, 6, depth: z) }
            let sideX = x1 < 0 ? x1 : x0 > 0 ? x0 : nil
            if let sx = sideX {
                for wz in [z + 1.0, z + 2.3, z + cargo + 1.5] { sideWheel(x: sx, y: 0.5, z: wz, radius: 0.5, LID.truck, 6) }
            }
            emit(frontQuad(x0 + 0.1, x0 + 0.35, 0.95, 1.1, z: z), LID.truck, 7, depth: z)
        }
        endObject(rank: 1, z: z)
    }

    mutating func addBus(x: Double, z: Double) {
        let w = 2.55, length = rng.uniform(10, 13), h = rng.uniform(3.0, 3.3)
        let body = UInt8([0, 1, 2, 6][rng.int(below: 4)])
        let (x0, x1) = (x - w / 2, x + w / 2)
        beginObject()
        box(x0, x1, 0.3, h, z, z + length, LID.bus, front: body)
        if visible(0.3, at: z) {
            emit(frontQuad(x0 + 0.2, x1 - 0.2, 1.6, h - 0.3, z: z), LID.bus, 3, depth: z)
            let sideX = x1 < 0 ? x1 : x0 > 0 ? x0 : nil
            if let sx = sideX {
                emit(sideQuad(x: sx, 1.3, h - 0.4, z + 0.5, z + length - 0.5), LID.bus, 3, depth: z, surface: .facade(x: sx))
                for wz in [z + 2.2, z + length - 2.5] { sideWheel(x: sx, y: 0.5, z: wz, radius: 0.5, LID.bus, 4) }
            }
            for (a, b) in [(x0 + 0.1, x0 + 0.4), (x1 - 0.4, x1 - 0.1)] {
                emit(frontQuad(a, b, 0, 0.4, z: z + 1.8), LID.bus, 4, depth: z)
                emit(frontQuad(a, b, 0.8, 1.0, z: z), LID.bus, 5, depth: z)
            }
        }
        endObject(rank: 1, z: z)
    }

    /// A tram on the street's rails (label train, as Cityscapes annotates trams).
    mutating func addTram(x: Double, z: Double) {
        let w = 2.4, length = rng.uniform(18, 32), h = 3.4
        let body = UInt8(rng.int(below: 3))
        let (x0, x1) = (x - w / 2, x + w / 2)
        beginObject()
        emit(frontSegment(x - 0.5, h, x, h + 1.0, z: z + 3, thickness: 0.06), LID.train, 5, depth: z)
        emit(frontSegment(x + 0.5, h, x, h + 1.0, z: z + 3, thickness: 0.06), LID.train, 5, depth: z)
        box(x0, x1, 0.3, h, z, z + length, LID.train, front: body)
        if visible(0.2, at: z) {
            emit(frontQuad(x0 + 0.25, x1 - 0.25, 1.5, h - 0.4, z: z), LID.train, 3, depth: z)
            emit(frontQuad(x0, x1, 0.8, 1.05, z: z), LID.train, 4, depth: z)
            let sideX = x1 < 0 ? x1 : x0 > 0 ? x0 : nil
            if let sx = sideX {
                emit(sideQuad(x: sx, 1.4, h - 0.5, z + 0.5, z + length - 0.5), LID.train, 3, depth: z, surface: .facade(x: sx))
                emit(sideQuad(x: sx, 0.8, 1.05, z, z + length), LID.train, 4, depth: z, surface: .facade(x: sx))
            }
        }
        endObject(rank: 1, z: z)
    }

    /// A vehicle crossing the street at depth z, seen from the side; its front at `x`, heading
    /// by `direction` (+1 to the right).
    mutating func addCrossingVehicle(x: Double, z: Double, direction: Double) {
        let kind = rng.uniform()
        beginObject()
        if kind < 0.7 {
            let length = rng.uniform(3.8, 4.8), paint = UInt8(rng.int(below: 7))
            let (x0, x1) = (min(x, x - direction * length), max(x, x - direction * length))
            emit(frontQuad(x0, x1, 0.28, 0.98, z: z), LID.car, paint, depth: z)
            let c0 = x0 + length * 0.25, c1 = x1 - length * 0.25
            emit(.polygon([cam.project(c0 - 0.3, 0.98, z), cam.project(c1 + 0.3, 0.98, z), cam.project(c1, 1.45, z), cam.project(c0, 1.45, z)]),
                 LID.car, T.carGlass, depth: z)
            for wx in [x0 + 0.8, x1 - 0.8] { emit(frontEllipse(wx, 0.32, z: z - 0.1, rx: 0.32, ry: 0.32), LID.car, T.carTyre, depth: z) }
        } else {
            let bus = kind < 0.85
            let label = bus ? LID.bus : LID.truck, length = bus ? rng.uniform(10, 12) : rng.uniform(7, 10)
            let (x0, x1) = (min(x, x - direction * length), max(x, x - direction * length))
            emit(frontQuad(x0, x1, 0.35, bus ? 3.1 : 3.6, z: z), label, UInt8(rng.int(below: 3)), depth: z)
            if bus { emit(frontQuad(x0 + 0.6, x1 - 0.6, 1.4, 2.6, z: z), label, 3, depth: z) }
            for wx in [x0 + 1.5, x1 - 1.8] { emit(frontEllipse(wx, 0.5, z: z - 0.1, rx: 0.5, ry: 0.5), label, bus ? 4 : 6, depth: z) }
        }
        endObject(rank: 1, z: z)
    }

    // MARK: two-wheelers

    /// A bicycle or motorcycle ridden along the street, seen from behind; the rider covers the
    /// frame and the rear wheel covers the rider's seat.
    mutating func addRiderFromBehind(x: Double, z: Double, motorcycle: Bool) {
        let vehicle = motorcycle ? LID.motorcycle : LID.bicycle
        let tone = UInt8(rng.int(below: 3))
        beginObject()
        let bar = motorcycle ? 0.75 : 0.58
        emit(frontQuad(x - bar / 2, x + bar / 2, 1.0, 1.06, z: z + 1.0), vehicle, tone, depth: z)
        if motorcycle {
            emit(frontQuad(x - 0.28, x + 0.28, 0.35, 0.85, z: z + 0.3), vehicle, tone, depth: z)
        } else {
            emit(frontQuad(x - 0.03, x + 0.03, 0.3, 0.95, z: z + 0.5), vehicle, tone, depth: z)
        }
        addPersonSprite(x: x, z: z + 0.2, height: rng.uniform(1.6, 1.9), label: LID.rider, seated: motorcycle ? 0.8 : 0.9)
        let tyre = motorcycle ? 0.09 : 0.03
        emit(frontQuad(x - tyre, x + tyre, 0, motorcycle ? 0.62 : 0.68, z: z), vehicle, 3, depth: z)
        if motorcycle { emit(frontQuad(x - 0.1, x + 0.1, 0.75, 0.85, z: z - 0.05), vehicle, 4, depth: z) }
        endObject(rank: 1, z: z)
    }

    /// A bicycle or motorcycle seen from the side, facing `direction`, with or without a rider.
    mutating func addTwoWheelerSide(x: Double, z: Double, motorcycle: Bool, rider: Bool, direction: Double) {
        let vehicle = motorcycle ? LID.motorcycle : LID.bicycle
        let tone = UInt8(rng.int(below: 3)), d = direction
        let r = motorcycle ? 0.32 : 0.34, half = motorcycle ? 0.7 : 0.52
        beginObject()
        for wx in [x - d * half, x + d * half] {
            emit(.ring(centre: cam.project(wx, r, z), radii: SIMD2(repeating: r * cam.scale(z)), inner: motorcycle ? 0.55 : 0.82),
                 vehicle, 3, depth: z)
        }
        if motorcycle {
            emit(frontEllipse(x, 0.62, z: z, rx: 0.65, ry: 0.24), vehicle, tone, depth: z)
            emit(frontEllipse(x + d * 0.2, 0.82, z: z, rx: 0.28, ry: 0.12), vehicle, tone, depth: z)
            emit(frontSegment(x + d * half, r, x + d * 0.55, 1.05, z: z, thickness: 0.06), vehicle, 4, depth: z)
        } else {
            let t = 0.045
            let rear = (x - d * half, r), bracket = (x, 0.3), seat = (x - d * 0.15, 0.88), head = (x + d * 0.42, 0.9)
            for (a, b) in [(rear, bracket), (bracket, seat), (seat, rear), (bracket, head), (seat, head), (head, (x + d * half, r))] {
                emit(frontSegment(a.0, a.1, b.0, b.1, z: z, thickness: t), vehicle, tone, depth: z)
            }
            emit(frontSegment(head.0, head.1, head.0 - d * 0.05, 1.05, z: z, thickness: t), vehicle, tone, depth: z)
            emit(frontSegment(seat.0 - d * 0.1, 0.92, seat.0 + d * 0.1, 0.92, z: z, thickness: 0.06), vehicle, 2, depth: z)
        }
        if rider {
            addPersonSprite(x: x - d * 0.1, z: z - 0.05, height: rng.uniform(1.6, 1.9), label: LID.rider,
                            seated: motorcycle ? 0.75 : 0.9, lean: d * 0.12)
        }
        endObject(rank: 1, z: z)
    }
}
