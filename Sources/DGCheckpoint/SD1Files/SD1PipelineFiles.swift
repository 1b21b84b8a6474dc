import DGBase

/// The files an SD 1.x single file implies but does not hold: the CLIP ViT-L/14 tokenizer and
/// the scheduler settings. diffusers' `from_single_file` fetches them from the Hugging Face hub;
/// we ship them, so that a single file converted to a pipeline samples on a machine without a
/// network. Compiled into the binary rather than kept as a SwiftPM resource: `Bundle.module` on
/// Linux stops the process when the binary has been copied away from its build folder.
public enum SD1PipelineFiles {
    /// CLIP ViT-L/14's vocabulary size. The shipped tokenizer is attached only to a text encoder
    /// of exactly this size (its embedding rows are indexed by these token ids); any other text
    /// encoder needs its own tokenizer (--config DIR).
    public static let clipVocabularySize = 49408

    /// Whether the shipped tokenizer fits a text encoder with this config.
    public static func tokenizerFits(textEncoderConfig config: JSON?) -> Bool {
        config?["vocab_size"]?.int == clipVocabularySize
    }

    /// merges.txt, byte for byte as transformers saves it (the literal drops the last newline).
    public static var mergesTXT: [UInt8] { Array((mergesText + "\n").utf8) }

    /// vocab.json, byte for byte as transformers saves it: it follows from the merges (the 256
    /// byte characters, the same with `</w>`, each merge joined, then the two special tokens),
    /// so only the merges are stored.
    public static func vocabJSON() -> [UInt8] {
        var tokens = byteCharacters + byteCharacters.map { $0 + "</w>" }
        tokens.reserveCapacity(clipVocabularySize)
        for line in mergesText.split(separator: "\n").dropFirst() {
            tokens.append(line.split(separator: " ").joined())
        }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        // Python's json.dumps(ensure_ascii=False) spelling, which transformers writes.
        var out = "{"
        out.reserveCapacity(1_000_000)
        for (id, token) in tokens.enumerated() {
            if id > 0 { out += ", " }
            out += JSON.quoted(token) + ": " + String(id)
        }
        out += "}"
        return Array(out.utf8)
    }

    /// GPT-2's byte-to-unicode map, in its order: printable Latin-1 bytes stand for themselves,
    /// the others (controls, space, soft hyphen) are moved to U+0100 and up.
    static let byteCharacters: [String] = {
        let printable = Array(33...126) + Array(161...172) + Array(174...255)
        let others = (0...255).filter { !printable.contains($0) }
        return printable.map { String(UnicodeScalar(UInt8($0))) }
            + others.indices.map { String(UnicodeScalar(UInt32(256 + $0))!) }
    }()

    /// What transformers' CLIPTokenizer for openai/clip-vit-large-patch14 (and the SD 1.5
    /// pipeline's tokenizer/) declares, in the form today's transformers saves.
    static let specialTokensMap = #"""
    {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    """#

    static let tokenizerConfig = #"""
    {
      "add_prefix_space": false,
      "bos_token": "<|startoftext|>",
      "do_lower_case": true,
      "eos_token": "<|endoftext|>",
      "errors": "replace",
      "model_max_length": 77,
      "pad_token": "<|endoftext|>",
      "tokenizer_class": "CLIPTokenizer",
      "unk_token": "<|endoftext|>"
    }
    """#

    /// The tokenizer folder of a diffusers SD 1.x pipeline, by path inside it.
    public static func tokenizerFiles() -> [(path: String, bytes: [UInt8])] { builtTokenizerFiles }

    /// Built once per process: every LDM single file opened asks for it, and vocab.json takes
    /// tens of milliseconds to spell (most of opening a small checkpoint).
    private static let builtTokenizerFiles: [(path: String, bytes: [UInt8])] = [
        ("tokenizer/merges.txt", mergesTXT),
        ("tokenizer/special_tokens_map.json", Array((specialTokensMap + "\n").utf8)),
        ("tokenizer/tokenizer_config.json", Array((tokenizerConfig + "\n").utf8)),
        ("tokenizer/vocab.json", vocabJSON()),
    ]
}
