import Foundation

/// PNG files built byte by byte, independently of libpng: zlib "stored" (uncompressed) deflate
/// blocks, our own CRC-32 and Adler-32. They cover what our writer never produces — RGBA,
/// grey + alpha, sub-8-bit, palettes with transparency, gamma chunks, 16-bit — so the reader
/// is tested on files it did not write itself.
enum HandMadePNG {
    struct Chunk {
        var type: String
        var data: [UInt8]
    }

    /// `rows` are the unfiltered scanlines (already packed for sub-8-bit depths).
    static func make(width: Int, height: Int, bitDepth: Int, colorType: Int, rows: [[UInt8]],
                     extra: [Chunk] = [], afterHeader: [Chunk] = []) -> [UInt8] {
        var out: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
        let ihdr = be32(width) + be32(height) + [UInt8(bitDepth), UInt8(colorType), 0, 0, 0]
        out += chunk("IHDR", ihdr)
        for c in afterHeader + extra { out += chunk(c.type, c.data) }
        var raw: [UInt8] = []
        for r in rows { raw += [0] + r }  // filter type 0 per row
        out += chunk("IDAT", zlibStored(raw))
        out += chunk("IEND", [])
        return out
    }

    static func gray8(width: Int, height: Int, values: [UInt8], extra: [Chunk] = []) -> [UInt8] {
        make(width: width, height: height, bitDepth: 8, colorType: 0,
             rows: (0..<height).map { Array(values[($0 * width)..<(($0 + 1) * width)]) }, afterHeader: extra)
    }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let t = Array(type.utf8)
        return be32(data.count) + t + data + be32(Int(crc32(t + data)))
    }

    static func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }

    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            let final: UInt8 = i + n == data.count ? 1 : 0
            out += [final, UInt8(n & 255), UInt8(n >> 8), UInt8(~n & 255), UInt8((~n >> 8) & 255)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        return out + be32(Int(b << 16 | a))
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            c ^= UInt32(byte)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}
