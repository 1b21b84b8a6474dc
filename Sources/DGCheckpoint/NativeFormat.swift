import DGBase
import DGTensor

/// The project's own checkpoint format (see docs/FORMAT.md): one file holding one model or a
/// whole pipeline — tensors of several components, their configs and loose files such as the
/// tokenizer's vocabulary — with every tensor 64-byte aligned for mmap and checksummed.
///
///     0   8 bytes  magic "DGSTYLE1"
///     8   u64 LE   offset of the header (it follows the data, so writing streams)
///     16  u64 LE   length of the header
///     24  u64 LE   XXH64 of the header bytes
///     32  ...      padding, then tensor and file data, each at a multiple of 64
///     H   header   UTF-8 JSON
public enum NativeFormat {
    public static let magic: [UInt8] = Array("DGSTYLE1".utf8)
    public static let prologueSize = 32
    public static let alignment = 64
    public static let maximumHeaderSize = 100_000_000
    public static let version = 1
}

/// One stored tensor of a native file.
public struct NativeTensor: Sendable {
    public var component: String
    public var entry: TensorEntry
    public var offset: Int
    public var storedLength: Int
    public var compression: Compression
    public var checksum: String
}

/// One stored loose file (a config, the tokenizer's vocabulary, ...).
public struct NativeBlob: Sendable {
    public var path: String
    public var offset: Int
    public var length: Int
    public var checksum: String
}

public final class NativeWriter {
    public let path: String
    private let out: AtomicFileWriter
    private var components: [(String, JSON)] = []
    private var tensors: [JSON] = []
    private var files: [JSON] = []
    private let kind: String

    /// `kind` is "pipeline" or "model".
    public init(path: String, kind: String) throws {
        self.path = path
        self.kind = kind
        out = try AtomicFileWriter(path: path)
        try out.write([UInt8](repeating: 0, count: NativeFormat.prologueSize))
    }

    /// Declares a component: its class (e.g. "UNet2DConditionModel") and metadata to carry along.
    public func addComponent(_ name: String, className: String, metadata: [(String, String)]? = nil) {
        var info: JSON = ["class": .string(className)]
        if let metadata { info.set("metadata", .object(metadata.map { ($0.0, .string($0.1)) })) }
        components.append((name, info))
    }

    public func addFile(_ path: String, _ bytes: [UInt8]) throws {
        try out.pad(to: NativeFormat.alignment)
        let offset = out.position
        try out.write(bytes)
        let sum = bytes.withUnsafeBytes { XXH64.hex($0) }
        files.append(["path": .string(path), "offset": .int(offset), "length": .int(bytes.count), "xxh64": .string(sum)])
    }

    /// Appends one tensor's data: `bytes` must be exactly entry.byteCount, in row-major order.
    public func addTensor(component: String, entry: TensorEntry, bytes: UnsafeRawBufferPointer,
                          compression: Compression = .none, level: Int32 = 3) throws {
        guard bytes.count == entry.byteCount else {
            throw FileError(path, "tensor \(entry.name) has \(bytes.count) bytes, expected \(entry.byteCount)")
        }
        var stored: [UInt8] = []
        switch compression {
        case .none: break
        case .zstd: stored = try Zstd.compress(bytes, level: level)
        case .zstdByteSplit:
            var planes = [UInt8](repeating: 0, count: bytes.count)
            planes.withUnsafeMutableBytes { ByteSplit.split(bytes, elementSize: entry.dtype.byteSize, into: $0) }
            stored = try planes.withUnsafeBytes { try Zstd.compress($0, level: level) }
        }
        // Compression that does not pay is not kept.
        let codec = compression != .none && stored.count < bytes.count ? compression : .none
        try out.pad(to: NativeFormat.alignment)
        let offset = out.position
        let sum: String
        if codec == .none {
            try out.write(bytes)
            sum = XXH64.hex(bytes)
        } else {
            try out.write(stored)
            sum = stored.withUnsafeBytes { XXH64.hex($0) }
        }
        tensors.append([
            "component": .string(component), "name": .string(entry.name), "dtype": .string(entry.dtype.name),
            "shape": .array(entry.shape.map { .int($0) }), "offset": .int(offset),
            "length": .int(codec == .none ? bytes.count : stored.count), "compression": .string(codec.rawValue),
            "xxh64": .string(sum),
        ])
    }

    public func finish() throws {
        try out.pad(to: NativeFormat.alignment)
        let headerOffset = out.position
        let header: JSON = [
            "format": "dginstyle", "version": .int(NativeFormat.version), "kind": .string(kind),
            "components": .object(components), "files": .array(files), "tensors": .array(tensors),
        ]
        let bytes = Array(header.compact.utf8)
        try out.write(bytes)
        var prologue = NativeFormat.magic
        for v in [UInt64(headerOffset), UInt64(bytes.count), bytes.withUnsafeBytes { XXH64.hash($0) }] {
            withUnsafeBytes(of: v.littleEndian) { prologue.append(contentsOf: $0) }
        }
        try out.overwrite(at: 0, prologue)
        try out.commit()
    }

