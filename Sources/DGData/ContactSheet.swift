import DGBase
/// A 5x7 bitmap font of capitals, digits and a little punctuation, so pictures can carry their
/// own captions without a font library. Lower case draws as upper case; other characters as '?'.
public enum BitmapFont {
    public static let glyphWidth = 5
    public static let glyphHeight = 7
    /// Horizontal advance per character at scale 1 (glyph plus one blank column).
    public static let advance = 6

    /// Pixels `text` spans at `scale`.
    public static func width(of text: String, scale: Int = 1) -> Int {
        text.isEmpty ? 0 : (text.count * advance - 1) * scale
    }

    /// The rows of `character`'s glyph ('#' set, '.' clear).
    static func glyph(_ character: Character) -> [String] {
        let upper = Character(character.uppercased())
        return glyphs[upper] ?? glyphs["?"]!
    }

    private static let glyphs: [Character: [String]] = [
        "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
        "B": ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
        "C": [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
        "D": ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."],
        "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
        "F": ["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
        "G": [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"],
        "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
        "I": [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
        "J": ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
        "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
        "L": ["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
        "M": ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
        "N": ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"],
        "O": [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
        "P": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
        "Q": [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"],
        "R": ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
        "S": [".####", "#....", "#....", ".###.", "....#", "....#", "####."],
        "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
        "U": ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
        "V": ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
        "W": ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."],
        "X": ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
        "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
        "Z": ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"],
        "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
        "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
        "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
        "3": ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
        "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
        "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
        "6": ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
        "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
        "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
        "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
        " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
        ":": [".....", "..#..", "..#..", ".....", "..#..", "..#..", "....."],
        "(": ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."],
        ")": [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."],
        "+": [".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."],
        "-": [".....", ".....", ".....", "#####", ".....", ".....", "....."],
        "=": [".....", ".....", "#####", ".....", "#####", ".....", "....."],
        "^": ["..#..", ".#.#.", "#...#", ".....", ".....", ".....", "....."],
        "/": [".....", "....#", "...#.", "..#..", ".#...", "#....", "....."],
        ".": [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."],
        ",": [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."],
        "?": [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."],
    ]
}

extension Image {
    /// Draws `text` with its top-left corner at (x, y), each font pixel a `scale` x `scale`
    /// square of `color`; pixels falling outside the image are skipped.
    public mutating func draw(text: String, x: Int, y: Int, scale: Int = 1, color: [UInt8]) {
        guard color.count == channels else { fatalError("draw(text:): \(color.count) colour values for \(channels) channels") }
        var left = x
        for character in text {
            for (row, bits) in BitmapFont.glyph(character).enumerated() {
                for (column, bit) in bits.enumerated() where bit == "#" {
                    for dy in 0..<scale {
                        for dx in 0..<scale {
                            let px = left + column * scale + dx, py = y + row * scale + dy
                            guard px >= 0, py >= 0, px < width, py < height else { continue }
                            for c in 0..<channels { pixels[(py * width + px) * channels + c] = color[c] }
                        }
                    }
                }
            }
            left += BitmapFont.advance * scale
        }
    }
}

/// A grid of equally sized pictures under a strip of column titles (the `demo` command's
/// overview of what each variant made of the same masks).
public enum ContactSheet {
    /// Black pixels between columns, between rows, and under the title strip.
    public static let gap = 2

    /// The largest whole font scale (1...3) at which every title fits its column.
    public static func titleScale(titles: [String], cellWidth: Int) -> Int {
        let longest = titles.map { BitmapFont.width(of: $0) }.max() ?? 0
        var scale = 1
        while scale < 3 && longest * (scale + 1) + 4 * (scale + 1) <= cellWidth { scale += 1 }
        return scale
    }

    /// Height of the title strip: the glyphs with `2 * scale` pixels above and below.
    public static func headerHeight(scale: Int) -> Int { (BitmapFont.glyphHeight + 4) * scale }

    /// Size of a sheet of `rows` x `columns` cells of `cellWidth` x `cellHeight`, with titles.
    public static func size(rows: Int, columns: Int, cellWidth: Int, cellHeight: Int, titles: [String]) -> (width: Int, height: Int) {
        let header = headerHeight(scale: titleScale(titles: titles, cellWidth: cellWidth))
        return (columns * cellWidth + (columns - 1) * gap, header + rows * (cellHeight + gap))
    }

    /// `rows[r][c]` drawn at row r, column c; every picture takes the first one's size (others are
    /// resized, bilinear) and grey pictures are drawn as RGB. Titles are centred over their columns
    /// and clipped to them.
    public static func compose(rows: [[Image]], titles: [String]) throws -> Image {
        guard let first = rows.first?.first else { throw FileError("contact sheet", "has no pictures") }
        let columns = titles.count
        guard columns > 0, rows.allSatisfy({ $0.count == columns }) else {
            throw FileError("contact sheet", "every row needs one picture per title (\(columns))")
        }
        let (cw, ch) = (first.width, first.height)
        let scale = titleScale(titles: titles, cellWidth: cw)
        let header = headerHeight(scale: scale)
        let (w, h) = size(rows: rows.count, columns: columns, cellWidth: cw, cellHeight: ch, titles: titles)
        var sheet = Image(width: w, height: h, fill: [0, 0, 0])
        for y in 0..<header { for x in 0..<w { for c in 0..<3 { sheet.pixels[(y * w + x) * 3 + c] = 40 } } }
        for (c, title) in titles.enumerated() {
            var cell = Image(width: cw, height: header, fill: [40, 40, 40])
            cell.draw(text: title, x: max(0, (cw - BitmapFont.width(of: title, scale: scale)) / 2), y: 2 * scale, scale: scale,
                      color: [235, 235, 235])
            sheet.paste(cell, x: c * (cw + gap), y: 0)
        }
        for (r, row) in rows.enumerated() {
            for (c, picture) in row.enumerated() {
                let rgb = picture.rgb()
                let fitted = rgb.width == cw && rgb.height == ch ? rgb : rgb.resized(width: cw, height: ch, filter: .bilinear)
                sheet.paste(fitted, x: c * (cw + gap), y: header + gap + r * (ch + gap))
            }
        }
        return sheet
    }
}

extension Image {
    /// Copies `other` (same channel count) with its top-left corner at (x, y), clipped to this image.
    public mutating func paste(_ other: Image, x: Int, y: Int) {
        guard other.channels == channels else { fatalError("paste: \(other.channels) channels onto \(channels)") }
        for oy in 0..<other.height {
            let ty = y + oy
            guard ty >= 0, ty < height else { continue }
            for ox in 0..<other.width {
                let tx = x + ox
                guard tx >= 0, tx < width else { continue }
                for c in 0..<channels { pixels[(ty * width + tx) * channels + c] = other.pixels[(oy * other.width + ox) * channels + c] }
            }
        }
    }
}
