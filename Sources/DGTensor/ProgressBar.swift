import Foundation

/// A one-line progress bar with rate and ETA on standard error. Redraws at most a few times a
/// second; when standard error is not a terminal it prints a plain line every 10%.
public final class ProgressBar {
    private let label: String
    private let total: Double
    private let unit: String
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var lastDecile = -1
    private let isTTY = isatty(2) == 1
    private let enabled: Bool
    public private(set) var done: Double = 0
    /// Where this process started counting (a resumed job): the rate counts only what follows.
    private let initial: Double

    /// `unit` "B" formats amounts as bytes; anything else as counts of that unit.
    public init(_ label: String, total: Double, unit: String = "", enabled: Bool = true, initial: Double = 0) {
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.initial = initial
        done = initial
        self.enabled = enabled && ProcessInfo.processInfo.environment["DGINSTYLE_NO_PROGRESS"] == nil
    }

    public func advance(by amount: Double, note: String = "") { update(done + amount, note: note) }

    public func update(_ value: Double, note: String = "") {
        done = value
        guard enabled else { return }
        let now = Date()
        let fraction = min(1, done / total)
        if isTTY {
            guard now.timeIntervalSince(lastDraw) > 0.2 || fraction >= 1 else { return }
            lastDraw = now
            let width = 28
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(status(now))\(note.isEmpty ? "" : " " + note)\u{1B}[K".utf8))
        } else {
            let decile = Int(fraction * 10)
            guard decile > lastDecile else { return }
            lastDecile = decile
            FileHandle.standardError.write(Data("\(label): \(status(now))\(note.isEmpty ? "" : " " + note)\n".utf8))
        }
    }

    public func finish(note: String = "") {
        update(total, note: note)
        if enabled && isTTY { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func status(_ now: Date) -> String {
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? (done - initial) / elapsed : 0
        let eta = rate > 0 ? (total - done) / rate : 0
        return "\(Int(min(1, done / total) * 100))% \(amount(done))/\(amount(total)) \(amount(rate))/s ETA \(ProgressBar.clock(eta))"
    }

    private func amount(_ v: Double) -> String {
        if unit == "B" { return ProgressBar.bytes(v) }
        return v >= 100 ? "\(Int(v))\(unit)" : String(format: "%.1f%@", v, unit)
    }

    public static func bytes(_ v: Double) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = v, i = 0
        while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[i])
    }

    public static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%02d:%02d", s / 60, s % 60)
    }
}
