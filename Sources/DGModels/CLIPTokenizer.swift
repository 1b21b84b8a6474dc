import DGBase
import DGCheckpoint
import Foundation

/// CLIP's byte-level BPE tokenizer, token for token as the reference computes it: the
/// `CLIPTokenizer` of transformers 5.24 that diffusers' Stable Diffusion pipelines use (backed
/// by the `tokenizers` 0.23 library), built from `vocab.json` and `merges.txt`. (transformers 4's
/// pure-Python `CLIPTokenizer` without ftfy differed on rare text: it removed control and format
/// characters such as U+200D, split CJK characters apart and applied the final-sigma rule.)
///
/// The reference pipeline, step by step:
/// 1. The special tokens (`<|startoftext|>`, `<|endoftext|>`) are cut out of the raw text,
///    exactly as written, and become their ids; the text between them is tokenized separately.
/// 2. Normalisation: NFC (of Unicode 9.0, see `nfc`); every run of whitespace (Unicode
///    White_Space) becomes one space; each character is replaced by its full lowercase mapping
///    (`İ` -> `i̇`, no final-sigma rule). Accents, controls, zero-width joiners are all kept;
///    nothing is stripped (pre-tokenisation drops the spaces).
/// 3. Pre-tokenisation with CLIP's pattern
///    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
///    (whitespace between matches is dropped; letters and numbers as of Unicode 16.0), then
///    GPT-2's byte-level pattern on each piece,
///    which leaves every piece whole except the special-token spellings (as written after
///    lowercasing, e.g. from `<|EndOfText|>`), which become `<|`, the word and `|>`.
/// 4. Each piece's UTF-8 bytes, one character per byte (GPT-2's byte-to-unicode map), the last
///    with `</w>` appended, are merged by BPE, lowest merge rank first, then leftmost.
///
/// Building reads the vocabulary once; tokenizing a prompt takes microseconds. Every piece's
/// BPE result is cached. Safe to use from several threads.
public final class CLIPTokenizer: @unchecked Sendable {
    /// The special tokens and length limit, as `tokenizer_config.json` gives them.
    public struct Configuration: Equatable, Sendable {
        public var bosToken = "<|startoftext|>"
        public var eosToken = "<|endoftext|>"
        public var padToken = "<|endoftext|>"
        public var unkToken = "<|endoftext|>"
        public var modelMaxLength = 77

        /// CLIP's (and every Stable Diffusion 1.x tokenizer's) settings.
        public static let clip = Configuration()

        public init() {}

        /// Reads `tokenizer_config.json`, with `special_tokens_map.json` for what it leaves out,
        /// and CLIP's defaults for what both leave out. A token may be written as a string or as
        /// an object with a `content` field.
        public init(tokenizerConfig: JSON?, specialTokensMap: JSON? = nil, file: String = "tokenizer_config.json") throws {
            func token(_ key: String) throws -> String? {
                for json in [tokenizerConfig, specialTokensMap] {
                    guard let value = json?[key], !value.isNull else { continue }
                    if let s = value.string ?? value["content"]?.string, !s.isEmpty { return s }
                    throw FileError(file, "\"\(key)\" must be a non-empty string or an object with a \"content\" string, not \(value.compact)")
                }
                return nil
            }
            bosToken = try token("bos_token") ?? bosToken
            eosToken = try token("eos_token") ?? eosToken
            padToken = try token("pad_token") ?? padToken
            unkToken = try token("unk_token") ?? unkToken
            if let value = tokenizerConfig?["model_max_length"], !value.isNull {
                // transformers writes a huge float (1e30) for "no limit".
                guard let d = value.double, d >= 2 else {
                    throw FileError(file, "\"model_max_length\" must be a number of at least 2, not \(value.compact)")
                }
                modelMaxLength = d < 1e15 ? Int(d) : Int.max
            }
        }
    }

