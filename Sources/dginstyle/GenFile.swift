import ArgumentParser
import DGBase
import DGData
import Foundation

struct GenFile: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gen-file",
        abstract: "Draw a generation list (gen_file.json of {class, file_name}) from a labelled dataset, as DGInStyle does.",
        discussion: """
        With --rcs each entry draws a class by rare-class sampling (probability softmax((1 - f_c) / T) over the \
        dataset's class pixel frequencies f_c) and then, uniformly, a label file holding at least --min-pixels \
        of it (scaled from GTA5's 1914x1052 frame to each file's size); `generate --labels gen_file.json` then \
        centres each crop on a pixel of that class. Without --rcs each entry is a label file drawn uniformly, \
        with no class (a random crop). Class statistics are read from, or cached in, DATA/rcs_stats.json. \
        The same seed gives the same list, and a longer list starts with the shorter one.
        """)

    @Option(help: "Labelled dataset (GTA5 or Cityscapes layout).")
    var data: String

    @Option(help: "Number of entries.")
    var count: Int

    @Flag(help: "Rare-class sampling (else uniform over files).")
    var rcs = false

    @Option(help: "RCS temperature T.")
    var temperature = 0.01

    @Option(help: "Pixels of a class a GTA5-sized file needs to be drawn for it.")
    var minPixels = 3000

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Output list (JSON).")
    var out: String

    func run() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
        let samples = try Dataset.samples(root: data)
        let sampling = rcs ? try RareClassSampling(statistics: try ClassStatistics.load(samples, root: data),
                                                   temperature: temperature, minPixels: minPixels) : nil
        let entries = GenerationList.draw(count: count, samples: samples.count, rcs: sampling, seed: seed)
        let json = GenerationList.json(entries, samples: samples, listPath: out)
        try writeFileAtomically(out, Array((json.pretty + "\n").utf8))
        var counts = [Int](repeating: 0, count: Cityscapes.classCount)
        for e in entries { if let c = e.classId { counts[c] += 1 } }
        let drawn = rcs ? "; classes: " + counts.enumerated().filter { $0.1 > 0 }.map { "\(Cityscapes.classNames[$0.0]) \($0.1)" }.joined(separator: ", ") : ""
        emit("wrote \(out): \(count) entries from \(samples.count) label files\(drawn)")
    }
}
