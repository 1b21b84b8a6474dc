/// XXH64 (Yann Collet's xxHash, 64-bit, seed 0): the per-tensor checksum of the native format.
/// Fast enough (several GB/s) that verifying every tensor on load costs little next to reading it.
public enum XXH64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always) private static func merge(_ acc: UInt64, _ val: UInt64) -> UInt64 {
        (acc ^ round(0, val)) &* p1 &+ p4
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let n = bytes.count
        guard let p = bytes.baseAddress else { return finalize(seed &+ p5, length: 0, tail: UnsafeRawPointer(bitPattern: 1)!, tailCount: 0) }
        var i = 0
        var h: UInt64
        if n >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            while i + 32 <= n {
                v1 = round(v1, p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                v2 = round(v2, p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self))
                v3 = round(v3, p.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self))
                v4 = round(v4, p.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self))
                i += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        return finalize(h, length: n, tail: p + i, tailCount: n - i)
    }

    private static func finalize(_ start: UInt64, length: Int, tail: UnsafeRawPointer, tailCount: Int) -> UInt64 {
        var h = start &+ UInt64(length)
        var i = 0
        while i + 8 <= tailCount {
            h ^= round(0, tail.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            h = rotl(h, 27) &* p1 &+ p4
            i += 8
        }
        if i + 4 <= tailCount {
            h ^= UInt64(tail.loadUnaligned(fromByteOffset: i, as: UInt32.self)) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i += 4
        }
        while i < tailCount {
            h ^= UInt64(tail.load(fromByteOffset: i, as: UInt8.self)) &* p5
            h = rotl(h, 11) &* p1
            i += 1
        }
        h ^= h >> 33
        h = h &* p2
        h ^= h >> 29
        h = h &* p3
        h ^= h >> 32
        return h
    }

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        let v = hash(bytes)
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
