/// People and street furniture: pedestrians, riders' bodies, poles, street lamps, traffic
/// lights and signs, bins and benches.
extension SceneBuilder {
    mutating func addPedestrian(x: Double, z: Double) {
        beginObject()
        addPersonSprite(x: x, z: z, height: rng.uniform(1.45, 1.95), label: LID.person, seated: nil)
        endObject(rank: 1, z: z)
    }

    /// A person on the plane Z = z, facing the camera or walking; `seated` is the saddle height
    /// of a rider (legs then hang beside the saddle). Adds to the current object.
    mutating func addPersonSprite(x: Double, z: Double, height h: Double, label: UInt8, seated: Double?, lean: Double = 0) {
        let skin = rng.chance(0.7) ? T.skin : T.skinDark
        let shirt = UInt8([2, 3, 4, 5, 6, 10][rng.int(below: 6)]), trousers = UInt8(rng.chance(0.5) ? 7 : 8)
        let hip = seated ?? 0.5 * h
        let shoulder = hip + (seated == nil ? 0.33 : 0.36) * h, width = 0.25 * h
        let lx = lean
        if let saddle = seated {
            for s in [-1.0, 1.0] {
                emit(frontSegment(x + s * 0.1, saddle, x + s * 0.18, saddle * 0.35, z: z, thickness: 0.13 * h / 1.75), label, trousers, depth: z)
            }
        } else {
            let stride = rng.uniform(0, 0.22) * h
            emit(frontSegment(x - 0.06 * h, hip, x - 0.06 * h - stride / 2, 0, z: z, thickness: 0.11 * h), label, trousers, depth: z)
            emit(frontSegment(x + 0.06 * h, hip, x + 0.06 * h + stride / 2, 0, z: z, thickness: 0.11 * h), label, trousers, depth: z)
        }
        emit(.polygon([cam.project(x - width / 2, hip, z), cam.project(x + width / 2, hip, z),
                       cam.project(x + lx + width / 2, shoulder, z), cam.project(x + lx - width / 2, shoulder, z)]),
             label, shirt, depth: z)
        let armSwing = seated == nil ? rng.uniform(-0.1, 0.1) * h : 0.2 * h
        for s in [-1.0, 1.0] {
            emit(frontSegment(x + lx + s * width * 0.55, shoulder - 0.02 * h, x + s * width * 0.6 + armSwing * (s > 0 ? 1 : 0.3), hip + 0.02 * h,
                              z: z, thickness: 0.07 * h), label, shirt, depth: z)
        }
        let headY = shoulder + 0.08 * h
        emit(frontEllipse(x + lx, headY + 0.012 * h, z: z, rx: 0.062 * h, ry: 0.07 * h), label, T.hair, depth: z)
        emit(frontEllipse(x + lx, headY - 0.004 * h, z: z, rx: 0.055 * h, ry: 0.062 * h), label, skin, depth: z)
    }

    /// A pole with, at random, a street lamp, a traffic light or a sign on it.
    mutating func addPole(x: Double, z: Double, side: Double) {
        let kind = rng.uniform()
        if kind < 0.3 { return addTrafficLight(x: x, z: z, side: side, overhead: rng.chance(0.35)) }
        if kind < 0.55 { return addSign(x: x, z: z) }
        beginObject()
        let h = rng.uniform(5, 9), tone = UInt8(rng.int(below: 3)), t = rng.uniform(0.14, 0.26)
        box(x - t / 2, x + t / 2, 0, h, z, z + t, LID.pole, front: tone)
        if kind < 0.85 {
            // Street lamp: an arm over the road and a lamp head.
            let reach = -side * rng.uniform(1, 2.5)
            box(min(x, x + reach), max(x, x + reach), h - 0.12, h, z, z + 0.12, LID.pole, front: tone)
            box(min(x + reach, x + reach * 0.8), max(x + reach, x + reach * 0.8), h - 0.3, h - 0.12, z, z + 0.3, LID.pole,
                front: layout.night ? T.lamp : tone, top: tone)
        }
        endObject(rank: 1, z: z)
    }