    public let configuration: Configuration
    public let bosID: Int
    public let eosID: Int
    public let padID: Int
    public let unkID: Int
    /// The longest sequence (with start and end tokens) the text model accepts.
    public var modelMaxLength: Int { configuration.modelMaxLength }

    /// token -> id, as in vocab.json.
    private let vocabulary: [String: Int]
    /// id -> token; nil for ids that vocab.json skips.
    private let tokens: [String?]
    /// (left id << 32 | right id) -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    /// The id of each byte's character, alone and as the end of a word (with `</w>`); the
    /// unknown-token id where the vocabulary lacks it.
    private let byteIDs: [Int32]
    private let wordEndByteIDs: [Int32]
    /// The distinct special-token spellings and their ids, cut out of the raw text.
    private let specials: [(bytes: [UInt8], id: Int)]
    private let specialIDs: Set<Int>
    /// Whether a byte starts some special token's spelling.
    private let specialStarts: [Bool]

    private let lock = NSLock()
    private var cache: [[UInt8]: [Int32]] = [:]
    static let cacheLimit = 100_000

    /// The number of ids in the vocabulary (49408 for CLIP).
    public var vocabularySize: Int { vocabulary.count }

    /// Builds the tokenizer from the bytes of `vocab.json` and `merges.txt`.
    public init(vocab vocabBytes: [UInt8], merges mergesBytes: [UInt8], configuration: Configuration = .clip) throws {
        self.configuration = configuration

        // vocab.json: an object of token -> non-negative integer id, ids distinct.
        let json: JSON
        do {
            json = try JSON.parse(bytes: vocabBytes)
        } catch let e as JSON.ParseError {
            throw FileError("vocab.json", "is not valid JSON at byte \(e.offset): \(e.message)")
        }
        guard let pairs = json.objectPairs else { throw FileError("vocab.json", "must be a JSON object of token -> id") }
        guard !pairs.isEmpty else { throw FileError("vocab.json", "is empty") }
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(pairs.count)
        var maxID = 0
        for (token, value) in pairs {
            guard case .int(let id) = value, id >= 0, id < 1 << 31 else {
                throw FileError("vocab.json", "the id of token \(JSON.string(token).compact) must be a non-negative integer below 2^31, not \(value.compact)")
            }
            vocabulary[token] = id
            maxID = max(maxID, id)
        }
        guard maxID < 16 * pairs.count + 1024 else {
            throw FileError("vocab.json", "ids go up to \(maxID) for only \(pairs.count) tokens")
        }
        var tokens = [String?](repeating: nil, count: maxID + 1)
        for (token, id) in vocabulary {
            if let other = tokens[id] {
                let (a, b) = token < other ? (token, other) : (other, token)
                throw FileError("vocab.json", "tokens \(JSON.string(a).compact) and \(JSON.string(b).compact) share the id \(id)")
            }
            tokens[id] = token
        }
        self.vocabulary = vocabulary
        self.tokens = tokens

        func specialID(_ token: String, _ role: String) throws -> Int {
            guard !token.isEmpty else { throw FileError("tokenizer configuration", "the \(role) token is empty") }
            guard let id = vocabulary[token] else {
                throw FileError("vocab.json", "has no \(role) token \(JSON.string(token).compact)")
            }
            return id
        }
        bosID = try specialID(configuration.bosToken, "start (bos)")
        eosID = try specialID(configuration.eosToken, "end (eos)")
        padID = try specialID(configuration.padToken, "padding")
        unkID = try specialID(configuration.unkToken, "unknown (unk)")
        var specials: [(bytes: [UInt8], id: Int)] = []
        for token in [configuration.bosToken, configuration.eosToken, configuration.padToken, configuration.unkToken]
        where !specials.contains(where: { $0.bytes == Array(token.utf8) }) {
            specials.append((Array(token.utf8), vocabulary[token]!))
        }
        // Longest first: the reference matches leftmost-longest.
        self.specials = specials.sorted { $0.bytes.count > $1.bytes.count }
        specialIDs = Set(specials.map(\.id))
        var specialStarts = [Bool](repeating: false, count: 256)
        for special in specials { specialStarts[Int(special.bytes[0])] = true }
        self.specialStarts = specialStarts

        var byteIDs = [Int32](repeating: 0, count: 256), wordEndByteIDs = [Int32](repeating: 0, count: 256)
        for b in 0..<256 {
            let c = String(Character(Self.byteEncoder[b]))
            byteIDs[b] = Int32(vocabulary[c] ?? unkID)
            wordEndByteIDs[b] = Int32(vocabulary[c + "</w>"] ?? unkID)
        }
        self.byteIDs = byteIDs
        self.wordEndByteIDs = wordEndByteIDs
        merges = try Self.readMerges(mergesBytes, vocabulary)
    }

