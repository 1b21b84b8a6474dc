import Foundation

/// Time per kind of operation, on when DGINSTYLE_PROFILE is set (`dginstyle bench model` prints the
/// table). Records wall time and the process's CPU time (all threads): on a shared machine the CPU
/// time is the steadier measure. Off, it costs one branch per op. Nested measurements are not
/// subtracted: an op's sub-steps count in both.
public enum Profiler {
    public static let enabled = ProcessInfo.processInfo.environment["DGINSTYLE_PROFILE"] != nil

    struct Entry { var wall = 0.0, cpu = 0.0, calls = 0 }
    nonisolated(unsafe) static var totals: [String: Entry] = [:]
    static let lock = NSLock()

    static func cpuNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    @inline(__always)
    public static func measure<R>(_ name: @autoclosure () -> String, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuNow()
        let r = try body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, dc = cpuNow() - c0
        let key = name()
        lock.lock()
        var e = totals[key] ?? Entry()
        e.wall += dt; e.cpu += dc; e.calls += 1
        totals[key] = e
        lock.unlock()
        return r
    }

    public static func reset() {
        lock.lock()
        totals = [:]
        lock.unlock()
    }

    /// One line per op, most CPU time first, per run.
    public static func report(runs: Int = 1) -> String {
        lock.lock()
        let rows = totals.sorted { $0.value.cpu > $1.value.cpu }
        lock.unlock()
        let total = rows.reduce(0) { $0 + $1.value.cpu }
        let r = Double(Swift.max(runs, 1))
        return "op                               wall ms    cpu ms  cpu %   calls\n" + rows.map { name, v in
            name.padding(toLength: Swift.max(28, name.count), withPad: " ", startingAt: 0)
                + String(format: " %9.1f %9.1f %6.1f %7d", v.wall * 1000 / r, v.cpu * 1000 / r,
                         100 * v.cpu / Swift.max(total, 1e-12), v.calls / Swift.max(runs, 1))
        }.joined(separator: "\n")
    }
}
