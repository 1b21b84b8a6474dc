import Foundation

// What the benchmarks measure of the process itself: CPU time, resident memory and its peaks.

/// User + system CPU time of the whole process (all threads), seconds.
func processCPUTime() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
}

/// Resident bytes now (VmRSS).
func residentBytes() -> Double { procStatus("VmRSS:") }

/// The process's peak over all phases: resetting VmHWM also resets what getrusage reports, so
/// each phase's peak is folded in here before a reset.
nonisolated(unsafe) var processPeak = 0.0

/// Linux resets the "high water mark" VmHWM when "5" is written to clear_refs, which lets one
/// process measure the peak of each step separately.
func resetPeakResident() {
    processPeak = max(processPeak, peakRSS(), procStatus("VmHWM:"))
    let fd = open("/proc/self/clear_refs", O_WRONLY)
    guard fd >= 0 else { return }
    _ = write(fd, "5", 1)
    close(fd)
}

/// The peak resident bytes since the last `resetPeakResident` (VmHWM).
func peakResidentSinceReset() -> Double { procStatus("VmHWM:") }

func procStatus(_ key: String) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}

/// The largest resident set the process has had, in bytes.
func peakRSS() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return max(processPeak, Double(usage.ru_maxrss) * 1024, procStatus("VmHWM:"))  // ru_maxrss: kilobytes on Linux
}
