import Foundation
import XCTest
import CDGKernels
@testable import DGTensor

final class TensorTests: XCTestCase {
    func testViewsShareStorageAndContiguousCopies() {
        let t = Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        let tt = t.transposed(0, 1)
        XCTAssertEqual(tt.shape, [3, 2])
        XCTAssertFalse(tt.isContiguous)
        XCTAssertTrue(tt.storage === t.storage)
        XCTAssertEqual(tt.floats, [1, 4, 2, 5, 3, 6])
        XCTAssertEqual(t.slice(axis: 1, 1..<3).floats, [2, 3, 5, 6])
        XCTAssertEqual(t.reshaped([3, -1]).shape, [3, 2])
        XCTAssertTrue(t.reshaped([6]).storage === t.storage)
        let p = Tensor(shape: [2, 2, 2], floats: (0..<8).map(Float.init)).permuted([2, 0, 1])
        XCTAssertEqual(p.floats, [0, 2, 4, 6, 1, 3, 5, 7])
    }

    /// A channel range of [N, C, H, W] is copied in whole runs of H W; an offset view and a
    /// view whose inner dimension is strided take the element-wise path. Both must agree with
    /// indexing by hand.
    func testContiguousCopyOfSlicesAndOffsets() {
        let (n, c, h, w) = (2, 5, 4, 8)
        let t = Tensor(shape: [n, c, h, w], floats: (0..<(n * c * h * w)).map(Float.init))
        let s = t.slice(axis: 1, 1..<4)
        XCTAssertFalse(s.isContiguous)
        var expected: [Float] = []
        for i in 0..<n { for ch in 1..<4 { for p in 0..<(h * w) { expected.append(Float((i * c + ch) * h * w + p)) } } }
        XCTAssertEqual(s.contiguous().floats, expected)
        let inner = t.slice(axis: 3, 2..<5)
        var expectedInner: [Float] = []
        for i in 0..<(n * c * h) { for x in 2..<5 { expectedInner.append(Float(i * w + x)) } }
        XCTAssertEqual(inner.contiguous().floats, expectedInner)
        XCTAssertEqual(t.slice(axis: 0, 1..<2).slice(axis: 1, 4..<5).contiguous().floats, (0..<(h * w)).map { Float((c + 4) * h * w + $0) })
    }

    func testConversionsRoundTrip() {
        let values: [Float] = [0, -0.0, 1, -2.5, 65504, 1e-8, 3.14159, -1e30, .infinity]
        let t = Tensor(shape: [values.count], floats: values)
        let h = t.converted(to: .f16)
        XCTAssertEqual(h.dtype, .f16)
        XCTAssertEqual(h.floats, values.map { Float(Float16($0)) })
        let b = t.converted(to: .bf16)
        XCTAssertEqual(b.floats, values.map { floatFromBFloat16Bits(bfloat16Bits($0)) })
        let ints = Tensor(shape: [3], floats: [1.9, -7.2, 300]).converted(to: .i64)
        XCTAssertEqual(ints.converted(to: .f32).floats, [1, -7, 300])
        XCTAssertEqual(Tensor(shape: [2], floats: [255, 256]).converted(to: .u8).converted(to: .i32).converted(to: .f32).floats, [255, 0])
        // A strided f16 view converts through its own strides.
        let m = Tensor(shape: [2, 2], floats: [1, 2, 3, 4]).converted(to: .f16).transposed(0, 1)
        XCTAssertEqual(m.converted(to: .f32).floats, [1, 3, 2, 4])
    }

