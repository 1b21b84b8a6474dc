#!/usr/bin/env python3
"""Writes Tests/Fixtures/pickle/: PyTorch checkpoints made by torch.save from the sd-tiny
fixtures, plus malicious and broken ones, for the pickle reader's tests.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch safetensors numpy
    .venv-torch/bin/python tools/make-pickle-fixtures.py

Made with torch 2.13 (CPU). Every file is deterministic for a given torch version except the
zip's serialization_id record, which tests do not read.
"""
import argparse
import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import types
import zipfile

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "Tests", "Fixtures", "sd-tiny")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "pickle")

# Files a malicious pickle would create if it were run. Tests check they never appear.
MARKERS = {
    "os-system": "/tmp/dginstyle-pickle-pwned-os-system",
    "eval": "/tmp/dginstyle-pickle-pwned-eval",
    "popen": "/tmp/dginstyle-pickle-pwned-popen",
}


def fake_module(name, **classes):
    """Registers a stand-in module so that pickle writes GLOBAL name.Class for our classes, as
    it would for the real Lightning / LDM objects (which we do not install)."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    mod = sys.modules[name]
    for cls_name, cls in classes.items():
        cls.__module__ = name
        cls.__qualname__ = cls_name
        cls.__name__ = cls_name
        setattr(mod, cls_name, cls)
    return mod


class ModelCheckpoint:  # pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint
    pass


class AttributeDict(dict):  # pytorch_lightning.utilities.parsing.AttributeDict
    pass


fake_module("pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=ModelCheckpoint)
fake_module("pytorch_lightning.utilities.parsing", AttributeDict=AttributeDict)


def lightning_ldm():
    """tiny-sd-ldm.safetensors as SD 1.x's .ckpt files hold it: Lightning's checkpoint dict.
    The UNet's model_ema.* weights share the live weights' storages (no extra bytes), so the
    file also serves --ema and storage sharing."""
    sd = load_file(os.path.join(TINY, "tiny-sd-ldm.safetensors"))
    state = collections.OrderedDict()
    for k, v in sd.items():
        state[k] = torch.nn.Parameter(v, requires_grad=False) if "diffusion_model" in k else v
    for k in list(sd):
        if k.startswith("model.diffusion_model."):
            state["model_ema." + k[len("model."):].replace(".", "")] = state[k].data
    state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    state["model_ema.decay"] = torch.tensor(0.9999)
    hp = AttributeDict(base_learning_rate=1e-4, monitor="val/loss")
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": state,
        # Lightning <= 1.4 keyed callback states by the callback class itself.
        "callbacks": {ModelCheckpoint: {"monitor": "val/loss", "best_model_path": "", "dirpath": "/x"}},
        "hparams_name": "kwargs",
        "hyper_parameters": hp,
        "namespace": argparse.Namespace(lr=1e-4, precision=32),
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(ckpt, os.path.join(OUT, "tiny-sd-ldm.ckpt"))


def fp16_views():
    """Tensors as views: several sharing one storage, offsets, non-contiguous strides, every
    dtype an SD file uses. The expected values, made contiguous by torch, are written beside."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 8, generator=g).half()
    bf = torch.randn(3, 5, generator=g).bfloat16()
    sd = collections.OrderedDict()
    sd["base"] = base
    sd["rows"] = base[2:4]                 # offset view of the same storage
    sd["transposed"] = base.t()            # non-contiguous
    sd["strided"] = base[1:, 1::3]         # offset and non-contiguous
    sd["bf16"] = bf
    sd["bf16_t"] = bf.t()
    sd["f32"] = torch.randn(4, 2, generator=g)
    sd["f64"] = torch.randn(3, generator=g).double()
    sd["i64"] = torch.arange(-3, 5, dtype=torch.int64)
    sd["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g).half())
    torch.save({"model": sd}, os.path.join(OUT, "fp16-views.ckpt"))
    expected = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    save_file(expected, os.path.join(OUT, "fp16-views.expected.safetensors"))


def controlnet_pth():
    """ControlNet 1.0/1.1 .pth files are a flat state dict of control_model.* tensors."""
    sd = load_file(os.path.join(TINY, "tiny-controlnet-ldm.safetensors"))
    torch.save(sd, os.path.join(OUT, "tiny-controlnet.pth"))


def vae_bin_folder():
    """A diffusers model folder as older repositories hold it: config.json and a .bin."""
    d = os.path.join(OUT, "tiny-vae-bin")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(TINY, "tiny-sd", "vae", "config.json"), d)
    sd = load_file(os.path.join(TINY, "tiny-sd", "vae", "diffusion_pytorch_model.safetensors"))
    torch.save(collections.OrderedDict(sd), os.path.join(d, "diffusion_pytorch_model.bin"))


