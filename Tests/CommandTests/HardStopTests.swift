import DGBase
import DGCheckpoint
import Foundation
import XCTest

/// Nothing lost when a process dies or a write fails: every command that writes a checkpoint, a
/// pipeline or a dataset is killed with SIGKILL at random moments, run out of disk, pointed at a
/// read-only folder, at a file where a folder belongs (and the reverse), and at paths with spaces
/// and non-ASCII names. The destination must always be the old one byte for byte or the complete
/// new one; what a killed run leaves is removed by the next run, which says so.
///
/// `DGINSTYLE_KILL_ROUNDS` (default 5) sets the kills per command; tools/kill-soak.sh raises it.
final class HardStopTests: XCTestCase, CommandRunning {
    static let tiny = CommandTests.fixtures + "/sd-tiny"
    static let lora = CommandTests.fixtures + "/lora/attn.kohya.safetensors"
    static let rounds = Int(ProcessInfo.processInfo.environment["DGINSTYLE_KILL_ROUNDS"] ?? "") ?? 5
    static let seed = UInt64(ProcessInfo.processInfo.environment["DGINSTYLE_KILL_SEED"] ?? "") ?? 17

    // MARK: - What a path holds

    /// Every file under `path` (or the file itself) as relative path -> XXH64 of its bytes; nil
    /// when nothing is there. Temporaries (dot names) inside a folder count, so a stray one shows.
    func snapshot(_ path: String) -> [String: UInt64]? {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return nil }
        func digest(_ p: String) -> UInt64 {
            let d = fm.contents(atPath: p) ?? Data()
            return d.withUnsafeBytes { XXH64.hash($0) } ^ UInt64(d.count)
        }
        guard isDir.boolValue else { return ["": digest(path)] }
        var out: [String: UInt64] = [:]
        for rel in (fm.subpaths(atPath: path) ?? []) {
            var d: ObjCBool = false
            if fm.fileExists(atPath: path + "/" + rel, isDirectory: &d), !d.boolValue { out[rel] = digest(path + "/" + rel) }
        }
        return out
    }

    /// Temporaries of `name` left in `dir`.
    func leftovers(_ dir: String, _ name: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("." + name + ".tmp-") }
    }

    func copy(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    // MARK: - SIGKILL at random moments

    struct KillTally: CustomStringConvertible {
        var killed = 0, finished = 0, sawOld = 0, sawNew = 0, leftTemporaries = 0
        var description: String { "\(killed) killed (\(leftTemporaries) times a temporary was left), \(finished) finished first; destination old \(sawOld)x, new \(sawNew)x" }
    }

    /// Writes `dst` with `newArgs` after it holds what `oldArgs` wrote, killing the writer after
    /// a delay drawn from a seeded generator over [0, 1.1 x the uninterrupted run's time], `rounds`
    /// times; then one uninterrupted run must clean up and produce the new destination.
    @discardableResult
    func killWhileWriting(_ label: String, dst: String, oldArgs: [String], newArgs: [String], seed: UInt64,
                          inspect: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> KillTally {
        let fm = FileManager.default
        let parent = URL(fileURLWithPath: dst).deletingLastPathComponent().path
        let name = URL(fileURLWithPath: dst).lastPathComponent
        let work = parent + "/.." + "/\(label)-reference"
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        // The new destination, written uninterrupted elsewhere, and how long that takes.
        let reference = work + "/" + name
        let start = Date()
        var r = try run(newArgs.map { $0 == dst ? reference : $0 })
        let duration = Date().timeIntervalSince(start)
        XCTAssertEqual(r.status, 0, "\(label): \(r.stderr)", file: file, line: line)
        let new = try XCTUnwrap(snapshot(reference), file: file, line: line)
        r = try run(oldArgs)
        XCTAssertEqual(r.status, 0, "\(label): \(r.stderr)", file: file, line: line)
        let old = try XCTUnwrap(snapshot(dst), file: file, line: line)
        XCTAssertNotEqual(old, new, "\(label): old and new must differ for the test to mean anything", file: file, line: line)
        let pristine = work + "/old"
        try copy(dst, pristine)

        var rng = SplitMix64(seed: seed)
        var tally = KillTally()
        for round in 0..<Self.rounds {
            if snapshot(dst) != old { try copy(pristine, dst) }
            let p = try process(newArgs)
            let delay = Double(rng.next() >> 11) / Double(1 << 53) * duration * 1.1
            try p.run()
            usleep(UInt32(delay * 1e6))
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { tally.killed += 1 } else {
                tally.finished += 1
                XCTAssertEqual(p.terminationStatus, 0, "\(label) round \(round)", file: file, line: line)
            }
            let now = snapshot(dst)
            if now == old { tally.sawOld += 1 } else if now == new { tally.sawNew += 1 } else {
                XCTFail("\(label) round \(round) (killed after \(delay) s): the destination is neither the old nor the new one", file: file, line: line)
            }
            if !leftovers(parent, name).isEmpty { tally.leftTemporaries += 1 }
        }
        // The next run removes what the killed ones left and says so.
        let left = leftovers(parent, name)
        r = try run(newArgs)
        XCTAssertEqual(r.status, 0, "\(label): \(r.stderr)", file: file, line: line)
        if !left.isEmpty { XCTAssertTrue(r.stderr.contains("left by a killed run"), "\(label): \(left) removed silently: \(r.stderr)", file: file, line: line) }
        XCTAssertEqual(leftovers(parent, name), [], "\(label)", file: file, line: line)
        XCTAssertEqual(snapshot(dst), new, "\(label)", file: file, line: line)
        if inspect {
            let i = try run(["inspect", dst])
            XCTAssertEqual(i.status, 0, "\(label): \(i.stderr)", file: file, line: line)
        }
        print("kill \(label): \(tally) in \(Self.rounds) rounds, run \(String(format: "%.2f", duration)) s")
        return tally
    }

    func testKilledConvertSwapAssembleAndLoRAMergeLeaveTheOldOrTheNew() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let sd = Self.tiny + "/tiny-sd", cn = Self.tiny + "/tiny-controlnet", lora = Self.lora
        func convert(_ dst: String, _ format: String, _ extra: [String] = []) -> ([String], [String]) {
            let a = ["convert", sd, dst, "--format", format, "--overwrite", "--quiet"] + extra
            return (a + ["--dtype", "f16"], a)
        }
        var total = KillTally()
        for (k, (label, dst, args)) in [
            ("convert-native", out + "/sd.dginstyle", convert(out + "/sd.dginstyle", "native")),
            ("convert-safetensors", out + "/unet.safetensors", convert(out + "/unet.safetensors", "safetensors", ["--component", "unet"])),
            ("convert-ldm", out + "/sd-ldm.safetensors", convert(out + "/sd-ldm.safetensors", "ldm")),
            ("convert-diffusers", out + "/sd-diffusers", convert(out + "/sd-diffusers", "diffusers")),
            ("swap", out + "/swapped", (["swap", "--base", sd, "--controlnet", cn, "--out", out + "/swapped", "--overwrite", "--quiet", "--dtype", "f16"],
                                       ["swap", "--base", sd, "--controlnet", cn, "--out", out + "/swapped", "--overwrite", "--quiet"])),
            ("assemble", out + "/assembled.dginstyle",
             (["assemble", "--base", sd, "--controlnet", cn, "--out", out + "/assembled.dginstyle", "--format", "native", "--overwrite", "--quiet", "--dtype", "bf16"],
              ["assemble", "--base", sd, "--controlnet", cn, "--out", out + "/assembled.dginstyle", "--format", "native", "--overwrite", "--quiet"])),
            ("lora-merge", out + "/merged",
             (["lora", "merge", "--base", sd, "--lora", lora, "--scale", "0.5", "--out", out + "/merged", "--overwrite", "--quiet", "--dtype", "f16"],
              ["lora", "merge", "--base", sd, "--lora", lora, "--out", out + "/merged", "--overwrite", "--quiet"])),
        ].enumerated() {
            let t = try killWhileWriting(label, dst: dst, oldArgs: args.0, newArgs: args.1, seed: Self.seed &+ UInt64(k))
            total.killed += t.killed; total.finished += t.finished; total.leftTemporaries += t.leftTemporaries
            total.sawOld += t.sawOld; total.sawNew += t.sawNew
        }
        XCTAssertGreaterThan(total.killed, 0)
        print("kill convert/swap/assemble/lora merge total: \(total)")
    }

    func testKilledSynthLeavesTheOldOrTheNewDataset() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dst = dir + "/out/data"
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: true)
        let a = ["synth", "--out", dst, "--count", "60", "--size", "256x128", "--overwrite"]
        let t = try killWhileWriting("synth", dst: dst, oldArgs: a + ["--seed", "1"], newArgs: a + ["--seed", "2"], seed: Self.seed &+ 100, inspect: false)
        XCTAssertGreaterThan(t.killed, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dst + "/images").count, 60)
    }

    /// A PNG is complete when it ends with its IEND chunk.
    func isCompletePNG(_ path: String) -> Bool {
        guard let d = FileManager.default.contents(atPath: path), d.count > 20 else { return false }
        return Array(d.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            && Array(d.suffix(8)) == [0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]
    }

    /// generate fills its folder item by item: after any kill every file in it is complete and
    /// every record's files exist; the next run finishes the count and removes the temporaries.
    func testKilledGenerateKeepsEveryWrittenItemComplete() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/synth", "--count", "2", "--size", "192x144", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = dir + "/gen"
        let count = 8
        func args(_ out: String) -> [String] {
            ["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", Self.tiny + "/tiny-controlnet", "--labels", dir + "/synth",
             "--out", out, "--count", "\(count)", "--steps", "2", "--resolution", "128", "--no-mrlf", "--quiet"]
        }
        let start = Date()
        r = try run(args(dir + "/straight"))
        XCTAssertEqual(r.status, 0, r.stderr)
        let duration = Date().timeIntervalSince(start)
        var rng = SplitMix64(seed: Self.seed &+ 200)
        var killed = 0, temporaries = 0
        for round in 0..<max(2, Self.rounds / 2) {
            let p = try process(args(out))
            try p.run()
            // Each resumed run has less left to do: strike within the first half of a whole run.
            usleep(UInt32(Double(rng.next() >> 11) / Double(1 << 53) * duration * 0.5 * 1e6))
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 }
            for sub in ["images", "labels", "vis", "records"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: out + "/" + sub)) ?? [] {
                    if name.hasPrefix(".") { temporaries += 1; continue }
                    if sub != "records" { XCTAssertTrue(isCompletePNG(out + "/\(sub)/\(name)"), "round \(round): \(sub)/\(name) is partial") }
                }
            }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: out + "/records")) ?? [] where !name.hasPrefix(".") {
                let stem = String(name.dropLast(5))
                XCTAssertTrue(isCompletePNG(out + "/images/\(stem).png"), "round \(round): record \(name) without its image")
                XCTAssertTrue(isCompletePNG(out + "/labels/\(stem)_labelTrainIds.png"), "round \(round): record \(name) without its labels")
            }
        }
        r = try run(args(out))
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = try String(contentsOfFile: out + "/generation.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(snapshot(out), snapshot(dir + "/straight"), "killed and finished differs from the uninterrupted run")
        XCTAssertEqual(lines.count, count)
        for sub in ["images", "labels", "vis", "records"] {
            let names = try FileManager.default.contentsOfDirectory(atPath: out + "/" + sub)
            XCTAssertEqual(names.filter { $0.hasPrefix(".") }, [], "\(sub): temporaries left after the finishing run")
            XCTAssertEqual(names.count, count, sub)
        }
        XCTAssertGreaterThan(killed, 0, "generate finished before any kill")
        print("kill generate: \(killed) killed, \(temporaries) temporaries seen after kills, \(count) items complete after the last run")
    }

    /// Every checkpoint file a killed training run leaves opens as a model; the resumed run
    /// removes the temporary files and says so.
    func testKilledTrainingLeavesOnlyCompleteCheckpoints() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = try run(["synth", "--out", dir + "/data", "--count", "3", "--size", "128x96", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = dir + "/run"
        func arguments(_ out: String) -> [String] {
            ["train-vae", "--pipeline", Self.tiny + "/tiny-sd", "--data", dir + "/data", "--out", out, "--resolution", "64",
             "--steps", "16", "--checkpoint-every", "1", "--keep", "3", "--seed", "3", "--quiet"]
        }
        let args = arguments(out)
        let start = Date()
        r = try run(arguments(dir + "/straight"))
        XCTAssertEqual(r.status, 0, r.stderr)
        let duration = Date().timeIntervalSince(start)
        var rng = SplitMix64(seed: Self.seed &+ 300)
        var killed = 0, leftTemporaries = 0, checked = 0
        for round in 0..<max(2, Self.rounds / 2) {
            let p = try process(args + (round == 0 ? [] : ["--resume"]))
            try p.run()
            usleep(UInt32(Double(rng.next() >> 11) / Double(1 << 53) * duration * 0.6 * 1e6))
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 } else { break }
            let names = (try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []
            if names.contains(where: { $0.hasPrefix(".") }) { leftTemporaries += 1 }
            for name in names where !name.hasPrefix(".") {
                let i = try run(["inspect", out + "/checkpoints/" + name])
                XCTAssertEqual(i.status, 0, "round \(round): \(name) does not open: \(i.stderr)")
                checked += 1
            }
        }
        let before = (try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []
        r = try run(args.filter { $0 != "--quiet" } + ["--resume"])
        XCTAssertEqual(r.status, 0, r.stderr)
        if before.contains(where: { $0.hasPrefix(".") }) { XCTAssertTrue(r.stderr.contains("left in"), r.stderr) }
        let after = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")
        XCTAssertEqual(after.filter { $0.hasPrefix(".") }, [])
        XCTAssertEqual(try run(["inspect", out + "/vae"]).status, 0)
        XCTAssertEqual(snapshot(out + "/vae"), snapshot(dir + "/straight/vae"), "the resumed VAE differs from the uninterrupted run's")
        XCTAssertGreaterThan(killed, 0)
        print("kill train-vae: \(killed) killed, \(leftTemporaries) left a temporary checkpoint, \(checked) checkpoint files opened")
    }

    // MARK: - Stale temporaries

    /// A temporary whose writer is dead goes; one whose writer lives (a concurrent shard) stays;
    /// a folder moved aside whose destination is missing is put back.
    func testAbandonedTemporariesAreRemovedOnlyWhenTheirWriterIsDead() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let live = Process()
        live.executableURL = URL(fileURLWithPath: "/bin/sleep")
        live.arguments = ["30"]
        try live.run()
        defer { live.terminate() }
        let fm = FileManager.default
        let d = dead.processIdentifier, l = live.processIdentifier
        fm.createFile(atPath: dir + "/.a b ü.dginstyle.tmp-\(d)-42", contents: Data([1]))
        fm.createFile(atPath: dir + "/.a.png.tmp-\(l)-7", contents: Data([1]))
        try fm.createDirectory(atPath: dir + "/.folder.tmp-\(d)/unet", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/.model.tmp-\(d)-9.old", withIntermediateDirectories: true)
        fm.createFile(atPath: dir + "/.model.tmp-\(d)-9.old/config.json", contents: Data([2]))
        fm.createFile(atPath: dir + "/.hidden", contents: Data([3]))
        fm.createFile(atPath: dir + "/x.tmp-\(d)-1", contents: Data([4]))  // not a dot name: a user's file
        let notes = AbandonedTemporaries.remove(in: dir)
        XCTAssertEqual(notes.count, 3, "\(notes)")
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir).sorted(), [".a.png.tmp-\(l)-7", ".hidden", "model", "x.tmp-\(d)-1"])
        XCTAssertEqual(fm.contents(atPath: dir + "/model/config.json"), Data([2]))
    }

    // MARK: - Full disk, file-size limit, read-only

    func sh(_ command: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// A tmpfs of `size` at `dir`, or a skip where mounting is not allowed (not root, no
    /// CAP_SYS_ADMIN in the container).
    func mountTmpfs(_ dir: String, size: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard sh("mount -t tmpfs -o size=\(size) tmpfs '\(dir)'") == 0 else { throw XCTSkip("cannot mount a tmpfs here (needs root)") }
    }

    /// Fills `dir`'s filesystem so that about `free` bytes remain.
    func fill(_ dir: String, leaving free: Int) throws {
        let available = try XCTUnwrap(freeSpace(dir))
        guard available > free else { return }
        FileManager.default.createFile(atPath: dir + "/filler", contents: Data(count: available - free))
    }

    func assertOneLineError(_ r: CommandResult, naming path: String, _ words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("note:") }
        XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(path), "\(path) not named: \(r.stderr)", file: file, line: line)
        for w in words { XCTAssertTrue(r.stderr.contains(w), "'\(w)' missing: \(r.stderr)", file: file, line: line) }
    }

    /// Each writer on a full tmpfs: one line naming the destination and the free space, status
    /// 1, the old destination byte for byte, no temporary left.
    func testFullDiskLeavesTheDestinationAndNoTemporaries() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/disk"
        try mountTmpfs(disk, size: "16m")
        defer { _ = sh("umount '\(disk)'") }
        let sd = Self.tiny + "/tiny-sd", cn = Self.tiny + "/tiny-controlnet"
        let seed = dir + "/seed"
        try FileManager.default.createDirectory(atPath: seed, withIntermediateDirectories: true)
        // Old destinations, small (f16 ControlNet), made off the tmpfs and copied in.
        XCTAssertEqual(try run(["convert", cn, seed + "/old.dginstyle", "--format", "native", "--dtype", "f16", "--quiet"]).status, 0)
        XCTAssertEqual(try run(["convert", cn, seed + "/old-folder", "--format", "diffusers", "--dtype", "f16", "--quiet"]).status, 0)
        XCTAssertEqual(try run(["synth", "--out", seed + "/old-data", "--count", "2", "--size", "64x64"]).status, 0)
        XCTAssertEqual(try run(["synth", "--out", seed + "/labels", "--count", "2", "--size", "192x144", "--seed", "3"]).status, 0)
        let cases: [(String, [String], String, Int)] = [
            ("native", ["convert", sd, disk + "/x", "--format", "native", "--overwrite", "--quiet"], "old.dginstyle", 1 << 20),
            ("safetensors", ["convert", sd, disk + "/x", "--format", "safetensors", "--component", "unet", "--overwrite", "--quiet"], "old.dginstyle", 1 << 20),
            ("ldm", ["convert", sd, disk + "/x", "--format", "ldm", "--overwrite", "--quiet"], "old.dginstyle", 1 << 20),
            ("diffusers", ["convert", sd, disk + "/x", "--format", "diffusers", "--overwrite", "--quiet"], "old-folder", 1 << 20),
            ("swap", ["swap", "--base", sd, "--controlnet", cn, "--out", disk + "/x", "--overwrite", "--quiet"], "old-folder", 1 << 20),
            ("assemble", ["assemble", "--base", sd, "--controlnet", cn, "--out", disk + "/x", "--format", "native", "--overwrite", "--quiet"], "old.dginstyle", 1 << 20),
            ("lora-merge", ["lora", "merge", "--base", sd, "--lora", Self.lora, "--out", disk + "/x", "--overwrite", "--quiet"], "old-folder", 1 << 20),
            ("synth", ["synth", "--out", disk + "/x", "--count", "100", "--size", "256x128", "--overwrite"], "old-data", 256 << 10),
        ]
        for (label, args, old, free) in cases {
            _ = sh("rm -rf '\(disk)'/* '\(disk)'/.[!.]*")
            try copy(seed + "/" + old, disk + "/x")
            let before = snapshot(disk + "/x")
            try fill(disk, leaving: free)
            let r = try run(args)
            assertOneLineError(r, naming: disk + "/x", ["No space left on device", "free in \(disk))"])
            XCTAssertEqual(snapshot(disk + "/x"), before, "\(label): the old destination changed")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: disk).sorted(), ["filler", "x"], "\(label): temporaries left")
            print("full disk \(label): \(r.stderr.trimmingCharacters(in: .newlines))")
        }
        // generate: items already written stay complete, the one that failed leaves nothing.
        _ = sh("rm -rf '\(disk)'/* '\(disk)'/.[!.]*")
        try fill(disk, leaving: 96 << 10)
        var r = try run(["generate", "--pipeline", sd, "--controlnet", cn, "--labels", seed + "/labels", "--out", disk + "/gen",
                         "--count", "3", "--steps", "2", "--resolution", "128", "--no-mrlf", "--quiet"])
        assertOneLineError(r, naming: disk + "/gen", ["No space left on device", "free in \(disk)/gen"])
        for sub in ["images", "labels", "vis", "records"] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: disk + "/gen/" + sub)) ?? [] {
                XCTAssertFalse(name.hasPrefix("."), "generate left \(sub)/\(name)")
                if sub != "records" { XCTAssertTrue(isCompletePNG(disk + "/gen/\(sub)/\(name)"), "\(sub)/\(name) is partial") }
            }
        }
        print("full disk generate: \(r.stderr.trimmingCharacters(in: .newlines))")
        // A training checkpoint.
        _ = sh("rm -rf '\(disk)'/* '\(disk)'/.[!.]*")
        r = try run(["synth", "--out", disk + "/data", "--count", "3", "--size", "128x96", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.stderr)
        try fill(disk, leaving: 1 << 20)
        r = try run(["train-vae", "--pipeline", sd, "--data", disk + "/data", "--out", disk + "/run", "--resolution", "64",
                     "--steps", "2", "--checkpoint-every", "1", "--quiet"])
        assertOneLineError(r, naming: disk + "/run/checkpoints/checkpoint-00000001.dginstyle", ["No space left on device", "free in"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: disk + "/run/checkpoints"), [])
        print("full disk train-vae: \(r.stderr.trimmingCharacters(in: .newlines))")
    }

    /// `ulimit -f`: write() returns EFBIG (SIGXFSZ is ignored) and the error says so.
    func testFileSizeLimitIsAnErrorNotASignal() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bin = try binary().path
        let dst = dir + "/big.dginstyle"
        let r = try run(["-c", "ulimit -f 2048; exec \"$0\" \"$@\"", bin, "convert", Self.tiny + "/tiny-sd", dst, "--format", "native", "--quiet"], shell: true)
        assertOneLineError(r, naming: dst, ["File too large", "ulimit -f"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    func run(_ arguments: [String], shell: Bool) throws -> CommandResult {
        let p = try process(arguments)
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        return try collect(p)
    }

    func testReadOnlyDestination() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/ro"
        try mountTmpfs(disk, size: "16m")
        defer { _ = sh("umount '\(disk)'") }
        let cn = Self.tiny + "/tiny-controlnet"
        XCTAssertEqual(try run(["convert", cn, disk + "/old.dginstyle", "--format", "native", "--dtype", "f16", "--quiet"]).status, 0)
        XCTAssertEqual(try run(["convert", cn, disk + "/old-folder", "--format", "diffusers", "--dtype", "f16", "--quiet"]).status, 0)
        XCTAssertEqual(sh("mount -o remount,ro '\(disk)'"), 0)
        let before = snapshot(disk)
        for (args, dst) in [
            (["convert", cn, disk + "/old.dginstyle", "--format", "native", "--overwrite", "--quiet"], disk + "/old.dginstyle"),
            (["convert", cn, disk + "/new.dginstyle", "--format", "native", "--quiet"], disk + "/new.dginstyle"),
            (["convert", cn, disk + "/old-folder", "--format", "diffusers", "--overwrite", "--quiet"], disk + "/old-folder"),
            (["synth", "--out", disk + "/data", "--count", "2", "--size", "64x64"], disk + "/data"),
        ] {
            let r = try run(args)
            assertOneLineError(r, naming: dst, ["Read-only file system"])
            print("read-only: \(r.stderr.trimmingCharacters(in: .newlines))")
        }
        XCTAssertEqual(snapshot(disk), before)
    }

    /// A file where a folder is expected and the reverse: refused before any work, the existing
    /// thing untouched.
    func testFileWhereAFolderIsExpectedAndTheReverse() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cn = Self.tiny + "/tiny-controlnet"
        let fm = FileManager.default
        fm.createFile(atPath: dir + "/a file", contents: Data("keep".utf8))
        try fm.createDirectory(atPath: dir + "/a folder", withIntermediateDirectories: true)
        fm.createFile(atPath: dir + "/a folder/mine.txt", contents: Data("keep".utf8))
        XCTAssertEqual(try run(["synth", "--out", dir + "/labels", "--count", "1", "--size", "64x64"]).status, 0)
        let before = snapshot(dir)
        for (args, dst, words) in [
            (["convert", cn, dir + "/a folder", "--format", "native", "--overwrite", "--quiet"], dir + "/a folder", ["is a folder"]),
            (["convert", cn, dir + "/a folder", "--format", "safetensors", "--overwrite", "--quiet"], dir + "/a folder", ["is a folder"]),
            (["convert", cn, dir + "/a file", "--format", "diffusers", "--overwrite", "--quiet"], dir + "/a file", ["is a file"]),
            (["convert", cn, dir + "/a file/x.dginstyle", "--format", "native", "--quiet"], dir + "/a file", []),
            (["synth", "--out", dir + "/a file", "--count", "2", "--size", "64x64", "--overwrite"], dir + "/a file", ["not a folder"]),
            (["generate", "--pipeline", Self.tiny + "/tiny-sd", "--controlnet", cn, "--labels", dir + "/labels", "--out", dir + "/a file",
              "--count", "1", "--steps", "1", "--resolution", "64"], dir + "/a file", ["not a folder"]),
        ] {
            let r = try run(args)
            assertOneLineError(r, naming: dst, words)
            print("file/folder: \(r.stderr.trimmingCharacters(in: .newlines))")
        }
        XCTAssertEqual(snapshot(dir), before)
    }

    /// Spaces and non-ASCII characters in every part of the path.
    func testPathsWithSpacesAndNonASCII() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = dir + "/données d'été/模型 ü"
        let cn = Self.tiny + "/tiny-controlnet"
        for (args, dst) in [
            (["convert", cn, base + "/ControlNet ñ.dginstyle", "--format", "native", "--quiet"], base + "/ControlNet ñ.dginstyle"),
            (["convert", cn, base + "/ControlNet ñ", "--format", "diffusers", "--quiet"], base + "/ControlNet ñ"),
            (["convert", cn, base + "/ControlNet ñ.safetensors", "--format", "safetensors", "--quiet"], base + "/ControlNet ñ.safetensors"),
        ] {
            var r = try run(args)
            XCTAssertEqual(r.status, 0, r.stderr)
            r = try run(["inspect", dst])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("ControlNetModel"), r.stdout)
            r = try run(args + ["--overwrite"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        var r = try run(["synth", "--out", base + "/scènes 1", "--count", "2", "--size", "64x64"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["synth", "--out", base + "/scènes 1", "--count", "3", "--size", "64x64", "--overwrite"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: base + "/scènes 1/images").count, 3)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: base).filter { $0.hasPrefix(".") }, [])
    }
}
