import DGBase
/// An 8-bit image: 1 channel (grey) or 3 (RGB), rows top to bottom, channels interleaved.
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// A uniformly coloured image (`fill` has `channels` values).
    public init(width: Int, height: Int, fill: [UInt8]) {
        self.init(width: width, height: height, channels: fill.count,
                  pixels: [UInt8](repeating: 0, count: width * height * fill.count))
        if fill.contains(where: { $0 != 0 }) {
            for p in 0..<(width * height) { for c in 0..<fill.count { pixels[p * fill.count + c] = fill[c] } }
        }
    }

    /// Throws unless the fields describe a consistent image (untrusted callers, writers).
    public func validate(_ what: String = "image") throws {
        guard width > 0, height > 0 else { throw FileError(what, "has no pixels (\(width)x\(height))") }
        guard channels == 1 || channels == 3 else { throw FileError(what, "has \(channels) channels; 1 or 3 are supported") }
        guard pixels.count == width * height * channels else {
            throw FileError(what, "holds \(pixels.count) bytes, not \(width)x\(height)x\(channels)")
        }
    }
}

/// A label map: one id per pixel, rows top to bottom. Train ids (0...18, 255 ignore) unless a
/// function says it holds raw Cityscapes label ids.
public struct LabelMap: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var ids: [UInt8]

    public init(width: Int, height: Int, ids: [UInt8]) {
        self.width = width
        self.height = height
        self.ids = ids
    }

    public init(width: Int, height: Int, fill: UInt8) {
        self.init(width: width, height: height, ids: [UInt8](repeating: fill, count: width * height))
    }

    public subscript(x: Int, y: Int) -> UInt8 {
        get { ids[y * width + x] }
        set { ids[y * width + x] = newValue }
    }

    /// Pixels of each value 0...255.
    public func histogram() -> [Int] {
        var counts = [Int](repeating: 0, count: 256)
        ids.withUnsafeBufferPointer { for v in $0 { counts[Int(v)] += 1 } }
        return counts
    }
}

/// A rectangle of pixels: `x..<x+width` by `y..<y+height`.
public struct CropRect: Sendable, Equatable, Codable, CustomStringConvertible {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    /// The `width` x `height` window centred on (cx, cy), moved inside a `boundsWidth` x
    /// `boundsHeight` image (the window must fit).
    public static func centred(on cx: Int, _ cy: Int, width: Int, height: Int, boundsWidth: Int, boundsHeight: Int) -> CropRect {
        let x = min(max(cx - width / 2, 0), boundsWidth - width)
        let y = min(max(cy - height / 2, 0), boundsHeight - height)
        return CropRect(x: x, y: y, width: width, height: height)
    }

    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
}

extension CropRect {
    /// A `width` x `height` window at a position uniform among those inside a `boundsWidth` x
    /// `boundsHeight` image (which must hold it), from two 64-bit random draws: x from `a`, y
    /// from `b`. Every training crop source places its crops with this.
    public static func uniform(width: Int, height: Int, boundsWidth: Int, boundsHeight: Int, _ a: UInt64, _ b: UInt64) -> CropRect {
        CropRect(x: Int(a % UInt64(boundsWidth - width + 1)), y: Int(b % UInt64(boundsHeight - height + 1)), width: width, height: height)
    }
}
