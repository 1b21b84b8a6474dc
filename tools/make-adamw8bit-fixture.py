#!/usr/bin/env python3
"""Writes Tests/Fixtures/adamw8bit/reference.safetensors: single steps of bitsandbytes' AdamW8bit
(its CPU implementation) for `dginstyle`'s --optimizer adamw8bit to be checked against.

Run with the reference venv: .venv-torch/bin/python tools/make-adamw8bit-fixture.py
(pip install bitsandbytes torch safetensors). For each step k of three, the tensor `large` (4100
elements: 17 blocks, the last partial of 256 and a partial one, 8-bit state) is stored before the step (param,
codes, block maxima), with the gradient, and after it; `small` (100 elements, below bitsandbytes'
min_8bit_size of 4096: 32-bit state) only its parameter after each step; `torch.stepK.param` is
torch.optim.AdamW on `large`'s gradients from `torch.initial`. The dynamic maps are
stored as qmap1 (signed, first moment) and qmap2 (unsigned, second moment).
"""
import os
import sys

import torch
import bitsandbytes as bnb
from safetensors.torch import save_file

LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-8, 0.1

torch.manual_seed(0)
large = torch.nn.Parameter(torch.randn(4100) * 0.5)
small = torch.nn.Parameter(torch.randn(100) * 0.5)
opt = bnb.optim.AdamW8bit([large, small], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
out = {"small.initial": small.detach().clone(), "torch.initial": large.detach().clone()}
# PyTorch's own AdamW (f32 state, single-tensor path as on CPU) on the same gradients: the f32
# optimizer's reference.
reference = torch.nn.Parameter(large.detach().clone())
torch_opt = torch.optim.AdamW([reference], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
for k in range(1, 4):
    g_large = torch.randn(4100) * (0.1 * k)
    g_large[256:512] = 0          # a whole block of zero gradient: its maxima stay 0 at step 1
    g_large[700] = 3.0            # one outlier sets its block's scale
    g_small = torch.randn(100) * 0.1
    st = opt.state.get(large, {})
    before = {
        "param": large.detach().clone(),
        "state1": st["state1"].clone() if st else torch.zeros(4100, dtype=torch.uint8),
        "state2": st["state2"].clone() if st else torch.zeros(4100, dtype=torch.uint8),
        "absmax1": st["absmax1"].clone() if st else torch.zeros(17),
        "absmax2": st["absmax2"].clone() if st else torch.zeros(17),
    }
    large.grad, small.grad, reference.grad = g_large, g_small, g_large.clone()
    opt.step()
    torch_opt.step()
    out[f"torch.step{k}.param"] = reference.detach().clone()
    st = opt.state[large]
    for name, t in before.items():
        out[f"step{k}.before.{name}"] = t
    out[f"step{k}.grad"] = g_large
    out[f"step{k}.after.param"] = large.detach().clone()
    for name in ("state1", "state2", "absmax1", "absmax2"):
        out[f"step{k}.after.{name}"] = st[name].clone()
    out[f"step{k}.small.grad"] = g_small
    out[f"step{k}.small.param"] = small.detach().clone()
out["qmap1"] = opt.state[large]["qmap1"].clone()
out["qmap2"] = opt.state[large]["qmap2"].clone()
assert opt.state[small]["state1"].dtype == torch.float32, "small tensors keep 32-bit state"
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "adamw8bit", "reference.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path,
          metadata={"bitsandbytes": bnb.__version__, "torch": torch.__version__,
                    "lr": str(LR), "betas": f"{BETAS[0]},{BETAS[1]}", "eps": str(EPS), "weight_decay": str(WD)})
print(f"wrote {path} (bitsandbytes {bnb.__version__})", file=sys.stderr)
