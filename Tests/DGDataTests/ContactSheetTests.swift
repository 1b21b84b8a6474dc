import XCTest
@testable import DGData

final class ContactSheetTests: XCTestCase {
    /// Every picture lands in its own cell below the title strip, with black gaps between cells,
    /// and the sheet has exactly the size `ContactSheet.size` promises.
    func testCellsAndSize() throws {
        let (cw, ch) = (40, 30)
        func flat(_ v: UInt8) -> Image { Image(width: cw, height: ch, fill: [v, v, v]) }
        let rows = [[flat(10), flat(20), flat(30)], [flat(40), flat(50), flat(60)]]
        let titles = ["A", "B", "C"]
        let sheet = try ContactSheet.compose(rows: rows, titles: titles)
        let size = ContactSheet.size(rows: 2, columns: 3, cellWidth: cw, cellHeight: ch, titles: titles)
        XCTAssertEqual(sheet.width, size.width)
        XCTAssertEqual(sheet.height, size.height)
        let gap = ContactSheet.gap
        let header = ContactSheet.headerHeight(scale: ContactSheet.titleScale(titles: titles, cellWidth: cw))
        XCTAssertEqual(size.width, 3 * cw + 2 * gap)
        XCTAssertEqual(size.height, header + 2 * (ch + gap))
        func pixel(_ x: Int, _ y: Int) -> UInt8 { sheet.pixels[(y * sheet.width + x) * 3] }
        for r in 0..<2 {
            for c in 0..<3 {
                let x0 = c * (cw + gap), y0 = header + gap + r * (ch + gap)
                let want = rows[r][c].pixels[0]
                XCTAssertEqual(pixel(x0, y0), want, "row \(r) column \(c), top left")
                XCTAssertEqual(pixel(x0 + cw - 1, y0 + ch - 1), want, "row \(r) column \(c), bottom right")
                if c < 2 { XCTAssertEqual(pixel(x0 + cw, y0), 0, "gap right of column \(c)") }
            }
        }
        // The title strip holds light glyph pixels in each column.
        for c in 0..<3 {
            var lit = 0
            for y in 0..<header { for x in (c * (cw + gap))..<(c * (cw + gap) + cw) where pixel(x, y) > 200 { lit += 1 } }
            XCTAssertGreaterThan(lit, 5, "title of column \(c)")
        }
        XCTAssertThrowsError(try ContactSheet.compose(rows: [[flat(1)]], titles: ["A", "B"]))
    }

    /// Glyphs draw where the font says: "I" at scale 2 is a 3-pixel bar (6 wide) at the top.
    func testTextDrawing() {
        var image = Image(width: 12, height: 14, fill: [0])
        image.draw(text: "i", x: 0, y: 0, scale: 2, color: [255])
        let top = (0..<12).map { image.pixels[$0] }
        XCTAssertEqual(top, [0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0])
        XCTAssertEqual(BitmapFont.width(of: "ab", scale: 2), 22)
        // Unknown characters draw as '?', not nothing.
        var other = Image(width: 6, height: 7, fill: [0])
        other.draw(text: "€", x: 0, y: 0, color: [255])
        XCTAssertTrue(other.pixels.contains(255))
        XCTAssertEqual(ContactSheet.titleScale(titles: ["ABCDEFGHIJ"], cellWidth: 64), 1)
        XCTAssertEqual(ContactSheet.titleScale(titles: ["AB"], cellWidth: 256), 3)
    }
}
