import DGBase
import DGTensor
import Foundation

/// The entries of a zip archive as `torch.save` writes it (PyTorch >= 1.6), read from the
/// central directory of a memory-mapped file. Only stored (uncompressed) entries can be read:
/// torch.save never compresses, and a stored entry is a plain byte range of the map, so a
/// storage is used where it lies instead of being copied. A deflated entry (an archive someone
/// re-zipped) is refused with a message saying so.
///
/// Every offset and size comes from the file, so each is checked against the file's size
/// before use: a corrupt or hostile archive gives one error line, never a read outside the map.
struct ZipArchive {
    struct Entry {
        var name: String
        var method: UInt16
        /// Absolute file offset of the entry's data (after its local header).
        var dataOffset: Int
        var size: Int
    }

    let path: String
    let file: MappedFile
    private(set) var entries: [String: Entry] = [:]
    /// Names in central-directory order (the order torch.save wrote them).
    private(set) var names: [String] = []

    static let localMagic: [UInt8] = [0x50, 0x4B, 0x03, 0x04]

    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && Array(bytes[0..<4]) == localMagic
    }

    init(path: String, file: MappedFile) throws {
        self.path = path
        self.file = file
        let bytes = file.bytes
        func fail(_ problem: String) -> FileError { FileError(path, "corrupt zip archive: " + problem) }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
        func int(_ v: UInt64, _ what: String) throws -> Int {
            guard v <= UInt64(bytes.count) else { throw fail("\(what) \(v) lies beyond the end of the \(bytes.count)-byte file") }
            return Int(v)
        }

        // The end-of-central-directory record is in the last 22 + 65535 bytes (its comment is
        // at most 65535 bytes); search backwards for its signature.
        guard bytes.count >= 22 else { throw fail("file is \(bytes.count) bytes, too short for a zip archive") }
        var eocd = -1
        var i = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 65535)
        while i >= lowest {
            if bytes[i] == 0x50 && bytes[i + 1] == 0x4B && bytes[i + 2] == 0x05 && bytes[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw fail("no end-of-central-directory record (the file is truncated or not a zip)") }
        var count = u16(eocd + 10)
        var cdSize = u32(eocd + 12)
        var cdOffset = u32(eocd + 16)
        // ZIP64 (files over 4 GiB, such as an SD checkpoint with EMA weights): a locator just
        // before the record points at the ZIP64 record, whose fields replace the saturated ones.
        if eocd >= 20, u32(eocd - 20) == 0x0706_4B50 {
            let record = try int(u64(eocd - 20 + 8), "ZIP64 end-of-central-directory offset")
            guard record + 56 <= bytes.count, u32(record) == 0x0606_4B50 else { throw fail("ZIP64 end-of-central-directory record missing") }
            count = try int(u64(record + 32), "entry count")
            cdSize = try int(u64(record + 40), "central directory size")
            cdOffset = try int(u64(record + 48), "central directory offset")
        }
        guard cdOffset <= bytes.count, cdSize <= bytes.count - cdOffset else {
            throw fail("central directory [\(cdOffset), +\(cdSize)) lies outside the \(bytes.count)-byte file (truncated?)")
        }
        // Each central header is at least 46 bytes: a hostile count cannot make us reserve more.
        guard count <= cdSize / 46 else { throw fail("central directory claims \(count) entries in \(cdSize) bytes") }

        // Local headers are read with pread, not through the map: they lie beside every storage,
        // and touching them in the map would fault in (and count as resident) a large folio of
        // the page cache per storage, hundreds of MB for an SD checkpoint that is only inspected.
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError(path, "cannot open for reading") }
        defer { close(fd) }
        var local30 = [UInt8](repeating: 0, count: 30)
        func localHeader(_ offset: Int) -> (nameLength: Int, extraLength: Int)? {
            guard offset + 30 <= bytes.count else { return nil }
            let n = local30.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 30, off_t(offset)) }
            guard n == 30, local30[0] == 0x50, local30[1] == 0x4B, local30[2] == 0x03, local30[3] == 0x04 else { return nil }
            return (Int(local30[26]) | Int(local30[27]) << 8, Int(local30[28]) | Int(local30[29]) << 8)
        }

        var at = cdOffset
        let end = cdOffset + cdSize
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard at + 46 <= end, u32(at) == 0x0201_4B50 else { throw fail("bad central directory header at byte \(at)") }
            let method = UInt16(u16(at + 10))
            let flags = u16(at + 8)
            var compressed = UInt64(u32(at + 20)), size = UInt64(u32(at + 24))
            let nameLength = u16(at + 28), extraLength = u16(at + 30), commentLength = u16(at + 32)
            var local = UInt64(u32(at + 42))
            let next = at + 46 + nameLength + extraLength + commentLength
            guard next <= end else { throw fail("central directory header at byte \(at) runs past the directory") }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(at + 46)..<(at + 46 + nameLength)]).bindMemory(to: UInt8.self), as: UTF8.self) else {
                throw fail("an entry name at byte \(at) is not UTF-8")
            }
            // ZIP64 extra field: the 64-bit values, in this order, of those saturated above.
            var e = at + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = u16(e), n = u16(e + 2)
                guard e + 4 + n <= extraEnd else { break }
                if id == 0x0001 {
                    var f = e + 4
                    func take() throws -> UInt64 {
                        guard f + 8 <= e + 4 + n else { throw fail("entry \(name): ZIP64 extra field too short") }
                        defer { f += 8 }
                        return u64(f)
                    }
                    if size == 0xFFFF_FFFF { size = try take() }
                    if compressed == 0xFFFF_FFFF { compressed = try take() }
                    if local == 0xFFFF_FFFF { local = try take() }
                }
                e += 4 + n
            }
            guard flags & 1 == 0 else { throw FileError(path, "zip entry \(name) is encrypted") }
            let localOffset = try int(local, "entry \(name)'s local header offset")
            guard let header = localHeader(localOffset) else {
                throw fail("entry \(name) has no local header at byte \(localOffset)")
            }
            let dataOffset = localOffset + 30 + header.nameLength + header.extraLength
            let stored = try int(compressed, "entry \(name)'s size")
            guard dataOffset <= bytes.count, stored <= bytes.count - dataOffset else {
                throw fail("entry \(name) (\(stored) bytes at byte \(dataOffset)) runs past the end of the file (truncated?)")
            }
            if method == 0 && compressed != size { throw fail("stored entry \(name) has sizes \(compressed) and \(size)") }
            if entries[name] == nil { names.append(name) }
            entries[name] = Entry(name: name, method: method, dataOffset: dataOffset, size: method == 0 ? stored : Int(clamping: size))
            at = next
        }
    }

    /// The bytes of a stored entry, a view of the map (valid while `file` lives).
    func bytes(_ entry: Entry) throws -> UnsafeRawBufferPointer {
        guard entry.method == 0 else {
            let how = entry.method == 8 ? "deflate-compressed" : "compressed (method \(entry.method))"
            throw FileError(path, "zip entry \(entry.name) is \(how); only uncompressed entries are read, as torch.save writes them (re-save the file with torch.save, or unzip and re-zip it with zip -0)")
        }
        return UnsafeRawBufferPointer(rebasing: file.bytes[entry.dataOffset..<(entry.dataOffset + entry.size)])
    }
}
