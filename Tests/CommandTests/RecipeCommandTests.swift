import DGBase
import Foundation
import XCTest

/// The commands behind the embedded miniature (issue 8): init-pipeline, train-vae, assemble, recipe.
final class RecipeCommandTests: XCTestCase, CommandRunning {
    static let configs = URL(fileURLWithPath: CommandTests.fixtures).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("recipes/configs/tiny").path

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    func initPipeline(_ out: String, seed: Int) throws {
        let r = try run(["init-pipeline", "--configs", Self.configs, "--seed", "\(seed)", "--out", out, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// One model of a pipeline file as a safetensors file with diffusers names (what a part is compared by).
    func model(_ pipeline: String, _ component: String, _ out: String) throws -> Data {
        let r = try run(["convert", pipeline, out, "--format", "safetensors", "--component", component, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try bytes(out)
    }

    func testInitPipelineIsDeterministicForASeed() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try initPipeline(dir + "/a.dginstyle", seed: 7)
        try initPipeline(dir + "/b.dginstyle", seed: 7)
        try initPipeline(dir + "/c.dginstyle", seed: 8)
        XCTAssertEqual(try bytes(dir + "/a.dginstyle"), try bytes(dir + "/b.dginstyle"))
        for name in ["unet", "vae", "text_encoder"] {
            XCTAssertNotEqual(try model(dir + "/a.dginstyle", name, dir + "/a-\(name).safetensors"),
                              try model(dir + "/c.dginstyle", name, dir + "/c-\(name).safetensors"), name)
        }
        // A usable pipeline: it samples (shape and finiteness are checked by the command).
        let s = try run(["sample", "--pipeline", dir + "/a.dginstyle", "--prompt", "road car", "--steps", "2",
                         "--width", "64", "--height", "64", "--out", dir + "/s.png"])
        XCTAssertEqual(s.status, 0, s.stderr)
    }

    func testTrainVAELowersTheReconstructionError() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try initPipeline(dir + "/p.dginstyle", seed: 0)
        for (style, seed) in [("game", 1), ("photo", 2)] {
            let r = try run(["synth", "--out", dir + "/\(style)", "--count", "4", "--size", "128x96", "--style", style, "--seed", "\(seed)"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let r = try run(["train-vae", "--pipeline", dir + "/p.dginstyle", "--data", dir + "/game", "--data", dir + "/photo",
                         "--out", dir + "/vae", "--resolution", "32", "--batch-size", "4", "--steps", "24", "--lr", "2e-3",
                         "--validate-every", "24", "--format", "native", "--checkpoint-every", "12", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let records = try String(contentsOfFile: dir + "/vae/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let errors = records.compactMap { r in (r["reconstruction_l1"] as? Double).map { (r["step"] as! Int, $0) } }
        XCTAssertEqual(errors.map(\.0), [0, 24])
        XCTAssertLessThan(errors[1].1, errors[0].1 * 0.8, "\(errors)")
        let losses = records.compactMap { $0["loss"] as? Double }
        XCTAssertEqual(losses.count, 24)
        XCTAssertLessThan(losses.suffix(4).reduce(0, +), losses.prefix(4).reduce(0, +))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/vae/validation/step-00000024.png"))
        // The trained VAE replaces the pipeline's, and the result still samples.
        let a = try run(["assemble", "--base", dir + "/p.dginstyle", "--vae", dir + "/vae/vae.dginstyle",
                         "--out", dir + "/q.dginstyle", "--format", "native", "--quiet"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(try model(dir + "/q.dginstyle", "vae", dir + "/q-vae.safetensors"),
                       try model(dir + "/vae/vae.dginstyle", "vae", dir + "/t-vae.safetensors"))
        // Resuming a finished run trains nothing and keeps the model.
        let again = try run(["train-vae", "--pipeline", dir + "/p.dginstyle", "--data", dir + "/game", "--data", dir + "/photo",
                             "--out", dir + "/vae", "--resolution", "32", "--batch-size", "4", "--steps", "24", "--lr", "2e-3",
                             "--validate-every", "24", "--format", "native", "--checkpoint-every", "12", "--resume"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("already trained (24 steps)"), again.stdout)
    }

    func testAssembleTakesEachModelFromItsPart() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try initPipeline(dir + "/a.dginstyle", seed: 1)
        try initPipeline(dir + "/b.dginstyle", seed: 2)
        let r = try run(["assemble", "--base", dir + "/a.dginstyle", "--unet", dir + "/b.dginstyle", "--text-encoder", dir + "/b.dginstyle",
                         "--out", dir + "/c", "--format", "diffusers", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for (name, from) in [("unet", "b"), ("text_encoder", "b"), ("vae", "a")] {
            XCTAssertEqual(try model(dir + "/c", name, dir + "/c-\(name).safetensors"),
                           try model(dir + "/\(from).dginstyle", name, dir + "/\(from)-\(name).safetensors"), name)
        }
        let index = try JSONSerialization.jsonObject(with: bytes(dir + "/c/model_index.json")) as! [String: Any]
        XCTAssertEqual(index["_class_name"] as? String, "StableDiffusionPipeline")
        XCTAssertNil(index["controlnet"])
        XCTAssertEqual(try bytes(dir + "/c/tokenizer/vocab.json"), try bytes(Self.configs + "/tokenizer/vocab.json"))

        // A part without the model asked for: one line, nothing written.
        let only = dir + "/unet-only.dginstyle"
        XCTAssertEqual(try run(["convert", dir + "/b.dginstyle", only, "--format", "native", "--component", "unet", "--quiet"]).status, 0)
        let bad = try run(["assemble", "--base", dir + "/a.dginstyle", "--vae", only, "--out", dir + "/d.dginstyle", "--format", "native"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("no vae"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/d.dginstyle"))
    }

    func writeRecipe(_ path: String, _ json: String) throws {
        try json.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func runRecipe(_ arguments: [String], in dir: String) throws -> CommandResult {
        try run(["recipe"] + arguments, in: dir)
    }

    func testRecipeRunsSkipsWhatIsDoneAndRecordsTimes() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeRecipe(dir + "/r.json", """
        {"name": "mini", "description": "test",
         "steps": [
          {"name": "data", "run": ["synth", "--out", "work/data", "--count", "2", "--size", "64x64"], "creates": "work/data"},
          {"name": "init", "run": ["init-pipeline", "--configs", "\(Self.configs)", "--seed", "3", "--out", "work/p.dginstyle", "--quiet"],
           "creates": "work/p.dginstyle"},
          {"name": "vae", "run": ["train-vae", "--pipeline", "work/p.dginstyle", "--data", "work/data", "--out", "work/vae",
                                  "--resolution", "32", "--steps", "2", "--format", "native", "--quiet"],
           "creates": "work/vae/vae.dginstyle"}
         ],
         "outputs": [{"from": "work/vae/vae.dginstyle", "to": "weights/vae.dginstyle"}]}
        """)
        let dry = try runRecipe(["r.json", "--dry-run"], in: dir)
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("3. vae: run dginstyle train-vae"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("--resume"), "training steps resume: \(dry.stdout)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/work"), "a dry run runs nothing")

        let first = try runRecipe(["r.json"], in: dir)
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual(try bytes(dir + "/weights/vae.dginstyle"), try bytes(dir + "/work/vae/vae.dginstyle"))
        let record = try JSONSerialization.jsonObject(with: bytes(dir + "/weights/RECIPES.json")) as! [String: [String: Any]]
        let steps = record["mini"]!["steps"] as! [[String: Any]]
        XCTAssertEqual(steps.map { $0["name"] as! String }, ["data", "init", "vae"])
        XCTAssertTrue(steps.allSatisfy { ($0["seconds"] as? Double ?? -1) >= 0 && $0["skipped"] as? Bool == false })
        XCTAssertTrue(try String(contentsOfFile: dir + "/weights/RECIPES.md", encoding: .utf8).contains("| vae |"))

        // A second run: every step is done; outputs are copied again, earlier times kept.
        try FileManager.default.removeItem(atPath: dir + "/weights/vae.dginstyle")
        let second = try runRecipe(["r.json"], in: dir)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertEqual(second.stdout.components(separatedBy: "skipped").count - 1, 3, second.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/weights/vae.dginstyle"))
        let again = try JSONSerialization.jsonObject(with: bytes(dir + "/weights/RECIPES.json")) as! [String: [String: Any]]
        let kept = again["mini"]!["steps"] as! [[String: Any]]
        XCTAssertEqual(kept.map { $0["seconds"] as? Double }, steps.map { $0["seconds"] as? Double })
    }

    func testRecipeErrorsAreOneLineAndRunNothing() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let step = #"{"run": ["synth", "--out", "d", "--count", "1"], "creates": "d"}"#
        let cases: [(String, String)] = [
            (#"{"name": "x", "steps": [\#(step)], "colour": 1}"#, "unknown key \"colour\""),
            (#"{"name": "x", "steps": [{"run": ["synth", "--out", "d", "--count", "1"], "creates": "d", "resume": true}]}"#, "unknown key \"resume\""),
            (#"{"name": "x", "steps": []}"#, "\"steps\" must be a non-empty array"),
            (#"{"steps": [\#(step)]}"#, "\"name\" must be a non-empty string"),
            (#"{"name": "x", "steps": [\#(step), {"run": ["synth", "--out", "e", "--cuont", "1"], "creates": "e"}]}"#, "step 2"),
            (#"{"name": "x", "requires": ["nowhere/file"], "steps": [\#(step)]}"#, "requires nowhere/file"),
            (#"{"name": "x", "steps": [\#(step)], "outputs": [{"from": "nowhere", "to": "w/x"}]}"#, "output nowhere is missing"),
            ("{not json", "not JSON"),
        ]
        for (i, (text, message)) in cases.enumerated() {
            try writeRecipe(dir + "/r\(i).json", text)
            let r = try runRecipe(["r\(i).json"], in: dir)
            XCTAssertNotEqual(r.status, 0, text)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(message), "\(text): \(r.stderr)")
            if i < 6 { XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/d"), "\(text) ran a step") }
        }
        let missing = try runRecipe(["nope.json"], in: dir)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("nope.json"), missing.stderr)
    }

    /// The shipped recipes parse, and every step's arguments are valid.
    func testShippedRecipesParse() throws {
        let root = URL(fileURLWithPath: Self.configs).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        for name in ["tiny-vae", "tiny-base-unet", "tiny-source-unet", "tiny-controlnet"] {
            let r = try runRecipe(["recipes/\(name).json", "--dry-run"], in: root)
            XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
        }
    }
}
