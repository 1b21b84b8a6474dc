import DGBase
import DGTensor
import Foundation

public enum SynthStyle: String, Sendable, CaseIterable, Codable {
    /// Flat, saturated colours: the GTA-like synthetic source domain.
    case game
    /// Natural colours, light, texture noise and weather (clear, overcast, fog, rain, night):
    /// a stand-in for real footage.
    case photo
}

/// One synthetic street scene and its exact label map.
public struct SynthFrame: Sendable {
    public var image: Image
    /// Cityscapes label ids, as GTA5 label files store them.
    public var labelIds: LabelMap
    public var weather: String
    public var trainIds: LabelMap { Cityscapes.trainIds(fromLabelIds: labelIds) }
    /// What was painted where: index into `items` per pixel (tests check exactness with it).
    let items: [PaintItem]
    let itemBuffer: [Int32]
}

public struct SynthSummary: Sendable {
    public var count: Int
    public var seconds: Double
    /// Pixels per train class over the whole dataset.
    public var classPixels: [Int]
}

/// The procedural street-scene generator behind `dginstyle synth`: the embedded default data
/// of every demo and test. A scene is a list of painted shapes (sky, ground, facades, then
/// objects far to near); the image and the label map are both read off one buffer of which
/// shape covers each pixel, so labels are exact. Scene `index` of a run seeded `seed` depends
/// on nothing else, so datasets are reproducible whatever the thread count.
public enum Synth {
    public static let defaultWidth = 256
    public static let defaultHeight = 128

    public static func frame(index: Int, width: Int = defaultWidth, height: Int = defaultHeight,
                             style: SynthStyle = .game, seed: UInt64 = 0) -> SynthFrame {
        var rng = SplitMix64(seed: seed, stream: UInt64(index))
        // Drawn in both styles so that a seed gives the same scenes (and label maps) in each.
        let photoWeather = drawWeather(&rng)
        let weather: Weather = style == .game ? .clear : photoWeather
        let (w, h) = (Double(width), Double(height))
        let cam = Camera(focal: w * rng.uniform(0.6, 0.85), cx: w * rng.uniform(0.42, 0.58),
                         horizon: h * rng.uniform(0.36, 0.5), height: rng.uniform(1.2, 2.4))
        let layout = SceneBuilder.randomLayout(&rng, night: weather == .night)
        var builder = SceneBuilder(rng: SplitMix64(seed: rng.next()), width: width, height: height, cam: cam, layout: layout)
        let zNear = 0.5 * cam.focal * cam.height / (h - cam.horizon + 2)
        builder.addSky()
        builder.addGround(zNear: zNear)
        builder.addBackdrop()
        builder.addEdges()
        builder.populate()
        let items = builder.items()
        let renderer = SceneRenderer(width: width, height: height, camera: cam, items: items)
        var effects = SplitMix64(seed: rng.next())
        let pixels = style == .game ? renderer.game() : renderer.photo(weather: weather, rng: &effects)
        return SynthFrame(image: Image(width: width, height: height, channels: 3, pixels: pixels),
                          labelIds: LabelMap(width: width, height: height, ids: renderer.labelIds()),
                          weather: weather.rawValue, items: items, itemBuffer: renderer.buffer)
    }

    private static func drawWeather(_ rng: inout SplitMix64) -> Weather {
        Weather.allCases[rng.index(weights: [0.35, 0.2, 0.15, 0.15, 0.15])]
    }

    /// The weather of scene `index` (clear, overcast, fog, rain, night; always clear in the
    /// game style), without rendering it.
    public static func weather(index: Int, style: SynthStyle, seed: UInt64) -> String {
        guard style == .photo else { return Weather.clear.rawValue }
        var rng = SplitMix64(seed: seed, stream: UInt64(index))
        return drawWeather(&rng).rawValue
    }

    /// A synth weather as the captions' weather words say it (DGInStyle's prompts use
    /// sunny, rainy, foggy, night, snowy).
    public static func promptWeather(_ weather: String) -> String {
        ["clear": "sunny", "rain": "rainy", "fog": "foggy"][weather] ?? weather
    }

    /// The palette of synthetic label files: Cityscapes label id -> its colour, so the files
    /// look like GTA5's and any viewer shows them.
    public static let labelIdPalette: [(UInt8, UInt8, UInt8)] = Cityscapes.labels.map(\.color)

    /// Name of item `index` (1-based like GTA5: 00001.png).
    public static func fileName(_ index: Int, count: Int) -> String {
        let digits = max(5, String(count).count)
        let s = String(index + 1)
        return String(repeating: "0", count: max(0, digits - s.count)) + s + ".png"
    }

