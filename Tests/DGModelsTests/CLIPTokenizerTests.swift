import DGBase
import DGCheckpoint
@testable import DGModels
import Foundation
import XCTest

/// The tokenizer against the reference (transformers 5.24 `CLIPTokenizer`, which produced
/// `clip.input_ids` in io.safetensors and every expected id below).
final class CLIPTokenizerTests: XCTestCase {
    static let folder = Fixtures.url("sd-tiny/tiny-sd/tokenizer").path
    static let shared: CLIPTokenizer = {
        do { return try CLIPTokenizer(folder: folder) } catch { fatalError("cannot build the CLIP tokenizer: \(error)") }
    }()
    var tokenizer: CLIPTokenizer { Self.shared }

    // MARK: the reference fixture

    func testFixturePromptsMatchReferenceTokenForToken() throws {
        let prompts = try XCTUnwrap(Fixtures.json("sd-tiny/prompts.json").array?.compactMap(\.string))
        XCTAssertEqual(prompts.count, 10)
        let file = try SafeTensorsFile(path: Fixtures.url("sd-tiny/io.safetensors").path)
        let entry = try XCTUnwrap(file.entries.first { $0.name == "clip.input_ids" })
        XCTAssertEqual(entry.dtype, .i32)
        XCTAssertEqual(entry.shape, [prompts.count, 77])
        let expected: [[Int]] = try file.withBytes("clip.input_ids") { raw in
            (0..<prompts.count).map { row in
                (0..<77).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: (row * 77 + $0) * 4, as: Int32.self))) }
            }
        }
        for (k, prompt) in prompts.enumerated() {
            XCTAssertEqual(tokenizer(prompt), expected[k], "prompt \(k): \(prompt.debugDescription)")
        }
        // The too-long prompt fills all 75 places; the empty one is start, end, padding.
        XCTAssertEqual(tokenizer(prompts[7]).filter { $0 == 320 }.count, 75)
        XCTAssertEqual(tokenizer(""), [49406] + Array(repeating: 49407, count: 76))
    }

    func testConfiguration() {
        XCTAssertEqual(tokenizer.bosID, 49406)
        XCTAssertEqual(tokenizer.eosID, 49407)
        XCTAssertEqual(tokenizer.padID, 49407)
        XCTAssertEqual(tokenizer.unkID, 49407)
        XCTAssertEqual(tokenizer.modelMaxLength, 77)
        XCTAssertEqual(tokenizer.vocabularySize, 49408)
        XCTAssertEqual(tokenizer.configuration, .clip)
        XCTAssertEqual(tokenizer.id(of: "car</w>"), 1615)
        XCTAssertEqual(tokenizer.token(of: 1615), "car</w>")
        XCTAssertNil(tokenizer.token(of: 49408))
        XCTAssertNil(tokenizer.token(of: -1))
    }

    /// Hard cases, ids from the reference (`tokenizer(text, add_special_tokens=False)`).
    func testEdgeCasesMatchReference() {
        let cases: [(String, [Int])] = [
            // Lowercase per character: no final sigma; İ becomes i + combining dot.
            ("\u{3A3}\u{391}\u{3A3} \u{39F}\u{394}\u{39F}\u{3A3}.", [139, 225, 138, 109, 139, 481, 138, 123, 138, 112, 138, 123, 139, 481, 269]),
            ("\u{130}stanbul", [328, 16384, 11231]),
            // NFC: decomposed accents and Hangul jamo compose.
            ("e\u{301}te\u{301}", [3459, 39694]),
            ("\u{1100}\u{1161}\u{11A8}", [21122, 479]),
            ("\u{AC00}\u{11A8}", [21122, 479]),
            // Marks reorder, also those of a decomposed U+0F75 (where the standard library's NFC
            // alone would not).
            ("x\u{302}\u{F75}", [343, 39219, 109, 39219, 112, 136, 480]),
            // The reference's NFC is Unicode 9.0: later marks (U+11D45: 10.0, U+1AC0: 14.0)
            // neither reorder nor let others compose across them.
            ("d\u{11D45}\u{3099}", [323, 172, 239, 113, 227, 3909, 503]),
            ("p\u{1AC0}\u{301}", [335, 157, 104, 222, 136, 479]),
            ("\u{E9}\u{301}", [4166, 136, 479]),
            // Its pattern is Unicode 16.0: a 17.0 letter is not \p{L}; a 16.0 one is.
            ("a\u{16ECF}b", [320, 172, 244, 119, 493, 321]),
            ("a\u{10D4A}b", [64, 172, 238, 113, 232, 321]),
            // Format and control characters are kept as bytes; U+001C is not whitespace.
            ("a\u{200D}b", [320, 728, 491, 321]),
            ("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}", [25023, 26304, 964, 356]),
            ("x\u{0}y\u{1C}z", [343, 444, 344, 472, 345]),
            // Unicode whitespace separates; zero-width space is not whitespace.
            ("a\u{B}b\u{C}c\u{85}d\u{2028}e\u{3000}f\u{A0}g\u{200B}h", [320, 321, 322, 323, 324, 325, 326, 9844, 327]),
            // Special tokens as written are cut out first; other spellings are ordinary text,
            // which the pattern's special alternatives then cut into "<|", word, "|>".
            ("<|endoftext|>hello<|startoftext|>", [49407, 3306, 49406]),
            ("<|EndOfText|>!!", [27, 347, 40786, 4160, 91, 285, 748]),
            ("!!<|endoftext|>!!", [748, 49407, 748]),
            ("!!<|ENDOFTEXT|>!!", [1443, 27, 347, 40786, 4160, 91, 29, 748]),
            // CJK runs are one letter run.
            ("\u{6C49}\u{5B57} \u{6D4B}\u{8BD5}", [162, 109, 231, 35751, 501, 162, 113, 233, 164, 107, 499]),
            // Contractions are case-sensitive ASCII after lowercasing (long s is not s).
            ("\u{17F}top it'\u{17F}", [129, 123, 1253, 585, 262, 129, 379]),
            ("IT'S DON'T WE'LL I'D", [585, 568, 847, 713, 649, 1342, 328, 1896]),
            ("'s's'''s", [568, 568, 6, 8445, 338]),
            ("l'amour c'est", [331, 262, 29908, 322, 262, 1509]),
            // One digit per piece; other numbers are \p{N} too.
            ("1234 \u{BD} \u{B2} \u{216B}", [272, 273, 274, 275, 33613, 41175, 158, 227, 375]),
            ("K\u{212A} \u{FB01} \u{1E9E}", [10849, 171, 105, 479, 127, 509]),
            // "# #</w>" is a merge (only "#version" lines are skipped).
            ("#hashtag ## #", [258, 9238, 15483, 258]),
            ("supercalifragilisticexpialidocious", [1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466]),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaa", [23126, 23126, 23126, 31095]),
            ("\u{301}abc", [136, 479, 5334]),
            ("\u{1F1EB}\u{1F1F7}\u{1F44D}\u{1F3FD}\u{2764}\u{FE0F}", [39109, 4686, 8514, 1752]),
        ]
        for (text, ids) in cases {
            XCTAssertEqual(tokenizer.encode(text), ids, text.debugDescription)
        }
    }

    // MARK: pieces

    func testNormalization() {
        let cases: [(String, String)] = [
            ("  A Photo\t\tof\n\r\nA  CAT  ", " a photo of a cat "),
            ("\u{3A3}\u{391}\u{3A3} \u{39F}\u{394}\u{39F}\u{3A3}.", "\u{3C3}\u{3B1}\u{3C3} \u{3BF}\u{3B4}\u{3BF}\u{3C3}."),
            ("\u{130}stanbul", "i\u{307}stanbul"),
            ("e\u{301}te\u{301}", "\u{E9}t\u{E9}"),
            ("\u{1100}\u{1161}\u{11A8}", "\u{AC01}"),
            ("\u{AC00}\u{11A8}", "\u{AC01}"),
            ("x\u{302}\u{F75}", "x\u{F71}\u{F74}\u{302}"),
            ("d\u{11D45}\u{3099}", "d\u{11D45}\u{3099}"),
            ("p\u{1AC0}\u{301}", "p\u{1AC0}\u{301}"),
            ("Z\u{FC}rich CAF\u{C9}", "z\u{FC}rich caf\u{E9}"),
            ("a\u{200D}b", "a\u{200D}b"),
            ("x\u{0}y\u{1C}z", "x\u{0}y\u{1C}z"),
            ("a\u{B}b\u{C}c\u{85}d\u{2028}e\u{3000}f\u{A0}g\u{200B}h", "a b c d e f g\u{200B}h"),
            ("<|EndOfText|>", "<|endoftext|>"),
            ("", ""),
        ]
        for (text, normalized) in cases {
            XCTAssertEqual(CLIPTokenizer.normalized(text).unicodeScalars.map(\.value), normalized.unicodeScalars.map(\.value), text.debugDescription)
        }
    }

    func testPatternSplitting() {
        func split(_ text: String) -> [String] {
            let scalars = Array(text.unicodeScalars)
            return CLIPTokenizer.pieces(scalars).map { range in
                var s = String.UnicodeScalarView()
                s.append(contentsOf: scalars[range])
                return String(s)
            }
        }
        XCTAssertEqual(split("a photo, of 3 cats..."), ["a", "photo", ",", "of", "3", "cats", "..."])
        XCTAssertEqual(split("2024"), ["2", "0", "2", "4"])
        XCTAssertEqual(split("don't it's we're they've i'm we'll he'd"),
                       ["don", "'t", "it", "'s", "we", "'re", "they", "'ve", "i", "'m", "we", "'ll", "he", "'d"])
        XCTAssertEqual(split("'s's'''s ''"), ["'s", "'s", "'''", "s", "''"])
        XCTAssertEqual(split("!'s"), ["!'", "s"])
        XCTAssertEqual(split("night-time:3"), ["night", "-", "time", ":", "3"])
        XCTAssertEqual(split("caf\u{E9} na\u{EF}ve \u{2014} \u{FC}ber"), ["caf\u{E9}", "na\u{EF}ve", "\u{2014}", "\u{FC}ber"])
        XCTAssertEqual(split("\u{1F697}\u{1F6A6}x"), ["\u{1F697}\u{1F6A6}", "x"])
        XCTAssertEqual(split("\u{6C49}\u{5B57}\u{BD}\u{216B}"), ["\u{6C49}\u{5B57}", "\u{BD}", "\u{216B}"])
        XCTAssertEqual(split("<|startoftext|>!!<|endoftext|>"), ["<|", "startoftext", "|>", "!!<|", "endoftext", "|>"])
        XCTAssertEqual(split("<|endoftext"), ["<|", "endoftext"])
        XCTAssertEqual(split(" \t\u{3000} "), [])
    }

    func testByteEncoderIsABijection() {
        let encoder = CLIPTokenizer.byteEncoder
        XCTAssertEqual(encoder.count, 256)
        XCTAssertEqual(Set(encoder).count, 256)
        for b in 0..<256 { XCTAssertEqual(Int(CLIPTokenizer.byteDecoder[Int(encoder[b].value)]), b) }
        XCTAssertEqual(CLIPTokenizer.byteDecoder.filter { $0 >= 0 }.count, 256)
        // Printable bytes stand for themselves; the rest count up from U+0100.
        XCTAssertEqual(encoder[Int(UInt8(ascii: "a"))], "a")
        XCTAssertEqual(encoder[0xE9], "\u{E9}")
        XCTAssertEqual(encoder[0], "\u{100}")
        XCTAssertEqual(encoder[0x20], "\u{120}")  // Ġ
        XCTAssertEqual(encoder[0xAD], "\u{143}")
        XCTAssertEqual(encoder.map(\.value).max(), 0x143)
        // Every byte, alone and ending a word, is a vocabulary token.
        for c in encoder {
            XCTAssertNotNil(tokenizer.id(of: String(Character(c))))
            XCTAssertNotNil(tokenizer.id(of: String(Character(c)) + "</w>"))
        }
    }

    func testBPE() {
        XCTAssertEqual(tokenizer.bpe(Array("car".utf8)), [1615])
        XCTAssertEqual(tokenizer.bpe(Array("a".utf8)), [320])
        XCTAssertEqual(tokenizer.bpe([]), [])
        // Cached results are the same.
        XCTAssertEqual(tokenizer.bpe(Array("sidewalk".utf8)), [23278])
        XCTAssertEqual(tokenizer.bpe(Array("sidewalk".utf8)), [23278])
        XCTAssertEqual(tokenizer.encode("Road SIDEWALK"), [1759, 23278])
    }

    func testTruncationAndPadding() {
        let long = Array(repeating: "car", count: 100).joined(separator: " ")
        XCTAssertEqual(tokenizer.encode(long).count, 100)
        let ids = tokenizer(long)
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(ids, [49406] + Array(repeating: 1615, count: 75) + [49407])
        XCTAssertEqual(tokenizer(long, maxLength: 5), [49406, 1615, 1615, 1615, 49407])
        XCTAssertEqual(tokenizer("car", maxLength: 5), [49406, 1615, 49407, 49407, 49407])
        XCTAssertEqual(tokenizer("car", maxLength: 2), [49406, 49407])
        XCTAssertEqual(tokenizer("car car", maxLength: 3), [49406, 1615, 49407])
        // Exactly 75 tokens fit; 76 lose the last.
        let exact = Array(repeating: "car", count: 75).joined(separator: " ")
        XCTAssertEqual(tokenizer(exact), [49406] + Array(repeating: 1615, count: 75) + [49407])
        XCTAssertEqual(tokenizer(exact + " road"), tokenizer(exact))
        XCTAssertEqual(tokenizer(exact + " road", maxLength: 78).suffix(2), [1759, 49407])
    }

    func testDecode() {
        let text = "A photo of a red bus, in FOGGY weather!!  "
        let ids = tokenizer(text)
        // Reference: tokenizer.decode(ids) and decode(ids, skip_special_tokens=True).
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), "a photo of a red bus , in foggy weather !!")
        XCTAssertEqual(tokenizer.decode(Array(ids.prefix(13))), "<|startoftext|>a photo of a red bus , in foggy weather !! <|endoftext|>")
        XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: true), "a photo of a red bus , in foggy weather !!")
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("don't won't")), "don 't won 't")
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("emoji \u{1F697}\u{1F6A6} and Z\u{FC}rich caf\u{E9}")),
                       "emoji \u{1F697}\u{1F6A6} and z\u{FC}rich caf\u{E9}")
        XCTAssertEqual(tokenizer.decode([320, 89, 6522]), "a z\u{FC}")
        XCTAssertEqual(tokenizer.decode([6522, 4021]), "\u{FC}rich")
        // Incomplete UTF-8 reads as one replacement character.
        XCTAssertEqual(tokenizer.decode([162, 109]), "\u{FFFD}")
        XCTAssertEqual(tokenizer.decode([128]), "\u{FFFD}")
        XCTAssertEqual(tokenizer.decode([49407, 49407, 49407]), "<|endoftext|><|endoftext|><|endoftext|>")
        XCTAssertEqual(tokenizer.decode([49407, 49407], skipSpecialTokens: true), "")
        XCTAssertEqual(tokenizer.decode([]), "")
        XCTAssertEqual(tokenizer.decode([1615, 99_999, -3, 1759]), "car road")
    }

    // MARK: malformed files

    func testMalformedFilesAreRefusedClearly() throws {
        let vocab = Array(#"{"a": 0, "b": 1, "ab": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "<|startoftext|>": 6, "<|endoftext|>": 7}"#.utf8)
        let merges = Array("#version: 0.2\na b\na b</w>\n".utf8)
        func problem(vocab: [UInt8] = vocab, merges: [UInt8] = merges) -> String? {
            do {
                _ = try CLIPTokenizer(vocab: vocab, merges: merges)
                return nil
            } catch let e as FileError {
                return e.description
            } catch {
                return "unexpected error \(error)"
            }
        }
        XCTAssertNil(problem())
        XCTAssertEqual(problem(vocab: Array("{\"a\": 0,}".utf8)), "vocab.json: is not valid JSON at byte 8: expected a string key")
        XCTAssertEqual(problem(vocab: Array("[1, 2]".utf8)), "vocab.json: must be a JSON object of token -> id")
        XCTAssertEqual(problem(vocab: Array(#"{"a": "x"}"#.utf8)), #"vocab.json: the id of token "a" must be a non-negative integer below 2^31, not "x""#)
        XCTAssertEqual(problem(vocab: Array(#"{"a": 0, "b": 0}"#.utf8)), #"vocab.json: tokens "a" and "b" share the id 0"#)
        XCTAssertEqual(problem(vocab: Array(#"{"a": 0, "<|startoftext|>": 1}"#.utf8)), #"vocab.json: has no end (eos) token "<|endoftext|>""#)
        XCTAssertEqual(problem(merges: Array("#version: 0.2\na  b\n".utf8)), #"merges.txt: line 2: expected two tokens separated by one space, not "a  b""#)
        XCTAssertEqual(problem(merges: Array("a b\n\nb a\n".utf8)), #"merges.txt: line 2: expected two tokens separated by one space, not """#)
        XCTAssertEqual(problem(merges: Array("b a\n".utf8)), #"merges.txt: line 1: token "ba" is not in vocab.json"#)
        XCTAssertEqual(problem(merges: Array("a c\n".utf8)), #"merges.txt: line 1: token "c" is not in vocab.json"#)
        XCTAssertEqual(problem(merges: [0x61, 0x20, 0xFF]), "merges.txt: is not valid UTF-8")

        // The tiny vocabulary works, CRLF line ends included.
        let tiny = try CLIPTokenizer(vocab: vocab, merges: Array("#version: 0.2\r\na b\r\na b</w>\r\n".utf8))
        XCTAssertEqual(tiny.encode("ab AB ba"), [5, 5, 1, 3])
        XCTAssertEqual(tiny.encode("aba"), [2, 3])
        XCTAssertEqual(tiny("ab", maxLength: 4), [6, 5, 7, 7])
        // Characters outside the vocabulary become the unknown token, one each.
        XCTAssertEqual(tiny.encode("ac"), [0, 7])

        let missing = NSTemporaryDirectory() + "no-such-tokenizer-\(UUID().uuidString)"
        XCTAssertThrowsError(try CLIPTokenizer(folder: missing)) { error in
            XCTAssertEqual((error as? FileError)?.path, missing + "/vocab.json")
        }
    }

    func testConfigurationFromJSON() throws {
        let config = try CLIPTokenizer.Configuration(
            tokenizerConfig: ["bos_token": ["content": "<s>", "lstrip": false], "model_max_length": 1e30],
            specialTokensMap: ["eos_token": "</s>", "pad_token": "<pad>"])
        XCTAssertEqual(config.bosToken, "<s>")
        XCTAssertEqual(config.eosToken, "</s>")
        XCTAssertEqual(config.padToken, "<pad>")
        XCTAssertEqual(config.unkToken, "<|endoftext|>")
        XCTAssertEqual(config.modelMaxLength, Int.max)
        XCTAssertEqual(try CLIPTokenizer.Configuration(tokenizerConfig: nil), .clip)
        XCTAssertThrowsError(try CLIPTokenizer.Configuration(tokenizerConfig: ["eos_token": 3]))
        XCTAssertThrowsError(try CLIPTokenizer.Configuration(tokenizerConfig: ["model_max_length": "77"]))
    }

    // MARK: speed

    func testTokenizingIsFast() throws {
        let buildStart = DispatchTime.now().uptimeNanoseconds
        let fresh = try CLIPTokenizer(folder: Self.folder)
        let built = DispatchTime.now().uptimeNanoseconds
        _ = fresh("A city street scene with road sidewalk building wall fence pole traffic light")
        let cold = DispatchTime.now().uptimeNanoseconds
        print(String(format: "CLIPTokenizer: built in %.1f ms, first prompt (cold cache) %.0f µs",
                     Double(built - buildStart) / 1e6, Double(cold - built) / 1e3))
        let prompts = [
            "A city street scene with road sidewalk building wall fence pole traffic light traffic sign vegetation terrain sky person rider car truck bus train motorcycle bicycle, in snowy weather.",
            "Zürich café crème, naïve façade — über",
            "night-time: 3 cars & 2 riders on a wet road...",
        ]
        for p in prompts { _ = tokenizer(p) }
        let rounds = 2000
        let start = DispatchTime.now().uptimeNanoseconds
        var total = 0
        for k in 0..<rounds { total += tokenizer(prompts[k % prompts.count]).count }
        let perPrompt = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(rounds) / 1000
        XCTAssertEqual(total, rounds * 77)
        print("CLIPTokenizer: \(String(format: "%.1f", perPrompt)) µs per prompt (warm)")
        XCTAssertLessThan(perPrompt, 500, "a prompt should take well under a millisecond")
    }

    func testConcurrentUse() throws {
        let fresh = try CLIPTokenizer(folder: Self.folder)
        let prompts = (0..<64).map { "prompt \($0): a photo of \($0 % 7) red cars near Zürich, don't \($0 * 31)" }
        let expected = prompts.map { tokenizer($0) }
        var results = [[Int]](repeating: [], count: prompts.count)
        results.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress!
            DispatchQueue.concurrentPerform(iterations: prompts.count) { (base + $0).pointee = fresh(prompts[$0]) }
        }
        XCTAssertEqual(results, expected)
    }

    // MARK: optional differential corpus

    /// Set CLIP_TOKENIZER_CORPUS to a JSON array of {"text", "ids", "norm", "decoded",
    /// "decoded_skip"} made with the reference (tools/gen-clip-tokenizer-corpus.py) to compare
    /// many random strings and every code point.
    func testReferenceCorpus() throws {
        guard let path = ProcessInfo.processInfo.environment["CLIP_TOKENIZER_CORPUS"] else {
            throw XCTSkip("CLIP_TOKENIZER_CORPUS not set")
        }
        let corpus = try XCTUnwrap(JSON.parse(bytes: Data(contentsOf: URL(fileURLWithPath: path))).array)
        var failures = 0
        for item in corpus {
            let text = try XCTUnwrap(item["text"]?.string)
            let ids = try XCTUnwrap(item["ids"]?.array?.compactMap(\.int))
            let got = tokenizer.encode(text)
            // Compared scalar by scalar: String's == is canonical equivalence.
            func same(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }
            var problems: [String] = []
            if got != ids { problems.append("ids \(got), expected \(ids)") }
            if let norm = item["norm"]?.string, !same(CLIPTokenizer.normalized(text), norm) {
                problems.append("normalized \(CLIPTokenizer.normalized(text).debugDescription), expected \(norm.debugDescription)")
            }
            if let decoded = item["decoded"]?.string, !same(tokenizer.decode([49406] + got + [49407]), decoded) {
                problems.append("decoded \(tokenizer.decode([49406] + got + [49407]).debugDescription), expected \(decoded.debugDescription)")
            }
            if let decoded = item["decoded_skip"]?.string, !same(tokenizer.decode(got, skipSpecialTokens: true), decoded) {
                problems.append("decoded without specials \(tokenizer.decode(got, skipSpecialTokens: true).debugDescription), expected \(decoded.debugDescription)")
            }
            if !problems.isEmpty {
                failures += 1
                if failures <= 20 {
                    XCTFail("\(text.unicodeScalars.map { String($0.value, radix: 16) }): " + problems.joined(separator: "; "))
                }
            }
        }
        print("CLIPTokenizer corpus: \(corpus.count - failures) of \(corpus.count) match")
        XCTAssertEqual(failures, 0)
    }
}
