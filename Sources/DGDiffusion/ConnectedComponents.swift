/// Connected components of a label map, per class: two pixels are connected when they hold the
/// same class and touch (4-connectivity: edges; 8-connectivity: edges or corners). Two-pass
/// labelling with union-find over provisional labels.
public struct ConnectedComponents: Sendable {
    public let width: Int
    public let height: Int
    /// Per pixel: 0 for ignored pixels, else the component number (1...count), numbered in the
    /// raster order of each component's first pixel.
    public let labels: [Int32]
    /// Pixel count of component k at areas[k - 1].
    public let areas: [Int]
    /// Class of component k at classes[k - 1].
    public let classes: [UInt8]

    public var count: Int { areas.count }

    /// `ignore` pixels belong to no component (the ignore label 255, as the reference skips it).
    public init(ids: [UInt8], width: Int, height: Int, connectivity: Int = 8, ignore: UInt8? = 255) {
        precondition(connectivity == 4 || connectivity == 8, "connectivity is 4 or 8")
        precondition(ids.count == width * height, "label map of \(ids.count) pixels is not \(width)x\(height)")
        self.width = width
        self.height = height
        var provisional = [Int32](repeating: 0, count: ids.count)
        var parent: [Int32] = [0]  // parent[0] unused: label 0 = no component

        func find(_ a: Int32) -> Int32 {
            var root = a
            while parent[Int(root)] != root { root = parent[Int(root)] }
            var x = a
            while parent[Int(x)] != root { let next = parent[Int(x)]; parent[Int(x)] = root; x = next }
            return root
        }
        func union(_ a: Int32, _ b: Int32) {
            let ra = find(a), rb = find(b)
            if ra < rb { parent[Int(rb)] = ra } else if rb < ra { parent[Int(ra)] = rb }
        }

        // Already-visited neighbours: left, and the three above (the corners with 8-connectivity).
        let neighbours: [(Int, Int)] = connectivity == 8 ? [(-1, 0), (-1, -1), (0, -1), (1, -1)] : [(-1, 0), (0, -1)]
        for y in 0..<height {
            for x in 0..<width {
                let i = y * width + x
                let c = ids[i]
                if let ignore, c == ignore { continue }
                var label: Int32 = 0
                for (dx, dy) in neighbours {
                    let nx = x + dx, ny = y + dy
                    guard nx >= 0, nx < width, ny >= 0 else { continue }
                    let j = ny * width + nx
                    guard ids[j] == c, provisional[j] != 0 else { continue }
                    if label == 0 { label = provisional[j] } else { union(label, provisional[j]) }
                }
                if label == 0 {
                    label = Int32(parent.count)
                    parent.append(label)
                }
                provisional[i] = label
            }
        }

        var number = [Int32](repeating: 0, count: parent.count)
        var areas: [Int] = [], classes: [UInt8] = []
        var labels = [Int32](repeating: 0, count: ids.count)
        for i in 0..<ids.count where provisional[i] != 0 {
            let root = Int(find(provisional[i]))
            if number[root] == 0 {
                areas.append(0)
                classes.append(ids[i])
                number[root] = Int32(areas.count)
            }
            let k = number[root]
            labels[i] = k
            areas[Int(k) - 1] += 1
        }
        self.labels = labels
        self.areas = areas
        self.classes = classes
    }

    /// Per pixel: whether it lies in a component of more than `minArea` pixels (strictly more,
    /// as the reference's `area > threshold`).
    public func mask(largerThan minArea: Int) -> [Bool] {
        labels.map { $0 != 0 && areas[Int($0) - 1] > minArea }
    }
}
