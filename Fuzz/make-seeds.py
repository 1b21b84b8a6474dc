#!/usr/bin/env python3
"""Writes the seed corpora Fuzz/corpus/<target>/ from the fixtures and small hand-made files.

Run from the repository root; the output is checked in (keep it small). Native-format seeds
carry a zero header checksum: the fuzz target then fixes every checksum (Sources/DGFuzz).
"""
import json, os, struct, subprocess, zlib

R = "Fuzz/corpus"
FX = "Tests/Fixtures/sd-tiny"

def put(target, name, data):
    os.makedirs(f"{R}/{target}", exist_ok=True)
    with open(f"{R}/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))

# safetensors: small files in every dtype and shape kind, and a fixture's header with its
# tensors shrunk to one element each (the real names, dtypes and ordering, a few KB).
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1, "I8": 1}
def safetensors(tensors, metadata=None):
    h, off, data = {}, 0, b""
    if metadata: h["__metadata__"] = metadata
    for name, dt, shape in tensors:
        n = SIZES[dt]
        for d in shape: n *= d
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        data += bytes((i * 7) & 0xFF for i in range(n)); off += n
    hb = json.dumps(h, separators=(",", ":")).encode()
    return struct.pack("<Q", len(hb)) + hb + data
put("safetensors", "dtypes", safetensors([(f"t.{d}", d, [2, 3]) for d in SIZES], {"format": "pt"}))
put("safetensors", "edge-shapes", safetensors([("scalar", "F32", []), ("empty", "F16", [0, 4]), ("one", "BF16", [1])]))
put("safetensors", "empty", safetensors([]))
for src, name in [(f"{FX}/tiny-sd-ldm.safetensors", "ldm-shrunk"), (f"{FX}/tiny-sd/vae/diffusion_pytorch_model.fp16.safetensors", "vae-shrunk")]:
    h = st_header(src); h.pop("__metadata__", None)
    put("safetensors", name, safetensors([(k, v["dtype"], [1]) for k, v in list(h.items())[:40]]))