    /// Reads `<folder>/vocab.json`, `<folder>/merges.txt` and, where present,
    /// `tokenizer_config.json` and `special_tokens_map.json` (a diffusers `tokenizer/` folder).
    public convenience init(folder: String) throws {
        func read(_ name: String, required: Bool) throws -> [UInt8]? {
            let path = (folder as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: path) else {
                if required { throw FileError(path, "not found (a CLIP tokenizer folder holds vocab.json and merges.txt)") }
                return nil
            }
            do {
                return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw FileError(path, "cannot be read: \(error.localizedDescription)")
            }
        }
        func json(_ name: String) throws -> JSON? {
            guard let bytes = try read(name, required: false) else { return nil }
            do {
                return try JSON.parse(bytes: bytes)
            } catch let e as JSON.ParseError {
                throw FileError((folder as NSString).appendingPathComponent(name), "is not valid JSON at byte \(e.offset): \(e.message)")
            }
        }
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        let configuration = try Configuration(tokenizerConfig: json("tokenizer_config.json"),
                                              specialTokensMap: json("special_tokens_map.json"), file: configPath)
        let vocab = try read("vocab.json", required: true)!
        let merges = try read("merges.txt", required: true)!
        do {
            try self.init(vocab: vocab, merges: merges, configuration: configuration)
        } catch let e as FileError {
            // Name the file with its folder.
            let name = e.path == "vocab.json" || e.path == "merges.txt" ? (folder as NSString).appendingPathComponent(e.path) : e.path
            throw FileError(name, e.problem)
        }
    }

