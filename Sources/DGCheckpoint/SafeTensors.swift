import DGBase
import DGTensor
import Foundation

/// A `.safetensors` file, memory-mapped. Opening it checks the whole header against the data
/// (everything the reference Rust reader checks, and a little more), so that a tensor read
/// later can never point outside the file or disagree with its shape.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the data,
/// whose offsets the header gives relative to byte 8 + N.
public final class SafeTensorsFile: TensorSource {
    /// The reference reader refuses larger headers; so do we, before reading any of it.
    public static let maximumHeaderSize = 100_000_000

    public let path: String
    public let file: MappedFile
    /// `__metadata__`, in the order the file lists it; nil when the header has none.
    public let metadata: [(String, String)]?
    /// In data-offset order, which is the order to read them in to stream the file.
    public let entries: [TensorEntry]
    /// Absolute file offsets of each entry's data, parallel to `entries`.
    public let byteRanges: [Range<Int>]
    /// Where the data section starts: 8 + header length.
    public let dataOffset: Int
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try mapFile(path)
        let header = try SafeTensorsHeader(file: file.bytes, path: path)
        metadata = header.metadata
        entries = header.entries
        dataOffset = header.dataOffset
        byteRanges = header.ranges.map { (header.dataOffset + $0.lowerBound)..<(header.dataOffset + $0.upperBound) }
        var index: [String: Int] = [:]
        index.reserveCapacity(entries.count)
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    /// The value of one `__metadata__` key.
    public func metadataValue(_ key: String) -> String? {
        metadata?.first { $0.0 == key }?.1
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    private func position(_ name: String) throws -> Int {
        guard let i = index[name] else { throw FileError(path, "no tensor named \(SafeTensorsHeader.quoted(name))") }
        return i
    }

    /// The absolute file offsets of a tensor's data.
    public func byteRange(_ name: String) throws -> Range<Int> { byteRanges[try position(name)] }

    /// A view of a tensor's bytes in the map, valid only while this file object lives: keep a
    /// reference to it (or use `withBytes`), since Swift may release an object after its last use.
    public func bytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let range = try byteRange(name)
        return UnsafeRawBufferPointer(start: file.base + range.lowerBound, count: range.count)
    }

    /// Calls `body` with a tensor's bytes in the map, keeping the map alive meanwhile.
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let view = try bytes(name)
        return try withExtendedLifetime(self) { try body(view) }
    }

    /// Zero-copy when the data sits at an address aligned for its dtype (always so for files
    /// whose writer aligned the data section, as ours and the reference's do), else a copy.
    /// The view is read-only memory: writing through it faults.
    public func tensor(_ name: String) throws -> Tensor {
        let i = try position(name)
        let entry = entries[i], range = byteRanges[i]
        let start = file.base + range.lowerBound
        if Int(bitPattern: start) % entry.dtype.byteSize == 0 {
            let storage = TensorStorage(borrowing: start, byteCount: range.count, owner: file)
            return Tensor(storage: storage, dtype: entry.dtype, shape: entry.shape)
        }
        return try Tensor(shape: entry.shape, dtype: entry.dtype,
                          bytes: UnsafeRawBufferPointer(start: start, count: range.count))
    }

    /// Drops the tensor's pages from memory; a later read faults them back in from disk.
    public func release(_ name: String) {
        guard let i = index[name] else { return }
        file.release(offset: byteRanges[i].lowerBound, length: byteRanges[i].count)
    }

    /// Tells the kernel the data will be read front to back, so it reads ahead.
    public func adviseSequential() {
        file.adviseSequential(offset: dataOffset, length: file.size - dataOffset)
    }
}

/// Maps a file, with MappedFile's error reworded: FileError puts the path in front.
func mapFile(_ path: String) throws -> MappedFile {
    do {
        return try MappedFile(path: path)
    } catch let error as TensorError {
        throw FileError(path, error.description.replacingOccurrences(of: path, with: "file"))
    }
}

/// The checked contents of a safetensors header. Every failure is one line naming what is wrong.
struct SafeTensorsHeader {
    var metadata: [(String, String)]?
    var entries: [TensorEntry] = []
    /// Relative to the data section, parallel to `entries`.
    var ranges: [Range<Int>] = []
    var dataOffset = 0