    /// Writes `count` scenes in the GTA5 layout (`images/NNNNN.png`, `labels/NNNNN.png` as
    /// palette PNGs of label ids, `synth.json`). The dataset appears complete or not at all:
    /// it is built in a hidden folder beside `out`, synced once, and renamed into place.
    @discardableResult
    public static func writeDataset(to out: String, count: Int, width: Int = defaultWidth, height: Int = defaultHeight,
                                    style: SynthStyle = .game, seed: UInt64 = 0, overwrite: Bool = false,
                                    progress: Bool = true) throws -> SynthSummary {
        guard count >= 1 else { throw FileError(out, "--count must be at least 1, not \(count)") }
        guard (16...8192).contains(width), (16...8192).contains(height) else {
            throw FileError(out, "image size \(width)x\(height) is outside 16...8192 on a side")
        }
        let start = Date()
        let target = URL(fileURLWithPath: out).standardizedFileURL
        let parent = target.deletingLastPathComponent().path
        let fm = FileManager.default
        if fm.fileExists(atPath: target.path) {
            guard Dataset.isDirectory(target.path) else { throw FileError(out, "exists and is not a folder") }
            let contents = (try? fm.contentsOfDirectory(atPath: target.path)) ?? []
            guard contents.isEmpty || overwrite else { throw FileError(out, "exists and is not empty (use --overwrite to replace it)") }
        }
        do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw FileError(parent, "cannot create the folder: \(error.localizedDescription)")
        }
        AbandonedTemporaries.removeOnce(in: parent)
        let staging = parent + "/" + temporaryName(for: target.lastPathComponent)
        guard mkdir(staging, 0o755) == 0 else { throw writeError("cannot create a folder in \(parent)", path: out, errno: errno, failed: false) }
        var committed = false
        defer { if !committed { try? fm.removeItem(atPath: staging) } }
        for sub in ["images", "labels"] where mkdir(staging + "/" + sub, 0o755) != 0 {
            throw writeError("cannot create a folder in \(parent)", path: out, errno: errno, failed: false)
        }

        let classPixels: [Int]
        do {
            classPixels = try renderAll(into: staging, count: count, width: width, height: height, style: style, seed: seed, progress: progress)
        } catch let e as FileError {
            throw destinationError(e, staging: staging, destination: out)  // the dataset asked for, not the staging folder
        }
        let meta = JSON.object([
            ("generator", .string("dginstyle synth")), ("layout", .string("gta5")), ("labels", .string("cityscapes label ids")),
            ("count", .int(count)), ("width", .int(width)), ("height", .int(height)),
            ("style", .string(style.rawValue)), ("seed", .string(String(seed))),
            // Per image, so that captions can tell each photo's true weather.
            ("weather", .object((0..<count).map { (fileName($0, count: count), .string(weather(index: $0, style: style, seed: seed))) })),
            ("class_pixels", .object(zip(Cityscapes.classNames, classPixels).map { ($0, .int($1)) })),
        ])
        do { try PNG.writeAtomically(staging + "/synth.json", Array((meta.pretty + "\n").utf8), durable: false) } catch let e as FileError {
            throw destinationError(e, staging: staging, destination: out)
        }
        flushFileSystem(containing: staging)  // one flush for the whole dataset instead of an fsync per file
        do {
            if fm.fileExists(atPath: target.path) { try replaceAtomically(target.path, with: staging) } else { try moveIntoPlace(target.path, from: staging) }
        } catch let e as FileError { throw FileError(out, e.problem) }
        committed = true
        flushFileSystem(containing: parent)  // the rename itself
        return SynthSummary(count: count, seconds: Date().timeIntervalSince(start), classPixels: classPixels)
    }

    /// Renders and writes in batches: parallel inside a batch, the progress bar between batches.
    private static func renderAll(into dir: String, count: Int, width: Int, height: Int, style: SynthStyle, seed: UInt64,
                                  progress: Bool) throws -> [Int] {
        let bar = ProgressBar("synth", total: Double(count), unit: " img", enabled: progress && count >= 200)
        let batch = max(Parallel.threads * 8, 16)
        var totals = [Int](repeating: 0, count: Cityscapes.classCount)
        for first in stride(from: 0, to: count, by: batch) {
            let n = min(batch, count - first)
            var results = [Result<[Int], Error>?](repeating: nil, count: n)
            results.withUnsafeMutableBufferPointer { buffer in
                let out = buffer
                Parallel.forEach(n, minimumChunk: 1) { range in
                    for k in range {
                        let index = first + k
                        out[k] = Result {
                            let f = frame(index: index, width: width, height: height, style: style, seed: seed)
                            let name = fileName(index, count: count)
                            try PNG.write(f.image, to: dir + "/images/" + name, fast: true, durable: false)
                            try PNG.writeIndexed(width: width, height: height, indices: f.labelIds.ids, palette: labelIdPalette,
                                                 to: dir + "/labels/" + name, fast: true, durable: false)
                            return Array(f.trainIds.histogram()[0..<Cityscapes.classCount])
                        }
                    }
                }
            }
            for r in results {
                let h = try r!.get()
                for c in 0..<Cityscapes.classCount { totals[c] += h[c] }
            }
            bar.update(Double(first + n))
        }
        bar.finish()
        return totals
    }
}

#if os(Linux)
@_silgen_name("syncfs") private func linuxSyncfs(_ fd: Int32) -> Int32
#endif

/// Flushes the file system holding `path` (Linux syncfs: that file system only), falling
/// back to a global sync elsewhere.
private func flushFileSystem(containing path: String) {
    #if os(Linux)
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd >= 0 {
        _ = linuxSyncfs(fd)
        close(fd)
        return
    }
    #endif
    sync()
}