def write_archive(path, pickle_bytes, storages, name="archive", compression=zipfile.ZIP_STORED):
    """A torch.save-style zip with our own data.pkl and storages."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{name}/data.pkl", pickle_bytes)
        z.writestr(f"{name}/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"{name}/data/{key}", data)
        z.writestr(f"{name}/version", "3\n")


class FakeStorage:
    def __init__(self, key, storage_type, numel):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class FakeTensor:
    """Pickles as torch does a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def dumps(obj, protocol=2):
    buf = io.BytesIO()
    TorchLikePickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


class Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class Model:  # an arbitrary class, as torch.save(model) pickles it
    pass


def malicious():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    good = {"w": FakeTensor(FakeStorage("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1))}
    cases = {
        "evil-os-system.pt": Evil(os.system, (f"touch {MARKERS['os-system']}",)),
        "evil-eval.pt": Evil(eval, (f"open('{MARKERS['eval']}', 'w')",)),
        "evil-popen.pt": Evil(subprocess.Popen, (["touch", MARKERS["popen"]],)),
    }
    for name, payload in cases.items():
        # The payload sits beside a real tensor, where a state dict's entries would be.
        obj = dict(good)
        obj["payload"] = payload
        # Protocol 4 for one of them: STACK_GLOBAL, FRAME and MEMOIZE instead of GLOBAL / BINPUT.
        write_archive(os.path.join(OUT, name), dumps(obj, 4 if "popen" in name else 2), {"0": f32})
    # An unknown class (torch.save(model) of a user's module) holding the weights.
    fake_module("__main__", Model=Model)
    m = Model()
    m.w = good["w"]
    write_archive(os.path.join(OUT, "unknown-class.pt"), dumps({"model": m}), {"0": f32})
    # A placeholder global (Lightning) handed a tensor: refused, weights may not hide there.
    write_archive(os.path.join(OUT, "placeholder-with-tensor.ckpt"),
                  dumps({"state_dict": {"w": good["w"]}, "hyper_parameters": Evil(AttributeDict, (good["w"],))}),
                  {"0": f32})


def broken():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    st = FakeStorage("0", torch.FloatStorage, 4)
    ok = {"state_dict": {"w": FakeTensor(st, 0, (2, 2), (2, 1))}}
    write_archive(os.path.join(OUT, "missing-storage.pt"), dumps(ok), {})
    write_archive(os.path.join(OUT, "view-past-end.pt"),
                  dumps({"w": FakeTensor(st, 1, (2, 2), (2, 1))}), {"0": f32})
    write_archive(os.path.join(OUT, "short-storage.pt"), dumps(ok), {"0": f32[:8]})
    good = dumps(ok)
    write_archive(os.path.join(OUT, "truncated-pickle.pt"), good[: len(good) // 2], {"0": f32})
    # Absurd lengths and indices, written by hand: each must be refused before any allocation.
    write_archive(os.path.join(OUT, "huge-string.pt"), b"\x80\x02X\xff\xff\xff\x7f" + b"a" * 16 + b".", {})
    write_archive(os.path.join(OUT, "bad-memo.pt"), b"\x80\x02j\xff\xff\xff\x7f.", {})
    write_archive(os.path.join(OUT, "deep-nesting.pt"), b"\x80\x02)" + b"\x85" * 200000 + b".", {})
    # A 100k-pair list handed to OrderedDict 1000 times: 10^8 copies from a 500 kB file.
    bomb = (b"\x80\x02](" + b"K\x01K\x01\x86" * 100000 + b"eq\x000" + b"ccollections\nOrderedDict\nq\x010"
            + b"h\x01h\x00\x85R0" * 1000 + b"}.")
    write_archive(os.path.join(OUT, "copy-bomb.pt"), bomb, {})
    write_archive(os.path.join(OUT, "deflated.pt"), good, {"0": f32 * 64}, compression=zipfile.ZIP_DEFLATED)
    # A torch.save file cut short: the zip's central directory is gone.
    whole = open(os.path.join(OUT, "fp16-views.ckpt"), "rb").read()
    open(os.path.join(OUT, "truncated.ckpt"), "wb").write(whole[: len(whole) // 2])
    # The pre-1.6 format: a raw pickle stream followed by the storages.
    torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    lightning_ldm()
    fp16_views()
    controlnet_pth()
    vae_bin_folder()
    malicious()
    broken()
    with open(os.path.join(OUT, "markers.json"), "w") as f:
        json.dump(MARKERS, f, indent=2)
        f.write("\n")
    for m in MARKERS.values():
        assert not os.path.exists(m), f"{m} exists: remove it (a pickle was run?)"
    print("wrote", OUT, f"(torch {torch.__version__})")


if __name__ == "__main__":
    main()
