import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGLayers
import DGModels
import Foundation

// Fuzz targets for every parser of outside input. tools/fuzz.sh builds this with
// -sanitize=fuzzer,address -DDGFUZZ (libFuzzer supplies main and calls LLVMFuzzerTestOneInput);
// the plain build compiles it too, without sanitizers, as a replayer
// (`DGFuzz TARGET FILE...`), so the harness is type-checked by every build and cannot rot.
//
// A target is one function from the input bytes that must return or throw, never crash, plus
// a corpus folder Fuzz/corpus/<name>/. Errors thrown are the parsers doing their job.

let targets: [String: ([UInt8]) throws -> Void] = [
    "safetensors": fuzzSafeTensors,
    "native": fuzzNative,
    "json": fuzzJSON,
    "png": fuzzPNG,
    "tokenizer": fuzzTokenizer,
    "recipe": fuzzRecipe,
    "genfile": fuzzGenFile,
    "ldmkeys": fuzzLDMKeys,
    "pickle": fuzzPickle,
    "lora": fuzzLoRA,
]

// MARK: targets

/// A safetensors file: header, offsets, then every tensor read (dtype conversion included).
func fuzzSafeTensors(_ bytes: [UInt8]) throws {
    let path = try scratch(bytes, "input.safetensors")
    let file = try SafeTensorsFile(path: path)
    for e in file.entries {
        _ = try file.byteRange(e.name)
        _ = try file.tensor(e.name)
    }
}

/// A PyTorch checkpoint (torch.save zip + pickle): the zip directory, the pickle machine and its
/// allow-list, the storages and views, then every tensor read.
func fuzzPickle(_ bytes: [UInt8]) throws {
    let path = try scratch(bytes, "input.ckpt")
    let file = try openTensorFile(path: path)
    for e in file.entries { _ = try file.tensor(e.name) }
}

/// A native file. When the prologue's header checksum is zero (as in the seeds), every checksum
/// is made right first — each tensor's and file's, then the header's: otherwise nearly every
/// mutation dies at a checksum and the index, the regions and the zstd frames behind it are
/// never reached. A nonzero checksum is left as it is, so the checks themselves stay fuzzed.
func fuzzNative(_ bytes: [UInt8]) throws {
    let path = try scratch(fixNativeChecksums(bytes), "input.dgstyle")
    let file = try NativeFile(path: path)
    for blob in file.files { _ = try? file.file(blob.path) }
    for c in file.components {
        let source = file.source(c.name)
        for e in source.entries { _ = try? source.tensor(e.name) }
    }
}

func fixNativeChecksums(_ input: [UInt8]) -> [UInt8] {
    let p = NativeFormat.prologueSize
    guard input.count >= p, input[24..<32].allSatisfy({ $0 == 0 }) else { return input }
    func u64(_ at: Int) -> UInt64 { input.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian } }
    guard u64(8) >= UInt64(p), u64(8) <= UInt64(input.count) else { return input }
    let headerOffset = Int(u64(8))
    var header = Array(input[headerOffset...])
    if var json = try? JSON.parse(bytes: header) {
        func fixed(_ items: JSON?) -> JSON? {
            guard let array = items?.array else { return items }
            return .array(array.map { item in
                guard let o = item["offset"]?.int, let n = item["length"]?.int, o >= 0, n >= 0, o <= headerOffset,
                      n <= headerOffset - o, item.objectPairs != nil else { return item }
                var item = item
                item.set("xxh64", .string(input.withUnsafeBytes { XXH64.hex(UnsafeRawBufferPointer(rebasing: $0[o..<(o + n)])) }))
                return item
            })
        }
        if json.objectPairs != nil {
            if let t = fixed(json["tensors"]) { json.set("tensors", t) }
            if let f = fixed(json["files"]) { json.set("files", f) }
            header = Array(json.compact.utf8)
        }
    }
    var out = Array(input[..<headerOffset]) + header
    let fields = [UInt64(header.count), header.withUnsafeBytes { XXH64.hash($0) }]
    for (i, v) in fields.enumerated() {
        withUnsafeBytes(of: v.littleEndian) { for j in 0..<8 { out[16 + 8 * i + j] = $0[j] } }
    }
    return out
}

/// JSON: what parses must print and parse back to the same value.
func fuzzJSON(_ bytes: [UInt8]) throws {
    let value = try JSON.parse(bytes: bytes)
    for text in [value.compact, value.pretty] {
        let again = try JSON.parse(text)
        precondition(again == value, "JSON does not survive printing: \(text)")
    }
}

/// A PNG as a label map, through the same choice of decoder a dataset run makes; the first
/// byte picks the file name (train ids, label ids, or decided by the PNG's format).
func fuzzPNG(_ bytes: [UInt8]) throws {
    guard let first = bytes.first else { return }
    let names = ["input_labelTrainIds.png", "input_labelIds.png", "input.png"]
    let path = try scratch(Array(bytes.dropFirst()), names[Int(first) % names.count])
    let labels = try DatasetGenerator.loadLabels(path)
    precondition(labels.ids.count == labels.width * labels.height)
    _ = labels.histogram()
    _ = Cityscapes.classes(present: labels)
    _ = try? PNG.read(path)
    _ = try? PNG.readIndexed(path)
}

