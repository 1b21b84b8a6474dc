/// A small, strict JSON reader and writer. Ours rather than Foundation's because checkpoint
/// headers are untrusted input: nesting depth is bounded (no stack overflow on `[[[[...`),
/// integers stay exact (offsets and shapes), duplicate keys are refused, and objects keep their
/// key order so configs round-trip as written.
public enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.int(x), .double(y)), let (.double(y), .int(x)): return Double(x) == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    // MARK: access

    public subscript(key: String) -> JSON? {
        if case .object(let pairs) = self { return pairs.first { $0.0 == key }?.1 }
        return nil
    }

    public var objectPairs: [(String, JSON)]? { if case .object(let p) = self { return p }; return nil }
    public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var isNull: Bool { self == .null }

    /// An integer, also from a float that holds one exactly (configs write `1.0` for 1).
    public var int: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int(d)
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    /// Replaces or appends `key` in an object.
    public mutating func set(_ key: String, _ value: JSON) {
        guard case .object(var pairs) = self else { return }
        if let i = pairs.firstIndex(where: { $0.0 == key }) { pairs[i].1 = value } else { pairs.append((key, value)) }
        self = .object(pairs)
    }

    // MARK: parse

    public struct ParseError: Error, CustomStringConvertible {
        public let message: String
        public let offset: Int
        public var description: String { "invalid JSON at byte \(offset): \(message)" }
    }

    public static let maximumDepth = 64

    public static func parse(_ text: String) throws -> JSON {
        try parse(bytes: Array(text.utf8))
    }

    /// Parses UTF-8 bytes. Invalid UTF-8 inside strings is an error, not a replacement character.
    public static func parse<C: Collection>(bytes: C) throws -> JSON where C.Element == UInt8 {
        var parser = Parser(bytes: Array(bytes))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.i == parser.b.count else { throw parser.error("trailing characters after the value") }
        return value
    }

    private struct Parser {
        let b: [UInt8]
        var i = 0
        init(bytes: [UInt8]) { b = bytes }

        func error(_ m: String) -> ParseError { ParseError(message: m, offset: i) }

        mutating func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }

        mutating func expect(_ word: String) throws {
            for c in word.utf8 {
                guard i < b.count, b[i] == c else { throw error("expected '\(word)'") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> JSON {
            guard depth < JSON.maximumDepth else { throw error("nested deeper than \(JSON.maximumDepth) levels") }
            guard i < b.count else { throw error("unexpected end of input") }
            switch b[i] {
            case UInt8(ascii: "{"):
                i += 1
                var pairs: [(String, JSON)] = []
                // Headers hold hundreds of thousands of small objects: a linear scan beats a
                // Set for those, which appear only once an object grows.
                var seen: Set<String>?
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
                while true {
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                    let key = try string()
                    let duplicate: Bool
                    if pairs.count < 16 {
                        duplicate = pairs.contains { $0.0 == key }
                    } else {
                        if seen == nil { seen = Set(pairs.map(\.0)) }
                        duplicate = !seen!.insert(key).inserted
                    }
                    guard !duplicate else { throw error("duplicate key \"\(key)\"") }
                    skipSpace()
                    try expect(":")
                    skipSpace()
                    pairs.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard i < b.count else { throw error("unterminated object") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
                    throw error("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < b.count else { throw error("unterminated array") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw error("expected ',' or ']'")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            // Python's json writes these for non-finite floats; configs occasionally hold them.
            case UInt8(ascii: "N"): try expect("NaN"); return .double(.nan)
            case UInt8(ascii: "I"): try expect("Infinity"); return .double(.infinity)
            default: return try number()
            }
        }

        mutating func number() throws -> JSON {
            let start = i
            if i < b.count, b[i] == UInt8(ascii: "-") {
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "I") { try expect("Infinity"); return .double(-.infinity) }
            }
            var integral = true
            guard i < b.count, b[i] >= 0x30, b[i] <= 0x39 else { throw error("unexpected character") }
            if b[i] == 0x30, i + 1 < b.count, b[i + 1] >= 0x30, b[i + 1] <= 0x39 { throw error("leading zero") }
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            if i < b.count, b[i] == UInt8(ascii: ".") {
                integral = false
                i += 1
                guard i < b.count, b[i] >= 0x30, b[i] <= 0x39 else { throw error("digit expected after '.'") }
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                integral = false
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                guard i < b.count, b[i] >= 0x30, b[i] <= 0x39 else { throw error("digit expected in exponent") }
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            }
            if integral {
                // Accumulated negatively so that Int.min fits; any overflow is out of range.
                var v = 0, overflow = false
                for k in (b[start] == UInt8(ascii: "-") ? start + 1 : start)..<i where !overflow {
                    let (m, o1) = v.multipliedReportingOverflow(by: 10)
                    let (d, o2) = m.subtractingReportingOverflow(Int(b[k] - 0x30))
                    (v, overflow) = (d, o1 || o2)
                }
                if b[start] != UInt8(ascii: "-") && !overflow { (v, overflow) = (0 as Int).subtractingReportingOverflow(v) }
                guard !overflow else {
                    throw ParseError(message: "integer \(String(decoding: b[start..<i], as: UTF8.self)) is out of range", offset: start)
                }
                return .int(v)
            }
            let text = String(decoding: b[start..<i], as: UTF8.self)
            guard let d = Double(text) else { throw ParseError(message: "bad number \(text)", offset: start) }
            return .double(d)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= b.count else { throw error("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw error("bad hex digit in \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1  // opening quote
            var out: [UInt8] = []
            var runStart = i
            while true {
                guard i < b.count else { throw error("unterminated string") }
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    // No escape seen (each adds a byte): validate the run in place, no copy.
                    if out.isEmpty {
                        let run = b[runStart..<i]
                        i += 1
                        guard let s = String(validating: run, as: UTF8.self) else { throw error("string is not valid UTF-8") }
                        return s
                    }
                    out.append(contentsOf: b[runStart..<i])
                    i += 1
                    break
                }
                if c < 0x20 { throw error("control character in string") }
                if c == UInt8(ascii: "\\") {
                    out.append(contentsOf: b[runStart..<i])
                    i += 1
                    guard i < b.count else { throw error("unterminated escape") }
                    let e = b[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if scalar >= 0xD800, scalar < 0xDC00 {
                            guard i + 6 <= b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                                throw error("unpaired surrogate")
                            }
                            i += 2
                            let low = try hex4()
                            guard low >= 0xDC00, low < 0xE000 else { throw error("unpaired surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if scalar >= 0xDC00, scalar < 0xE000 {
                            throw error("unpaired surrogate")
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw error("bad \\u escape") }
                        UTF8.encode(unicode) { out.append($0) }
                    default: throw error("bad escape")
                    }
                    runStart = i
                    continue
                }
                i += 1
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
            return s
        }
    }

    // MARK: write

    /// Compact JSON (`{"a":1}`), keys in stored order, non-ASCII text as UTF-8 (as the
    /// reference safetensors writer does).
    public var compact: String {
        var out = ""
        write(into: &out, indent: nil, level: 0)
        return out
    }

    /// Indented JSON as Python's `json.dumps(indent=2)` writes it, as diffusers configs look,
    /// non-ASCII text escaped as Python does by default.
    public var pretty: String {
        var out = ""
        write(into: &out, indent: 2, level: 0)
        return out
    }

    private func write(into out: inout String, indent: Int?, level: Int) {
        func newline(_ l: Int) {
            if let indent { out += "\n" + String(repeating: " ", count: indent * l) }
        }
        switch self {
        case .null: out += "null"
        case .bool(let v): out += v ? "true" : "false"
        case .int(let v): out += String(v)
        case .double(let v):
            // Python's repr: integral values below 1e16 as `12.0` (sign kept for -0.0), others
            // in the shortest round-trip form, which Swift's description shares.
            if v.isNaN { out += "NaN" } else if v.isInfinite { out += v < 0 ? "-Infinity" : "Infinity" } else if v == 0 {
                out += v.sign == .minus ? "-0.0" : "0.0"
            } else if v.rounded() == v && abs(v) < 1e16 {
                out += String(Int(v)) + ".0"
            } else { out += "\(v)" }
        case .string(let s): JSON.quote(s, asciiOnly: indent != nil, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (k, item) in items.enumerated() {
                if k > 0 { out += "," }
                newline(level + 1)
                item.write(into: &out, indent: indent, level: level + 1)
            }
            newline(level)
            out += "]"
        case .object(let pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{"
            for (k, (key, value)) in pairs.enumerated() {
                if k > 0 { out += "," }
                newline(level + 1)
                JSON.quote(key, asciiOnly: indent != nil, into: &out)
                out += indent == nil ? ":" : ": "
                value.write(into: &out, indent: indent, level: level + 1)
            }
            newline(level)
            out += "}"
        }
    }

    /// Escapes as Python's json does: `\b` and `\f` by name, other control characters as
    /// `\u00XX`; with `asciiOnly` (Python's default `ensure_ascii`) also everything past `~`,
    /// astral characters as surrogate pairs.
    /// `s` as a JSON string literal, quotes included, spelt as the printer spells it (Python's
    /// json.dumps with `ensure_ascii` = `asciiOnly`).
    public static func quoted(_ s: String, asciiOnly: Bool = false) -> String {
        var out = ""
        quote(s, asciiOnly: asciiOnly, into: &out)
        return out
    }

    private static func quote(_ s: String, asciiOnly: Bool, into out: inout String) {
        func hex(_ v: UInt32) {
            let digits = String(v, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
        }
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                let v = scalar.value
                if v < 0x20 || (asciiOnly && v >= 0x7F && v < 0x10000) {
                    hex(v)
                } else if asciiOnly && v >= 0x10000 {
                    hex(0xD800 + ((v - 0x10000) >> 10))
                    hex(0xDC00 + ((v - 0x10000) & 0x3FF))
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByFloatLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements) }
}
