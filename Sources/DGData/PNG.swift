import CPNG
import DGBase
import Foundation

/// PNG files through libpng's simplified `png_image` API, which reports errors in
/// `image.message` instead of longjmp-ing through Swift frames.
///
/// Pixel values are returned exactly as stored, as PIL and OpenCV return them: colour-management
/// chunks (gAMA, cHRM, sRGB, iCCP) are removed before libpng sees the stream, because the
/// simplified API would otherwise re-encode images whose gAMA differs from sRGB — harmless for
/// photos, fatal for label maps whose grey values are class ids.
public enum PNG {
    /// A PNG's header, read without decoding the pixels.
    public struct Header: Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var bitDepth: Int
        /// 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA (the PNG colour types).
        public var colorType: Int
        public var isPalette: Bool { colorType == 3 }
        public var isColor: Bool { colorType & 2 != 0 }
    }

    /// Raw 8-bit indices of a single-channel PNG: palette indices of a palette image (with the
    /// palette), grey values of a grey image (sub-8-bit grey unscaled: a 4-bit 3 reads as 3).
    public struct Indexed: Sendable {
        public var width: Int
        public var height: Int
        public var indices: [UInt8]
        /// The palette's RGB entries; empty for a grey image.
        public var palette: [(UInt8, UInt8, UInt8)]
    }

    /// Whether the file ends with PNG's IEND chunk (a zero length, "IEND", its fixed CRC):
    /// a download or copy that stopped midway does not. Reads 12 bytes.
    public static func endsComplete(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size >= 12 else { return false }
        var tail = [UInt8](repeating: 0, count: 12)
        guard pread(fd, &tail, 12, size - 12) == 12 else { return false }
        return tail == [0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]
    }

    /// RGB, RGBA and palette images as 3 channels (alpha dropped, not composited), grey and grey +
    /// alpha as 1.
    public static func read(_ path: String) throws -> Image {
        try decode(readFile(path), path: path) { header, image in
            let color = image.format & formatColor != 0
            let alpha = image.format & formatAlpha != 0
            let channels = (color ? 3 : 1) + (alpha ? 1 : 0)
            image.format = (color ? formatColor : 0) | (alpha ? formatAlpha : 0)
            var buffer = try finish(&image, channels: channels, path: path)
            let outChannels = color ? 3 : 1
            if alpha { buffer = dropAlpha(buffer, keep: outChannels) }
            return Image(width: header.width, height: header.height, channels: outChannels, pixels: buffer)
        }
    }

    /// A train-id label map: the grey values or palette indices of a single-channel PNG.
    public static func readLabels(_ path: String) throws -> LabelMap {
        let raw = try readIndexed(path)
        return LabelMap(width: raw.width, height: raw.height, ids: raw.indices)
    }

    /// The stored indices of a grey or palette PNG; colour images are refused (they need a
    /// colour-to-class mapping, see `Cityscapes.labels(fromColors:)`).
    public static func readIndexed(_ path: String) throws -> Indexed {
        try decode(readFile(path), path: path) { header, image in
            if header.isPalette {
                // Palette input keeps its own indices in libpng's colour-map output
                // (png_image_read_colormap copies the PLTE entry by entry).
                let entries = Int(image.colormap_entries)
                image.format = formatColor | formatColormap | (image.format & formatAlpha)
                let entrySize = 3 + Int(image.format & formatAlpha)
                var colormap = [UInt8](repeating: 0, count: 256 * 4)
                var indices = [UInt8](repeating: 0, count: header.width * header.height)
                let ok = indices.withUnsafeMutableBytes { buf in
                    colormap.withUnsafeMutableBytes { cm in
                        png_image_finish_read(&image, nil, buf.baseAddress, png_int_32(header.width), cm.baseAddress)
                    }
                }
                guard ok != 0 else { throw FileError(path, "corrupt PNG (libpng: \(message(&image)))") }
                let count = min(Int(image.colormap_entries), entries)
                let palette = (0..<count).map { (colormap[$0 * entrySize], colormap[$0 * entrySize + 1], colormap[$0 * entrySize + 2]) }
                return Indexed(width: header.width, height: header.height, indices: indices, palette: palette)
            }
            guard !header.isColor else {
                throw FileError(path, "is a colour PNG, not a label map of class ids (grey or palette); colour masks are read with Cityscapes.labels(fromColors:)")
            }
            let alpha = image.format & formatAlpha != 0
            image.format = alpha ? formatAlpha : 0
            var values = try finish(&image, channels: alpha ? 2 : 1, path: path)
            if alpha { values = dropAlpha(values, keep: 1) }
            if header.bitDepth < 8 {
                // libpng scales 1/2/4-bit grey to 0...255; ids are the stored values.
                let step = UInt8(255 / ((1 << header.bitDepth) - 1))
                for i in values.indices { values[i] /= step }
            }
            return Indexed(width: header.width, height: header.height, indices: values, palette: [])
        }
    }

    /// The header of a PNG file (size, bit depth, colour type).
    public static func header(_ path: String) throws -> Header {
        var bytes = [UInt8](repeating: 0, count: 33)
        guard let f = fopen(path, "rb") else { throw FileError(path, "cannot open: \(String(cString: strerror(errno)))") }
        let n = fread(&bytes, 1, 33, f)
        fclose(f)
        return try parseHeader(Array(bytes[0..<n]), path: path)
    }

    /// Writes a grey (1 channel) or RGB (3 channel) image atomically. `durable` fsyncs the file
    /// before the rename (slow on some disks; `synth` syncs whole datasets at once instead).
    public static func write(_ image: Image, to path: String, fast: Bool = false, durable: Bool = true) throws {
        try image.validate(path)
        var png = png_image()
        png.version = png_uint_32(PNG_IMAGE_VERSION)
        png.width = png_uint_32(image.width)
        png.height = png_uint_32(image.height)
        png.format = image.channels == 3 ? formatColor : 0
        png.flags = fast ? png_uint_32(PNG_IMAGE_FLAG_FAST) : 0
        let bytes = try encode(&png, pixels: image.pixels, rowBytes: image.width * image.channels, colormap: nil, path: path)
        try writeAtomically(path, bytes, durable: durable)
    }

    /// Writes a palette PNG: one index per pixel into `palette` (at most 256 entries), as the
    /// GTA5 and Cityscapes colour label files are stored.
    public static func writeIndexed(width: Int, height: Int, indices: [UInt8], palette: [(UInt8, UInt8, UInt8)],
                                    to path: String, fast: Bool = false, durable: Bool = true) throws {
        guard width > 0, height > 0, indices.count == width * height else {
            throw FileError(path, "holds \(indices.count) indices, not \(width)x\(height)")
        }
        guard !palette.isEmpty, palette.count <= 256 else { throw FileError(path, "a palette needs 1...256 entries, not \(palette.count)") }
        if let bad = indices.first(where: { Int($0) >= palette.count }) {
            throw FileError(path, "index \(bad) is outside the \(palette.count)-entry palette")
        }
        var png = png_image()
        png.version = png_uint_32(PNG_IMAGE_VERSION)
        png.width = png_uint_32(width)
        png.height = png_uint_32(height)
        png.format = formatColor | formatColormap
        png.colormap_entries = png_uint_32(palette.count)
        png.flags = fast ? png_uint_32(PNG_IMAGE_FLAG_FAST) : 0
        let colormap = palette.flatMap { [$0.0, $0.1, $0.2] }
        let bytes = try encode(&png, pixels: indices, rowBytes: width, colormap: colormap, path: path)
        try writeAtomically(path, bytes, durable: durable)
    }

    // MARK: decoding

    private static let formatAlpha = png_uint_32(PNG_FORMAT_FLAG_ALPHA)
    private static let formatColor = png_uint_32(PNG_FORMAT_FLAG_COLOR)
    private static let formatLinear = png_uint_32(PNG_FORMAT_FLAG_LINEAR)
    private static let formatColormap = png_uint_32(PNG_FORMAT_FLAG_COLORMAP)
    private static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
    /// Larger images are refused before allocating (a corrupt header can claim 2^31 x 2^31).
    public static let maximumPixels = 1 << 28

    /// Runs `body` between libpng's begin_read and finish_read on the cleaned stream.
    private static func decode<R>(_ file: [UInt8], path: String, _ body: (Header, inout png_image) throws -> R) throws -> R {
        let header = try parseHeader(file, path: path)
        let stream = stripColorManagement(file)
        return try stream.withUnsafeBytes { raw in
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else {
                throw FileError(path, "corrupt PNG (libpng: \(message(&image)))")
            }
            defer { png_image_free(&image) }
            guard image.format & formatLinear == 0 else { throw sixteenBit(path) }
            return try body(header, &image)
        }
    }

    private static func finish(_ image: inout png_image, channels: Int, path: String) throws -> [UInt8] {
        let (w, h) = (Int(image.width), Int(image.height))
        var buffer = [UInt8](repeating: 0, count: w * h * channels)
        let ok = buffer.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, png_int_32(w * channels), nil) }
        guard ok != 0 else { throw FileError(path, "corrupt or truncated PNG (libpng: \(message(&image)))") }
        return buffer
    }

    private static func parseHeader(_ bytes: [UInt8], path: String) throws -> Header {
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else { throw FileError(path, "not a PNG file") }
        guard bytes.count >= 33 else { throw FileError(path, "truncated PNG (no complete header)") }
        guard bigEndian(bytes, 8) == 13, String(decoding: bytes[12..<16], as: UTF8.self) == "IHDR" else {
            throw FileError(path, "corrupt PNG (the first chunk is not IHDR)")
        }
        let header = Header(width: bigEndian(bytes, 16), height: bigEndian(bytes, 20), bitDepth: Int(bytes[24]), colorType: Int(bytes[25]))
        guard header.bitDepth != 16 else { throw sixteenBit(path) }
        guard [1, 2, 4, 8].contains(header.bitDepth), [0, 2, 3, 4, 6].contains(header.colorType) else {
            throw FileError(path, "corrupt PNG (bit depth \(header.bitDepth), colour type \(header.colorType))")
        }
        // Each side checked first: two 32-bit sides can overflow the product (found by fuzzing).
        guard header.width > 0, header.height > 0, header.width <= maximumPixels, header.height <= maximumPixels,
              header.width * header.height <= maximumPixels else {
            throw FileError(path, "unsupported PNG size \(header.width)x\(header.height)")
        }
        return header
    }

    private static func sixteenBit(_ path: String) -> FileError {
        FileError(path, "16-bit PNG is not supported (8-bit images and label maps only); convert it to 8 bits first")
    }

    /// The stream without gAMA/cHRM/sRGB/iCCP chunks. Anything malformed is left in place for
    /// libpng to report.
    static func stripColorManagement(_ bytes: [UInt8]) -> [UInt8] {
        let dropped: Set<String> = ["gAMA", "cHRM", "sRGB", "iCCP"]
        var out: [UInt8] = []
        var kept = 8, at = 8
        while at + 12 <= bytes.count {
            let length = bigEndian(bytes, at)
            let type = String(decoding: bytes[(at + 4)..<(at + 8)], as: UTF8.self)
            guard type != "IDAT", length <= bytes.count - at - 12 else { break }
            let end = at + 12 + length
            if dropped.contains(type) {
                if out.isEmpty { out.reserveCapacity(bytes.count) }
                out.append(contentsOf: bytes[kept..<at])
                kept = end
            }
            at = end
        }
        guard kept > 8 else { return bytes }
        return Array(bytes[0..<8]) + out + bytes[kept...]
    }

    private static func bigEndian(_ b: [UInt8], _ i: Int) -> Int {
        Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
    }

    private static func dropAlpha(_ buffer: [UInt8], keep: Int) -> [UInt8] {
        let stride = keep + 1
        let n = buffer.count / stride
        var out = [UInt8](repeating: 0, count: n * keep)
        buffer.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for p in 0..<n { for c in 0..<keep { dst[p * keep + c] = src[p * stride + c] } }
            }
        }
        return out
    }

    static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    // MARK: encoding

    private static func encode(_ png: inout png_image, pixels: [UInt8], rowBytes: Int, colormap: [UInt8]?, path: String) throws -> [UInt8] {
        // One pass into a buffer sized for incompressible data; libpng reports the size it
        // needed if that was still too small, and a second pass uses it.
        var capacity = pixels.count + pixels.count / 8 + 4096 + (colormap?.count ?? 0)
        for _ in 0..<2 {
            var out = [UInt8](repeating: 0, count: capacity)
            var size = png_alloc_size_t(capacity)
            var attempt = png
            let ok = out.withUnsafeMutableBytes { o in
                pixels.withUnsafeBytes { p in
                    if let colormap {
                        return colormap.withUnsafeBytes { c in
                            png_image_write_to_memory(&attempt, o.baseAddress, &size, 0, p.baseAddress, png_int_32(rowBytes), c.baseAddress)
                        }
                    }
                    return png_image_write_to_memory(&attempt, o.baseAddress, &size, 0, p.baseAddress, png_int_32(rowBytes), nil)
                }
            }
            if ok != 0 {
                out.removeSubrange(Int(size)...)
                return out
            }
            guard Int(size) > capacity else { throw FileError(path, "cannot encode PNG (libpng: \(message(&attempt)))") }
            capacity = Int(size)
        }
        throw FileError(path, "cannot encode PNG (libpng needed a larger buffer twice)")
    }

    /// Temporary file beside the destination, renamed over it: readers see the old file or
    /// the complete new one.
    static func writeAtomically(_ path: String, _ bytes: [UInt8], durable: Bool) throws {
        if durable {
            do { try writeFileAtomically(path, bytes) } catch let e as FileError { throw FileError(e.path, e.problem) }
            return
        }
        let (fd, temporary) = try createTemporaryFile(for: path)
        var written = 0
        let failed: Int32? = bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += n
            }
            return nil
        }
        close(fd)
        if let failed {
            unlink(temporary)
            throw writeError("write", path: path, errno: failed)
        }
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw writeError("rename", path: path, errno: e)
        }
    }
}

/// The whole file, with one-line errors for missing files and folders.
func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileError(path, "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw FileError(path, "cannot stat: \(String(cString: strerror(errno)))") }
    guard st.st_mode & S_IFMT == S_IFREG else { throw FileError(path, "is not a regular file") }
    var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw FileError(path, "read failed: \(n == 0 ? "file shrank while reading" : String(cString: strerror(errno)))") }
        done += n
    }
    return bytes
}