/// The CLIP tokenizer: vocab.json, merges.txt, tokenizer_config.json and texts, separated by
/// NUL bytes (none of those files holds one).
func fuzzTokenizer(_ bytes: [UInt8]) throws {
    let parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
    guard parts.count >= 2 else { return }
    var configuration = CLIPTokenizer.Configuration.clip
    if parts.count >= 3, !parts[2].isEmpty {
        configuration = try CLIPTokenizer.Configuration(tokenizerConfig: try JSON.parse(bytes: parts[2]))
    }
    let tokenizer = try CLIPTokenizer(vocab: parts[0], merges: parts[1], configuration: configuration)
    for text in parts.dropFirst(3) {
        let s = String(decoding: text, as: UTF8.self)
        let ids = tokenizer.encode(s)
        precondition(ids.allSatisfy { tokenizer.token(of: $0) != nil }, "an id outside the vocabulary")
        _ = tokenizer(s)
        _ = tokenizer(s, maxLength: 8)
        _ = tokenizer.decode(ids)
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
    }
}

/// A recipe file (Recipe.load: JSON, then the recipe's own checks).
func fuzzRecipe(_ bytes: [UInt8]) throws {
    let recipe = try Recipe.load(try scratch(bytes, "recipe.json"))
    for step in recipe.steps { _ = recipe.arguments(step) }
}

/// A gen_file.json list of {class, file_name}.
func fuzzGenFile(_ bytes: [UInt8]) throws {
    _ = try DatasetGenerator.labelSources(try scratch(bytes, "gen_file.json"))
}

/// An arbitrary key set (one key a line), as the keys of a safetensors file opened as a
/// checkpoint — LDM, ControlNet or plain, as the names decide — and each key through the map's
/// lookups.
func fuzzLDMKeys(_ bytes: [UInt8]) throws {
    let keys = bytes.split(separator: 10).prefix(2000).map { String(decoding: $0, as: UTF8.self) }
    var header: [(String, JSON)] = []
    for (i, k) in keys.enumerated() {
        header.append((k, .object([("dtype", "F32"), ("shape", [1]), ("data_offsets", [.int(4 * i), .int(4 * i + 4)])])))
    }
    var file = Array(JSON.object(header).compact.utf8)
    let length = UInt64(file.count).littleEndian
    file = withUnsafeBytes(of: length) { Array($0) } + file + [UInt8](repeating: 0, count: 4 * keys.count)
    let path = try scratch(file, "keys.safetensors")
    let map = keyMap
    for k in keys {
        _ = map.classify(k)
        _ = LDMKeyMap.emaKey(forLDM: k)
        _ = LDMKeyMap.isIgnoredLDMKey(k)
        if let (component, name) = map.diffusers(fromLDM: k) {
            precondition(map.ldm(component: component, name: name) != nil, "\(k) maps one way only")
        }
        for c in LDMComponent.allCases {
            _ = LDMKeyMap.canonicalDiffusersName(k, component: c)
            _ = LDMKeyMap.isIgnoredDiffusersName(k, component: c)
            _ = map.mapping(component: c, diffusersName: k)
        }
    }
    let checkpoint = try Checkpoint.open(path)
    for c in checkpoint.components { _ = c.source.entries.count }
}

let keyMap = try! LDMKeyMap()

/// A LoRA file (kohya or diffusers/PEFT safetensors, as exchanged on model hubs): its layers
/// read, matched to the tiny UNet (missing layers and unfitting shapes must be refused), merged,
/// and written back in both layouts, which must read back to the same layers.
func fuzzLoRA(_ bytes: [UInt8]) throws {
    let path = try scratch(bytes, "input.safetensors")
    let file = try LoRAFile.read(path)
    for l in file.layers { _ = (l.weightShape, l.scale, l.parameterCount) }
    try file.merge(into: tinyUNet, component: "unet", scale: 0.5, path: path)
    for format in LoRAFormat.allCases {
        let out = scratchDirectory + "/written.safetensors"
        guard (try? file.write(to: out, format: format)) != nil else { continue }
        let back = try LoRAFile.read(out)
        precondition(back.layers.count == file.layers.count, "\(format): \(file.layers.count) layers written, \(back.layers.count) read")
    }
}

/// The fixtures' tiny UNet (the fuzzer runs from the repository root).
let tinyUNet: Module = {
    let checkpoint = try! Checkpoint.open("Tests/Fixtures/sd-tiny/tiny-sd")
    return try! loadModel(checkpoint.components.first { $0.name == "unet" }!).1
}()

// MARK: plumbing

/// The readers take paths: the input goes to a file in /dev/shm (memory, not disk), one
/// folder per process so that parallel fuzzing jobs do not share files.
let scratchDirectory: String = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let dir = "\(base)/dgfuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: "/dev/shm/dgfuzz-\(getpid())") }
    return dir
}()

func scratch(_ bytes: [UInt8], _ name: String) throws -> String {
    let path = scratchDirectory + "/" + name
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        fatalError("cannot write the fuzz input to \(path)")
    }
    return path
}

func target(named name: String?) -> ([UInt8]) throws -> Void {
    guard let name, let t = targets[name] else {
        let known = targets.keys.sorted().joined(separator: ", ")
        FileHandle.standardError.write("DGFuzz: DGFUZZ_TARGET must be one of: \(known)\n".data(using: .utf8)!)
        exit(2)
    }
    return t
}

#if DGFUZZ
let selected = target(named: ProcessInfo.processInfo.environment["DGFUZZ_TARGET"])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    try? selected(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

// SwiftPM links an executable target with main pointing at <module>_main, so libFuzzer's own
// main is not used; this one hands the command line to libFuzzer's driver instead.
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("DGFuzz_main")
public func dgfuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc, argv = argv
    return runDriver(&argc, &argv, fuzzOne)
}
#else
@main
enum Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first else {
            print("usage: DGFuzz TARGET FILE... (replays inputs; tools/fuzz.sh builds the fuzzer)")
            exit(2)
        }
        let run = target(named: name)
        for file in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: file) else { print("\(file): cannot read"); exit(1) }
            do { try run(Array(data)); print("\(file): accepted") } catch { print("\(file): refused: \(error)") }
        }
    }
}
#endif