# native: prologue, data regions (raw, zstd, zstd over byte planes), loose files, header.
def zstd(b):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=b, capture_output=True, check=True).stdout
def native(kind, items, files):
    body, tensors, blobs = bytearray(b"\0" * 32), [], []
    def pad():
        while len(body) % 64: body.append(0)
    for comp, name, dt, shape, codec, raw in items:
        stored = raw if codec == "none" else zstd(raw if codec == "zstd" else bytes(raw[i::SIZES[dt]][j] for i in range(SIZES[dt]) for j in range(len(raw) // SIZES[dt])))
        pad(); tensors.append({"component": comp, "name": name, "dtype": dt, "shape": shape, "offset": len(body),
                               "length": len(stored), "compression": codec, "xxh64": "0"}); body += stored
    for p, b in files:
        pad(); blobs.append({"path": p, "offset": len(body), "length": len(b), "xxh64": "0"}); body += b
    pad()
    comps = {c: {"class": "UNet2DConditionModel", "metadata": {"k": "v"}} for c in sorted({i[0] for i in items})}
    header = json.dumps({"format": "dginstyle", "version": 1, "kind": kind, "components": comps,
                         "files": blobs, "tensors": tensors}, separators=(",", ":")).encode()
    body[0:32] = b"DGSTYLE1" + struct.pack("<QQQ", len(body), len(header), 0)
    return bytes(body) + header
ramp = bytes(range(256)) * 2
put("native", "raw", native("model", [("unet", "w", "F32", [4, 4], "none", ramp[:64]), ("unet", "b", "F16", [3], "none", ramp[:6])], [("unet/config.json", b'{"a":1}')]))
put("native", "zstd", native("model", [("unet", "w", "F32", [8, 16], "zstd", bytes(512)), ("vae", "x", "BF16", [64], "zstd-byte-split", ramp[:128])], []))
put("native", "training-state", native("training-state", [("state", "step", "I64", [1], "none", bytes(8))], [("trainer.json", b'{"step":3}')]))

# json: the fixtures' small configs and the corners of the grammar.
for p in ["tiny-sd/model_index.json", "tiny-sd/unet/config.json", "tiny-sd/scheduler/scheduler_config.json", "tiny-controlnet/config.json"]:
    put("json", p.replace("/", "_"), open(f"{FX}/{p}", "rb").read())
put("json", "corners", '[1e308,-0.0,1E-7,12345678901234567890,"\\u00e9\\ud83d\\ude00\\n\\"",true,false,null,{},[],{"a":{"b":[[]]}}]')

# png: grey, palette, RGB (Cityscapes colours), grey+alpha, 2-bit grey; first byte picks the file name.
def png(w, h, ctype, depth, rows, plte=None):
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte: out += chunk(b"PLTE", plte)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
W = H = 8
put("png", "grey-trainids", b"\0" + png(W, H, 0, 8, [bytes((x + y) % 19 for x in range(W)) for y in range(H)]))
put("png", "palette-labelids", b"\2" + png(W, H, 3, 8, [bytes((x * y) % 34 for x in range(W)) for y in range(H)], bytes(range(34 * 3))))
put("png", "rgb-colours", b"\2" + png(W, H, 2, 8, [bytes([128, 64, 128] * (W // 2) + [70, 130, 180] * (W // 2)) for _ in range(H)]))
put("png", "grey-alpha", b"\1" + png(W, H, 4, 8, [bytes([7, 255] * W) for _ in range(H)]))
put("png", "grey-2bit", b"\0" + png(W, H, 0, 2, [bytes([0b00011011, 0b11100100]) for _ in range(H)]))

# tokenizer: vocab NUL merges NUL tokenizer_config NUL texts... (the fixture's files cut down to
# the special tokens, the byte alphabet and the first merges whose tokens all survive).
vocab = json.load(open(f"{FX}/tiny-sd/tokenizer/vocab.json"))
small = {t: i for t, i in vocab.items() if i < 600 or t.startswith("<|")}
merges = []
for line in open(f"{FX}/tiny-sd/tokenizer/merges.txt", encoding="utf-8").read().split("\n")[1:]:
    a = line.split(" ")
    if len(a) == 2 and all(x in small for x in (a[0], a[1], a[0] + a[1])): merges.append(line)
    if len(merges) >= 80: break
v = json.dumps(small, ensure_ascii=False, separators=(",", ":")).encode()
m = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode()
cfg = open(f"{FX}/tiny-sd/tokenizer/tokenizer_config.json", "rb").read()
put("tokenizer", "clip", v + b"\0" + m + b"\0" + b"\0" + "a photo of a street in the rain, ÉCOLE 12.5% <|endoftext|>\0  ".encode())
put("tokenizer", "clip-config", v + b"\0" + m + b"\0" + cfg + b"\0" + b"the city at night's edge\0x")

# recipe: the checked-in recipes.
for f in sorted(os.listdir("recipes")):
    if f.endswith(".json"): put("recipe", f, open(f"recipes/{f}", "rb").read())

# genfile: lists of {class, file_name} in each form the reader accepts.
put("genfile", "forms", json.dumps([{"class": 3, "file_name": "a.png"}, {"class": "11", "file_name": "/x/b.png"},
                                    {"class": "rider", "file_name": "c_labelTrainIds.png"}, {"class": None, "file_name": "d.png"}]))
put("genfile", "empty", "[]")

# ldmkeys: one key a line, from the LDM and ControlNet fixtures and a diffusers UNet.
for src, name in [(f"{FX}/tiny-sd-ldm.safetensors", "ldm"), (f"{FX}/tiny-controlnet-ldm.safetensors", "controlnet-ldm"),
                  (f"{FX}/tiny-sd/unet/diffusion_pytorch_model.safetensors", "diffusers-unet")]:
    keys = [k for k in st_header(src) if k != "__metadata__"]
    put("ldmkeys", name, "\n".join(keys[:: max(1, len(keys) // 150)]) + "\n")

# lora: the first layers of the LoRA fixtures in both layouts (real names, shapes and metadata;
# the diffusers metadata's target list cut to the layers kept).
LX = "Tests/Fixtures/lora"
for src, name, n in [(f"{LX}/attn.kohya.safetensors", "kohya-attn", 15), (f"{LX}/all.kohya.safetensors", "kohya-conv", 9),
                     (f"{LX}/attn.diffusers.safetensors", "diffusers-attn", 10)]:
    h = st_header(src); meta = h.pop("__metadata__", None)
    kept = list(h.items())[:n]
    if meta and "lora_adapter_metadata" in meta:
        m = json.loads(meta["lora_adapter_metadata"])
        mods = {k[len("unet."):].rsplit(".lora_", 1)[0] for k, _ in kept}
        m["unet.target_modules"] = sorted(mods)
        meta["lora_adapter_metadata"] = json.dumps(m)
    put("lora", name, safetensors([(k, v["dtype"], v["shape"]) for k, v in kept], meta))
