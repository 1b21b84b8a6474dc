import DGBase
import DGTensor
import Foundation

/// A `torch.save` file (PyTorch >= 1.6: a zip of `<archive>/data.pkl`, `<archive>/data/<key>`,
/// `<archive>/byteorder`, ...) read as a TensorSource: `.ckpt`, `.pt`, `.pth`, `.bin`. The pickle
/// is interpreted by `TorchPickle`, which runs nothing; the storages stay in the memory map and
/// each tensor is a view of one (zero-copy when contiguous and aligned, made contiguous when read
/// otherwise), so converting streams as it does from safetensors.
///
/// The tensors are those of the state dict, found as the reference converters find it: the
/// top-level dict, or its `state_dict` (repeatedly, as Lightning nests it), or `model` / `module`
/// when the dict itself holds no tensor.
public final class TorchCheckpointFile: TensorSource {
    public let path: String
    public let file: MappedFile
    public let entries: [TensorEntry]
    /// The globals taken as inert placeholders (docs/PICKLE.md), for the warning.
    public let placeholders: [String]
    /// Where the state dict was found: [] for the top level, ["state_dict"] for Lightning's.
    public let stateDictPath: [String]

    private struct Located {
        var dataOffset: Int   // absolute file offset of the storage's first byte
        var storageBytes: Int
        var dtype: DType
        var offset: Int       // in elements
        var shape: [Int]
        var strides: [Int]
    }
    private let located: [Located]
    private let index: [String: Int]

    /// Called with the placeholder warning; stderr unless a caller (a test) wants it.
    nonisolated(unsafe) public static var warn: (String) -> Void = { line in
        FileHandle.standardError.write(Data(("warning: " + line + "\n").utf8))
    }

    /// Whether a file is a torch.save zip archive (by content, not by name).
    public static func isTorchZip(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return Array(h.readData(ofLength: 4)) == ZipArchive.localMagic
    }

    public init(path: String) throws {
        self.path = path
        file = try mapFile(path)
        func fail(_ problem: String) -> FileError { FileError(path, problem) }
        let bytes = file.bytes
        if bytes.count >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
            throw fail("is in PyTorch's legacy serialization format (before PyTorch 1.6: a raw pickle stream followed by the storages), which is not read; re-save it with torch.save in PyTorch >= 1.6")
        }
        guard ZipArchive.looksLikeZip(bytes) else {
            throw fail("is not a torch.save zip archive (a PyTorch >= 1.6 checkpoint) nor a safetensors file")
        }
        let zip = try ZipArchive(path: path, file: file)
        // torch.save names the folder after the file (or "archive"); a TorchScript module has
        // code/ and constants.pkl beside it and is not a weights file.
        let pickles = zip.names.filter { $0.hasSuffix("/data.pkl") && $0.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
        guard let pkl = pickles.first else {
            if zip.names.contains(where: { $0.hasSuffix("/constants.pkl") }) {
                throw fail("is a TorchScript archive (code, not a weights file); it is not read")
            }
            throw fail("is a zip archive without <archive>/data.pkl: not a torch.save checkpoint")
        }
        guard pickles.count == 1 else { throw fail("holds several data.pkl records (\(pickles.prefix(3).joined(separator: ", ")))") }
        let prefix = String(pkl.dropLast("data.pkl".count))
        if zip.names.contains(prefix + "constants.pkl") {
            throw fail("is a TorchScript archive (code, not a weights file); it is not read")
        }
        if let order = zip.entries[prefix + "byteorder"] {
            let text = String(decoding: try zip.bytes(order), as: UTF8.self)
            guard text == "little" else {
                throw fail("was saved on a \(text == "big" ? "big" : "unknown")-endian machine (byteorder \(SafeTensorsHeader.quoted(text))); only little-endian checkpoints are read")
            }
        }

        var storageEntries: [String: ZipArchive.Entry] = [:]
        var machine = TorchPickle(path: path, data: try zip.bytes(zip.entries[pkl]!)) { key in
            guard let e = zip.entries[prefix + "data/" + key] else { return nil }
            storageEntries[key] = e
            return e.size
        }
        let root = try withExtendedLifetime(file) { try machine.load() }

        let (stateDict, where_) = try Self.findStateDict(root, machine, fail)
        stateDictPath = where_
        var names: [String] = []
        var located: [Located] = []
        var index: [String: Int] = [:]
        for (key, value) in machine.dicts[stateDict] {
            guard case .string(let name) = key, case .tensor(let t) = value else { continue }
            let r = machine.tensors[t], s = machine.storages[r.storage]
            let e = storageEntries[s.key]!
            // Deflated data cannot be mapped: refused here, when a tensor of the state dict needs it.
            _ = try zip.bytes(e)
            let l = Located(dataOffset: e.dataOffset, storageBytes: s.numel * s.dtype.byteSize, dtype: s.dtype,
                            offset: r.offset, shape: r.shape, strides: r.strides)
            if let i = index[name] {
                located[i] = l   // a repeated key: the last one wins, as in a Python dict
            } else {
                index[name] = names.count
                names.append(name)
                located.append(l)
            }
        }
        guard !names.isEmpty else {
            throw fail("holds no tensors in its state dict\(where_.isEmpty ? "" : " (" + where_.joined(separator: ".") + ")")")
        }
        // Storage order, so that reading the entries in order reads the file front to back.
        let order = names.indices.sorted {
            let a = located[$0], b = located[$1]
            return (a.dataOffset + a.offset * a.dtype.byteSize, $0) < (b.dataOffset + b.offset * b.dtype.byteSize, $1)
        }
        entries = order.map { TensorEntry(name: names[$0], dtype: located[$0].dtype, shape: located[$0].shape) }
        self.located = order.map { located[$0] }
        self.index = Dictionary(uniqueKeysWithValues: order.enumerated().map { (names[$0.element], $0.offset) })
        placeholders = machine.placeholders
        if !placeholders.isEmpty {
            Self.warn("\(path): took \(placeholders.joined(separator: ", ")) as inert placeholders (objects pickled beside the weights; never called, holding no tensor)")
        }
    }

