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
        (fd, temporaryPath) = try createTemporaryFile(for: path)
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
            let e = renameError(path, errno: errno)
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

    private func ioError(_ what: String) -> FileError { writeError(what, path: path, errno: errno) }
}

/// Writes a small file atomically.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    let w = try AtomicFileWriter(path: path)
    try w.write(bytes)
    try w.commit()
}

// MARK: - Temporaries, their names and what a killed run leaves behind

/// Writes that stop with an error: a full disk or the file-size limit (`ulimit -f`) kill a process
/// with SIGXFSZ unless it is ignored, and then write() returns EFBIG and we say so.
private let fileSizeSignalIgnored: Void = { signal(SIGXFSZ, SIG_IGN); return () }()

/// Creates `.<name>.tmp-<pid>-<random>` beside `path` (same filesystem, so the final rename is
/// atomic). The pid in the name is what lets a later run tell an abandoned temporary (its writer is
/// dead) from one that another live process (a concurrent shard) is still writing.
public func createTemporaryFile(for path: String) throws -> (fd: Int32, path: String) {
    _ = fileSizeSignalIgnored
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    AbandonedTemporaries.removeOnce(in: dir)
    let temporary = dir + "/" + temporaryName(for: url.lastPathComponent)
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
        let e = errno
        if e == EISDIR || e == ENOTDIR || e == ENOENT { throw FileError(path, "cannot write in \(dir): \(String(cString: strerror(e)))") }
        throw writeError("cannot create a file in \(dir)", path: path, errno: e, failed: false)
    }
    return (fd, temporary)
}

/// The temporary name for `name` (a file or a staging folder) in the same directory.
public func temporaryName(for name: String) -> String {
    "." + name + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
}

/// One wording for a failed write, whichever command writes: the destination, the reason, and for
/// a full disk the free space there (the question a user asks next).
public func writeError(_ what: String, path: String, errno e: Int32, failed: Bool = true) -> FileError {
    var problem = "\(what)\(failed ? " failed" : ""): \(String(cString: strerror(e)))"
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    switch e {
    case ENOSPC, EDQUOT:
        problem += " (\(freeSpace(dir).map(formatBytes) ?? "unknown") free in \(dir))"
    case EFBIG:
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit)
        let cap = limit.rlim_cur == rlim_t.max ? "no file size limit" : "the file size limit (ulimit -f) is \(formatBytes(Int(limit.rlim_cur)))"
        problem += " (\(cap); \(freeSpace(dir).map(formatBytes) ?? "unknown") free in \(dir))"
    case EROFS, EACCES, EPERM:
        problem += " (\(dir) is not writable)"
    default: break
    }
    return FileError(path, problem)
}

