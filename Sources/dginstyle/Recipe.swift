import ArgumentParser
import DGBase
import DGCheckpoint
import Foundation

struct RecipeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recipe",
        abstract: "Run a recipe: dginstyle commands in order, then copy its declared outputs into place.",
        discussion: """
        A recipe is a JSON file (recipes/README.md): a name, a description, files it requires, steps (each a \
        dginstyle argument array, run in this process, and the path it creates) and outputs (files copied \
        atomically, e.g. into weights/). A step whose result exists is skipped; training steps run with \
        --resume, so running a killed recipe again continues where it stopped. Paths are relative to the \
        current folder (the repository root for the recipes in recipes/). Each step's wall time is printed and \
        recorded with the outputs in RECIPES.json (and RECIPES.md) beside the first output.
        """)

    @Argument(help: "The recipe file.")
    var file: String

    @Flag(help: "Check the recipe and every step's arguments; show what would run and what would be skipped.")
    var dryRun = false

    func run() throws {
        let recipe: Recipe
        recipe = try Recipe.load(file)
        let fm = FileManager.default
        // Errors are Recipe.Failure, not ValidationError: ArgumentParser prints the usage after a
        // ValidationError, and a recipe's problem is not its command line.
        // Every step's arguments are parsed before anything runs, so a typo in the last step costs nothing.
        for (i, step) in recipe.steps.enumerated() {
            do { _ = try DGInStyle.parseAsRoot(recipe.arguments(step)) } catch {
                throw Recipe.Failure("\(file): step \(i + 1) (\(step.name)): \(DGInStyle.message(for: error))")
            }
        }
        let missing = recipe.requires.filter { !fm.fileExists(atPath: $0) }
        if dryRun {
            emit("recipe \(recipe.name): \(recipe.description)")
            for r in missing { emit("  requires \(r): missing (made by an earlier recipe?)") }
            for (i, step) in recipe.steps.enumerated() {
                let done = fm.fileExists(atPath: step.creates)
                emit("  \(i + 1). \(step.name): \(done ? "skip (\(step.creates) exists)" : "run") dginstyle \(recipe.arguments(step).joined(separator: " "))")
            }
            for o in recipe.outputs { emit("  output \(o.from) -> \(o.to)") }
            return
        }
        if let m = missing.first { throw Recipe.Failure("\(file): requires \(m), which is missing (run the recipe that makes it first)") }

        let started = Date()
        var records: [JSON] = []
        let previous = RecipeRecord.load(recipe)
        for (i, step) in recipe.steps.enumerated() {
            let label = "[\(recipe.name) \(i + 1)/\(recipe.steps.count)] \(step.name)"
            if fm.fileExists(atPath: step.creates) {
                emit("\(label): skipped (\(step.creates) exists)")
                var r = previous.first { $0["name"]?.string == step.name } ?? ["name": .string(step.name), "seconds": .null]
                r.set("skipped", true)
                records.append(r)
                continue
            }
            emit("\(label): dginstyle \(recipe.arguments(step).joined(separator: " "))")
            let t0 = Date()
            do {
                var command = try DGInStyle.parseAsRoot(recipe.arguments(step))
                try command.run()
            } catch {
                throw Recipe.Failure("\(file): step \(i + 1) (\(step.name)) failed: \(DGInStyle.message(for: error))")
            }
            let seconds = Date().timeIntervalSince(t0)
            guard fm.fileExists(atPath: step.creates) else {
                throw Recipe.Failure("\(file): step \(i + 1) (\(step.name)) finished but did not create \(step.creates)")
            }
            emit("\(label): done in \(String(format: "%.1f", seconds)) s")
            records.append(["name": .string(step.name), "command": .string(recipe.arguments(step).joined(separator: " ")),
                            "seconds": .double((seconds * 10).rounded() / 10), "skipped": false])
        }
        for o in recipe.outputs {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: o.from, isDirectory: &isDir) else { throw Recipe.Failure("\(file): output \(o.from) is missing after the steps") }
            guard !isDir.boolValue else { throw Recipe.Failure("\(file): output \(o.from) is a folder; outputs are files") }
            try fm.createDirectory(atPath: URL(fileURLWithPath: o.to).deletingLastPathComponent().path, withIntermediateDirectories: true)
            guard let bytes = fm.contents(atPath: o.from) else { throw Recipe.Failure("\(file): cannot read \(o.from)") }
            try writeFileAtomically(o.to, Array(bytes))
            emit("[\(recipe.name)] \(o.from) -> \(o.to) (\(bytes.count / 1024) KiB)")
        }
        let total = records.compactMap { $0["seconds"]?.double }.reduce(0, +)
        emit("[\(recipe.name)] finished in \(String(format: "%.1f", Date().timeIntervalSince(started))) s (steps: \(String(format: "%.1f", total)) s)")
        try RecipeRecord.save(recipe, steps: records, total: total)
    }
}

/// RECIPES.json beside a recipe's first output: per recipe, its steps' wall times and its
/// outputs, so the docs can say which recipe made which file and how long it took.
/// RECIPES.md is rendered from it.
enum RecipeRecord {
    static func directory(_ recipe: Recipe) -> String? {
        recipe.outputs.first.map { URL(fileURLWithPath: $0.to).deletingLastPathComponent().path }
    }

    static func read(_ dir: String) -> [(String, JSON)] {
        guard let d = FileManager.default.contents(atPath: dir + "/RECIPES.json"), let j = try? JSON.parse(bytes: Array(d)) else { return [] }
        return j.objectPairs ?? []
    }

    /// The steps of this recipe's previous record (for the times of steps skipped now).
    static func load(_ recipe: Recipe) -> [JSON] {
        guard let dir = directory(recipe) else { return [] }
        return read(dir).first { $0.0 == recipe.name }?.1["steps"]?.array ?? []
    }

    static func save(_ recipe: Recipe, steps: [JSON], total: Double) throws {
        guard let dir = directory(recipe) else { return }
        var all = read(dir).filter { $0.0 != recipe.name }
        let record: JSON = [
            "file": .string(recipe.path), "description": .string(recipe.description),
            "outputs": .array(recipe.outputs.map { .string($0.to) }), "steps": .array(steps),
            "total_seconds": .double((total * 10).rounded() / 10),
            "threads": .int(ProcessInfo.processInfo.activeProcessorCount),
        ]
        all.append((recipe.name, record))
        all.sort { $0.0 < $1.0 }
        try writeFileAtomically(dir + "/RECIPES.json", Array((JSON.object(all).pretty + "\n").utf8))
        var md = "# Recipe timings\n\nWritten by `dginstyle recipe`; wall time of each step on the machine that ran it.\n"
        for (name, r) in all {
            md += "\n## \(name) (`\(r["file"]?.string ?? "?")`)\n\n"
            if let d = r["description"]?.string, !d.isEmpty { md += d + "\n\n" }
            md += "Outputs: " + (r["outputs"]?.array ?? []).compactMap { $0.string.map { "`\($0)`" } }.joined(separator: ", ") + "\n\n"
            md += "| step | seconds |\n|---|---:|\n"
            for s in r["steps"]?.array ?? [] {
                md += "| \(s["name"]?.string ?? "?") | \(s["seconds"]?.double.map { String(format: "%.1f", $0) } ?? "-") |\n"
            }
            md += "| **total** | **\(String(format: "%.1f", r["total_seconds"]?.double ?? 0))** |\n"
        }
        try writeFileAtomically(dir + "/RECIPES.md", Array(md.utf8))
    }
}
