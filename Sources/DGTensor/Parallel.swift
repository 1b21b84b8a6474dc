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

    /// Calls `body(i)` for i in 0..<iterations on up to `threads` threads (the caller's among
    /// them) and returns when all have returned: the one parallel loop every kernel uses. Its pool
    /// (Sources/CDGKernels/pool.c) keeps idle workers spinning briefly, so the short kernels of a
    /// model pass do not each pay a thread's wake-up. Nested calls run serially.
    public static func run(_ iterations: Int, _ body: (Int) -> Void) {
        if iterations <= 1 {
            if iterations == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { context in
                dg_parallel_for(iterations, threads, { context, i in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(i)
                }, context)
            }
        }
    }

    /// Runs `body` on disjoint ranges covering 0..<count.
    public static func forEach(_ count: Int, minimumChunk: Int = 16384, _ body: (Range<Int>) -> Void) {
        let parts = chunks(count, minimumChunk: minimumChunk)
        run(parts.count) { body(parts[$0]) }
    }

    /// A sum whose partial results are combined in chunk order: deterministic.
    public static func sum(_ count: Int, minimumChunk: Int = 16384, _ partial: (Range<Int>) -> Double) -> Double {
        let parts = chunks(count, minimumChunk: minimumChunk)
        var results = [Double](repeating: 0, count: parts.count)
        results.withUnsafeMutableBufferPointer { out in
            let o = out
            run(parts.count) { o[$0] = partial(parts[$0]) }
        }
        return results.reduce(0, +)
    }
}