    func testMatmulMatchesNaive() {
        var rng = SystemRandomNumberGenerator()
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 40, 80)] {
            let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
            let b = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &rng) }
            let c = Tensor(shape: [m, k], floats: a).matmul(Tensor(shape: [k, n], floats: b)).floats
            for i in 0..<m {
                for j in 0..<n {
                    var s: Double = 0
                    for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
                    XCTAssertEqual(Double(c[i * n + j]), s, accuracy: 1e-4)
                }
            }
            let ct = Tensor(shape: [k, m], floats: a).matmul(Tensor(shape: [n, k], floats: b), transposeA: true, transposeB: true)
            XCTAssertEqual(ct.shape, [m, n])
        }
        // Batched: each batch entry is its own product; a 2-D right operand is shared.
        let a = Tensor(shape: [2, 2, 2], floats: [1, 0, 0, 1, 2, 0, 0, 2])
        let b = Tensor(shape: [2, 2], floats: [1, 2, 3, 4])
        XCTAssertEqual(a.matmul(b).floats, [1, 2, 3, 4, 2, 4, 6, 8])
    }

    func testParallelChunksAreDeterministic() {
        let n = 1_000_003
        let values = (0..<n).map { Float(sin(Double($0))) }
        let once = Parallel.sum(n, minimumChunk: 1000) { r in r.reduce(0.0) { $0 + Double(values[$1]) } }
        for _ in 0..<5 {
            let again = Parallel.sum(n, minimumChunk: 1000) { r in r.reduce(0.0) { $0 + Double(values[$1]) } }
            XCTAssertEqual(once.bitPattern, again.bitPattern)
        }
        let chunks = Parallel.chunks(n, minimumChunk: 1000)
        XCTAssertEqual(chunks.first?.lowerBound, 0)
        XCTAssertEqual(chunks.last?.upperBound, n)
        XCTAssertEqual(Parallel.chunks(10, minimumChunk: 1000), [0..<10])
    }

    /// The pool behind Parallel.run: every iteration runs exactly once, whether workers are awake
    /// (back-to-back loops), asleep (no spin, gaps), nested, or several threads submit at once.
    func testThreadPoolRunsEveryIterationOnce() {
        let threads = Parallel.threads, spin = dg_spin_microseconds()
        defer { Parallel.setThreads(threads); dg_set_spin_microseconds(spin) }
        func check(_ label: String, loops: Int, gapMicroseconds: UInt32 = 0, nested: Bool = false) {
            for loop in 0..<loops {
                let n = 2 + loop % 17, inner = nested ? 3 : 1
                let counts = UnsafeMutablePointer<Int>.allocate(capacity: n * inner)
                counts.initialize(repeating: 0, count: n * inner)
                defer { counts.deallocate() }
                Parallel.run(n) { i in
                    if nested { Parallel.run(inner) { j in counts[i * inner + j] += 1 } } else { counts[i] += 1 }
                }
                let wrong = (0..<(n * inner)).filter { counts[$0] != 1 }
                if !wrong.isEmpty { XCTFail("\(label): loop \(loop), iterations \(wrong) ran \(wrong.map { counts[$0] }) times"); return }
                if gapMicroseconds > 0 { usleep(gapMicroseconds) }
            }
        }
        for t in [2, 3] {
            Parallel.setThreads(t)
            dg_set_spin_microseconds(200)
            check("\(t) threads, spinning", loops: 20_000)
            check("\(t) threads, nested", loops: 2_000, nested: true)
            dg_set_spin_microseconds(0)
            check("\(t) threads, sleeping between loops", loops: 300, gapMicroseconds: 200)
            check("\(t) threads, sleeping, back to back", loops: 5_000)
        }
        // Four threads submitting at once: one holds the pool, the others run their loops serially.
        Parallel.setThreads(2)
        dg_set_spin_microseconds(200)
        DispatchQueue.concurrentPerform(iterations: 4) { t in check("submitter \(t)", loops: 3_000) }
    }

    func testMappedFileIsZeroCopyAndPrivate() throws {
        let path = NSTemporaryDirectory() + "dg-map-\(getpid()).bin"
        let floats: [Float] = [1, 2, 3, 4]
        FileManager.default.createFile(atPath: path, contents: floats.withUnsafeBytes { Data($0) })
        defer { try? FileManager.default.removeItem(atPath: path) }
        let map = try MappedFile(path: path)
        let t = Tensor(storage: TensorStorage(borrowing: map.base, byteCount: map.size, owner: map), dtype: .f32, shape: [2, 2])
        XCTAssertEqual(t.floats, floats)
        t.withMutableFloats { $0[0] = 42 }  // copy-on-write: the file keeps its bytes
        XCTAssertEqual(t.floats[0], 42)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(onDisk, floats)
        XCTAssertThrowsError(try MappedFile(path: path + ".missing"))
    }
}

final class BlockPoolTests: XCTestCase {
    let pool = BlockPool.shared
    private var savedCapacity = 0

    /// Each test starts from an empty pool of 64 MB and leaves the capacity as it found it.
    override func setUp() {
        savedCapacity = pool.capacity
        pool.drain()
        pool.capacity = 64 << 20
    }

    override func tearDown() { pool.capacity = savedCapacity }

    func testFreedBlocksAreReusedZeroedAndCapped() {
        var first: UnsafeMutableRawPointer?
        do {
            let t = Tensor(zeros: [1 << 20])  // 4 MB: pooled
            first = t.storage.base
            t.withMutableFloats { $0[0] = 42 }
        }
        XCTAssertGreaterThan(pool.retainedBytes, 0)
        let again = Tensor(zeros: [1 << 20])
        XCTAssertEqual(again.storage.base, first, "a freed block of the same size class is reused")
        XCTAssertEqual(again.floats[0], 0, "reused memory is zeroed")
        // Near-equal sizes share a size class (at most 1/8 waste).
        XCTAssertEqual(BlockPool.sizeClass(4_000_000), BlockPool.sizeClass(4_150_000))
        XCTAssertLessThanOrEqual(Double(BlockPool.sizeClass(4_000_000)), 4_000_000 * 1.125)
        // Capacity 0 keeps nothing.
        pool.capacity = 0
        XCTAssertEqual(pool.retainedBytes, 0)
        _ = Tensor(zeros: [1 << 20])
        XCTAssertEqual(pool.retainedBytes, 0)
        // Over capacity, the oldest blocks go first.
        pool.capacity = 10 << 20
        for _ in 0..<5 { _ = Tensor(zeros: [1 << 20 + Int.random(in: 0..<(1 << 18))]) }
        XCTAssertLessThanOrEqual(pool.retainedBytes, 10 << 20)
    }

    func testASmallerRequestTakesAFreeBlockUpToTwiceItsSize() {
        var big: UnsafeMutableRawPointer?
        do { big = Tensor(zeros: [3 << 20]).storage.base }   // 12 MB, freed into the pool
        let retained = pool.retainedBytes
        XCTAssertEqual(retained, BlockPool.sizeClass(12 << 20))
        do {
            let t = Tensor(zeros: [2 << 20])   // 8 MB: no free block of its class; the 12 MB one fits
            XCTAssertEqual(t.storage.base, big)
            XCTAssertEqual(pool.retainedBytes, 0)
            XCTAssertEqual(t.floats.count, 2 << 20)
        }
        // It goes back as the 12 MB block it is, where a 12 MB request finds it.
        XCTAssertEqual(pool.retainedBytes, retained)
        XCTAssertEqual(Tensor(zeros: [3 << 20]).storage.base, big)
        // More than twice the request: not taken.
        pool.drain()
        do { big = Tensor(zeros: [3 << 20]).storage.base }
        XCTAssertNotEqual(Tensor(zeros: [1 << 20]).storage.base, big)
        pool.drain()
    }
}
