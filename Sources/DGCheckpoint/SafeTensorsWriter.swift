import DGBase
import DGTensor
import Foundation

/// Writes a `.safetensors` file as a stream: the header first (all entries are known up
/// front), then each tensor's bytes in entry order, so a converter never holds more than one
/// tensor. The file appears at `path` only when `finish()` succeeds: it is written to a
/// temporary file beside it and renamed, so a crash or error never leaves a half-written
/// checkpoint under the real name.
public final class SafeTensorsWriter {
    /// Header padding makes the data start a multiple of this, so every tensor of a file
    /// written in descending dtype-size order maps aligned (the reference pads to 8).
    public static let dataAlignment = 64

    public let path: String
    public let entries: [TensorEntry]
    /// Where the data section starts: 8 + header length.
    public let dataOffset: Int
    private let out: AtomicFileWriter
    private var current = 0          // the entry the next bytes belong to
    private var written = 0          // bytes of `current` written so far
    private var done = false

    public init(path: String, entries: [TensorEntry], metadata: [(String, String)]? = nil) throws {
        self.path = path
        self.entries = entries
        func fail(_ problem: String) -> FileError { FileError(path, problem) }

        let header = try Self.header(entries: entries, metadata: metadata, fail)
        var padded = Array(header.utf8)
        padded += [UInt8](repeating: 0x20, count: (Self.dataAlignment - (8 + padded.count) % Self.dataAlignment) % Self.dataAlignment)
        guard padded.count <= SafeTensorsFile.maximumHeaderSize else {
            throw fail("header would be \(padded.count) bytes, more than the \(SafeTensorsFile.maximumHeaderSize) a reader accepts")
        }
        dataOffset = 8 + padded.count

        guard !path.hasSuffix("/") else { throw fail("is a folder name, not a file name") }
        out = try AtomicFileWriter(path: path)
        do {
            var length = UInt64(padded.count).littleEndian
            try withUnsafeBytes(of: &length) { try out.write($0) }
            try out.write(padded)
            skipEmptyEntries()
        } catch {
            abort()
            throw error
        }
    }

    /// Compact JSON: `__metadata__` first, then the tensors in the given order with their
    /// offsets, laid out back to back.
    private static func header(entries: [TensorEntry], metadata: [(String, String)]?,
                               _ fail: (String) -> FileError) throws -> String {
        var pairs: [(String, JSON)] = []
        pairs.reserveCapacity(entries.count + 1)
        var names = Set<String>()
        if let metadata {
            var keys = Set<String>()
            for (key, _) in metadata where !keys.insert(key).inserted {
                throw fail("metadata key \(SafeTensorsHeader.quoted(key)) appears twice")
            }
            pairs.append(("__metadata__", .object(metadata.map { ($0.0, JSON.string($0.1)) })))
            names.insert("__metadata__")
        }
        var offset = 0
        for entry in entries {
            let what = "tensor \(SafeTensorsHeader.quoted(entry.name))"
            guard entry.name != "__metadata__" else { throw fail("\"__metadata__\" is reserved, not a tensor name") }
            guard names.insert(entry.name).inserted else { throw fail("\(what) appears twice") }
            guard entry.shape.allSatisfy({ $0 >= 0 }) else { throw fail("\(what) has a negative dimension in \(entry.shape)") }
            var bytes = entry.dtype.byteSize, overflow = false
            for d in entry.shape where !overflow { (bytes, overflow) = bytes.multipliedReportingOverflow(by: d) }
            let end = offset.addingReportingOverflow(bytes)
            guard !overflow, !end.overflow else { throw fail("\(what) of shape \(entry.shape) is too large") }
            pairs.append((entry.name, .object([
                ("dtype", .string(entry.dtype.name)),
                ("shape", .array(entry.shape.map { .int($0) })),
                ("data_offsets", .array([.int(offset), .int(end.partialValue)])),
            ])))
            offset = end.partialValue
        }
        return JSON.object(pairs).compact
    }

    /// The next bytes of the current entry. An entry may come in several pieces, but a piece
    /// may not run into the next entry: that would mean the caller's idea of the layout differs.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !done else { throw FileError(path, "write after the writer finished or failed") }
        guard !bytes.isEmpty else { return }
        guard current < entries.count else {
            throw FileError(path, "\(bytes.count) bytes written after all \(entries.count) tensors are complete")
        }
        let entry = entries[current]
        guard bytes.count <= entry.byteCount - written else {
            throw FileError(path, "tensor \(SafeTensorsHeader.quoted(entry.name)) is \(entry.byteCount) bytes but \(written + bytes.count) were written for it")
        }
        do {
            try out.write(bytes)
        } catch {
            abort()
            throw error
        }
        written += bytes.count
        if written == entry.byteCount {
            current += 1
            written = 0
            skipEmptyEntries()
        }
    }

    /// Writes a whole tensor as the next entry, checking its dtype and shape against it.
    /// A zero-element tensor has no bytes to place, so it is accepted wherever it comes.
    public func write(_ tensor: Tensor) throws {
        guard tensor.count > 0 else { return }
        guard current < entries.count, written == 0 else {
            throw FileError(path, "a whole tensor was written while \(current < entries.count ? "tensor \(SafeTensorsHeader.quoted(entries[current].name)) is half written" : "no tensor is left")")
        }
        let entry = entries[current]
        guard entry.dtype == tensor.dtype, entry.shape == tensor.shape else {
            throw FileError(path, "tensor \(SafeTensorsHeader.quoted(entry.name)) is \(entry.dtype.name) \(entry.shape) but a \(tensor.dtype.name) \(tensor.shape) tensor was written for it")
        }
        // The copy must outlive the write: rawBytes does not keep its storage alive.
        let source = tensor.contiguous()
        try withExtendedLifetime(source) { try write(source.rawBytes) }
    }

    private func skipEmptyEntries() {
        while current < entries.count, entries[current].byteCount == 0 { current += 1 }
    }

    /// Checks every byte arrived, makes the file durable, and puts it in place atomically.
    public func finish() throws {
        guard !done else { throw FileError(path, "finish after the writer finished or failed") }
        guard current == entries.count else {
            let entry = entries[current]
            abort()
            throw FileError(path, "incomplete: tensor \(SafeTensorsHeader.quoted(entry.name)) got \(written) of its \(entry.byteCount) bytes")
        }
        do {
            try out.commit()
        } catch {
            abort()
            throw error
        }
        done = true
    }

    /// Gives up: the temporary file is removed and nothing appears at `path`.
    public func abort() {
        if !done { out.abort() }
        done = true
    }

    deinit { abort() }

    /// Writes `tensors` (made contiguous as needed) in the given order.
    public static func save(path: String, tensors: [(String, Tensor)], metadata: [(String, String)]? = nil) throws {
        let entries = tensors.map { TensorEntry(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        let writer = try SafeTensorsWriter(path: path, entries: entries, metadata: metadata)
        for (_, tensor) in tensors { try writer.write(tensor) }
        try writer.finish()
    }
}

