#!/usr/bin/env python3
"""Writes a differential corpus for CLIPTokenizerTests.testReferenceCorpus: random texts (prompt
words, Unicode whitespace, controls, marks, decomposable and case-mapped characters, Hangul,
emoji, special-token spellings, long words) and one text per code point, each with the ids,
normalised text and decodings of the reference tokenizer.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install transformers tokenizers
    /tmp/tokvenv/bin/python tools/gen-clip-tokenizer-corpus.py /tmp/corpus.json
    CLIP_TOKENIZER_CORPUS=/tmp/corpus.json swift test -c release -Xswiftc -enable-testing \
        --filter CLIPTokenizerTests.testReferenceCorpus
"""
import json
import os
import random
import sys
import unicodedata

from transformers import CLIPTokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
folder = os.path.join(root, "Tests/Fixtures/sd-tiny/tiny-sd/tokenizer")
tok = CLIPTokenizer.from_pretrained(folder)
norm = tok.backend_tokenizer.normalizer
random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)

marks = [chr(c) for c in range(0x300, 0x110000) if not 0xD800 <= c < 0xE000 and unicodedata.combining(chr(c))]
decomposable = [chr(c) for c in range(0x80, 0x30000)
                if unicodedata.decomposition(chr(c)) and not unicodedata.decomposition(chr(c)).startswith("<")]
cased = [chr(c) for c in range(0x80, 0x20000) if chr(c).lower() != chr(c)]
jamo = [chr(c) for c in [*range(0x1100, 0x1113), *range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]]
jamo += [chr(0xAC00 + 28 * k) for k in range(0, 399, 7)]
with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
    words = [line.split()[0].replace("</w>", "") for line in f.readlines()[1:5000]]
pieces = (["<|startoftext|>", "<|endoftext|>", "<|EndOfText|>", "<|STARTOFTEXT|>", "<|", "|>"]
          + ["'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "''", "...", "\u2014", "\u2019", "\u2026"]
          + ["\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b", "\u200d", "\ufeff"]
          + ["\U0001F697", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F44D\U0001F3FD", "\u2764\ufe0f"]
          + ["\u03a3", "\u0130", "\u017f", "\u212a", "\ufb01", "\u1e9e", "\u00bd", "\u216b", "\u0f73", "\u0f75", "\u0344"])


def character():
    r = random.random()
    if r < 0.25: return chr(random.randint(0x20, 0x7E))
    if r < 0.35: return " "
    if r < 0.45: return random.choice(pieces)
    if r < 0.55: return random.choice(marks)
    if r < 0.62: return random.choice(decomposable)
    if r < 0.69: return random.choice(cased)
    if r < 0.74: return random.choice(jamo)
    if r < 0.80: return " " + random.choice(words)
    c = random.randint(0x80, 0x10FFFF if r > 0.95 else 0x2FFFF)
    return "?" if 0xD800 <= c < 0xE000 else chr(c)


texts = []
for k in range(int(os.environ.get("CORPUS_RANDOM", "50000"))):
    if k % 20 == 0:
        texts.append("".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(50, 400))))
    else:
        texts.append("".join(character() for _ in range(random.randint(0, 40))))
for c in range(0x110000):
    if not 0xD800 <= c < 0xE000 and (c < 0x32400 or 0xE0000 <= c < 0xE0200):
        texts.append("x" + chr(c) + "\u0301Y" + chr(c) + "\u0323\u0302" + chr(c).upper() + "a")

ids = tok(texts, add_special_tokens=False).input_ids
out = [{"text": t, "ids": i, "norm": norm.normalize_str(t),
        "decoded": tok.decode([tok.bos_token_id] + i + [tok.eos_token_id]),
        "decoded_skip": tok.decode(i, skip_special_tokens=True)} for t, i in zip(texts, ids)]
with open(sys.argv[1], "w") as f:
    json.dump(out, f, ensure_ascii=True)
print(f"{len(out)} texts -> {sys.argv[1]}")
