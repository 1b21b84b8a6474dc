import DGBase
import Foundation

/// Generation lists as DGInStyle's generation script draws them (`gen_file.json`: a list of
/// `{"class", "file_name"}`): with rare-class sampling, a class by its RCS probability and then
/// a label file that holds enough of it (generation then centres its crop on that class); without,
/// a label file uniformly and no class (a random crop). Entry i is drawn from its own generator
/// keyed by (seed, i), so the first N entries of a longer list are the list of N.
public enum GenerationList {
    public struct Entry: Equatable, Sendable {
        public var classId: Int?
        /// Index into the samples the list was drawn from.
        public var sample: Int
    }

    public static func draw(count: Int, samples: Int, rcs: RareClassSampling?, seed: UInt64) -> [Entry] {
        (0..<count).map { i in
            var rng = SplitMix64(seed: seed, stream: UInt64(i))
            guard let rcs else { return Entry(classId: nil, sample: rng.int(below: samples)) }
            let c = rcs.sampleClass(&rng)
            return Entry(classId: c, sample: rcs.sampleFile(class: c, &rng))
        }
    }

    /// The list as JSON: class names as train ids (numbers), label files relative to the list's
    /// folder when they lie beneath it (the reader looks there first), else absolute.
    public static func json(_ entries: [Entry], samples: [Sample], listPath: String) -> JSON {
        let folder = URL(fileURLWithPath: listPath).standardizedFileURL.deletingLastPathComponent().path + "/"
        return .array(entries.map { e in
            let file = URL(fileURLWithPath: samples[e.sample].labelPath).standardizedFileURL.path
            let name = file.hasPrefix(folder) ? String(file.dropFirst(folder.count)) : file
            return .object([("class", e.classId.map { .int($0) } ?? .null), ("file_name", .string(name))])
        })
    }
}