func renameError(_ path: String, errno e: Int32) -> FileError {
    if e == EISDIR || e == ENOTEMPTY || e == EEXIST { return FileError(path, "is a folder; cannot replace it with a file") }
    if e == ENOTDIR { return FileError(path, "is a file; cannot replace it with a folder") }
    return writeError("rename", path: path, errno: e)
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
public func freeSpace(_ dir: String) -> Int? {
    var s = statvfs()
    guard statvfs(dir, &s) == 0 else { return nil }
    return Int(s.f_bavail) * Int(s.f_frsize)
}

func formatBytes(_ n: Int) -> String {
    if n < 1024 { return "\(n) bytes" }
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var v = Double(n) / 1024
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return String(format: "%.1f %@", v, units[u])
}

/// Temporaries (`.<name>.tmp-<pid>[-<random>]`, files or staging folders) whose writing process
/// no longer exists: what SIGKILL, a power cut or an OOM kill left behind. The next writer in the
/// same directory removes them — once per directory and process, so a dataset of many files lists
/// each folder once — and says so on stderr. A folder moved aside during a replacement
/// (`....old`) whose destination is missing is put back instead: it is the only copy.
public enum AbandonedTemporaries {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var scanned = Set<String>()

    public static func removeOnce(in dir: String) {
        let key = URL(fileURLWithPath: dir).standardizedFileURL.path
        lock.lock()
        let fresh = scanned.insert(key).inserted
        lock.unlock()
        if fresh { remove(in: dir) }
    }

    /// Returns what was removed or restored, as it was reported.
    @discardableResult
    public static func remove(in dir: String) -> [String] {
        let fm = FileManager.default
        var notes: [String] = []
        for entry in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let (name, pid, aside) = parse(entry), !isAlive(pid) else { continue }
            let path = dir + "/" + entry
            if aside && !fm.fileExists(atPath: dir + "/" + name) && rename(path, dir + "/" + name) == 0 {
                notes.append("restored \(dir)/\(name) from \(entry), which a killed run (process \(pid)) had moved aside")
            } else if (try? fm.removeItem(atPath: path)) != nil {
                notes.append("removed \(path), left by a killed run (process \(pid))")
            }
        }
        for n in notes { FileHandle.standardError.write(Data("note: \(n)\n".utf8)) }
        return notes
    }

    /// `.<name>.tmp-<pid>[-<digits>][.old]` -> (name, pid, moved aside); nil for anything else.
    static func parse(_ entry: String) -> (String, pid_t, Bool)? {
        guard entry.hasPrefix("."), let r = entry.range(of: ".tmp-", options: .backwards), r.lowerBound > entry.index(after: entry.startIndex) else { return nil }
        let name = String(entry[entry.index(after: entry.startIndex)..<r.lowerBound])
        var rest = Substring(entry[r.upperBound...])
        let aside = rest.hasSuffix(".old")
        if aside { rest = rest.dropLast(4) }
        let parts = rest.split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let pid = pid_t(parts[0]), pid > 0 else { return nil }
        return (name, pid, aside)
    }

    static func isAlive(_ pid: pid_t) -> Bool {
        if pid == getpid() { return true }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}

/// Puts the complete folder (or file) `staging` at `destination`, which exists, so that at every
/// instant `destination` is either the old one or the new one: the two are exchanged in one step
/// (renameat2 RENAME_EXCHANGE) and the old one, now at `staging`, is removed. Where the kernel or
/// filesystem cannot exchange, the old one is moved aside to `staging.old` first; a kill between
/// the two renames leaves it there, and the next writer in the directory puts it back.
public func replaceAtomically(_ destination: String, with staging: String) throws {
    if let exchange = renameExchange, exchange(AT_FDCWD, staging, AT_FDCWD, destination, 2 /* RENAME_EXCHANGE */) == 0 {
        try? FileManager.default.removeItem(atPath: staging)
        syncDirectory(of: destination)
        return
    }
    let aside = staging + ".old"
    guard rename(destination, aside) == 0 else { throw renameError(destination, errno: errno) }
    guard rename(staging, destination) == 0 else {
        let e = errno
        _ = rename(aside, destination)
        throw renameError(destination, errno: e)
    }
    try? FileManager.default.removeItem(atPath: aside)
    syncDirectory(of: destination)
}

/// Puts `staging` at `destination`, which does not exist, atomically.
public func moveIntoPlace(_ destination: String, from staging: String) throws {
    guard rename(staging, destination) == 0 else { throw renameError(destination, errno: errno) }
    syncDirectory(of: destination)
}

func syncDirectory(of path: String) {
    let dirfd = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
    if dirfd >= 0 { _ = fsync(dirfd); close(dirfd) }
}

/// glibc 2.28+ declares renameat2 only under _GNU_SOURCE, which Swift's Glibc module does not set;
/// looked up at run time instead.
private let renameExchange: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
}()

/// An error from a file inside a staging folder, told as the destination's: the path the user
/// asked for, the file that failed relative to it, and folders inside the staging folder (its
/// free space, say) named by the destination's parent, where they will never exist.
public func destinationError(_ e: FileError, staging: String, destination: String) -> FileError {
    guard e.path == staging || e.path.hasPrefix(staging + "/") else { return e }
    let parent = URL(fileURLWithPath: destination).deletingLastPathComponent().path
    var problem = e.problem
    if let re = try? NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: staging) + "(/[^) ]*)?") {
        problem = re.stringByReplacingMatches(in: problem, range: NSRange(problem.startIndex..., in: problem),
                                              withTemplate: NSRegularExpression.escapedTemplate(for: parent))
    }
    let inner = e.path.dropFirst(staging.count + 1)
    return FileError(destination, problem + (inner.isEmpty ? "" : " (writing \(inner))"))
}