    mutating func addTrafficLight(x: Double, z: Double, side: Double, overhead: Bool) {
        beginObject()
        let h = overhead ? rng.uniform(5, 6.5) : rng.uniform(2.2, 3.2), t = 0.16
        box(x - t / 2, x + t / 2, 0, h + (overhead ? 0 : 0.05), z, z + t, LID.pole, front: 1)
        var hx = x
        if overhead {
            let reach = -side * rng.uniform(2.5, 5)
            box(min(x, x + reach), max(x, x + reach), h - 0.15, h, z, z + 0.15, LID.pole, front: 1)
            hx = x + reach * rng.uniform(0.6, 1)
        }
        let top = overhead ? h - 0.15 : h + 0.95
        let housing: UInt8 = rng.chance(0.25) ? 4 : 0
        box(hx - 0.17, hx + 0.17, top - 0.95, top, z - 0.3, z, LID.trafficLight, front: housing)
        let facing = rng.chance(0.8)
        if facing && visible(0.15, at: z) {
            let on = 1 + rng.int(below: 3)
            for (k, y) in [top - 0.18, top - 0.47, top - 0.76].enumerated() {
                emit(frontEllipse(hx, y, z: z - 0.3, rx: 0.1, ry: 0.1), LID.trafficLight, k + 1 == on ? UInt8(k + 1) : 0, depth: z)
            }
        }
        endObject(rank: 1, z: z)
    }

    mutating func addSign(x: Double, z: Double) {
        beginObject()
        let h = rng.uniform(1.9, 2.8), t = 0.08
        box(x - t / 2, x + t / 2, 0, h + 0.2, z, z + t, LID.pole, front: 0)
        let r = rng.uniform(0.3, 0.45), cy = h + r
        let back = rng.chance(0.2)
        let shape = rng.int(below: 4)
        let zs = z - 0.05
        if back {
            emit(frontEllipse(x, cy, z: zs, rx: r, ry: r), LID.trafficSign, 4, depth: z)
        } else {
            switch shape {
            case 0:  // prohibition: red ring, white disc
                emit(frontEllipse(x, cy, z: zs, rx: r, ry: r), LID.trafficSign, 0, depth: z)
                emit(frontEllipse(x, cy, z: zs, rx: r * 0.75, ry: r * 0.75), LID.trafficSign, 2, depth: z)
            case 1:  // mandatory: blue disc with a white arrow
                emit(frontEllipse(x, cy, z: zs, rx: r, ry: r), LID.trafficSign, 1, depth: z)
                emit(frontSegment(x, cy - r * 0.5, x, cy + r * 0.5, z: zs, thickness: r * 0.25), LID.trafficSign, 2, depth: z)
            case 2:  // warning triangle
                emit(.polygon([cam.project(x - r, cy - r * 0.8, zs), cam.project(x + r, cy - r * 0.8, zs), cam.project(x, cy + r, zs)]),
                     LID.trafficSign, 0, depth: z)
                emit(.polygon([cam.project(x - r * 0.6, cy - r * 0.55, zs), cam.project(x + r * 0.6, cy - r * 0.55, zs),
                               cam.project(x, cy + r * 0.5, zs)]), LID.trafficSign, 2, depth: z)
            default:  // information: a rectangle
                emit(frontQuad(x - r * 1.2, x + r * 1.2, cy - r * 0.8, cy + r * 0.8, z: zs), LID.trafficSign,
                     UInt8([1, 3, 5][rng.int(below: 3)]), depth: z)
            }
        }
        endObject(rank: 1, z: z)
    }

    /// Bins and benches: "static" in Cityscapes, ignored by training like GTA5's clutter.
    mutating func addClutter(x: Double, z: Double) {
        beginObject()
        if rng.chance(0.6) {
            box(x - 0.28, x + 0.28, 0, rng.uniform(0.8, 1.1), z, z + 0.5, LID.staticObject, front: UInt8(rng.int(below: 2)))
        } else {
            box(x - 0.9, x + 0.9, 0.4, 0.5, z, z + 0.5, LID.staticObject, front: 2)
            box(x - 0.9, x + 0.9, 0.5, 0.9, z + 0.45, z + 0.55, LID.staticObject, front: 2)
        }
        endObject(rank: 1, z: z)
    }
}
