import CDGKernels
import Foundation

/// Data-parallel loops for the element-wise and reduction kernels. Work is split into
/// chunks that depend only on the problem size and the thread count, never on timing, so
/// the same input and thread count give bit-identical output.
public enum Parallel {
    /// Threads used by our kernels and by OpenBLAS. Set from DGINSTYLE_THREADS, else the core count.
    /// Atomic (tests change it while nothing else runs; a reader never sees a torn value).
    public static var threads: Int {
        let n = dg_setting(Int32(DG_SETTING_THREADS))
        return n > 0 ? n : initialThreads
    }

    private static let initialThreads: Int = {
        let fromEnv = ProcessInfo.processInfo.environment["DGINSTYLE_THREADS"].flatMap(Int.init)
        let n = max(1, fromEnv ?? ProcessInfo.processInfo.activeProcessorCount)
        // Unless `setThreads` came first.
        if dg_init_setting(Int32(DG_SETTING_THREADS), 0, n) == 0 { BLAS.setThreads(n) }
        return dg_setting(Int32(DG_SETTING_THREADS))
    }()

    public static func setThreads(_ n: Int) {
        let n = max(1, n)
        dg_set_setting(Int32(DG_SETTING_THREADS), n)
        BLAS.setThreads(n)
    }

    /// The chunk boundaries used for `count` items: a pure function of `count`, `threads`,
    /// `minimumChunk` and `perThread` (up to that many chunks per thread when several threads run).
    public static func chunks(_ count: Int, minimumChunk: Int = 16384, perThread: Int = 1) -> [Range<Int>] {
        guard count > 0 else { return [] }
        let most = threads == 1 ? 1 : threads * max(1, perThread)
        let n = max(1, min(most, (count + minimumChunk - 1) / max(minimumChunk, 1)))
        let size = (count + n - 1) / n
        return stride(from: 0, to: count, by: size).map { $0..<min(count, $0 + size) }
    }

    /// Runs `body` on disjoint ranges covering 0..<count.
    public static func forEach(_ count: Int, minimumChunk: Int = 16384, _ body: (Range<Int>) -> Void) {
        let parts = chunks(count, minimumChunk: minimumChunk)
        if parts.count <= 1 {
            if let only = parts.first { body(only) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: parts.count) { body(parts[$0]) }
    }

    /// A sum whose partial results are combined in chunk order: deterministic.
    public static func sum(_ count: Int, minimumChunk: Int = 16384, _ partial: (Range<Int>) -> Double) -> Double {
        let parts = chunks(count, minimumChunk: minimumChunk)
        var results = [Double](repeating: 0, count: parts.count)
        results.withUnsafeMutableBufferPointer { out in
            let o = out
            if parts.count == 1 { o[0] = partial(parts[0]) } else {
                DispatchQueue.concurrentPerform(iterations: parts.count) { o[$0] = partial(parts[$0]) }
            }
        }
        return results.reduce(0, +)
    }
}
