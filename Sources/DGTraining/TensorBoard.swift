import DGBase
import Foundation

/// TensorBoard event files, so that `tensorboard --logdir RUN` shows a run as it shows a
/// diffusers or kohya one: TFRecord framing (length, masked CRC-32C of the length, an `Event`
/// protocol buffer, masked CRC-32C of it), written by hand — the few fields used do not need a
/// protobuf library. Each process writes its own file (`events.out.tfevents.<time>.<host>.<pid>`),
/// starting with a `SessionLog START` at the first step it will log: TensorBoard then drops the
/// events a killed run logged past its last checkpoint, as `metrics.jsonl` is truncated.
public final class TensorBoardLog {
    public let path: String
    private var handle: FileHandle?

    public init(directory: String, startStep: Int) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileError(directory, "cannot create the TensorBoard log folder: \(error.localizedDescription)")
        }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
        // The last part tells apart the runs one process starts within a second.
        let stem = directory + "/events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host).\(getpid())."
        var n = 0
        while FileManager.default.fileExists(atPath: stem + String(n)) { n += 1 }
        path = stem + String(n)
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw FileError(path, "cannot create")
        }
        handle = h
        try write(event(step: 0) + Proto.bytes(3, Array("brain.Event:2".utf8)))
        // TensorBoard keeps what it saw before a START only below its step: the first update
        // this process makes (a fresh run's step-0 validation comes after it, so it stays).
        try write(event(step: startStep + 1) + Proto.message(7, Proto.varint(1, 1)))
    }

    /// Every number of a metrics record (but its step) as a scalar, under `prefix/` (loss, lr,
    /// grad_norm, step time... as `train/loss`).
    public func scalars(_ record: JSON, prefix: String) throws {
        guard let step = record["step"]?.int else { return }
        var values: [UInt8] = []
        for (key, value) in record.objectPairs ?? [] where key != "step" {
            guard let v = value.double else { continue }
            values += Proto.message(1, Proto.bytes(1, Array("\(prefix)/\(key)".utf8)) + Proto.float(2, Float(v)))
        }
        guard !values.isEmpty else { return }
        try write(event(step: step) + Proto.message(5, values))
    }

    /// A PNG as an image summary.
    public func image(_ tag: String, png: [UInt8], width: Int, height: Int, step: Int) throws {
        let image = Proto.varint(1, UInt64(height)) + Proto.varint(2, UInt64(width)) + Proto.varint(3, 3) + Proto.bytes(4, png)
        let value = Proto.bytes(1, Array(tag.utf8)) + Proto.message(4, image)
        try write(event(step: step) + Proto.message(5, Proto.message(1, value)))
    }

    public func close() {
        try? handle?.close()
        handle = nil
    }

    private func event(step: Int) -> [UInt8] {
        Proto.double(1, Date().timeIntervalSince1970) + Proto.varint(2, UInt64(bitPattern: Int64(step)))
    }

    private func write(_ event: [UInt8]) throws {
        guard let handle else { throw FileError(path, "is closed") }
        var length = UInt64(event.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { Array($0) }
        let record = lengthBytes + TFRecord.maskedCRC(lengthBytes) + event + TFRecord.maskedCRC(event)
        do {
            try handle.write(contentsOf: Data(record))
        } catch {
            throw FileError(path, "write failed: \(error.localizedDescription)")
        }
    }
}

/// The events of a TensorBoard file, for tests and `inspect`-like checks: every record's CRCs
/// verified; a torn last record (a killed writer) ends the list, as TensorBoard's reader does.
public enum TensorBoardEvents {
    public struct Value: Equatable {
        public var step: Int
        public var tag: String
        public var scalar: Float?
        public var image: [UInt8]?
    }

