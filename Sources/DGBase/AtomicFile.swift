import Foundation

/// Writes a file so that it either appears complete or not at all: data goes to a temporary
/// file in the destination directory (same filesystem, so the rename is atomic), is fsynced,
/// then renamed over the destination. An abandoned writer removes its temporary file.
public final class AtomicFileWriter {
    public let path: String
    public let temporaryPath: String
    public private(set) var position = 0  // bytes written so far, buffered or not
    private var fd: Int32
    private var buffer: UnsafeMutableRawPointer
    private var buffered = 0
    private let capacity = 8 << 20
    private var done = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: dir) else {
            throw FileError(path, "the directory \(dir) does not exist")
        }
        temporaryPath = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError(path, "cannot create \(temporaryPath): \(String(cString: strerror(errno)))") }
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        if buffered + bytes.count > capacity { try flush() }
        if bytes.count >= capacity {
            try writeAll(bytes)
        } else {
            (buffer + buffered).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            buffered += bytes.count
        }
        position += bytes.count
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    public func write(_ string: String) throws { try write(Array(string.utf8)) }

    /// Zero bytes up to the next multiple of `alignment`.
    public func pad(to alignment: Int, byte: UInt8 = 0) throws {
        let n = (alignment - position % alignment) % alignment
        if n > 0 { try write([UInt8](repeating: byte, count: n)) }
    }

    /// Overwrites already-written bytes at `offset` (headers patched after the data is known).
    public func overwrite(at offset: Int, _ bytes: [UInt8]) throws {
        try flush()
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == bytes.count else { throw ioError("write") }
    }

    public func commit() throws {
        try flush()
        guard fsync(fd) == 0 else { throw ioError("fsync") }
        close(fd)
        fd = -1
        guard rename(temporaryPath, path) == 0 else {
            let e = ioError("rename")
            abort()
            throw e
        }
        done = true
        // The rename itself must reach the disk too.
        let dirfd = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
        if dirfd >= 0 { _ = fsync(dirfd); close(dirfd) }
        buffer.deallocate()
    }

    public func abort() {
        guard !done else { return }
        done = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        buffer.deallocate()
    }

    deinit { abort() }

    private func flush() throws {
        guard buffered > 0 else { return }
        try writeAll(UnsafeRawBufferPointer(start: buffer, count: buffered))
        buffered = 0
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("write")
            }
            done += n
        }
    }

    private func ioError(_ what: String) -> FileError {
        FileError(path, "\(what) failed: \(String(cString: strerror(errno)))")
    }
}

/// Writes a small file atomically.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    let w = try AtomicFileWriter(path: path)
    try w.write(bytes)
    try w.commit()
}
