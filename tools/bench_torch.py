#!/usr/bin/env python3
"""The PyTorch side of tools/bench-vs-torch.sh: the same SD 1.5 workloads as
`dginstyle bench model` (random weights, same shapes), one per process, printing one JSON
object: median seconds of N runs after a warm-up, and the process's peak RSS."""
import argparse, json, pathlib, resource, statistics, sys, time

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

root = pathlib.Path(__file__).resolve().parent.parent
p = argparse.ArgumentParser()
TRAINING = ["controlnet-train-step", "unet-train-step", "lora-train-step"]
p.add_argument("workload", choices=["unet", "controlnet", "vae-encode", "vae-decode"] + TRAINING)
p.add_argument("--resolution", type=int, default=512)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--checkpointing", action="store_true")
p.add_argument("--rank", type=int, default=16, help="lora-train-step: adapter rank (alpha = rank)")
# f32; autocast: f32 weights, torch.autocast("cpu", bfloat16) around the forward (what the issue compares
# bf16 against); bf16: the model and inputs cast to bfloat16. Forward workloads only.
p.add_argument("--dtype", choices=["f32", "autocast", "bf16"], default="f32")
p.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default="adamw",
               help="training steps: torch.optim.AdamW, or bitsandbytes' AdamW8bit (its CPU implementation)")
a = p.parse_args()
if a.dtype != "f32" and a.workload in TRAINING:
    p.error("--dtype applies to the forward workloads")
import contextlib
def adamw(params, lr):
    if a.optimizer == "adamw8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)

compute = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.dtype == "autocast" else contextlib.nullcontext

torch.manual_seed(0)
configs = json.load(open(root / "Tests/Fixtures/sd15-manifest.json"))["configs"]
clean = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}
lat = a.resolution // 8
sample = torch.randn(a.batch, 4, lat, lat)
text = torch.randn(a.batch, 77, 768)
t = torch.full((a.batch,), 500)
t0 = time.time()
if a.workload in ("unet", "controlnet", *TRAINING):
    unet = UNet2DConditionModel(**clean(configs["unet"])).eval()
    if a.workload in ("unet-train-step", "lora-train-step"):
        # diffusers' train_dreambooth.py (every UNet weight learns) and train_dreambooth_lora.py (PEFT
        # adapters on the frozen UNet, f32 like its trainable parameters) one step at a time; the
        # adapters sit on the same layers as `dginstyle bench model lora-train-step` (to_q/k/v,
        # to_out.0, proj_in, proj_out).
        unet.train()
        if a.workload == "lora-train-step":
            from peft import LoraConfig
            unet.requires_grad_(False)
            unet.add_adapter(LoraConfig(r=a.rank, lora_alpha=a.rank, init_lora_weights="gaussian",
                                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"]))
        if a.checkpointing:
            unet.enable_gradient_checkpointing()
        params = [q for q in unet.parameters() if q.requires_grad]
        opt = adamw(params, lr=1e-4 if a.workload == "lora-train-step" else 5e-6)
        noise = torch.randn_like(sample)
        def body():
            loss = torch.nn.functional.mse_loss(unet(sample, t, text).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif a.workload == "unet":
        def body():
            with torch.no_grad(), compute():
                unet(sample, t, text)
    else:
        cn = ControlNetModel.from_unet(unet, conditioning_channels=20)
        cond = torch.randn(a.batch, 20, a.resolution, a.resolution)
        if a.workload == "controlnet":
            def body():
                with torch.no_grad(), compute():
                    down, mid = cn(sample, t, text, controlnet_cond=cond, return_dict=False)
                    unet(sample, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        else:
            unet.requires_grad_(False)
            cn.train()
            if a.checkpointing:
                cn.enable_gradient_checkpointing()
                unet.enable_gradient_checkpointing()
            opt = adamw(list(cn.parameters()), lr=1e-5)
            noise = torch.randn_like(sample)
            def body():
                down, mid = cn(sample, t, text, controlnet_cond=cond, return_dict=False)
                pred = unet(sample, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
                loss = torch.nn.functional.mse_loss(pred, noise)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
else:
    vae = AutoencoderKL(**clean(configs["vae"])).eval()
    if a.workload == "vae-encode":
        image = torch.randn(a.batch, 3, a.resolution, a.resolution) * 0.5
        def body():
            with torch.no_grad(), compute():
                vae.encode(image)
    else:
        def body():
            with torch.no_grad(), compute():
                vae.decode(sample)
if a.dtype == "bf16":
    for name in ("unet", "cn", "vae"):
        if name in globals(): globals()[name].to(torch.bfloat16)
    for name in ("sample", "text", "cond", "image"):
        if name in globals(): globals()[name] = globals()[name].to(torch.bfloat16)
setup = time.time() - t0
body()
times, cpu = [], []
for _ in range(a.runs):
    s, c = time.time(), time.process_time()
    body()
    times.append(time.time() - s)
    cpu.append(time.process_time() - c)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"workload": a.workload, "resolution": a.resolution, "batch": a.batch, "checkpointing": a.checkpointing,
                  "dtype": a.dtype, "optimizer": a.optimizer, "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu), "runs": times, "peak_rss_mb": peak,
                  "threads": torch.get_num_threads(), "setup_seconds": setup, "torch": torch.__version__}))