    public func abort() { out.abort() }
}

/// A native file opened for reading: the header is parsed and checked up front; tensor data
/// is read (and its checksum verified) when asked for.
public final class NativeFile {
    public let path: String
    public let kind: String
    /// Components in stored order, with their class name and metadata.
    public let components: [(name: String, className: String, metadata: [(String, String)]?)]
    public let tensors: [NativeTensor]
    public let files: [NativeBlob]
    private let map: MappedFile

    public init(path: String) throws {
        self.path = path
        do { map = try MappedFile(path: path) } catch { throw FileError(path, "\(error)") }
        let size = map.size
        func fail(_ problem: String) -> FileError { FileError(path, problem) }
        guard size >= NativeFormat.prologueSize else { throw fail("file is \(size) bytes, too short for a dginstyle native file") }
        let b = map.bytes
        guard Array(b[0..<8]) == NativeFormat.magic else { throw fail("not a dginstyle native file (bad magic)") }
        let headerOffset = b.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian
        let headerLength = b.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        let headerSum = b.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(NativeFormat.maximumHeaderSize) else {
            throw fail("header is \(headerLength) bytes, more than the \(NativeFormat.maximumHeaderSize) allowed")
        }
        guard headerOffset >= UInt64(NativeFormat.prologueSize), headerOffset <= UInt64(size),
              headerLength == UInt64(size) - headerOffset else {
            throw fail("header position \(headerOffset)+\(headerLength) does not end the \(size)-byte file (truncated?)")
        }
        let header = UnsafeRawBufferPointer(rebasing: b[Int(headerOffset)..<size])
        guard XXH64.hash(header) == headerSum else { throw fail("header checksum mismatch: the file is corrupt") }
        let json: JSON
        do { json = try JSON.parse(bytes: header) } catch { throw fail("header: \(error)") }
        guard json["format"]?.string == "dginstyle" else { throw fail("header does not describe a dginstyle file") }
        guard let version = json["version"]?.int, version <= NativeFormat.version else {
            throw fail("format version \(json["version"]?.int ?? -1) is newer than this program reads (\(NativeFormat.version))")
        }
        kind = json["kind"]?.string ?? "model"
        let dataEnd = Int(headerOffset)

        var components: [(String, String, [(String, String)]?)] = []
        for (name, info) in json["components"]?.objectPairs ?? [] {
            guard let cls = info["class"]?.string else { throw fail("component \(name) has no class") }
            let meta = try info["metadata"]?.objectPairs.map { pairs in
                try pairs.map { (k, v) -> (String, String) in
                    guard let s = v.string else { throw fail("component \(name): metadata \(k) is not a string") }
                    return (k, s)
                }
            }
            components.append((name, cls, meta))
        }
        self.components = components
        let known = Set(components.map(\.0))

        // Every stored region must lie in the data section, aligned, and not overlap another.
        var regions: [(Int, Int, String)] = []
        func region(_ what: String, _ offset: Int?, _ length: Int?) throws -> (Int, Int) {
            guard let offset, let length, offset >= NativeFormat.prologueSize, length >= 0,
                  offset % NativeFormat.alignment == 0, offset <= dataEnd, length <= dataEnd - offset else {
                throw fail("\(what): stored range \(offset ?? -1)+\(length ?? -1) is outside the data section")
            }
            regions.append((offset, offset + length, what))
            return (offset, length)
        }

        var tensors: [NativeTensor] = []
        var seen = Set<String>()
        for item in json["tensors"]?.array ?? [] {
            guard let component = item["component"]?.string, let name = item["name"]?.string else {
                throw fail("a tensor entry has no component or name")
            }
            let what = "tensor \(component)/\(name)"
            guard known.contains(component) else { throw fail("\(what) belongs to an undeclared component") }
            guard seen.insert(component + "/" + name).inserted else { throw fail("\(what) is stored twice") }
            guard let dtypeName = item["dtype"]?.string, let dtype = DType(name: dtypeName) else {
                throw fail("\(what) has unknown dtype \(item["dtype"]?.string ?? "?")")
            }
            guard let shapeItems = item["shape"]?.array else { throw fail("\(what) has no shape") }
            let shape = try shapeItems.map { v -> Int in
                guard let d = v.int, d >= 0 else { throw fail("\(what) has a bad shape") }
                return d
            }
            var elements = 1
            for d in shape {
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw fail("\(what): shape \(shape) overflows") }
                elements = p
            }
            guard !elements.multipliedReportingOverflow(by: dtype.byteSize).overflow else { throw fail("\(what): shape \(shape) overflows") }
            guard let codec = Compression(rawValue: item["compression"]?.string ?? "") else {
                throw fail("\(what) has unknown compression \(item["compression"]?.string ?? "?")")
            }
            let entry = TensorEntry(name: name, dtype: dtype, shape: shape)
            let (offset, length) = try region(what, item["offset"]?.int, item["length"]?.int)
            if codec == .none, length != entry.byteCount {
                throw fail("\(what) stores \(length) bytes, but \(dtype.name) \(shape) needs \(entry.byteCount)")
            }
            guard let sum = item["xxh64"]?.string else { throw fail("\(what) has no checksum") }
            tensors.append(NativeTensor(component: component, entry: entry, offset: offset, storedLength: length,
                                        compression: codec, checksum: sum))
        }
        var files: [NativeBlob] = []
        for item in json["files"]?.array ?? [] {
            guard let p = item["path"]?.string, let sum = item["xxh64"]?.string else { throw fail("a file entry has no path or checksum") }
            let (offset, length) = try region("file \(p)", item["offset"]?.int, item["length"]?.int)
            files.append(NativeBlob(path: p, offset: offset, length: length, checksum: sum))
        }
        regions.sort { $0.0 < $1.0 }
        for (a, b) in zip(regions, regions.dropFirst()) where b.0 < a.1 {
            throw fail("\(a.2) and \(b.2) overlap")
        }
        self.tensors = tensors
        self.files = files
    }

    /// The bytes of a loose file, checksum verified.
    public func file(_ path: String) throws -> [UInt8] {
        guard let blob = files.first(where: { $0.path == path }) else { throw FileError(self.path, "holds no file \(path)") }
        let bytes = UnsafeRawBufferPointer(rebasing: map.bytes[blob.offset..<(blob.offset + blob.length)])
        guard XXH64.hex(bytes) == blob.checksum else {
            throw FileError(self.path, "file \(path) fails its checksum: the file is corrupt")
        }
        return Array(bytes)
    }

    /// The tensors of one component, as a source the rest of the program reads like any other.
    public func source(_ component: String) -> TensorSource {
        NativeComponentSource(file: self, component: component)
    }

    func read(_ t: NativeTensor, verify: Bool) throws -> Tensor {
        let what = "tensor \(t.component)/\(t.entry.name)"
        let stored = UnsafeRawBufferPointer(rebasing: map.bytes[t.offset..<(t.offset + t.storedLength)])
        if verify, XXH64.hex(stored) != t.checksum {
            throw FileError(path, "\(what) fails its checksum: the file is corrupt")
        }
        do {
            switch t.compression {
            case .none:
                let storage = TensorStorage(borrowing: stored.baseAddress.map { UnsafeMutableRawPointer(mutating: $0) } ?? map.base,
                                            byteCount: t.storedLength, owner: map)
                return Tensor(storage: storage, dtype: t.entry.dtype, shape: t.entry.shape)
            case .zstd:
                let out = Tensor(zeros: t.entry.shape, dtype: t.entry.dtype)
                try Zstd.decompress(stored, into: UnsafeMutableRawBufferPointer(start: out.rawPointer, count: out.byteCount))
                return out
            case .zstdByteSplit:
                var planes = [UInt8](repeating: 0, count: t.entry.byteCount)
                try planes.withUnsafeMutableBytes { try Zstd.decompress(stored, into: $0) }
                let out = Tensor(zeros: t.entry.shape, dtype: t.entry.dtype)
                planes.withUnsafeBytes {
                    ByteSplit.join($0, elementSize: t.entry.dtype.byteSize,
                                   into: UnsafeMutableRawBufferPointer(start: out.rawPointer, count: out.byteCount))
                }
                return out
            }
        } catch let e as Zstd.Failure {
            throw FileError(path, "\(what): \(e.description)")
        }
    }

    func release(_ t: NativeTensor) { map.release(offset: t.offset, length: t.storedLength) }
}

final class NativeComponentSource: TensorSource {
    let file: NativeFile
    let component: String
    let stored: [NativeTensor]
    let entries: [TensorEntry]
    private let index: [String: Int]

    init(file: NativeFile, component: String) {
        self.file = file
        self.component = component
        stored = file.tensors.filter { $0.component == component }
        entries = stored.map(\.entry)
        index = Dictionary(uniqueKeysWithValues: stored.enumerated().map { ($1.entry.name, $0) })
    }

    var path: String { file.path }

    func tensor(_ name: String) throws -> Tensor {
        guard let i = index[name] else { throw FileError(path, "component \(component) has no tensor \(name)") }
        return try file.read(stored[i], verify: true)
    }

    func release(_ name: String) {
        if let i = index[name] { file.release(stored[i]) }
    }
}
