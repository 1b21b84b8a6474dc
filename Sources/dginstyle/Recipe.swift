import ArgumentParser
import DGBase
import DGCheckpoint
import Foundation

/// A recipe file: `dginstyle` commands run in order, and the files they make that are kept
/// (see recipes/README.md for the format).
struct Recipe {
    struct Step {
        var name: String
        var arguments: [String]
        /// The step's result: when it exists the step is done and skipped.
        var creates: String
    }

    struct Output {
        var from: String
        var to: String
    }

    var path: String
    var name: String
    var description: String
    var requires: [String]
    var steps: [Step]
    var outputs: [Output]

    /// Commands that train: they run with --resume, so that a killed recipe continues its runs.
    static let trainingCommands: Set<String> = ["train-vae", "finetune-unet", "train-controlnet"]

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    static func load(_ path: String) throws -> Recipe {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure("\(path): cannot read the recipe") }
        let json: JSON
        do { json = try JSON.parse(bytes: Array(data)) } catch { throw Failure("\(path): not JSON: \(error)") }
        return try Recipe(json: json, path: path)
    }

    init(json: JSON, path: String) throws {
        self.path = path
        func bad(_ m: String) -> Failure { Failure("\(path): \(m)") }
        func keys(_ object: JSON, _ allowed: [String], _ what: String) throws -> [String: JSON] {
            guard let pairs = object.objectPairs else { throw bad("\(what) must be an object") }
            for (k, _) in pairs where !allowed.contains(k) {
                throw bad("unknown key \"\(k)\" in \(what) (known: \(allowed.joined(separator: ", ")))")
            }
            return Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        }
        func string(_ v: JSON?, _ what: String) throws -> String {
            guard let s = v?.string, !s.isEmpty else { throw bad("\(what) must be a non-empty string") }
            return s
        }
        func strings(_ v: JSON?, _ what: String) throws -> [String] {
            guard let v else { return [] }
            guard let a = v.array, a.allSatisfy({ $0.string != nil }) else { throw bad("\(what) must be an array of strings") }
            return a.map { $0.string! }
        }
        let top = try keys(json, ["name", "description", "requires", "steps", "outputs"], "the recipe")
        name = try string(top["name"], "\"name\"")
        description = top["description"]?.string ?? ""
        requires = try strings(top["requires"], "\"requires\"")
        guard let stepList = top["steps"]?.array, !stepList.isEmpty else { throw bad("\"steps\" must be a non-empty array") }
        steps = try stepList.enumerated().map { i, s in
            let what = "step \(i + 1)"
            let o = try keys(s, ["name", "run", "creates"], what)
            let args = try strings(o["run"], "\(what) \"run\"")
            guard let first = args.first, !first.hasPrefix("-") else { throw bad("\(what) \"run\" must start with a dginstyle command") }
            guard first != "recipe" else { throw bad("\(what) runs a recipe; recipes do not nest") }
            return Step(name: try o["name"].map { try string($0, "\(what) \"name\"") } ?? first,
                        arguments: args, creates: try string(o["creates"], "\(what) \"creates\""))
        }
        outputs = try (top["outputs"]?.array ?? []).enumerated().map { i, o in
            let what = "output \(i + 1)"
            let d = try keys(o, ["from", "to"], what)
            return Output(from: try string(d["from"], "\(what) \"from\""), to: try string(d["to"], "\(what) \"to\""))
        }
        var seen = Set<String>()
        for o in outputs where !seen.insert(o.to).inserted { throw bad("two outputs go to \(o.to)") }
    }

    /// A step's arguments as run: training commands continue their run.
    func arguments(_ step: Step) -> [String] {
        Self.trainingCommands.contains(step.arguments[0]) && !step.arguments.contains("--resume")
            ? step.arguments + ["--resume"] : step.arguments
    }
}

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
