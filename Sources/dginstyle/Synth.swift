import ArgumentParser
import DGData
import Foundation

extension SynthStyle: ExpressibleByArgument {}

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Generate a procedural street-scene dataset with exact labels, in the GTA5 layout.",
        discussion: """
        Writes DIR/images/NNNNN.png (RGB), DIR/labels/NNNNN.png (palette PNGs of Cityscapes label ids, as GTA5 \
        stores them; train ids are derived on load) and DIR/synth.json. Every pixel's label is the object drawn \
        there. --style game renders flat saturated GTA-like colours (the synthetic source domain); --style photo \
        adds light, texture noise and weather (clear, overcast, fog, rain, night) as a stand-in for real footage. \
        The same seed gives identical files. The dataset is built beside DIR and renamed into place when complete.
        """)

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "Number of images.")
    var count: Int

    @Option(help: "Image size WxH.")
    var size: String = "\(Synth.defaultWidth)x\(Synth.defaultHeight)"

    @Option(help: "game or photo.")
    var style: SynthStyle = .game

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Flag(help: "Replace DIR if it exists and is not empty.")
    var overwrite = false

    func run() throws {
        let parts = size.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("--size must be WxH, e.g. 256x128, not \(size)") }
        let summary = try Synth.writeDataset(to: out, count: count, width: parts[0], height: parts[1], style: style, seed: seed,
                                             overwrite: overwrite)
        let present = summary.classPixels.filter { $0 > 0 }.count
        let rate = Double(summary.count) / max(summary.seconds, 1e-9)
        emit("\(out): \(summary.count) \(style.rawValue) images \(parts[0])x\(parts[1]), seed \(seed), \(present)/\(summary.classPixels.count) classes present, \(String(format: "%.2f", summary.seconds)) s (\(Int(rate)) images/s)")
    }
}