    /// merges.txt: an optional `#version` line, then one merge per line, "left right", in
    /// priority order (the first line merges first). Both sides and their concatenation must be
    /// tokens of the vocabulary, as the reference requires. A later duplicate takes the later rank.
    private static func readMerges(_ bytes: [UInt8], _ vocabulary: [String: Int]) throws -> [UInt64: UInt64] {
        func fail(_ line: Int, _ problem: String) -> FileError {
            FileError("merges.txt", "line \(line): \(problem)")
        }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw FileError("merges.txt", "is not valid UTF-8")
        }
        // Split as bytes: as Characters, "\r\n" is one and a space may join a combining mark.
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }  // after the final newline
        let versionPrefix = Array("#version".utf8)
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(lines.count)
        var rank: UInt64 = 0
        for (index, rawLine) in lines.enumerated() {
            let line = rawLine.last == 0x0D ? rawLine.dropLast() : rawLine
            if line.starts(with: versionPrefix) { continue }
            let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw fail(index + 1, "expected two tokens separated by one space, not \(JSON.string(String(decoding: line, as: UTF8.self)).compact)")
            }
            let left = String(decoding: parts[0], as: UTF8.self), right = String(decoding: parts[1], as: UTF8.self)
            for token in [left, right, left + right] where vocabulary[token] == nil {
                throw fail(index + 1, "token \(JSON.string(token).compact) is not in vocab.json")
            }
            let key = UInt64(vocabulary[left]!) << 32 | UInt64(vocabulary[right]!)
            merges[key] = rank << 32 | UInt64(vocabulary[left + right]!)
            rank += 1
        }
        return merges
    }

    // MARK: encoding

    /// The ids of `text`, without start and end tokens (the reference's
    /// `tokenizer(text, add_special_tokens=False).input_ids`). Special-token spellings in the
    /// text become their ids.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        let bytes = Array(text.utf8)
        var segmentStart = 0, i = 0
        func flush(_ end: Int) {
            guard end > segmentStart else { return }
            let segment = String(decoding: bytes[segmentStart..<end], as: UTF8.self)
            encodeSegment(segment, into: &ids)
        }
        while i < bytes.count {
            var matched: (bytes: [UInt8], id: Int)?
            if specialStarts[Int(bytes[i])] {
                for special in specials where Self.hasPrefix(bytes, at: i, special.bytes) {
                    matched = special
                    break
                }
            }
            if let matched {
                flush(i)
                ids.append(matched.id)
                i += matched.bytes.count
                segmentStart = i
            } else {
                i += 1
            }
        }
        flush(bytes.count)
        return ids
    }

    /// What the reference pipeline feeds the text model:
    /// `tokenizer(text, padding="max_length", max_length=maxLength, truncation=True).input_ids`,
    /// i.e. the start token, the text's ids cut to `maxLength - 2`, the end token, then the
    /// padding token up to `maxLength`.
    public func callAsFunction(_ text: String, maxLength: Int = 77) -> [Int] {
        precondition(maxLength >= 2, "maxLength must leave room for the start and end tokens")
        let room = max(0, maxLength - 2)
        var out = [bosID]
        out.reserveCapacity(max(maxLength, 2))
        out += encode(text).prefix(room)
        out.append(eosID)
        while out.count < maxLength { out.append(padID) }
        return out
    }

    private static func hasPrefix(_ bytes: [UInt8], at i: Int, _ prefix: [UInt8]) -> Bool {
        guard i + prefix.count <= bytes.count else { return false }
        for k in 0..<prefix.count where bytes[i + k] != prefix[k] { return false }
        return true
    }

    /// Normalises, pre-tokenises and BPE-encodes text that holds no special token.
    private func encodeSegment(_ text: String, into ids: inout [Int]) {
        let scalars = Self.normalize(text)
        var utf8: [UInt8] = []
        for piece in Self.pieces(scalars) {
            utf8.removeAll(keepingCapacity: true)
            for s in scalars[piece] { UTF8.encode(s) { utf8.append($0) } }
            for id in bpe(utf8) { ids.append(Int(id)) }
        }
    }

    // MARK: normalisation

    /// The reference normaliser: NFC, runs of whitespace to one space, full lowercase mapping
    /// per character. Leading and trailing whitespace stays a space (pre-tokenising drops it).
    static func normalize(_ text: String) -> [Unicode.Scalar] {
        let nfc = nfc(text)
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(nfc.unicodeScalars.count)
        var inSpace = false
        for s in nfc.unicodeScalars {
            if isWhitespace(s) {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if s.isASCII {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 0x20)! : s)
            } else if s.properties.changesWhenLowercased {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(s)
            }
        }
        return out
    }

    /// The Unicode version of the reference's NFC (the `unicode-normalization-alignments` crate
    /// inside `tokenizers`). To it, later characters are unassigned: starters that neither
    /// decompose, compose nor reorder with their neighbours.
    static let nfcUnicodeVersion = (major: 9, minor: 0)

    /// NFC as the reference computes it: the standard library's NFC (not Foundation's, which
    /// on Linux leaves a Hangul LV syllable and a trailing jamo, U+AC00 U+11A8, uncomposed) of
    /// the runs between characters newer than `nfcUnicodeVersion`, which stay as they are.
    /// Normalisation is stable, so on text of old characters every version agrees.
    static func nfc(_ text: String) -> String {
        // Below U+0300 every string is already in NFC (the first character that is not, or may
        // not be, is the combining grave accent), so ASCII and Latin-1 text skips the work.
        if text.unicodeScalars.allSatisfy({ $0.value < 0x300 }) { return text }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var run = String.UnicodeScalarView()
        func flush() {
            guard !run.isEmpty else { return }
            String(run)._withNFCCodeUnits { out.append($0) }
            run = String.UnicodeScalarView()
        }
        for s in text.unicodeScalars {
            if let decomposition = nonStarterDecompositions[s.value] {
                run.append(contentsOf: decomposition)
            } else if s.value >= 0x300 && !assigned(s, by: nfcUnicodeVersion) {
                flush()
                UTF8.encode(s) { out.append($0) }
            } else {
                run.append(s)
            }
        }
        flush()
        return String(decoding: out, as: UTF8.self)
    }

    /// The characters whose canonical decomposition starts with a combining mark. The standard
    /// library's NFC does not reorder those marks with the marks before them (it gives
    /// x U+0302 U+0F71 U+0F74 for x U+0302 U+0F75, not x U+0F71 U+0F74 U+0302), so they are
    /// decomposed first; none of them is ever recomposed, so NFC's result is the same.
    static let nonStarterDecompositions: [UInt32: [Unicode.Scalar]] = [
        0x0340: ["\u{300}"], 0x0341: ["\u{301}"], 0x0343: ["\u{313}"], 0x0344: ["\u{308}", "\u{301}"],
        0x0F73: ["\u{F71}", "\u{F72}"], 0x0F75: ["\u{F71}", "\u{F74}"], 0x0F81: ["\u{F71}", "\u{F80}"],
    ]

    /// Whether `s` was assigned in Unicode `version` or before.
    @inline(__always) static func assigned(_ s: Unicode.Scalar, by version: (major: Int, minor: Int)) -> Bool {
        guard let age = s.properties.age else { return false }
        return age.major < version.major || (age.major == version.major && age.minor <= version.minor)
    }

    /// The normalised text as a string (for tests and inspection).
    static func normalized(_ text: String) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: normalize(text))
        return String(s)
    }

    /// Unicode White_Space, which is what `\s` means in the reference's patterns.
    @inline(__always) static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value == 0x20 || (s.value >= 0x09 && s.value <= 0x0D) }
        return s.properties.isWhitespace
    }

    /// The Unicode version of the reference's pattern engine (the Oniguruma inside `tokenizers`
    /// 0.23, which transformers 5.24 uses): characters assigned later are unassigned to it, so neither `\p{L}` nor `\p{N}`.
    /// (Its lowercasing knows the standard library's characters; its NFC is older still.)
    static let patternUnicodeVersion = (major: 16, minor: 0)

    /// `\p{L}`: general category Lu, Ll, Lt, Lm or Lo.
    @inline(__always) static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return (s.value | 0x20) >= 0x61 && (s.value | 0x20) <= 0x7A }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return assigned(s, by: patternUnicodeVersion)
        default: return false
        }
    }

    /// `\p{N}`: general category Nd, Nl or No.
    @inline(__always) static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return assigned(s, by: patternUnicodeVersion)
        default: return false
        }
    }

    // MARK: pre-tokenisation

    private static let specialWords: [[Unicode.Scalar]] = ["startoftext", "endoftext"].map { Array($0.unicodeScalars) }
    private static let contractions: [[Unicode.Scalar]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }

    /// The pieces of normalised text, as ranges of `scalars`: the matches of CLIP's pattern,
    /// leftmost first, alternatives in order, with GPT-2's byte-level split applied to each.
    static func pieces(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        func matches(_ word: [Unicode.Scalar], at i: Int) -> Bool {
            guard i + word.count <= s.count else { return false }
            for k in 0..<word.count where s[i + k] != word[k] { return false }
            return true
        }
        var out: [Range<Int>] = []
        var i = 0
        let n = s.count
        outer: while i < n {
            let c = s[i]
            if isWhitespace(c) { i += 1; continue }
            // <|startoftext|> and <|endoftext|> are one match, which the byte-level split then
            // cuts into "<|", the word and "|>".
            if c == "<", i + 1 < n, s[i + 1] == "|" {
                for word in specialWords where matches(word, at: i + 2) {
                    let end = i + 2 + word.count
                    if end + 1 < n, s[end] == "|", s[end + 1] == ">" {
                        out.append(i..<(i + 2))
                        out.append((i + 2)..<end)
                        out.append(end..<(end + 2))
                        i = end + 2
                        continue outer
                    }
                }
            }
            if c == "'" {
                for word in contractions where matches(word, at: i + 1) {
                    out.append(i..<(i + 1 + word.count))
                    i += 1 + word.count
                    continue outer
                }
            }
            var j = i + 1
            if isLetter(c) {
                while j < n, isLetter(s[j]) { j += 1 }
            } else if isNumber(c) {
                // One digit per piece.
            } else {
                while j < n, !isWhitespace(s[j]), !isLetter(s[j]), !isNumber(s[j]) { j += 1 }
            }
            out.append(i..<j)
            i = j
        }
        return out
    }

    // MARK: byte-level alphabet

    /// GPT-2's byte -> character map: printable Latin-1 bytes stand for themselves, the other
    /// 68 bytes (controls, space, DEL, NBSP, soft hyphen) for U+0100 onwards, in byte order.
    static let byteEncoder: [Unicode.Scalar] = {
        func printable(_ b: Int) -> Bool { (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) }
        var map = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if printable(b) {
                map[b] = Unicode.Scalar(UInt32(b))!
            } else {
                map[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return map
    }()

    /// The inverse of `byteEncoder`, indexed by scalar value (0..<324); -1 for other values.
    static let byteDecoder: [Int16] = {
        var map = [Int16](repeating: -1, count: 324)
        for (b, c) in byteEncoder.enumerated() { map[Int(c.value)] = Int16(b) }
        return map
    }()

    // MARK: BPE

    /// The ids of one piece's bytes, cached.
    func bpe(_ bytes: [UInt8]) -> [Int32] {
        lock.lock()
        let hit = cache[bytes]
        lock.unlock()
        if let hit { return hit }
        let ids = merge(bytes)
        lock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[bytes] = ids
        lock.unlock()
        return ids
    }

    /// BPE as the reference does it: a queue of the adjacent pairs that have a merge, taken by
    /// lowest rank then leftmost position; an entry whose pair has changed since it was queued is
    /// dropped, and each merge queues the new pairs it forms with its neighbours.
    private func merge(_ bytes: [UInt8]) -> [Int32] {
        let n = bytes.count
        guard n > 0 else { return [] }
        var symbol = [Int32](repeating: 0, count: n)
        for k in 0..<n { symbol[k] = k == n - 1 ? wordEndByteIDs[Int(bytes[k])] : byteIDs[Int(bytes[k])] }
        guard n > 1 else { return symbol }
        var prev = [Int](repeating: -1, count: n), next = [Int](repeating: -1, count: n)
        var removed = [Bool](repeating: false, count: n)
        for k in 0..<n {
            prev[k] = k - 1
            next[k] = k + 1 < n ? k + 1 : -1
        }

        // A binary min-heap of (rank << 32 | position), with the merged id alongside.
        var heap: [(key: UInt64, id: Int32)] = []
        heap.reserveCapacity(n)
        func push(_ key: UInt64, _ id: Int32) {
            heap.append((key, id))
            var c = heap.count - 1
            while c > 0 {
                let p = (c - 1) / 2
                if heap[p].key <= heap[c].key { break }
                heap.swapAt(p, c)
                c = p
            }
        }
        func pop() -> (key: UInt64, id: Int32) {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var p = 0
                while true {
                    let l = 2 * p + 1, r = l + 1
                    var m = p
                    if l < heap.count, heap[l].key < heap[m].key { m = l }
                    if r < heap.count, heap[r].key < heap[m].key { m = r }
                    if m == p { break }
                    heap.swapAt(p, m)
                    p = m
                }
            }
            return top
        }
        @inline(__always) func lookup(_ a: Int32, _ b: Int32) -> UInt64? {
            merges[UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))]
        }
        func queue(_ position: Int, _ a: Int32, _ b: Int32) {
            if let m = lookup(a, b) { push((m >> 32) << 32 | UInt64(position), Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)) }
        }

        for k in 0..<(n - 1) { queue(k, symbol[k], symbol[k + 1]) }
        while !heap.isEmpty {
            let top = pop()
            let pos = Int(top.key & 0xFFFF_FFFF)
            if removed[pos] { continue }
            let right = next[pos]
            if right < 0 { continue }
            // Stale: the pair here no longer merges into this entry's token.
            guard let m = lookup(symbol[pos], symbol[right]), Int32(truncatingIfNeeded: m & 0xFFFF_FFFF) == top.id else { continue }
            symbol[pos] = top.id
            removed[right] = true
            next[pos] = next[right]
            if next[right] >= 0 { prev[next[right]] = pos }
            if prev[pos] >= 0 { queue(prev[pos], symbol[prev[pos]], symbol[pos]) }
            if next[pos] >= 0 { queue(pos, symbol[pos], symbol[next[pos]]) }
        }
        var out: [Int32] = []
        var k = 0
        while k >= 0 {
            out.append(symbol[k])
            k = next[k]
        }
        return out
    }

    // MARK: ids and tokens

    /// The id of a vocabulary token (as vocab.json spells it, e.g. `car</w>`).
    public func id(of token: String) -> Int? { vocabulary[token] }

    /// The vocabulary token of an id.
    public func token(of id: Int) -> String? { id >= 0 && id < tokens.count ? tokens[id] : nil }

    /// The text of `ids`, as the reference's `tokenizer.decode(ids)` gives it: the tokens' bytes
    /// joined and read as UTF-8 (invalid sequences as U+FFFD), each `</w>` a space, surrounding
    /// whitespace trimmed. Lowercased, as the tokens are. Ids outside the vocabulary are skipped.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard let token = token(of: id) else { continue }
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            var tokenBytes: [UInt8] = []
            var allMapped = true
            for s in token.unicodeScalars {
                let v = Int(s.value)
                if v < Self.byteDecoder.count, Self.byteDecoder[v] >= 0 {
                    tokenBytes.append(UInt8(Self.byteDecoder[v]))
                } else {
                    allMapped = false
                    break
                }
            }
            bytes += allMapped ? tokenBytes : Array(token.utf8)
        }
        // Each "</w>" a space, replaced in the bytes: in a String, "</w>" followed by a combining
        // mark would not be found, as its ">" and the mark make one Character. (The reference
        // replaces in the decoded text; no invalid sequence can swallow ASCII, so it is the same.)
        let endOfWord = Array("</w>".utf8)
        var spaced: [UInt8] = []
        spaced.reserveCapacity(bytes.count)
        var k = 0
        while k < bytes.count {
            if bytes[k] == endOfWord[0], Self.hasPrefix(bytes, at: k, endOfWord) {
                spaced.append(0x20)
                k += endOfWord.count
            } else {
                spaced.append(bytes[k])
                k += 1
            }
        }
        let text = String(decoding: spaced, as: UTF8.self)
        // Python's str.strip(): White_Space and the separators U+001C-U+001F.
        func isSpace(_ s: Unicode.Scalar) -> Bool { isWhitespaceOrSeparator(s) }
        let scalars = Array(text.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isSpace($0) })!
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[first...last])
        return String(out)
    }

    private func isWhitespaceOrSeparator(_ s: Unicode.Scalar) -> Bool {
        Self.isWhitespace(s) || (s.value >= 0x1C && s.value <= 0x1F)
    }
}
