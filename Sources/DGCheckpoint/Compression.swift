import CZstd

/// Per-tensor compression of the native format: zstd, optionally after a byte-split filter.
/// Float weights compress poorly as they are (mantissa bytes are noise), but their high bytes
/// (sign + exponent) are very repetitive; gathering byte k of every element into plane k lets
/// zstd find that structure.
public enum Compression: String, Sendable {
    case none
    case zstd
    case zstdByteSplit = "zstd-bytesplit"

    /// The codec for a tensor of this dtype: byte-split for multi-byte elements.
    public static func preferred(for elementSize: Int) -> Compression {
        elementSize > 1 ? .zstdByteSplit : .zstd
    }
}

public enum ByteSplit {
    /// Gathers byte k of every `elementSize`-byte element into plane k.
    public static func split(_ src: UnsafeRawBufferPointer, elementSize: Int, into dst: UnsafeMutableRawBufferPointer) {
        let n = src.count / elementSize
        guard n > 0 else { return }
        let s = src.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let d = dst.baseAddress!.assumingMemoryBound(to: UInt8.self)
        for k in 0..<elementSize {
            let plane = d + k * n
            for i in 0..<n { plane[i] = s[i * elementSize + k] }
        }
    }

    public static func join(_ src: UnsafeRawBufferPointer, elementSize: Int, into dst: UnsafeMutableRawBufferPointer) {
        let n = src.count / elementSize
        guard n > 0 else { return }
        let s = src.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let d = dst.baseAddress!.assumingMemoryBound(to: UInt8.self)
        for k in 0..<elementSize {
            let plane = s + k * n
            for i in 0..<n { d[i * elementSize + k] = plane[i] }
        }
    }
}

public enum Zstd {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public static func compress(_ src: UnsafeRawBufferPointer, level: Int32 = 3) throws -> [UInt8] {
        let bound = ZSTD_compressBound(src.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { dst in
            ZSTD_compress(dst.baseAddress, bound, src.baseAddress, src.count, level)
        }
        if ZSTD_isError(written) != 0 {
            throw Failure(description: "zstd compression failed: \(String(cString: ZSTD_getErrorName(written)))")
        }
        out.removeSubrange(written...)
        return out
    }

    /// Decompresses into exactly `dst.count` bytes; anything else is corruption.
    public static func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) throws {
        let n = ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count)
        if ZSTD_isError(n) != 0 {
            throw Failure(description: "zstd data is corrupt: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n == dst.count else { throw Failure(description: "zstd data holds \(n) bytes, expected \(dst.count)") }
    }
}
