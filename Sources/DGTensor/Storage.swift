import Foundation

/// A block of bytes that tensors view. It either owns heap memory or borrows a region of
/// a memory-mapped file (kept alive by `owner`), which is how checkpoints load zero-copy.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?
    private let owned: Bool
    /// Size of the pool block behind `base` (its size class; at least `byteCount`).
    private let blockBytes: Int

    /// Fresh zeroed memory, 64-byte aligned for the vector kernels.
    public convenience init(byteCount: Int) {
        self.init(uninitializedByteCount: byteCount)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
    }

    /// Fresh memory whose contents are undefined, for outputs a kernel overwrites entirely.
    public init(uninitializedByteCount byteCount: Int) {
        self.byteCount = byteCount
        (base, blockBytes) = BlockPool.shared.take(byteCount)
        owner = nil
        owned = true
    }

    /// Borrowed bytes: `owner` must keep `base` valid for as long as this storage lives.
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = base
        self.byteCount = byteCount
        self.owner = owner
        owned = false
        blockBytes = 0
    }

    public var isBorrowed: Bool { !owned }

    /// For borrowed bytes of a read-only file map: gives the whole pages inside them back to the
    /// kernel (they stay readable and are read again from the file if touched). Owned memory is
    /// untouched: it goes back when the storage is freed.
    public func releaseMappedPages() {
        guard !owned, byteCount > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base) + byteCount) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED) }
    }

    deinit { if owned { BlockPool.shared.give(base, blockBytes) } }
}

/// Recycles large tensor buffers. A forward pass allocates and frees the same activation sizes
/// over and over; fresh memory for each costs page faults (measured: an SD 1.5 UNet pass spent
/// three quarters of its time in the kernel), so freed blocks are kept for reuse, up to
/// `capacity` bytes, least recently freed evicted first. Small blocks go to malloc directly.
/// Streaming jobs (checkpoint conversion) set the capacity to 0 so that memory they free
/// goes back to the system at once.
public final class BlockPool: @unchecked Sendable {
    public static let shared = BlockPool()

    /// Blocks below this size are not pooled.
    public static let minimumPooled = 1 << 20

    private var lock = pthread_mutex_t()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var order: [(Int, UnsafeMutableRawPointer)] = []  // oldest first
    private var pooledBytes = 0
    private var limit: Int

    init() {
        pthread_mutex_init(&lock, nil)
        let mb = ProcessInfo.processInfo.environment["DGINSTYLE_POOL_MB"].flatMap(Int.init) ?? 2048
        limit = mb << 20
        #if os(Linux)
        // Without a fixed threshold glibc raises it whenever a large block is freed, after
        // which large blocks come from the heap and stay resident (fragmented) once freed.
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, Int32(BlockPool.minimumPooled))
        #endif
    }

    /// Bytes kept for reuse at most.
    public var capacity: Int {
        get { locked { limit } }
        set {
            let released = locked { () -> [UnsafeMutableRawPointer] in
                limit = max(0, newValue)
                return evict(toFit: 0)
            }
            for p in released { p.deallocate() }
        }
    }

    public var retainedBytes: Int { locked { pooledBytes } }

    /// Block sizes are rounded up to 1/8 steps of their power of two (at most 12.5% waste) so
    /// that near-equal requests share blocks.
    static func sizeClass(_ n: Int) -> Int {
        guard n > minimumPooled else { return max(n, 1) }
        let top = Int.bitWidth - n.leadingZeroBitCount - 1
        let step = 1 << (top - 3)
        return (n + step - 1) / step * step
    }

    /// A block of at least `byteCount` bytes and its size: a free block of its size class, else the
    /// smallest free block up to twice as large (its pages are resident already: a fresh block would
    /// add its size to the process, and each size class's blocks would pile up separately), else a
    /// new one.
    func take(_ byteCount: Int) -> (UnsafeMutableRawPointer, Int) {
        let size = BlockPool.sizeClass(byteCount)
        if size > BlockPool.minimumPooled, let found = locked({ () -> (UnsafeMutableRawPointer, Int)? in
            var chosen = size
            if free[size] == nil {
                guard let larger = free.keys.filter({ $0 > size && $0 <= 2 * size }).min() else { return nil }
                chosen = larger
            }
            guard var list = free[chosen], let p = list.popLast() else { return nil }
            free[chosen] = list.isEmpty ? nil : list
            pooledBytes -= chosen
            if let i = order.lastIndex(where: { $0.1 == p }) { order.remove(at: i) }
            return (p, chosen)
        }) {
            return found
        }
        return (UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64), size)
    }

    func give(_ p: UnsafeMutableRawPointer, _ byteCount: Int) {
        let size = BlockPool.sizeClass(byteCount)
        guard size > BlockPool.minimumPooled else { p.deallocate(); return }
        let released: [UnsafeMutableRawPointer] = locked {
            guard size <= limit else { return [p] }
            var out = evict(toFit: size)
            if pooledBytes + size > limit { out.append(p); return out }
            free[size, default: []].append(p)
            order.append((size, p))
            pooledBytes += size
            return out
        }
        for q in released { q.deallocate() }
    }

    /// Frees every retained block.
    public func drain() {
        let all: [UnsafeMutableRawPointer] = locked {
            let ps = order.map(\.1)
            free = [:]
            order = []
            pooledBytes = 0
            return ps
        }
        for p in all { p.deallocate() }
    }

    /// Removes the oldest blocks until `size` more bytes fit; returns them for freeing outside the lock.
    @discardableResult
    private func evict(toFit size: Int) -> [UnsafeMutableRawPointer] {
        var out: [UnsafeMutableRawPointer] = []
        var dropped = 0
        while pooledBytes + size > limit, dropped < order.count {
            let (s, p) = order[dropped]
            dropped += 1
            if var list = free[s], let i = list.firstIndex(of: p) {
                list.remove(at: i)
                free[s] = list.isEmpty ? nil : list
            }
            pooledBytes -= s
            out.append(p)
        }
        order.removeFirst(dropped)
        return out
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return body()
    }
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
