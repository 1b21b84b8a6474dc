import DGBase
import Foundation

/// How far a generation run in an output folder has got, read from its files alone (no model, no
/// label maps needed), so it can be asked from a login node while shards run elsewhere.
public struct GenerationStatus: Sendable {
    public enum State: String, Sendable { case done, failed, missing }

    public struct ShardCount: Sendable, Equatable {
        public var shard: Int
        public var items = 0, done = 0, failed = 0, missing = 0
        public var complete: Bool { done == items }
    }

    public let out: String
    public let count: Int
    public let shards: Int
    /// Item index -> state, for 0..<count.
    public let states: [State]
    /// Why a failed item failed: the message its shard wrote, or the partial files it left.
    public let reasons: [Int: String]
    /// Records in generation.jsonl; it is rewritten when a shard ends, so it can lag the records.
    public let logRecords: Int

    public var done: Int { states.filter { $0 == .done }.count }
    public var failed: Int { states.filter { $0 == .failed }.count }
    public var missing: Int { states.filter { $0 == .missing }.count }

    public var perShard: [ShardCount] {
        var result = (0..<shards).map { ShardCount(shard: $0) }
        for (i, s) in states.enumerated() {
            let k = i % shards
            result[k].items += 1
            switch s {
            case .done: result[k].done += 1
            case .failed: result[k].failed += 1
            case .missing: result[k].missing += 1
            }
        }
        return result
    }

    /// Reads `out`. The item count and shard count come from the arguments, else from shards.json
    /// (written by every `generate` run), else the count from the run's label sources and 1 shard.
    public static func read(out: String, count: Int? = nil, shards: Int? = nil) throws -> GenerationStatus {
        let fm = FileManager.default
        guard let runData = fm.contents(atPath: out + "/run.json") else {
            throw GenerationError("\(out): no run.json (not a generate output folder, or no shard has started)")
        }
        let run: JSON
        do { run = try JSON.parse(bytes: Array(runData)) } catch { throw GenerationError("\(out)/run.json: \(error)") }
        let recorded = fm.contents(atPath: out + "/" + DatasetGenerator.shardsFile).flatMap { try? JSON.parse(bytes: Array($0)) }
        let itemCount: Int
        if let count { itemCount = count } else if let c = recorded?["count"]?.int { itemCount = c } else {
            guard let labels = run["labels"]?.string else { throw GenerationError("\(out)/run.json: no labels") }
            itemCount = try DatasetGenerator.labelSources(labels).count
        }
        let shardCount = shards ?? recorded?["shards"]?.int ?? 1
        guard itemCount >= 0 else { throw GenerationError("--count must be non-negative") }
        guard shardCount > 0 else { throw GenerationError("--shards must be positive") }
        let layout = run["layout"]?.string.flatMap(OutputLayout.init(rawValue:)) ?? .gta5

        // Items are named by their zero-padded index then "_", so the index is read back from any
        // of an item's files without the label maps that gave the rest of the name.
        func indices(_ folder: String, suffix: String) -> [Int: String] {
            var found: [Int: String] = [:]
            for name in (try? fm.contentsOfDirectory(atPath: out + "/" + folder)) ?? [] where name.hasSuffix(suffix) {
                guard let stop = name.firstIndex(of: "_"), let i = Int(name[..<stop]), i >= 0 else { continue }
                found[i] = folder + "/" + name
            }
            return found
        }
        let (image, label) = layout.paths("")
        let records = indices("records", suffix: ".json")
        let failures = indices(DatasetGenerator.failedFolder, suffix: ".json")
        let imageFolder = (image as NSString).deletingLastPathComponent, labelFolder = (label as NSString).deletingLastPathComponent
        let partial = [indices(imageFolder, suffix: (image as NSString).lastPathComponent),
                       indices(labelFolder, suffix: (label as NSString).lastPathComponent),
                       indices("vis", suffix: ".png")]

        var states = [State](repeating: .missing, count: itemCount)
        var reasons: [Int: String] = [:]
        for i in 0..<itemCount {
            if records[i] != nil { states[i] = .done; continue }
            if let f = failures[i] {
                states[i] = .failed
                let note = fm.contents(atPath: out + "/" + f).flatMap { try? JSON.parse(bytes: Array($0)) }
                reasons[i] = note?["error"]?.string ?? "failure marker \(f)"
            } else {
                let left = partial.compactMap { $0[i] }
                if !left.isEmpty {
                    states[i] = .failed
                    reasons[i] = "partial output without a record: " + left.joined(separator: ", ")
                }
            }
        }
        var lines = 0
        if let log = fm.contents(atPath: out + "/generation.jsonl") { lines = log.reduce(0) { $0 + ($1 == 10 ? 1 : 0) } }
        return GenerationStatus(out: out, count: itemCount, shards: shardCount, states: states, reasons: reasons, logRecords: lines)
    }

    /// Shards with an item not done, as an sbatch --array list ("1,3"; empty when none).
    public var incompleteShards: [Int] { perShard.filter { !$0.complete }.map(\.shard) }

    public var json: JSON {
        var failedItems: [JSON] = []
        for (i, s) in states.enumerated() where s == .failed {
            failedItems.append(["index": .int(i), "shard": .int(i % shards), "reason": .string(reasons[i] ?? "")])
        }
        return [
            "out": .string(out), "count": .int(count), "shards": .int(shards),
            "done": .int(done), "failed": .int(failed), "missing": .int(missing), "complete": .bool(done == count),
            "generation_jsonl_records": .int(logRecords),
            "per_shard": .array(perShard.map {
                ["shard": .int($0.shard), "items": .int($0.items), "done": .int($0.done), "failed": .int($0.failed),
                 "missing": .int($0.missing), "complete": .bool($0.complete)]
            }),
            "incomplete_shards": .array(incompleteShards.map { .int($0) }),
            "failed_items": .array(failedItems),
        ]
    }

    public var text: String {
        var lines = ["\(out): \(done)/\(count) done, \(failed) failed, \(missing) missing (\(shards) shard\(shards == 1 ? "" : "s"))"]
        for s in perShard {
            lines.append("  shard \(s.shard)/\(shards): \(s.done)/\(s.items) done, \(s.failed) failed, \(s.missing) missing\(s.complete ? "" : "  <- incomplete")")
        }
        for (i, s) in states.enumerated() where s == .failed {
            lines.append("  failed item \(i) (shard \(i % shards)): \(reasons[i] ?? "")")
        }
        if logRecords != done {
            lines.append("  generation.jsonl holds \(logRecords) records, not \(done): it is rewritten when a shard ends (rerun any shard to rewrite it now)")
        }
        return lines.joined(separator: "\n")
    }
}
