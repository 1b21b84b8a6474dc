import DGBase
import DGCheckpoint
import Foundation

/// Training checkpoints of one run: `checkpoint-<step>.dginstyle` files in one folder.
public struct CheckpointStore {
    public let directory: String
    public static let prefix = "checkpoint-"
    public static let suffix = ".dginstyle"

    public init(directory: String) { self.directory = directory }

    public func path(step: Int) -> String {
        directory + "/" + Self.prefix + String(format: "%08d", step) + Self.suffix
    }

    /// The checkpoints present, oldest first.
    public func list() -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix(Self.prefix), name.hasSuffix(Self.suffix),
                  let step = Int(name.dropFirst(Self.prefix.count).dropLast(Self.suffix.count)) else { return nil }
            return (step, directory + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    /// Keeps the newest `keep`, deleting the rest; returns what it deleted.
    @discardableResult
    public func rotate(keep: Int) -> [String] {
        let all = list()
        guard all.count > keep else { return [] }
        let old = all.prefix(all.count - max(keep, 1)).map(\.path)
        for p in old { unlink(p) }
        return old
    }

    /// The state restored from the newest checkpoint that reads back intact (an older one,
    /// with a warning, if the newest is damaged); nil when there is none.
    public func restoreNewest(log: (String) -> Void, _ restore: (String) throws -> JSON) throws -> JSON? {
        for (_, path) in list().reversed() {
            do {
                return try restore(path)
            } catch let e as FileError {
                log("warning: skipping \(path): \(e)")
            }
        }
        return nil
    }

    /// Temporary files of checkpoint writes that a killed process left behind.
    @discardableResult
    public func removeAbandonedWrites() -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var n = 0
        for name in names where name.hasPrefix("." + Self.prefix) && name.contains(".tmp-") {
            if unlink(directory + "/" + name) == 0 { n += 1 }
        }
        return n
    }
}

/// Metrics as JSON lines, one object per optimizer update (and per event), appended and
/// flushed as they come so that a killed run loses nothing it logged.
public final class MetricsLog {
    public let path: String
    private var handle: FileHandle?

    public init(path: String) { self.path = path }

    public func append(_ record: JSON) throws {
        if handle == nil {
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil) else { throw FileError(path, "cannot create") }
            }
            guard let h = FileHandle(forWritingAtPath: path) else { throw FileError(path, "cannot open for writing") }
            h.seekToEndOfFile()
            handle = h
        }
        handle!.write(Data((record.compact + "\n").utf8))
    }

    public func close() {
        try? handle?.close()
        handle = nil
    }

    /// The records, skipping a torn last line.
    public func records() -> [JSON] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return data.split(separator: UInt8(ascii: "\n")).compactMap { try? JSON.parse(bytes: $0) }
    }

    /// The loss of every update so far as an SVG curve, written atomically; a plot that cannot be
    /// written is not worth stopping a run for.
    public func writeLossPlot(to file: String, title: String) {
        let points = records().compactMap { r -> (Int, Double)? in
            guard let s = r["step"]?.int, let l = r["loss"]?.double else { return nil }
            return (s, l)
        }
        try? writeFileAtomically(file, Array(LossPlot.svg(points, title: title).utf8))
    }

    /// Drops records of steps after `step` (logged by a run that was killed before its next
    /// checkpoint, and about to be redone), rewriting the file atomically.
    public func truncate(afterStep step: Int) throws {
        close()
        guard FileManager.default.fileExists(atPath: path) else { return }
        let kept = records().filter { ($0["step"]?.int ?? 0) <= step }
        try writeFileAtomically(path, Array(kept.map { $0.compact + "\n" }.joined().utf8))
    }
}

/// A loss curve as SVG: every step's loss in light grey, an exponential moving average on
/// top, step on x, loss on y (log scale when the losses span more than a decade).
public enum LossPlot {
    public static func svg(_ points: [(step: Int, loss: Double)], title: String) -> String {
        let w = 720.0, h = 420.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let pts = points.filter { $0.loss.isFinite && $0.loss > 0 }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        guard let first = pts.first, let last = pts.last else {
            return out + "<text x=\"\(w / 2)\" y=\"\(h / 2)\" text-anchor=\"middle\">no finite loss logged yet</text>\n</svg>\n"
        }
        let lo = pts.map(\.loss).min()!, hi = pts.map(\.loss).max()!
        let logScale = hi / lo > 10
        func fy(_ v: Double) -> Double { logScale ? log10(v) : v }
        var y0 = fy(lo), y1 = fy(hi)
        if y1 - y0 < 1e-12 { y0 -= 0.5 * max(abs(y0), 1e-3); y1 += 0.5 * max(abs(y1), 1e-3) }
        let pad = (y1 - y0) * 0.05
        y0 -= pad; y1 += pad
        if !logScale { y0 = max(y0, 0) }
        let x0 = Double(first.step), x1 = Double(max(last.step, first.step + 1))
        func px(_ s: Double) -> Double { left + (s - x0) / (x1 - x0) * (w - left - right) }
        func py(_ v: Double) -> Double { h - bottom - (fy(v) - y0) / (y1 - y0) * (h - top - bottom) }
        // Axes and ticks.
        out += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
        for i in 0...4 {
            let s = x0 + (x1 - x0) * Double(i) / 4
            out += "<text x=\"\(f(px(s)))\" y=\"\(h - bottom + 18)\" text-anchor=\"middle\">\(Int(s.rounded()))</text>\n"
            let yv = y0 + (y1 - y0) * Double(i) / 4
            let value = logScale ? pow(10, yv) : yv
            let yy = h - bottom - Double(i) / 4 * (h - top - bottom)
            out += "<line x1=\"\(left)\" y1=\"\(f(yy))\" x2=\"\(w - right)\" y2=\"\(f(yy))\" stroke=\"#eeeeee\"/>\n"
            out += "<text x=\"\(left - 6)\" y=\"\(f(yy + 4))\" text-anchor=\"end\">\(String(format: "%.3g", value))</text>\n"
        }
        out += "<text x=\"\(w / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">step</text>\n"
        out += "<text x=\"16\" y=\"\(h / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(h / 2))\">loss\(logScale ? " (log)" : "")</text>\n"
        func polyline(_ p: [(Int, Double)], _ style: String) -> String {
            "<polyline fill=\"none\" \(style) points=\"" + p.map { "\(f(px(Double($0.0)))),\(f(py($0.1)))" }.joined(separator: " ") + "\"/>\n"
        }
        out += polyline(pts.map { ($0.step, $0.loss) }, "stroke=\"#bbbbbb\" stroke-width=\"1\"")
        // EMA with a window of about 5% of the run (at least 1 step).
        let alpha = min(1, 2 / (Double(pts.count) * 0.05 + 1))
        var ema = pts[0].loss
        let smooth = pts.map { p -> (Int, Double) in ema += alpha * (p.loss - ema); return (p.step, ema) }
        out += polyline(smooth, "stroke=\"#1f5fbf\" stroke-width=\"2\"")
        out += "<text x=\"\(w - right)\" y=\"\(top - 6)\" text-anchor=\"end\" fill=\"#1f5fbf\">moving average; last \(String(format: "%.4g", smooth.last!.1))</text>\n"
        return out + "</svg>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
