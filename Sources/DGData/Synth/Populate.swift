import DGBase
import DGTensor
/// Fills the street with traffic, people and furniture at random depths, so that most
/// instances are far away and small, as in driving footage.
extension SceneBuilder {
    private enum Traffic { case car, truck, bus, motorcycle, bicycle }

    mutating func populate() {
        let L = layout
        let zMin = 3.0, zMax = min(L.zFar - 1, (L.bridge ?? .infinity) - 2)
        guard zMax > zMin + 1 else { return }
        // Rare vehicles are promised up front and placed in the first free lane slots, so
        // they are as frequent as the class statistics need without crowding every scene.
        var promised: [Traffic] = []
        if rng.chance(0.3) { promised.append(.truck) }
        if rng.chance(0.3) { promised.append(.bus) }
        if rng.chance(0.35) { promised.append(.motorcycle) }
        if rng.chance(0.35) { promised.append(.bicycle) }
        promised = rng.permutation(promised.count).map { promised[$0] }

        let lanes = max(1, Int(((L.roadLeft + L.roadRight) / 3.2).rounded()))
        let laneWidth = (L.roadLeft + L.roadRight) / Double(lanes)
        let density = rng.uniform(0.35, 0.9)
        for lane in rng.permutation(lanes) {
            let x0 = -L.roadLeft + Double(lane) * laneWidth, xc = x0 + laneWidth / 2
            if let t = L.tram, abs(xc - t) < 1.8 { continue }
            let own = x0 <= 0 && 0 < x0 + laneWidth
            let oncoming = !own && lanes >= 2 && xc < 0
            var z = own ? rng.uniform(6, 25) : rng.uniform(zMin, 20)
            while z < zMax {
                if rng.chance(density) {
                    let kind = promised.popLast() ?? pickTraffic()
                    z += addTraffic(kind, laneCentre: xc, z: z, oncoming: oncoming)
                }
                z += rng.uniform(3, 28)
            }
        }
        if let t = L.tram, rng.chance(0.85) { addTram(x: t, z: rng.uniform(8, max(9, min(60, zMax)))) }
        if let zb = L.bridge { addBridge(z: zb) }
        for side in [-1.0, 1.0] { populateSide(side, zMin: zMin, zMax: zMax) }
        if let c = L.crossing { populateCrossing(c) }
    }

    private mutating func pickTraffic() -> Traffic {
        let u = rng.uniform()
        return u < 0.84 ? .car : u < 0.9 ? .truck : u < 0.94 ? .bus : u < 0.97 ? .motorcycle : .bicycle
    }

    /// Adds one vehicle and returns the length of street it takes.
    private mutating func addTraffic(_ kind: Traffic, laneCentre xc: Double, z: Double, oncoming: Bool) -> Double {
        let jitter = rng.uniform(-0.4, 0.4)
        switch kind {
        case .car: addCar(x: xc + jitter, z: z, oncoming: oncoming); return 5
        case .truck: addTruck(x: xc + jitter * 0.5, z: z); return 11
        case .bus: addBus(x: xc + jitter * 0.5, z: z); return 13
        case .motorcycle: addRiderFromBehind(x: xc + jitter * 2, z: z, motorcycle: true); return 2.5
        case .bicycle: addRiderFromBehind(x: xc + jitter * 2, z: z, motorcycle: false); return 2
        }
    }

    private mutating func sampleZ(_ lo: Double, _ hi: Double) -> Double { rng.uniform(lo, max(lo + 0.1, hi)) }

    private mutating func populateSide(_ side: Double, zMin: Double, zMax: Double) {
        let L = layout
        let curb = L.curb(side), walk = L.walk(side)
        let inner = curb + side * 0.45
        let outer = walk > 0 ? L.walkEdge(side) - side * 0.3 : curb + side * 1.2
        func across(_ rng: inout SplitMix64) -> Double { min(inner, outer) + rng.uniform() * abs(outer - inner) }

        // Parked cars along the curb.
        if rng.chance(0.5) {
            var z = sampleZ(zMin, 15)
            while z < zMax {
                if !L.inCrossing(z, z + 5, margin: 5) { addCar(x: curb - side * 1.1, z: z, oncoming: false) }
                z += rng.uniform(5, 25)
            }
        }
        for _ in 0..<rng.int(in: 1...5) {
            let z = sampleZ(zMin, zMax)
            if !L.inCrossing(z, z) { addPole(x: inner, z: z, side: side) }
        }
        let people = L.kind == .urban ? rng.int(in: 1...12) : L.kind == .suburban ? rng.int(in: 0...6) : rng.int(in: 0...2)
        for _ in 0..<people {
            let z = sampleZ(zMin, zMax)
            if !L.inCrossing(z, z) { addPedestrian(x: across(&rng), z: z) }
        }
        if L.kind != .rural && rng.chance(0.4) {
            for _ in 0..<rng.int(in: 1...5) {
                let z = sampleZ(zMin + 2, zMax)
                if !L.inCrossing(z, z, margin: 2) { addTree(x: across(&rng), z: z, rank: 1, size: rng.uniform(0.6, 1.2)) }
            }
        }
        for _ in 0..<rng.int(in: 0...2) {
            let z = sampleZ(zMin, zMax)
            if !L.inCrossing(z, z) { addClutter(x: across(&rng), z: z) }
        }
        if rng.chance(0.2) {
            let z = sampleZ(zMin, zMax)
            let motorcycle = rng.chance(0.4)
            for k in 0..<rng.int(in: 1...3) where !L.inCrossing(z, z + 2) {
                addTwoWheelerSide(x: across(&rng), z: z + Double(k) * 0.7, motorcycle: motorcycle, rider: false, direction: rng.chance(0.5) ? 1 : -1)
            }
        }
    }

    private mutating func populateCrossing(_ c: ClosedRange<Double>) {
        let L = layout
        for _ in 0..<rng.int(in: 0...4) {
            addPedestrian(x: rng.uniform(-L.roadLeft, L.roadRight), z: rng.uniform(c.lowerBound - 4, c.lowerBound - 1))
        }
        for _ in 0..<rng.int(in: 0...3) {
            let direction: Double = rng.chance(0.5) ? 1 : -1
            let z = rng.uniform(c.lowerBound + 1, c.upperBound - 2)
            let x = rng.uniform(-40, 40)
            if rng.chance(0.8) {
                addCrossingVehicle(x: x, z: z, direction: direction)
            } else {
                addTwoWheelerSide(x: x, z: z, motorcycle: rng.chance(0.5), rider: true, direction: direction)
            }
        }
        for s in [-1.0, 1.0] where rng.chance(0.8) {
            let z = rng.chance(0.5) ? c.lowerBound - 1.5 : c.upperBound + 1.5
            addTrafficLight(x: L.curb(s) + s * 0.5, z: z, side: s, overhead: rng.chance(0.4))
        }
    }
}

extension SplitMix64 {
    /// 0..<n in random order (Fisher-Yates with our own draws).
    mutating func permutation(_ n: Int) -> [Int] {
        var a = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { a.swapAt(i, int(below: i + 1)) }
        return a
    }
}
