import ArgumentParser
import DGBase
import DGCheckpoint
import DGTensor
import Foundation

enum DiffGrouping: String, ExpressibleByArgument, CaseIterable {
    case block, tensor
}

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two checkpoints of the same model: which tensors differ, and by how much.",
        discussion: """
        A and B may be in any format and layout inspect reads (diffusers folders, safetensors in diffusers, \
        LDM or ControlNet layout, native files); tensors are matched by component and diffusers name, so an \
        LDM single file compares with its diffusers conversion. Reported: tensors only in A or only in B, \
        shape and dtype changes, and per block (--by block, the default: e.g. unet/down_blocks.1.attentions.0) \
        or per tensor the relative change |B - A| / |A| (2-norms) and the largest absolute difference, the \
        largest change first. Values are compared in float64 whatever their types, one tensor pair in memory \
        at a time. "identical" means the same names, shapes and values (the stored types may differ). \
        Exit status 0 whatever the differences, unless --fail-on-difference: then 3 when they differ \
        (1 stays an error, such as a missing or malformed file).
        """)

    @Argument(help: "The first checkpoint (the reference: changes are relative to it).")
    var a: String

    @Argument(help: "The second checkpoint.")
    var b: String

    @Option(help: "Group the changes by block or list every tensor.")
    var by: DiffGrouping = .block

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Option(help: "Compare only this component (unet, vae, text_encoder, controlnet).")
    var component: String?

    @Option(help: "A diffusers folder to take configs from, for LDM files that are not standard SD 1.x.")
    var config: String?

    @Flag(help: "Read the UNet's EMA weights (model_ema.*) of LDM files.")
    var ema = false

    @Flag(help: "Exit with status 3 when the checkpoints differ (names, shapes or values).")
    var failOnDifference = false

    @Flag(help: "Do not draw a progress bar.")
    var quiet = false

    /// Not 1: scripts must tell "they differ" from "the comparison failed".
    static let differenceStatus: Int32 = 3

    func run() throws {
        let options = Checkpoint.Options(configDirectory: config, ema: ema)
        let ckA = try Checkpoint.openAny(a, options: options)
        let ckB = try Checkpoint.openAny(b, options: options)
        let diff = try Checkpoint.diff(ckA, ckB, component: component, progress: !quiet && !json)
        emit(json ? Self.describeJSON(diff, by: by).pretty : Self.describeText(diff, by: by))
        if failOnDifference && !diff.isIdentical { throw ExitCode(Self.differenceStatus) }
    }

    static func number(_ x: Double) -> String {
        if x == 0 { return "0" }
        if x.isInfinite { return "inf" }
        return String(format: "%.3e", x)
    }

    static func verdict(_ d: CheckpointDiff) -> String {
        if d.isIdentical {
            let dtypes = d.dtypeChanges.count
            return "identical: \(d.tensors.count) tensors, same names, shapes and values"
                + (dtypes > 0 ? " (\(dtypes) stored in another dtype)" : "")
        }
        var parts: [String] = []
        let changed = d.tensors.filter { $0.change.map { !$0.isIdentical } ?? false }.count
        if changed > 0 { parts.append("\(changed) of \(d.tensors.count) common tensors changed") }
        if !d.shapeChanges.isEmpty { parts.append("\(d.shapeChanges.count) changed shape") }
        if !d.onlyInA.isEmpty { parts.append("\(d.onlyInA.count) only in A") }
        if !d.onlyInB.isEmpty { parts.append("\(d.onlyInB.count) only in B") }
        return "different: " + parts.joined(separator: ", ")
    }

    static func describeText(_ d: CheckpointDiff, by: DiffGrouping) -> String {
        var lines = ["A: \(d.pathA) (\(d.layoutA))", "B: \(d.pathB) (\(d.layoutB))"]
        func keys(_ label: String, _ names: [String], _ components: [String]) {
            guard !names.isEmpty else { return }
            // A whole component on one side is one line, not hundreds.
            var loose = names
            for c in components {
                let count = names.filter { $0.hasPrefix(c + "/") }.count
                lines.append("\(label): \(c) (all \(count) tensors; the other checkpoint has no \(c))")
                loose.removeAll { $0.hasPrefix(c + "/") }
            }
            guard !loose.isEmpty else { return }
            lines.append("\(label): \(loose.count) tensors")
            for n in loose.prefix(20) { lines.append("  \(n)") }
            if loose.count > 20 { lines.append("  ... (\(loose.count - 20) more; --json lists all)") }
        }
        keys("only in A", d.onlyInA, d.componentsOnlyInA)
        keys("only in B", d.onlyInB, d.componentsOnlyInB)
        for t in d.shapeChanges { lines.append("shape changed: \(t.name) \(t.shapeA) -> \(t.shapeB)") }
        let dtypes = d.dtypeChanges
        if !dtypes.isEmpty {
            var pairs: [String: Int] = [:]
            for t in dtypes { pairs["\(t.dtypeA.name) -> \(t.dtypeB.name)", default: 0] += 1 }
            lines.append("dtype changed: " + pairs.sorted { $0.key < $1.key }.map { "\($0.value) tensors \($0.key)" }.joined(separator: ", "))
        }
        let total = d.total
        if !d.tensors.isEmpty {
            lines.append("all common tensors: relative change \(number(total.relative)), max abs difference \(number(total.maxAbsDifference)), \(formatCount(total.differing)) of \(formatCount(total.count)) values differ")
        }
        let header = "  relative    max abs     " + (by == .block ? "block (tensors)" : "tensor")
        switch by {
        case .block:
            let blocks = d.blocks()
            let changed = blocks.filter { !$0.change.isIdentical || $0.shapeChanges > 0 }
            if !changed.isEmpty {
                lines.append("changed blocks, largest relative change first:")
                lines.append(header)
                for blk in changed {
                    let note = blk.shapeChanges > 0 ? ", \(blk.shapeChanges) of other shape" : ""
                    lines.append("  \(pad(number(blk.change.relative)))  \(pad(number(blk.change.maxAbsDifference)))  \(blk.name) (\(blk.tensors)\(note))")
                }
            }
            if blocks.count > changed.count { lines.append("unchanged blocks: \(blocks.count - changed.count) of \(blocks.count)") }
        case .tensor:
            let tensors = d.tensorsByChange()
            let changed = tensors.filter { !($0.change?.isIdentical ?? false) }
            if !changed.isEmpty {
                lines.append("changed tensors, largest relative change first:")
                lines.append(header)
                for t in changed {
                    guard let c = t.change else { lines.append("  (shape)     (shape)     \(t.name)"); continue }
                    lines.append("  \(pad(number(c.relative)))  \(pad(number(c.maxAbsDifference)))  \(t.name)")
                }
            }
            if tensors.count > changed.count { lines.append("unchanged tensors: \(tensors.count - changed.count) of \(tensors.count)") }
        }
        lines.append(verdict(d))
        return lines.joined(separator: "\n")
    }

    private static func pad(_ s: String) -> String { s.padding(toLength: max(10, s.count), withPad: " ", startingAt: 0) }

    /// Infinite changes (A all zeros, or NaN appearing) are written as null: JSON has no infinity.
    static func value(_ x: Double) -> JSON { x.isFinite ? .double(x) : .null }

    static func changeJSON(_ c: ValueChange) -> [(String, JSON)] {
        [("relative", value(c.relative)), ("max_abs", value(c.maxAbsDifference)), ("norm_a", value(c.normA)),
         ("norm_difference", value(c.normDifference)), ("values", .int(c.count)), ("differing_values", .int(c.differing)),
         ("non_finite", .int(c.nonFinite))]
    }

    static func describeJSON(_ d: CheckpointDiff, by: DiffGrouping) -> JSON {
        var out: [(String, JSON)] = [
            ("a", ["path": .string(d.pathA), "layout": .string(d.layoutA)]),
            ("b", ["path": .string(d.pathB), "layout": .string(d.layoutB)]),
            ("identical", .bool(d.isIdentical)),
            ("verdict", .string(verdict(d))),
            ("compared_tensors", .int(d.tensors.count)),
            ("components_only_in_a", .array(d.componentsOnlyInA.map { .string($0) })),
            ("components_only_in_b", .array(d.componentsOnlyInB.map { .string($0) })),
            ("only_in_a", .array(d.onlyInA.map { .string($0) })),
            ("only_in_b", .array(d.onlyInB.map { .string($0) })),
            ("shape_changes", .array(d.shapeChanges.map {
                ["name": .string($0.name), "a": .array($0.shapeA.map { .int($0) }), "b": .array($0.shapeB.map { .int($0) })]
            })),
            ("dtype_changes", .array(d.dtypeChanges.map {
                ["name": .string($0.name), "a": .string($0.dtypeA.name), "b": .string($0.dtypeB.name)]
            })),
            ("total", .object(changeJSON(d.total))),
            ("by", .string(by.rawValue)),
        ]
        switch by {
        case .block:
            out.append(("blocks", .array(d.blocks().map { blk in
                .object([("name", .string(blk.name)), ("tensors", .int(blk.tensors)), ("shape_changes", .int(blk.shapeChanges))]
                        + changeJSON(blk.change))
            })))
        case .tensor:
            out.append(("tensors", .array(d.tensorsByChange().map { t in
                var fields: [(String, JSON)] = [("name", .string(t.name)), ("dtype_a", .string(t.dtypeA.name)), ("dtype_b", .string(t.dtypeB.name)),
                                                ("shape_a", .array(t.shapeA.map { .int($0) })), ("shape_b", .array(t.shapeB.map { .int($0) }))]
                if let c = t.change { fields += changeJSON(c) }
                return .object(fields)
            })))
        }
        return .object(out)
    }
}
