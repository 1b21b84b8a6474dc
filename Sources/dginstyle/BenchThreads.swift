import ArgumentParser
import CDGKernels
import DGTensor
import Foundation

extension Bench {
    /// What a parallel loop costs beyond its work: libdispatch's concurrentPerform (what the kernels
    /// used before the pool) against our pool sleeping at once and spinning. Loops come one after
    /// another with a gap of serial work between them, as in a model pass (a kernel, then the
    /// Swift code that sets up the next one).
    struct Threads: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Overhead of a parallel loop: libdispatch against the spinning thread pool, per work size and gap.")

        @Option(help: "Work per thread in each loop, in microseconds.")
        var work: [Double] = [10, 50, 200]

        @Option(help: "Serial work between two loops, in microseconds.")
        var gap: [Double] = [0, 50, 500]

        @Option(help: "Spin times of the pool to compare, in microseconds (0: sleep at once).")
        var spin: [Int] = [0, 200]

        @Option(help: "Loops per measurement.")
        var loops = 2000

        func validate() throws {
            guard (work + gap).allSatisfy({ $0 >= 0 && $0.isFinite }) else { throw ValidationError("--work and --gap must be microseconds >= 0") }
            guard spin.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--spin must be microseconds >= 0") }
            guard loops > 0 else { throw ValidationError("--loops must be positive") }
        }

        func run() throws {
            let threads = Parallel.threads
            guard threads > 1 else { throw ValidationError("one thread: nothing runs in parallel (DGINSTYLE_THREADS)") }
            let perMicrosecond = calibrate()
            let configured = dg_spin_microseconds()
            defer { dg_set_spin_microseconds(configured) }
            emit("\(threads) threads; \(loops) loops of \(threads) iterations each; time per loop minus its work (median of 3)")
            var header = "| work per thread | gap | concurrentPerform |"
            for s in spin { header += " pool, spin \(s) µs |" }
            emit(header + "\n|---|---|---|" + String(repeating: "---|", count: spin.count))
            for w in work {
                let spins = Int(w * perMicrosecond)
                for g in gap {
                    let gapSpins = Int(g * perMicrosecond)
                    let ideal = (w + g) * 1e-6
                    func measure(_ loop: (Int, (Int) -> Void) -> Void) -> Double {
                        var samples: [Double] = []
                        for _ in 0..<3 {
                            let start = Date()
                            for _ in 0..<loops {
                                loop(threads) { _ in busy(spins) }
                                busy(gapSpins)
                            }
                            samples.append(Date().timeIntervalSince(start) / Double(loops) - ideal)
                        }
                        return samples.sorted()[1]
                    }
                    var row = String(format: "| %.0f µs | %.0f µs | %.1f µs |", w, g,
                                     measure { n, body in DispatchQueue.concurrentPerform(iterations: n, execute: body) } * 1e6)
                    for s in spin {
                        dg_set_spin_microseconds(s)
                        row += String(format: " %.1f µs |", measure { n, body in Parallel.run(n, body) } * 1e6)
                    }
                    emit(row)
                }
            }
        }

        /// Iterations of `busy` per microsecond on this core.
        private func calibrate() -> Double {
            let n = 2_000_000
            let start = Date()
            busy(n)
            return Double(n) / (Date().timeIntervalSince(start) * 1e6)
        }
    }
}

/// Serial work the optimiser cannot remove.
@inline(never) private func busy(_ n: Int) {
    var x: UInt64 = 0x9E37_79B9
    for _ in 0..<n { x = x &* 6364136223846793005 &+ 1442695040888963407 }
    if x == 42 { print("") }
}