    public static func read(_ path: String) throws -> (values: [Value], fileVersion: String?, starts: [Int]) {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read") }
        let bytes = [UInt8](data)
        var values: [Value] = [], version: String?, starts: [Int] = []
        var at = 0
        while at + 12 <= bytes.count {
            let lengthBytes = Array(bytes[at..<at + 8])
            guard Array(bytes[at + 8..<at + 12]) == TFRecord.maskedCRC(lengthBytes) else { throw FileError(path, "record at \(at): bad length checksum") }
            let n = Int(lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.1) << (8 * UInt64($1.0)) })
            guard n <= bytes.count - at - 16 else { break }
            let event = Array(bytes[at + 12..<at + 12 + n])
            guard Array(bytes[at + 12 + n..<at + 16 + n]) == TFRecord.maskedCRC(event) else { throw FileError(path, "record at \(at): bad data checksum") }
            at += 16 + n
            var step = 0
            var pending: [Value] = []
            for (field, payload) in try Proto.fields(event, path: path) {
                switch (field, payload) {
                case (2, .varint(let v)): step = Int(Int64(bitPattern: v))
                case (3, .bytes(let b)): version = String(decoding: b, as: UTF8.self)
                case (7, .bytes): starts.append(-1)
                case (5, .bytes(let summary)):
                    for case (1, .bytes(let value)) in try Proto.fields(summary, path: path) {
                        var v = Value(step: 0, tag: "")
                        for (f, p) in try Proto.fields(value, path: path) {
                            switch (f, p) {
                            case (1, .bytes(let t)): v.tag = String(decoding: t, as: UTF8.self)
                            case (2, .fixed32(let bits)): v.scalar = Float(bitPattern: bits)
                            case (4, .bytes(let image)):
                                for case (4, .bytes(let png)) in try Proto.fields(image, path: path) { v.image = png }
                            default: break
                            }
                        }
                        pending.append(v)
                    }
                default: break
                }
            }
            if starts.last == -1 { starts[starts.count - 1] = step }
            values += pending.map { var v = $0; v.step = step; return v }
        }
        return (values, version, starts)
    }
}

/// TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset ("masked").
enum TFRecord {
    static let table: [UInt32] = (0..<256).map { i in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    static func maskedCRC(_ bytes: [UInt8]) -> [UInt8] {
        let c = crc32c(bytes)
        let masked = ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
        return withUnsafeBytes(of: masked.littleEndian) { Array($0) }
    }
}

/// The protocol-buffer wire format, as far as event files need it.
enum Proto {
    enum Payload { case varint(UInt64), fixed64(UInt64), fixed32(UInt32), bytes([UInt8]) }

    static func varintBytes(_ value: UInt64) -> [UInt8] {
        var v = value, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        return out + [UInt8(v)]
    }

    static func key(_ field: Int, _ wire: UInt64) -> [UInt8] { varintBytes(UInt64(field) << 3 | wire) }
    static func varint(_ field: Int, _ v: UInt64) -> [UInt8] { key(field, 0) + varintBytes(v) }
    static func double(_ field: Int, _ v: Double) -> [UInt8] { key(field, 1) + withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    static func float(_ field: Int, _ v: Float) -> [UInt8] { key(field, 5) + withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    static func bytes(_ field: Int, _ b: [UInt8]) -> [UInt8] { key(field, 2) + varintBytes(UInt64(b.count)) + b }
    static func message(_ field: Int, _ m: [UInt8]) -> [UInt8] { bytes(field, m) }

    static func fields(_ b: [UInt8], path: String) throws -> [(Int, Payload)] {
        var out: [(Int, Payload)] = [], at = 0
        func readVarint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard at < b.count, shift < 64 else { throw FileError(path, "malformed event (varint)") }
                let byte = b[at]; at += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
        }
        func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, n <= b.count - at else { throw FileError(path, "malformed event (length)") }
            defer { at += n }
            return Array(b[at..<at + n])
        }
        func little<T: FixedWidthInteger>(_ bytes: [UInt8], _: T.Type) -> T {
            bytes.enumerated().reduce(T(0)) { $0 | T($1.1) << (8 * T($1.0)) }
        }
        while at < b.count {
            let k = try readVarint()
            let field = Int(k >> 3)
            switch k & 7 {
            case 0: out.append((field, .varint(try readVarint())))
            case 1: out.append((field, .fixed64(little(try take(8), UInt64.self))))
            case 2:
                let n = try readVarint()
                guard n <= UInt64(b.count) else { throw FileError(path, "malformed event (length)") }
                out.append((field, .bytes(try take(Int(n)))))
            case 5: out.append((field, .fixed32(little(try take(4), UInt32.self))))
            default: throw FileError(path, "malformed event (wire type \(k & 7))")
            }
        }
        return out
    }
}