    /// The state dict: `state_dict` while there is one (Lightning, and files that nest it
    /// again), else `model` / `module` when the dict holds no tensor itself.
    private static func findStateDict(_ root: TorchPickle.Value, _ m: TorchPickle, _ fail: (String) -> FileError) throws -> (Int, [String]) {
        guard case .dict(var d) = root else { throw fail("pickle holds no dict at its top (not a state dict or checkpoint)") }
        var path: [String] = []
        func lookup(_ d: Int, _ key: String) -> Int? {
            for p in m.dicts[d].reversed() {
                if case .string(key) = p.key, case .dict(let inner) = p.value { return inner }
            }
            return nil
        }
        func holdsTensor(_ d: Int) -> Bool { m.dicts[d].contains { if case .tensor = $0.value { return true } else { return false } } }
        for _ in 0..<16 {
            if let inner = lookup(d, "state_dict") { d = inner; path.append("state_dict"); continue }
            if !holdsTensor(d), let (key, inner) = ["model", "module"].lazy.compactMap({ k in lookup(d, k).map { (k, $0) } }).first {
                d = inner
                path.append(key)
                continue
            }
            break
        }
        return (d, path)
    }

    private func position(_ name: String) throws -> Int {
        guard let i = index[name] else { throw FileError(path, "no tensor named \(SafeTensorsHeader.quoted(name))") }
        return i
    }

    public func tensor(_ name: String) throws -> Tensor {
        let l = located[try position(name)]
        let size = l.dtype.byteSize
        let start = file.base + l.dataOffset
        let view: Tensor
        if Int(bitPattern: start) % size == 0 {
            let storage = TensorStorage(borrowing: start, byteCount: l.storageBytes, owner: file)
            view = Tensor(storage: storage, dtype: l.dtype, shape: l.shape, strides: l.strides, offset: l.offset)
        } else {
            // torch.save aligns storages to 64 bytes; a file that does not is copied, only the
            // span this view reaches.
            let span = spanElements(l)
            let copy = try Tensor(shape: [span], dtype: l.dtype,
                                  bytes: UnsafeRawBufferPointer(start: start + l.offset * size, count: span * size))
            view = Tensor(storage: copy.storage, dtype: l.dtype, shape: l.shape, strides: l.strides, offset: 0)
        }
        return view.isContiguous ? view : view.contiguous()
    }

    private func spanElements(_ l: Located) -> Int {
        if l.shape.contains(0) { return 0 }
        return zip(l.shape, l.strides).reduce(1) { $0 + ($1.0 - 1) * $1.1 }
    }

    public func release(_ name: String) {
        guard let i = index[name] else { return }
        let l = located[i]
        file.release(offset: l.dataOffset + l.offset * l.dtype.byteSize, length: spanElements(l) * l.dtype.byteSize)
    }
}

/// Opens a weights file by its content: a torch.save archive, a sharded safetensors index or a
/// safetensors file.
public func openTensorFile(path: String) throws -> TensorSource {
    let lower = path.lowercased()
    let torchName = [".ckpt", ".pt", ".pth", ".bin"].contains(where: lower.hasSuffix)
    if torchName || TorchCheckpointFile.isTorchZip(path) { return try TorchCheckpointFile(path: path) }
    return try openSafeTensors(path: path)
}
