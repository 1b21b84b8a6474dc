#!/usr/bin/env python3
"""Prints transformers' CLIP token ids for the prompts of ShippedTokenizerTests, from a tokenizer
folder dginstyle wrote (a single SD 1.x file converted to a diffusers pipeline), read both ways
transformers reads it: `from_pretrained(folder)` and `CLIPTokenizer(vocab=..., merges=...)`.
(transformers 5 names these arguments `vocab` and `merges`; its old `vocab_file=` keyword is
silently ignored and gives an empty vocabulary.)

    python3 -m venv .venv-ref && .venv-ref/bin/pip install transformers tokenizers
    mkdir -p /tmp/cfg && for c in unet vae text_encoder; do mkdir -p /tmp/cfg/$c; \
        cp Tests/Fixtures/sd-tiny/tiny-sd/$c/config.json /tmp/cfg/$c/; done
    dginstyle convert Tests/Fixtures/sd-tiny/tiny-sd-ldm.safetensors /tmp/pipe --format diffusers --config /tmp/cfg
    .venv-ref/bin/python tools/check-clip-tokenizer-ids.py /tmp/pipe/tokenizer
"""
import json
import sys

from transformers import CLIPTokenizer

folder = sys.argv[1]
a = CLIPTokenizer.from_pretrained(folder)
b = CLIPTokenizer(vocab=folder + "/vocab.json", merges=folder + "/merges.txt")
assert len(a) == len(b) == 49408
prompts = [
    "a photograph of an astronaut riding a horse",
    "A city street scene with road sidewalk building sky car, in foggy weather.",
    "road sidewalk building wall fence pole traffic light traffic sign vegetation terrain sky person rider car truck bus "
    "train motorcycle bicycle",
    "Café déjà vu — naïve façade, 3.14159 km/h!!",
    "DGInStyle's U^S & U^P: <|endoftext|> isn't it?",
    "🚗🚦 emoji street 東京 night",
]
for p in prompts:
    x = a(p, add_special_tokens=False)["input_ids"]
    assert x == b(p, add_special_tokens=False)["input_ids"]
    print(json.dumps(p, ensure_ascii=False), x)
