import DGBase
import XCTest
@testable import DGCheckpoint

final class JSONTests: XCTestCase {
    private func parseError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let value = try JSON.parse(text)
            XCTFail("parsed \(text.prefix(40)) as \(value.compact.prefix(40))", file: file, line: line)
            return ""
        } catch let e as JSON.ParseError {
            return e.description
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return ""
        }
    }

    func testScalarsAndStructure() throws {
        XCTAssertEqual(try JSON.parse(" null "), .null)
        XCTAssertEqual(try JSON.parse("true"), .bool(true))
        XCTAssertEqual(try JSON.parse("false"), .bool(false))
        XCTAssertEqual(try JSON.parse("\t[1, 2.5, \"x\", {}]\r\n"), .array([.int(1), .double(2.5), .string("x"), .object([])]))
        let object = try JSON.parse(#"{"b": 1, "a": {"c": [true, null]}}"#)
        // Keys keep the file's order, not a sorted or hashed one.
        XCTAssertEqual(object.objectPairs?.map(\.0), ["b", "a"])
        XCTAssertEqual(object["a"]?["c"]?.array?.count, 2)
        XCTAssertNil(object["missing"])
    }

    func testIntegersAreExactToInt64() throws {
        XCTAssertEqual(try JSON.parse("9223372036854775807"), .int(Int.max))
        XCTAssertEqual(try JSON.parse("-9223372036854775808"), .int(Int.min))
        // 2^53 + 1 is not a Double; an offset or shape must not round.
        XCTAssertEqual(try JSON.parse("9007199254740993").int, 9_007_199_254_740_993)
        XCTAssertEqual(try JSON.parse("-0"), .int(0))
        XCTAssertTrue(parseError("9223372036854775808").contains("integer 9223372036854775808 is out of range"))
        XCTAssertTrue(parseError("-9223372036854775809").contains("out of range"))
        XCTAssertTrue(parseError("[1, 123456789012345678901234567890]").contains("at byte 4: integer 123456789012345678901234567890 is out of range"))
        XCTAssertEqual(try JSON.parse("[0, -7, 10, 1000000007]"), [0, -7, 10, 1_000_000_007])
        XCTAssertEqual(try JSON.parse("1.0").int, 1)
        XCTAssertEqual(try JSON.parse("1e3"), .double(1000))
        XCTAssertNil(try JSON.parse("1.5").int)
        XCTAssertEqual(try JSON.parse("-2.5E-3"), .double(-0.0025))
    }

    func testMalformedNumbers() {
        for bad in ["01", "-01", "1.", ".5", "-", "1e", "1e+", "+1", "0x10", "1.2.3", "--1"] {
            XCTAssertTrue(parseError(bad).contains("invalid JSON"), bad)
        }
    }

    func testNonFiniteAsPythonWritesThem() throws {
        XCTAssertTrue(try JSON.parse("NaN").double!.isNaN)
        XCTAssertEqual(try JSON.parse("Infinity"), .double(.infinity))
        XCTAssertEqual(try JSON.parse("-Infinity"), .double(-.infinity))
        XCTAssertEqual(JSON.array([.double(.nan), .double(.infinity), .double(-.infinity)]).compact, "[NaN,Infinity,-Infinity]")
    }

    func testEscapes() throws {
        XCTAssertEqual(try JSON.parse(#""\"\\\/\b\f\n\r\t""#), .string("\"\\/\u{08}\u{0C}\n\r\t"))
        XCTAssertEqual(try JSON.parse(#""\u0041\u00e9\u00E9\u20ac\u0000""#), .string("Aéé€\u{0}"))
        XCTAssertTrue(parseError(#""\x41""#).contains("bad escape"))
        XCTAssertTrue(parseError(#""\u12""#).contains("\\u escape"))
        XCTAssertTrue(parseError(#""\u12g4""#).contains("bad hex digit"))
        XCTAssertTrue(parseError("\"a\nb\"").contains("control character"))
        XCTAssertTrue(parseError("\"abc").contains("unterminated string"))
        XCTAssertTrue(parseError("\"abc\\").contains("unterminated escape"))
    }

    func testSurrogatePairs() throws {
        XCTAssertEqual(try JSON.parse(#""\ud83d\ude00""#), .string("😀"))
        XCTAssertEqual(try JSON.parse(#""\uD834\uDD1E""#), .string("\u{1D11E}"))
        for lone in [#""\ud83d""#, #""\ud83dx""#, #""\ud83d\u0041""#, #""\ude00""#, #""\ud83d\ud83d""#] {
            XCTAssertTrue(parseError(lone).contains("unpaired surrogate"), lone)
        }
    }

    func testInvalidUTF8IsRefused() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC0, 0xAF, 0x22]] {
            XCTAssertThrowsError(try JSON.parse(bytes: bytes), "\(bytes)")
        }
        XCTAssertEqual(try JSON.parse(bytes: Array("\"é😀\"".utf8)), .string("é😀"))
        // Outside strings only ASCII is JSON, a byte-order mark included.
        XCTAssertThrowsError(try JSON.parse(bytes: [0xEF, 0xBB, 0xBF] + Array("{}".utf8)))
    }

    func testDuplicateKeysAreRefused() {
        XCTAssertTrue(parseError(#"{"a": 1, "a": 2}"#).contains("duplicate key \"a\""))
        XCTAssertTrue(parseError(#"{"x": {"a": 1, "b": 2, "a": 3}}"#).contains("duplicate key"))
        // Large objects switch to a set; a duplicate is found there too, early or late.
        let keys = (0..<40).map { "\"k\($0)\": \($0)" }
        XCTAssertEqual(try JSON.parse("{" + keys.joined(separator: ", ") + "}").objectPairs?.count, 40)
        XCTAssertTrue(parseError("{" + (keys + ["\"k3\": 0"]).joined(separator: ", ") + "}").contains("duplicate key \"k3\""))
        XCTAssertTrue(parseError("{" + (keys + ["\"k39\": 0"]).joined(separator: ", ") + "}").contains("duplicate key \"k39\""))
        // The same key after escape decoding is the same key.
        XCTAssertTrue(parseError(#"{"a": 1, "\u0061": 2}"#).contains("duplicate key"))
    }

    func testDepthIsBounded() throws {
        let limit = JSON.maximumDepth
        XCTAssertNoThrow(try JSON.parse(String(repeating: "[", count: limit) + String(repeating: "]", count: limit)))
        XCTAssertTrue(parseError(String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)).contains("nested deeper"))
        // Far past any stack: refused at the limit, long before the input ends.
        XCTAssertTrue(parseError(String(repeating: "[", count: 100_000)).contains("nested deeper"))
        XCTAssertTrue(parseError(String(repeating: "{\"a\":", count: 100_000)).contains("nested deeper"))
    }

    func testStructuralErrors() {
        XCTAssertTrue(parseError("").contains("unexpected end"))
        XCTAssertTrue(parseError("[1, 2").contains("unterminated array"))
        XCTAssertTrue(parseError("[1 2]").contains("expected ',' or ']'"))
        XCTAssertTrue(parseError(#"{"a" 1}"#).contains("expected ':'"))
        XCTAssertTrue(parseError(#"{"a": 1,}"#).contains("expected a string key"))
        XCTAssertTrue(parseError("[1,]").contains("invalid JSON"))
        XCTAssertTrue(parseError("{} {}").contains("trailing characters"))
        XCTAssertTrue(parseError("tru").contains("expected 'true'"))
        XCTAssertTrue(parseError("{a: 1}").contains("expected a string key"))
        XCTAssertTrue(parseError("[1] x").contains("at byte 4"))
    }

    func testCompactOutput() throws {
        let value: JSON = ["b": [1, 2.5, nil, true], "a": "é\u{1}\u{08}\"", "c": [:]]
        XCTAssertEqual(value.compact, #"{"b":[1,2.5,null,true],"a":"é\u0001\b\"","c":{}}"#)
        XCTAssertEqual(try JSON.parse(value.compact), value)
    }

    /// Byte for byte what Python 3 `json.dumps(obj, indent=2)` writes for the same object.
    func testPrettyMatchesPython() throws {
        let value: JSON = [
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "block_out_channels": [32, 64],
            "empty_list": [],
            "empty_obj": [:],
            "nested": ["a": nil, "b": true, "c": false],
            "scale": 0.18215,
            "neg_zero": .double(-0.0),
            "big": 1e16,
            "whole": 2.0,
            "tiny": 1e-05,
            "text": "caf\u{e9} \u{1F600} \u{7f}\u{08}\u{0C}\n\t\u{01}\"\\/",
        ]
        let python = "{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"act_fn\": \"silu\",\n  \"block_out_channels\": [\n    32,\n    64\n  ],\n  \"empty_list\": [],\n  \"empty_obj\": {},\n  \"nested\": {\n    \"a\": null,\n    \"b\": true,\n    \"c\": false\n  },\n  \"scale\": 0.18215,\n  \"neg_zero\": -0.0,\n  \"big\": 1e+16,\n  \"whole\": 2.0,\n  \"tiny\": 1e-05,\n  \"text\": \"caf\\u00e9 \\ud83d\\ude00 \\u007f\\b\\f\\n\\t\\u0001\\\"\\\\/\"\n}"
        XCTAssertEqual(value.pretty, python)
        XCTAssertEqual(try JSON.parse(python), value)
    }

    func testFloatsWriteAsPythonRepr() {
        let cases: [(Double, String)] = [
            (0.1, "0.1"), (1e16, "1e+16"), (1e-5, "1e-05"), (1e-4, "0.0001"), (123456789.125, "123456789.125"),
            (1.5e300, "1.5e+300"), (.leastNonzeroMagnitude, "5e-324"), (0.30000000000000004, "0.30000000000000004"),
            (9007199254740992.0, "9007199254740992.0"), (1e15, "1000000000000000.0"), (2.5e-7, "2.5e-07"),
            (1e22, "1e+22"), (-1.5, "-1.5"), (0, "0.0"), (-0.0, "-0.0"),
        ]
        for (v, python) in cases {
            XCTAssertEqual(JSON.double(v).compact, python)
            XCTAssertEqual(try JSON.parse(python).double?.bitPattern, v.bitPattern, python)
        }
    }

    func testAccessorsAndSet() {
        var object: JSON = ["a": 1]
        object.set("b", "x")
        object.set("a", 2)
        XCTAssertEqual(object.compact, #"{"a":2,"b":"x"}"#)
        XCTAssertEqual(JSON.double(3).int, 3)
        XCTAssertNil(JSON.double(.nan).int)
        XCTAssertNil(JSON.double(1e300).int)
        XCTAssertEqual(JSON.int(3).double, 3)
        XCTAssertTrue(JSON.null.isNull)
        XCTAssertNil(JSON.string("1").int)
    }
}
