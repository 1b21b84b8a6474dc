import DGBase
import Foundation
import XCTest
@testable import DGCheckpoint
import DGModels

/// The CLIP tokenizer shipped for single SD 1.x files (SD1PipelineFiles): the same bytes as the
/// files transformers saved for openai/clip-vit-large-patch14, the same ids as its tokenizer,
/// and attached to a single file's pipeline exactly when the text encoder has CLIP's vocabulary.
final class ShippedTokenizerTests: XCTestCase {
    static let fixtureTokenizer = Fixtures.tinySD + "/tokenizer"

    func testShippedFilesEqualTransformersFilesByteForByte() throws {
        let merges = try XCTUnwrap(FileManager.default.contents(atPath: Self.fixtureTokenizer + "/merges.txt"))
        let vocab = try XCTUnwrap(FileManager.default.contents(atPath: Self.fixtureTokenizer + "/vocab.json"))
        XCTAssertTrue(SD1PipelineFiles.mergesTXT == Array(merges), "merges.txt differs")
        XCTAssertTrue(SD1PipelineFiles.vocabJSON() == Array(vocab), "vocab.json differs")
        let json = try JSON.parse(bytes: SD1PipelineFiles.vocabJSON())
        XCTAssertEqual(json.objectPairs?.count, SD1PipelineFiles.clipVocabularySize)
        let files = SD1PipelineFiles.tokenizerFiles()
        XCTAssertEqual(files.map(\.path), ["tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
                                           "tokenizer/tokenizer_config.json", "tokenizer/vocab.json"])
        for f in files where f.path.hasSuffix(".json") { XCTAssertNoThrow(try JSON.parse(bytes: f.bytes), f.path) }
    }

    /// Ids from transformers 5.24 / tokenizers 0.23 `CLIPTokenizer`, both `from_pretrained` and
    /// `CLIPTokenizer(vocab=..., merges=...)`, on the tokenizer folder `convert` writes for the
    /// tiny single file, `add_special_tokens=False` (tools/check-clip-tokenizer-ids.py).
    func testShippedTokenizerGivesTheReferenceIds() throws {
        let files = Dictionary(uniqueKeysWithValues: SD1PipelineFiles.tokenizerFiles().map { ($0.path, $0.bytes) })
        let config = try CLIPTokenizer.Configuration(
            tokenizerConfig: try JSON.parse(bytes: files["tokenizer/tokenizer_config.json"]!),
            specialTokensMap: try JSON.parse(bytes: files["tokenizer/special_tokens_map.json"]!))
        XCTAssertEqual(config, .clip)
        let tokenizer = try CLIPTokenizer(vocab: files["tokenizer/vocab.json"]!, merges: files["tokenizer/merges.txt"]!, configuration: config)
        let reference: [(String, [Int])] = [
            ("a photograph of an astronaut riding a horse", [320, 8853, 539, 550, 18376, 6765, 320, 4558]),
            ("A city street scene with road sidewalk building sky car, in foggy weather.",
             [320, 1305, 2012, 3562, 593, 1759, 23278, 2307, 2390, 1615, 267, 530, 19770, 2237, 269]),
            ("road sidewalk building wall fence pole traffic light traffic sign vegetation terrain sky person rider car truck bus train motorcycle bicycle",
             [1759, 23278, 2307, 2569, 12679, 8170, 3399, 1395, 3399, 2292, 33947, 20184, 2390, 2533, 9707, 1615, 4629, 2840, 3231, 10297, 11652]),
            ("Caf\u{E9} d\u{E9}j\u{E0} vu \u{2014} na\u{EF}ve fa\u{E7}ade, 3.14159 km/h!!",
             [15304, 25466, 73, 21259, 13230, 2005, 1097, 35689, 563, 778, 10067, 1928, 267, 274, 269, 272, 275, 272, 276, 280, 4590, 270, 327, 748]),
            ("DGInStyle's U^S & U^P: <|endoftext|> isn't it?", [2394, 41321, 568, 340, 317, 338, 261, 340, 317, 335, 281, 49407, 2923, 713, 585, 286]),
            ("\u{1F697}\u{1F6A6} emoji street \u{6771}\u{4EAC} night", [33054, 2730, 355, 16327, 2012, 48338, 21078, 361, 930]),
        ]
        for (text, ids) in reference {
            XCTAssertEqual(tokenizer(text), [49406] + ids + Array(repeating: 49407, count: 76 - ids.count), text)
        }
    }

    /// A folder with only the tiny models' configs: what a user passes as --config for a single
    /// file that is not SD 1.5-shaped, without a tokenizer in it.
    private func configsOnly(_ dir: String, vocabSize: Int? = nil) throws -> String {
        let configs = dir + "/configs"
        for c in ["unet", "vae", "text_encoder"] {
            try FileManager.default.createDirectory(atPath: configs + "/" + c, withIntermediateDirectories: true)
            var json = try JSON.parse(bytes: Array(FileManager.default.contents(atPath: Fixtures.tinySD + "/\(c)/config.json")!))
            if c == "text_encoder", let vocabSize { json.set("vocab_size", .int(vocabSize)) }
            try Array((json.pretty + "\n").utf8).write(to: configs + "/\(c)/config.json")
        }
        return configs
    }

    func testSingleFileGetsTheTokenizerOnlyForCLIPsVocabulary() throws {
        let dir = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ck = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: try configsOnly(dir)))
        XCTAssertEqual(ck.component("text_encoder")?.config?["vocab_size"]?.int, 49408)
        XCTAssertTrue(ck.file("tokenizer/vocab.json") == Array(FileManager.default.contents(atPath: Self.fixtureTokenizer + "/vocab.json")!))
        XCTAssertNotNil(ck.file("tokenizer/merges.txt"))
        XCTAssertNotNil(ck.file("tokenizer/tokenizer_config.json"))
        XCTAssertEqual(try JSON.parse(bytes: ck.file("scheduler/scheduler_config.json")!)["_class_name"]?.string, "PNDMScheduler")
        XCTAssertEqual(try JSON.parse(bytes: ck.file("model_index.json")!)["tokenizer"], ["transformers", "CLIPTokenizer"])

        // Another vocabulary size: its ids would index other embedding rows, so nothing is guessed.
        let other = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: other) }
        let ck2 = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: try configsOnly(other, vocabSize: 1000)))
        XCTAssertNil(ck2.file("tokenizer/vocab.json"))

        // A pipeline folder given as --config keeps its own tokenizer files.
        let ck3 = try Checkpoint.open(Fixtures.tinyLDM, options: .init(configDirectory: Fixtures.tinySD))
        XCTAssertTrue(ck3.file("tokenizer/special_tokens_map.json")
                      == Array(FileManager.default.contents(atPath: Self.fixtureTokenizer + "/special_tokens_map.json")!))
        // The ControlNet layout has no text encoder and gets no tokenizer.
        XCTAssertNil(try Checkpoint.open(Fixtures.tinyControlNetLDM).file("tokenizer/vocab.json"))
    }
}

private extension Array where Element == UInt8 {
    func write(to path: String) throws { try Data(self).write(to: URL(fileURLWithPath: path)) }
}
