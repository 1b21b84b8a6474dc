import Foundation

/// A block of bytes that tensors view. It either owns heap memory or borrows a region of
/// a memory-mapped file (kept alive by `owner`), which is how checkpoints load zero-copy.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?
    private let owned: Bool

    /// glibc raises its mmap threshold each time a large block is freed, after which tensor-sized
    /// blocks come from the heap and stay resident once freed. A fixed threshold keeps every
    /// large tensor in its own mapping, returned to the system when the tensor goes away.
    private static let allocatorConfigured: Bool = {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 1 << 20)
        #endif
        return true
    }()

    /// Fresh zeroed memory, 64-byte aligned for the vector kernels.
    public init(byteCount: Int) {
        _ = TensorStorage.allocatorConfigured
        self.byteCount = byteCount
        base = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
        owner = nil
        owned = true
    }

    /// Borrowed bytes: `owner` must keep `base` valid for as long as this storage lives.
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = base
        self.byteCount = byteCount
        self.owner = owner
        owned = false
    }

    public var isBorrowed: Bool { !owned }

    deinit { if owned { base.deallocate() } }
}

/// A read-only memory map of a whole file.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeMutableRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TensorError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TensorError.io("cannot stat \(path)") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw TensorError.io("\(path) is not a regular file") }
        size = Int(st.st_size)
        if size == 0 {
            base = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64)
            return
        }
        // Private and writable: a caller that writes into a loaded tensor gets its own copy of
        // that page (copy-on-write); the file itself is never changed.
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw TensorError.io("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = p
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// Tells the kernel a region is read once, front to back (streaming conversion).
    public func adviseSequential(offset: Int, length: Int) {
        guard size > 0, length > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        _ = madvise(base + start, min(size - start, length + offset - start), MADV_SEQUENTIAL)
    }

    /// Drops the pages of a region from this process's resident set once they are consumed,
    /// so streaming a 4 GB file does not leave 4 GB resident.
    public func release(offset: Int, length: Int) {
        guard size > 0, length > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = min(size, (offset + length + page - 1) / page * page)
        if end > start { _ = madvise(base + start, end - start, MADV_DONTNEED) }
    }

    deinit {
        if size == 0 { base.deallocate() } else { munmap(base, size) }
    }
}

#if os(Linux)
// glibc's mallopt(3); <malloc.h> is not part of the Glibc module Swift imports.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

public enum TensorError: Error, CustomStringConvertible, Equatable {
    case io(String)
    case shape(String)
    case dtype(String)

    public var description: String {
        switch self {
        case .io(let m), .shape(let m), .dtype(let m): return m
        }
    }
}
