import Foundation

// Here rather than in the command: the parsing reads outside input and is fuzzed
// (tools/fuzz.sh), which needs it in a library; running the steps stays in `dginstyle recipe`.

/// A recipe file: `dginstyle` commands run in order, and the files they make that are kept
/// (see recipes/README.md for the format).
public struct Recipe: Sendable {
    public struct Step: Sendable {
        public var name: String
        public var arguments: [String]
        /// The step's result: when it exists the step is done and skipped.
        public var creates: String
    }

    public struct Output: Sendable {
        public var from: String
        public var to: String
    }

    public var path: String
    public var name: String
    public var description: String
    public var requires: [String]
    public var steps: [Step]
    public var outputs: [Output]

    /// Commands that train: they run with --resume, so that a killed recipe continues its runs.
    public static let trainingCommands: Set<String> = ["train-vae", "finetune-unet", "train-controlnet"]

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    public static func load(_ path: String) throws -> Recipe {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure("\(path): cannot read the recipe") }
        let json: JSON
        do { json = try JSON.parse(bytes: Array(data)) } catch { throw Failure("\(path): not JSON: \(error)") }
        return try Recipe(json: json, path: path)
    }

    public init(json: JSON, path: String) throws {
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
    public func arguments(_ step: Step) -> [String] {
        Self.trainingCommands.contains(step.arguments[0]) && !step.arguments.contains("--resume")
            ? step.arguments + ["--resume"] : step.arguments
    }
}