    init(file: UnsafeRawBufferPointer, path: String) throws {
        func fail(_ problem: String) -> FileError { FileError(path, problem) }

        guard file.count >= 8 else {
            throw fail("file is \(file.count) bytes, too short to be a safetensors file (it must start with an 8-byte header length)")
        }
        let declared = UInt64(littleEndian: file.loadUnaligned(as: UInt64.self))
        // Decided from the 8 length bytes alone: a hostile length costs no allocation or parse.
        guard declared <= UInt64(SafeTensorsFile.maximumHeaderSize) else {
            throw fail("header is \(declared) bytes, more than the \(SafeTensorsFile.maximumHeaderSize) allowed")
        }
        let n = Int(declared)
        guard 8 + n <= file.count else {
            throw fail("header is \(n) bytes but only \(file.count - 8) bytes follow the length: the file is truncated or not a safetensors file")
        }
        dataOffset = 8 + n
        let dataSize = file.count - dataOffset
        let headerBytes = UnsafeRawBufferPointer(rebasing: file[8..<(8 + n)])

        let utf8 = headerBytes.withMemoryRebound(to: UInt8.self) { $0 }
        guard String(validating: utf8, as: UTF8.self) != nil else { throw fail("header is not valid UTF-8") }
        guard n > 0, utf8[0] == UInt8(ascii: "{") else {
            throw fail("header does not start with '{' (not a safetensors header)")
        }
        let json: JSON
        do {
            json = try JSON.parse(bytes: utf8)
        } catch let e as JSON.ParseError {
            throw fail("header is not valid JSON at byte \(e.offset) of the header: \(e.message)")
        }
        guard let pairs = json.objectPairs else { throw fail("header is not a JSON object") }

        var unsorted: [(entry: TensorEntry, range: Range<Int>)] = []
        unsorted.reserveCapacity(pairs.count)
        for (key, value) in pairs {
            if key == "__metadata__" {
                metadata = try Self.metadata(value, fail)
            } else {
                unsorted.append(try Self.tensor(key, value, fail))
            }
        }

        // The reference sorts by (begin, end) too; the index keeps zero-byte tensors that share
        // an offset in header order, so the result does not depend on the sort's stability.
        let order = unsorted.indices.sorted {
            let a = unsorted[$0].range, b = unsorted[$1].range
            return (a.lowerBound, a.upperBound, $0) < (b.lowerBound, b.upperBound, $1)
        }
        var end = 0
        var previous: String?
        for k in order {
            let (entry, range) = unsorted[k]
            if range.lowerBound != end {
                let offsets = "data_offsets [\(range.lowerBound), \(range.upperBound)]"
                guard let previous else {
                    throw fail("the first tensor's data, \(Self.quoted(entry.name)) at \(offsets), must start at offset 0")
                }
                if range.lowerBound > end {
                    throw fail("gap in the data: tensor \(Self.quoted(entry.name)) at \(offsets) starts at \(range.lowerBound) but the previous tensor \(Self.quoted(previous)) ends at \(end)")
                }
                throw fail("tensor \(Self.quoted(entry.name)) at \(offsets) overlaps the previous tensor \(Self.quoted(previous)), which ends at \(end)")
            }
            end = range.upperBound
            previous = entry.name
            entries.append(entry)
            ranges.append(range)
        }
        if end > dataSize {
            throw fail("file is truncated: the tensors need \(end) bytes of data but only \(dataSize) follow the header")
        }
        if end < dataSize {
            throw fail("\(dataSize - end) unexpected bytes after the last tensor's data (the data must end exactly at the end of the file)")
        }
    }

    private static func metadata(_ value: JSON, _ fail: (String) -> FileError) throws -> [(String, String)] {
        guard let pairs = value.objectPairs else { throw fail("__metadata__ must be an object of strings, not \(describe(value))") }
        return try pairs.map { key, v in
            guard let s = v.string else {
                throw fail("__metadata__ value for \(quoted(key)) must be a string, not \(describe(v))")
            }
            return (key, s)
        }
    }

    private static func tensor(_ name: String, _ value: JSON, _ fail: (String) -> FileError) throws
        -> (entry: TensorEntry, range: Range<Int>) {
        // Built only on failure: quoting every name of a large header costs.
        func bad(_ problem: String) -> FileError { fail("tensor \(quoted(name))" + problem) }
        guard let fields = value.objectPairs else { throw bad(" must be an object, not \(describe(value))") }
        var dtypeValue: JSON?, shapeValue: JSON?, offsetsValue: JSON?
        for (key, v) in fields {
            switch key {
            case "dtype": dtypeValue = v
            case "shape": shapeValue = v
            case "data_offsets": offsetsValue = v
            default:
                // Stricter than the reference, which ignores unknown fields: a field we do not
                // understand could change what the bytes mean.
                throw bad(" has an unexpected field \(quoted(key)) (only dtype, shape and data_offsets are allowed)")
            }
        }
        func missing(_ key: String) -> FileError { bad(" is missing the field \"\(key)\"") }
        guard let dtypeValue else { throw missing("dtype") }
        guard let shapeValue else { throw missing("shape") }
        guard let offsetsValue else { throw missing("data_offsets") }
        guard let dtypeName = dtypeValue.string else { throw bad(": dtype must be a string") }
        guard let dtype = DType(name: dtypeName) else { throw bad(" has unknown dtype \(quoted(dtypeName))") }
        guard let shape = naturals(shapeValue) else {
            throw bad(": shape must be an array of non-negative integers, not \(excerpt(shapeValue))")
        }
        guard let offsets = naturals(offsetsValue), offsets.count == 2 else {
            throw bad(": data_offsets must be [begin, end], non-negative integers, not \(excerpt(offsetsValue))")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard end >= begin else { throw bad(": data_offsets [\(begin), \(end)] end before they begin") }

        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw bad(": shape \(shape) has too many elements (overflows 64 bits)") }
            count = product
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else { throw bad(": shape \(shape) of \(dtype.name) is too many bytes (overflows 64 bits)") }
        guard end - begin == bytes else {
            throw bad(": data_offsets [\(begin), \(end)] hold \(end - begin) bytes but a \(dtype.name) tensor of shape \(shape) is \(bytes) bytes")
        }
        return (TensorEntry(name: name, dtype: dtype, shape: shape), begin..<end)
    }

    /// The values of an array of non-negative JSON integers (not `1.0`: the reference reads
    /// these as usize), or nil.
    private static func naturals(_ value: JSON) -> [Int]? {
        guard let items = value.array else { return nil }
        var out: [Int] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard case .int(let v) = item, v >= 0 else { return nil }
            out.append(v)
        }
        return out
    }

    /// A name as JSON writes it: quoted, with control characters escaped, so it stays on one line.
    static func quoted(_ name: String) -> String { JSON.string(name).compact }

    /// The start of a value as JSON, short enough for an error line.
    private static func excerpt(_ value: JSON) -> String {
        let text = value.compact
        return text.count <= 60 ? text : String(text.prefix(60)) + "..."
    }

    private static func describe(_ value: JSON) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
