import Foundation
import XCTest

/// The training commands as a user runs them, on the tiny pipeline and a small synthetic dataset.
final class TrainingCommandTests: XCTestCase, CommandRunning {
    static let pipeline = CommandTests.fixtures + "/sd-tiny/tiny-sd"

    func dataset(_ dir: String) throws -> String {
        let data = dir + "/data"
        let r = try run(["synth", "--out", data, "--count", "3", "--size", "128x96", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return data
    }

    func trainArguments(data: String, out: String, steps: Int) -> [String] {
        ["train-controlnet", "--pipeline", Self.pipeline, "--data", data, "--out", out, "--resolution", "64",
         "--steps", "\(steps)", "--checkpoint-every", "1", "--keep", "2", "--grad-accum", "2", "--lr", "1e-3",
         "--lr-scheduler", "cosine", "--rcs", "--empty-prompt-prob", "0.3", "--seed", "3", "--quiet"]
    }

    /// kill -9 at random moments (mid-step, mid-checkpoint, mid-export), resume, repeat: the
    /// final ControlNet is the uninterrupted run's, byte for byte.
    func testKillNineAndResumeGivesTheUninterruptedWeights() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataset(dir)
        let steps = 8
        let straight = try run(trainArguments(data: data, out: dir + "/straight", steps: steps))
        XCTAssertEqual(straight.status, 0, straight.stderr)

        var generator = SystemRandomNumberGenerator()
        let out = dir + "/killed"
        var kills = 0
        var logs: [String] = []
        for round in 0..<12 {
            // Not --quiet: the log says where each resumed run started.
            let p = try process(trainArguments(data: data, out: out, steps: steps).filter { $0 != "--quiet" } + (round == 0 ? [] : ["--resume"]))
            let log = dir + "/round-\(round).log"
            FileManager.default.createFile(atPath: log, contents: nil)
            p.standardError = FileHandle(forWritingAtPath: log)
            logs.append(log)
            try p.run()
            // Let it get somewhere: past model loading, into the steps and checkpoint writes. The
            // first round strikes as soon as a checkpoint exists (however slow or fast the machine),
            // so that some resume has one to start from; later rounds strike at random moments.
            if round == 0 {
                let deadline = Date().addingTimeInterval(180)
                while p.isRunning, Date() < deadline,
                      ((try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? [])
                          .allSatisfy({ !$0.hasPrefix("checkpoint-") || !$0.hasSuffix(".dginstyle") }) {
                    usleep(2_000)
                }
            } else {
                usleep(UInt32.random(in: 200_000...1_200_000, using: &generator))
            }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            // It may have finished just before the signal.
            guard p.terminationReason == .uncaughtSignal else {
                XCTAssertEqual(p.terminationStatus, 0)
                break
            }
            kills += 1
            if kills >= 4 { break }
        }
        let last = try run(trainArguments(data: data, out: out, steps: steps) + ["--resume"])
        XCTAssertEqual(last.status, 0, last.stderr)
        XCTAssertGreaterThan(kills, 0, "the run finished before it could be killed")
        // Some kill must have come after a checkpoint, so that resuming had something to resume.
        let resumedFrom = try logs.compactMap { path -> Int? in
            let text = try String(contentsOfFile: path, encoding: .utf8)
            guard let r = text.range(of: "resumed from step ") else { return nil }
            return Int(text[r.upperBound...].prefix { $0.isNumber })
        }
        XCTAssertTrue(resumedFrom.contains { $0 > 0 }, "no run resumed from a checkpoint: \(resumedFrom)")
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/straight/controlnet/diffusion_pytorch_model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: out + "/controlnet/diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(a, b, "weights after \(kills) kills differ from the uninterrupted run's")
        // Every step logged once, in order.
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let logged = lines.compactMap { line -> Int? in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], o["loss"] != nil else { return nil }
            return o["step"] as? Int
        }
        XCTAssertEqual(logged, Array(1...steps))
        let names = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints").sorted()
        XCTAssertEqual(names, ["checkpoint-00000007.dginstyle", "checkpoint-00000008.dginstyle"])
    }

    /// finetune-unet, then train-controlnet on its U^S with Style Swap validation images.
    func testFinetuneThenTrainWithStyleSwapValidation() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataset(dir)
        // Zoom 0.5 (the far end of the default 0.5-2, DGInStyle's DreamBooth ratios) needs a short side of
        // twice the resolution: the 128x96 renders say so in one line; 0.7-2 fits them (64 / 96 = 0.667).
        let small = try run(["finetune-unet", "--pipeline", Self.pipeline, "--images", data, "--out", dir + "/small",
                             "--zoom", "0.5", "--resolution", "64", "--steps", "1", "--quiet"])
        XCTAssertNotEqual(small.status, 0)
        XCTAssertTrue(small.stderr.contains("smaller than the 64x64 crop; --zoom needs a lower bound of at least 0.667"), small.stderr)
        let f = try run(["finetune-unet", "--pipeline", Self.pipeline, "--images", data, "--out", dir + "/us", "--zoom", "0.7,2",
                                "--resolution", "64", "--steps", "2", "--lr", "1e-4", "--report-to", "none", "--quiet"])
        XCTAssertEqual(f.status, 0, f.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/us/logs"), "--report-to none writes no TensorBoard files")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/us/unet/diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/us/loss.svg"))
        let t = try run(["train-controlnet", "--pipeline", Self.pipeline, "--unet", dir + "/us/unet", "--data", data,
                                "--out", dir + "/cn", "--resolution", "64", "--steps", "2", "--validate-every", "2",
                                "--validation-steps", "2", "--frozen-dtype", "bf16", "--gradient-checkpointing", "--quiet"])
        XCTAssertEqual(t.status, 0, t.stderr)
        for name in ["controlnet/config.json", "validation/step-00000000.png", "validation/step-00000002.png", "metrics.jsonl"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/cn/" + name), name)
        }
        let metrics = try String(contentsOfFile: dir + "/cn/metrics.jsonl", encoding: .utf8)
        XCTAssertTrue(metrics.contains("mask_alignment_us") && metrics.contains("mask_alignment_up"), metrics)
        // TensorBoard by default: one event file holding the two validation images (their PNG
        // bytes) and the alignment numbers (DGTrainingTests reads the events back).
        let logs = try FileManager.default.contentsOfDirectory(atPath: dir + "/cn/logs")
        XCTAssertEqual(logs.count, 1, "\(logs)")
        let events = try Data(contentsOf: URL(fileURLWithPath: dir + "/cn/logs/" + logs[0]))
        XCTAssertTrue(logs[0].hasPrefix("events.out.tfevents."))
        var pngs = 0, from = events.startIndex
        while let r = events.range(of: Data([0x89, 0x50, 0x4E, 0x47]), in: from..<events.endIndex) { pngs += 1; from = r.upperBound }
        XCTAssertEqual(pngs, 2)
        XCTAssertNotNil(events.range(of: Data("validation/mask_alignment_us".utf8)))
        // The trained ControlNet loads as a model.
        let i = try run(["inspect", dir + "/cn/controlnet"])
        XCTAssertEqual(i.status, 0, i.stderr)
        XCTAssertTrue(i.stdout.contains("ControlNetModel"), i.stdout)
    }

    /// A diverging run (absurd learning rate) stops at the first non-finite loss, exit status 1,
    /// one line naming the step and the last good checkpoint; nothing is written after it.
    func testDivergenceStopsTheRun() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataset(dir)
        let r = try run(["train-controlnet", "--pipeline", Self.pipeline, "--data", data, "--out", dir + "/run", "--resolution", "64",
                         "--steps", "6", "--checkpoint-every", "1", "--lr", "1e30", "--quiet"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("stopped at step 2: the loss is"), r.stderr)
        XCTAssertTrue(r.stderr.contains("checkpoint-00000001.dginstyle"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/run/checkpoints"), ["checkpoint-00000001.dginstyle"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run/controlnet"))
    }

    func testBadInputStopsWithOneLineAndNoOutput() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try run(["train-controlnet", "--pipeline", Self.pipeline, "--data", dir + "/nope", "--out", dir + "/out", "--steps", "1"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(dir + "/nope"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"))
        let p = try run(["finetune-unet", "--pipeline", dir + "/missing", "--images", dir, "--out", dir + "/out2", "--steps", "1"])
        XCTAssertEqual(p.status, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out2"))
        let s = try run(["train-controlnet", "--pipeline", Self.pipeline, "--data", dir, "--out", dir + "/out3", "--steps", "0"])
        XCTAssertNotEqual(s.status, 0)
    }
}
