import CDGKernels
import Foundation
import XCTest
@testable import DGTensor

/// The kernels' edges: one AVX-512 switch for every path, C entry points that check it themselves,
/// the C and Swift element-wise paths giving the same bits, and the settings tests change.
extension KernelTests {
    /// Runs this test binary again on one test, with extra environment; returns its exit status
    /// (or the signal that ended it) and its standard error.
    func runChild(_ test: String, _ environment: [String: String]) throws -> (status: Int32, crashed: Bool, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        p.arguments = ["DGTensorTests.KernelTests/\(test)"]
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, p.terminationReason == .uncaughtSignal, String(decoding: data, as: UTF8.self))
    }

    var isChild: Bool { ProcessInfo.processInfo.environment["DGINSTYLE_TEST_CHILD"] != nil }

    func testGEMMVectorizedIsTheOneSwitch() throws {
        let saved = GEMM.vectorized
        defer { GEMM.vectorized = saved }
        GEMM.vectorized = true
        try XCTSkipUnless(GEMM.vectorized, "no AVX-512 on this machine")
        XCTAssertTrue(Kernels.avx512)
        XCTAssertEqual(dg_has_avx512(), 1)
        GEMM.vectorized = false
        XCTAssertFalse(Kernels.avx512, "the element-wise kernels follow GEMM.vectorized")
        XCTAssertEqual(dg_has_avx512(), 0)
    }

    /// DGINSTYLE_GEMM=openblas: off from the first question, whichever kernel asks it first (here the
    /// element-wise switch, which used to bypass the variable when asked before any product).
    func testOpenBLASSettingTurnsEveryAVX512PathOffFromTheFirstCall() throws {
        if isChild {
            XCTAssertFalse(Kernels.avx512, "an element-wise kernel asked first and got AVX-512")
            XCTAssertFalse(GEMM.vectorized)
            let x = random([3, 100], scale: 2)
            _ = Kernels.activate(x.t, .silu)          // would abort if it reached the C kernels
            _ = Kernels.sum(x.t)
            return
        }
        let saved = GEMM.vectorized
        defer { GEMM.vectorized = saved }
        GEMM.vectorized = true
        try XCTSkipUnless(GEMM.vectorized, "no AVX-512 on this machine: the setting changes nothing")
        let r = try runChild("testOpenBLASSettingTurnsEveryAVX512PathOffFromTheFirstCall",
                             ["DGINSTYLE_TEST_CHILD": "1", "DGINSTYLE_GEMM": "openblas"])
        XCTAssertEqual(r.status, 0, "child failed:\n\(r.stderr)")
        XCTAssertFalse(r.crashed)
    }

    /// An AVX-512 entry point called with the switch off stops the process with a message, instead of
    /// running (or executing an illegal instruction on a CPU without AVX-512).
    func testAVX512EntryPointRefusesWhenSwitchedOff() throws {
        if isChild {
            GEMM.vectorized = false
            let x = [Float](repeating: 1, count: 64)
            _ = x.withUnsafeBufferPointer { dg_sum($0.baseAddress, 64) }
            XCTFail("dg_sum ran with the AVX-512 kernels switched off")
            return
        }
        let r = try runChild("testAVX512EntryPointRefusesWhenSwitchedOff", ["DGINSTYLE_TEST_CHILD": "1"])
        XCTAssertTrue(r.crashed, "the child should have aborted (status \(r.status)):\n\(r.stderr)")
        XCTAssertTrue(r.stderr.contains("dg_sum"), "no message naming the entry point:\n\(r.stderr)")
    }

    /// Sums, squared deviations and dot products with tails (n not a multiple of 16), values whose
    /// deviations are not exact squares: the C code fused the tail's d * d + total into an fma before
    /// it was built with -ffp-contract=off (about 8% of such sums differed in the last bit).
    func testReductionTailsGiveTheSameBitsOnEveryPath() throws {
        var cases: [(KernelSample, KernelSample, Float)] = []
        for n in [64, 79, 95, 527, 1039] {
            for _ in 0..<40 {
                cases.append((random([n], scale: 2), random([n], scale: 3), Float(Double.random(in: 0...0.05, using: &rng))))
            }
        }
        var results: [[Double]] = []
        try forEachGEMMPath { _ in
            var r: [Double] = []
            for (x, y, c) in cases {
                withExtendedLifetime((x.t, y.t)) {
                    let p = Kernels.pointer(x.t), q = Kernels.pointer(y.t), n = x.t.count
                    r += [Kernels.sum(p, n), Kernels.sumSquaredDeviations(p, n, c), Kernels.dot(p, q, n)]
                }
            }
            results.append(r)
        }
        var differ = 0
        for i in 0..<results[0].count where results[0][i].bitPattern != results[1][i].bitPattern { differ += 1 }
        XCTAssertEqual(differ, 0, "\(differ) of \(results[0].count) reductions differ between the AVX-512 and portable paths")
    }

    func testSettingsTestsChangeAreAtomicAndRoundTrip() {
        let budget = Kernels.columnBudget, threads = Parallel.threads
        defer { Kernels.columnBudget = budget; Kernels.attentionBlock = nil; Parallel.setThreads(threads) }
        XCTAssertGreaterThan(budget, 0)
        Kernels.columnBudget = 12345
        XCTAssertEqual(Kernels.columnBudget, 12345)
        XCTAssertNil(Kernels.attentionBlock)
        Kernels.attentionBlock = 48
        XCTAssertEqual(Kernels.attentionBlock, 48)
        Kernels.attentionBlock = nil
        XCTAssertNil(Kernels.attentionBlock)
        Parallel.setThreads(3)
        XCTAssertEqual(Parallel.threads, 3)
        // Nested and overlapping single-threaded sections: serial until the last one ends.
        XCTAssertFalse(GEMM.serial)
        Parallel.setThreads(2)
        Kernels.withSingleThreadedBLAS {
            XCTAssertTrue(GEMM.serial)
            Kernels.withSingleThreadedBLAS { XCTAssertTrue(GEMM.serial) }
            XCTAssertTrue(GEMM.serial)
        }
        XCTAssertFalse(GEMM.serial)
        // Many threads flipping and reading at once (a torn or lost update would show here).
        // (withSingleThreadedBLAS resizes OpenBLAS's pool when our kernels are off: only with them on.)
        let overlap = GEMM.vectorized
        var smallest = [Int](repeating: .max, count: 8)
        smallest.withUnsafeMutableBufferPointer { out in
            let out = out
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                for i in 0..<10_000 {
                    if overlap { Kernels.withSingleThreadedBLAS { if !GEMM.serial { out[t] = -1 } } }
                    if t == 0 { Kernels.columnBudget = 1 + i }
                    out[t] = Swift.min(out[t], Kernels.columnBudget)
                }
            }
        }
        XCTAssertGreaterThan(smallest.min()!, 0, "a thread saw serial off inside a section, or a budget of 0")
        XCTAssertFalse(GEMM.serial)
    }
}
