import DGBase
@testable import DGData
import DGTensor
import Foundation
import XCTest

func scratchDirectory(_ name: String = "dgdata") -> String {
    let dir = NSTemporaryDirectory() + "\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

final class PNGTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = scratchDirectory("png") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testOurWriterRoundTripsRGBGreyAndPalette() throws {
        for channels in [1, 3] {
            let image = Image(width: 37, height: 23, channels: channels, pixels: randomBytes(37 * 23 * channels, seed: UInt64(channels)))
            let path = dir + "/c\(channels).png"
            try PNG.write(image, to: path)
            XCTAssertEqual(try PNG.read(path), image)
            XCTAssertEqual(try PNG.header(path), PNG.Header(width: 37, height: 23, bitDepth: 8, colorType: channels == 3 ? 2 : 0))
            try PNG.write(image, to: path, fast: true, durable: false)
            XCTAssertEqual(try PNG.read(path), image, "fast, non-durable write")
        }
        // All 256 grey levels survive: no gamma or sRGB conversion on the way.
        let ramp = Image(width: 256, height: 1, channels: 1, pixels: (0...255).map { UInt8($0) })
        try PNG.write(ramp, to: dir + "/ramp.png")
        XCTAssertEqual(try PNG.read(dir + "/ramp.png"), ramp)
        XCTAssertEqual(try PNG.readLabels(dir + "/ramp.png").ids, ramp.pixels)

        let palette: [(UInt8, UInt8, UInt8)] = (0..<34).map { (k: Int) -> (UInt8, UInt8, UInt8) in (UInt8(k * 7), UInt8(255 - k), UInt8(k * 3)) }
        let indices = randomBytes(40 * 10, seed: 9).map { $0 % 34 }
        try PNG.writeIndexed(width: 40, height: 10, indices: indices, palette: palette, to: dir + "/p.png")
        XCTAssertEqual(try PNG.header(dir + "/p.png").colorType, 3)
        let raw = try PNG.readIndexed(dir + "/p.png")
        XCTAssertEqual(raw.indices, indices)
        XCTAssertEqual(raw.palette.count, 34)
        XCTAssertTrue(zip(raw.palette, palette).allSatisfy { $0 == $1 })
        let rgb = try PNG.read(dir + "/p.png")
        XCTAssertEqual(rgb.channels, 3)
        for p in 0..<indices.count {
            let c = palette[Int(indices[p])]
            XCTAssertEqual([rgb.pixels[p * 3], rgb.pixels[p * 3 + 1], rgb.pixels[p * 3 + 2]], [c.0, c.1, c.2])
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [], "temporary files left behind")
    }

    /// Every colour type and the sub-8-bit depths, from files libpng did not write.
    func testHandMadeColorTypes() throws {
        let (w, h) = (5, 3)
        let rgba = randomBytes(w * h * 4, seed: 1), ga = randomBytes(w * h * 2, seed: 2)
        let rgb = randomBytes(w * h * 3, seed: 3), grey = randomBytes(w * h, seed: 4)
        func rows(_ bytes: [UInt8], _ perPixel: Int) -> [[UInt8]] {
            (0..<h).map { Array(bytes[($0 * w * perPixel)..<(($0 + 1) * w * perPixel)]) }
        }
        func strip(_ bytes: [UInt8], keep: Int, of n: Int) -> [UInt8] {
            stride(from: 0, to: bytes.count, by: n).flatMap { bytes[$0..<($0 + keep)] }
        }
        let cases: [(String, [UInt8], Image)] = [
            ("grey", HandMadePNG.make(width: w, height: h, bitDepth: 8, colorType: 0, rows: rows(grey, 1)),
             Image(width: w, height: h, channels: 1, pixels: grey)),
            ("rgb", HandMadePNG.make(width: w, height: h, bitDepth: 8, colorType: 2, rows: rows(rgb, 3)),
             Image(width: w, height: h, channels: 3, pixels: rgb)),
            ("rgba", HandMadePNG.make(width: w, height: h, bitDepth: 8, colorType: 6, rows: rows(rgba, 4)),
             Image(width: w, height: h, channels: 3, pixels: strip(rgba, keep: 3, of: 4))),
            ("grey+alpha", HandMadePNG.make(width: w, height: h, bitDepth: 8, colorType: 4, rows: rows(ga, 2)),
             Image(width: w, height: h, channels: 1, pixels: strip(ga, keep: 1, of: 2))),
        ]
        for (name, bytes, expected) in cases {
            let path = dir + "/\(name).png"
            try HandMadePNG.write(bytes, to: path)
            XCTAssertEqual(try PNG.read(path), expected, name)
        }
        XCTAssertEqual(try PNG.readIndexed(dir + "/grey.png").indices, grey)
        XCTAssertEqual(try PNG.readIndexed(dir + "/grey+alpha.png").indices, strip(ga, keep: 1, of: 2))
        XCTAssertThrowsError(try PNG.readLabels(dir + "/rgb.png")) { XCTAssertTrue("\($0)".contains("not a label map"), "\($0)") }

        // 4-bit grey: read as an image it is scaled to 0...255; as labels the stored values stay.
        let nibbles: [UInt8] = [0, 3, 15, 7, 9, 1]  // 6 pixels, one row
        let packed = stride(from: 0, to: 6, by: 2).map { nibbles[$0] << 4 | nibbles[$0 + 1] }
        try HandMadePNG.write(HandMadePNG.make(width: 6, height: 1, bitDepth: 4, colorType: 0, rows: [packed]), to: dir + "/g4.png")
        XCTAssertEqual(try PNG.read(dir + "/g4.png").pixels, nibbles.map { $0 * 17 })
        XCTAssertEqual(try PNG.readLabels(dir + "/g4.png").ids, nibbles)
    }

    /// GTA5 label files are palette PNGs whose indices are the label ids; transparency and
    /// gamma chunks must not change the indices or the colours.
    func testPaletteIndicesWithTransparencyAndGamma() throws {
        let palette: [UInt8] = (0..<20).flatMap { (k: Int) -> [UInt8] in [UInt8(k * 12), UInt8(200 - k * 5), UInt8(k * 9)] }
        let indices: [UInt8] = (0..<24).map { UInt8(($0 * 7) % 20) }
        let extra = [HandMadePNG.Chunk(type: "gAMA", data: HandMadePNG.be32(100000)),  // gamma 1.0, not sRGB
                     HandMadePNG.Chunk(type: "PLTE", data: palette),
                     HandMadePNG.Chunk(type: "tRNS", data: [0, 128, 255])]
        try HandMadePNG.write(HandMadePNG.make(width: 6, height: 4, bitDepth: 8, colorType: 3,
                                               rows: (0..<4).map { Array(indices[($0 * 6)..<($0 * 6 + 6)]) }, afterHeader: extra),
                              to: dir + "/pal.png")
        let raw = try PNG.readIndexed(dir + "/pal.png")
        XCTAssertEqual(raw.indices, indices)
        XCTAssertEqual(raw.palette.count, 20)
        XCTAssertEqual(raw.palette.map { [$0.0, $0.1, $0.2] }.flatMap { $0 }, palette)
        let image = try PNG.read(dir + "/pal.png")
        XCTAssertEqual(image.pixels, indices.flatMap { Array(palette[(Int($0) * 3)..<(Int($0) * 3 + 3)]) }, "alpha dropped, not composited")

        // 2-bit palette.
        let two: [UInt8] = [3, 0, 1, 2, 2, 1, 0, 3]
        let packed = [two[0] << 6 | two[1] << 4 | two[2] << 2 | two[3], two[4] << 6 | two[5] << 4 | two[6] << 2 | two[7]]
        try HandMadePNG.write(HandMadePNG.make(width: 8, height: 1, bitDepth: 2, colorType: 3, rows: [packed],
                                               afterHeader: [HandMadePNG.Chunk(type: "PLTE", data: Array(palette[0..<12]))]), to: dir + "/p2.png")
        XCTAssertEqual(try PNG.readIndexed(dir + "/p2.png").indices, two)

        // A grey label map with a linear gAMA chunk keeps its values (libpng would re-encode them).
        let values: [UInt8] = [0, 1, 7, 18, 255, 33, 128, 64]
        try HandMadePNG.write(HandMadePNG.gray8(width: 4, height: 2, values: values,
                                                extra: [HandMadePNG.Chunk(type: "gAMA", data: HandMadePNG.be32(100000)),
                                                        HandMadePNG.Chunk(type: "cHRM", data: [UInt8](repeating: 1, count: 32))]),
                              to: dir + "/gamma.png")
        XCTAssertEqual(try PNG.readLabels(dir + "/gamma.png").ids, values)
        XCTAssertEqual(try PNG.read(dir + "/gamma.png").pixels, values)
    }

    func testSixteenBitIsRefusedWithOneLine() throws {
        for colorType in [0, 2] {
            let perPixel = colorType == 0 ? 2 : 6
            let path = dir + "/deep\(colorType).png"
            try HandMadePNG.write(HandMadePNG.make(width: 2, height: 2, bitDepth: 16, colorType: colorType,
                                                   rows: [[UInt8](repeating: 9, count: 2 * perPixel), [UInt8](repeating: 9, count: 2 * perPixel)]), to: path)
            for read in [{ _ = try PNG.read(path) }, { _ = try PNG.readLabels(path) }] {
                XCTAssertThrowsError(try read()) { error in
                    let text = "\(error)"
                    XCTAssertTrue(text.hasPrefix(path + ": 16-bit PNG is not supported"), text)
                    XCTAssertFalse(text.contains("\n"))
                }
            }
        }
    }

    func testCorruptTruncatedAndMissingFiles() throws {
        let good = HandMadePNG.gray8(width: 16, height: 16, values: randomBytes(256, seed: 5))
        let idat = good.count - 12 - 12 - 4  // somewhere inside the IDAT data
        var flipped = good
        flipped[idat] ^= 0xFF  // breaks the chunk CRC
        var badHeader = good
        badHeader[12] = UInt8(ascii: "X")
        let cases: [(String, [UInt8], String)] = [
            ("empty", [], "not a PNG file"),
            ("text", Array("hello, world, this is no image".utf8), "not a PNG file"),
            ("signature-only", Array(good[0..<8]), "truncated PNG"),
            ("truncated-header", Array(good[0..<20]), "truncated PNG"),
            ("no-ihdr", badHeader, "first chunk is not IHDR"),
            ("truncated-data", Array(good[0..<(idat - 40)]), "PNG"),
            ("no-iend", Array(good[0..<(good.count - 12)]), "PNG"),
            ("bad-crc", flipped, "PNG"),
        ]
        for (name, bytes, expected) in cases {
            let path = dir + "/\(name).png"
            try HandMadePNG.write(bytes, to: path)
            var threw = false
            do {
                let image = try PNG.read(path)
                // libpng tolerates a missing IEND after complete image data; the pixels must be right then.
                XCTAssertEqual(name, "no-iend", "\(name) read without error")
                try HandMadePNG.write(good, to: dir + "/good.png")
                XCTAssertEqual(image, try PNG.read(dir + "/good.png"))
            } catch {
                threw = true
                let text = "\(error)"
                XCTAssertTrue(text.hasPrefix(path + ": "), text)
                XCTAssertTrue(text.contains(expected), "\(name): \(text)")
                XCTAssertFalse(text.contains("\n"))
            }
            if name != "no-iend" { XCTAssertTrue(threw, name) }
        }
        XCTAssertThrowsError(try PNG.read(dir + "/missing.png")) { XCTAssertTrue("\($0)".contains("cannot open"), "\($0)") }
        XCTAssertThrowsError(try PNG.read(dir)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
    }

    /// Fuzzing found it: a header of 0xFFFFFFFF x 0xFFFFFFFF overflowed width * height (a crash).
    func testHugeSidesAreRefusedNotOverflowed() throws {
        for (w, h) in [(0xFFFF_FFFF, 0xFFFF_FFFF), (0xFFFF_FFFF, 1), (1 << 20, 1 << 20), (0x8000_0000, 2)] {
            var bytes = HandMadePNG.gray8(width: 1, height: 1, values: [0])
            bytes.replaceSubrange(16..<24, with: HandMadePNG.be32(w) + HandMadePNG.be32(h))
            let path = dir + "/huge.png"
            try HandMadePNG.write(bytes, to: path)
            for read in [{ _ = try PNG.header(path) }, { _ = try PNG.readLabels(path) }, { _ = try PNG.read(path) }] as [() throws -> Void] {
                XCTAssertThrowsError(try read()) {
                    XCTAssertEqual("\($0)", "\(path): unsupported PNG size \(w)x\(h)")
                }
            }
        }
    }

    func testBadWritesFailCleanly() throws {
        XCTAssertThrowsError(try PNG.write(Image(width: 4, height: 4, channels: 3, pixels: [1, 2, 3]), to: dir + "/x.png"))
        XCTAssertThrowsError(try PNG.write(Image(width: 2, height: 2, channels: 4, pixels: [UInt8](repeating: 0, count: 16)), to: dir + "/x.png"))
        XCTAssertThrowsError(try PNG.write(Image(width: 2, height: 2, channels: 1, pixels: [0, 0, 0, 0]), to: dir + "/no/such/dir/x.png"))
        XCTAssertThrowsError(try PNG.writeIndexed(width: 2, height: 1, indices: [0, 5], palette: [(0, 0, 0)], to: dir + "/x.png"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }
}
