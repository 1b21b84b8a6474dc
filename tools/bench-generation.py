"""The parts `dginstyle bench generation` times, in PyTorch (diffusers, CPU): SD 1.5 UNet, a
20-channel ControlNet made from it, and the VAE, random weights, built from the manifest's configs;
float32, or with --dtype autocast every part under torch.autocast("cpu", bfloat16) (its bf16).

    python tools/bench-generation.py --resolution 512 --steps 20 [--dtype autocast]
"""
import argparse, contextlib, json, os, time
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

p = argparse.ArgumentParser()
p.add_argument("--manifest", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "sd15-manifest.json"))
p.add_argument("--resolution", type=int, default=512)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--stride", type=int, default=16)
p.add_argument("--window-batch", type=int, default=4)
p.add_argument("--dtype", choices=["f32", "autocast"], default="f32")
a = p.parse_args()
compute = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.dtype == "autocast" else contextlib.nullcontext
torch.set_grad_enabled(False)
configs = json.load(open(a.manifest))["configs"]
clean = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}
unet = UNet2DConditionModel(**clean(configs["unet"])).eval()
controlnet = ControlNetModel.from_unet(unet, conditioning_channels=20).eval()
vae = AutoencoderKL(**clean(configs["vae"])).eval()
r, l = a.resolution, a.resolution // 8
g = torch.Generator().manual_seed(0)
text = torch.randn(2, 77, 768, generator=g)
cond = torch.zeros(1, 20, r, r); cond[:, 0] = 1


def noise(latents, n):
    x = torch.cat([latents] * 2)
    t = torch.full((2 * n,), 500)
    emb = torch.cat([text[:1]] * n + [text[1:]] * n)
    c = torch.cat([cond] * (2 * n))
    down, mid = controlnet(x, t, encoder_hidden_states=emb, controlnet_cond=c, return_dict=False)
    eps = unet(x, t, encoder_hidden_states=emb, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    u, c2 = eps.chunk(2)
    return u + 7.5 * (c2 - u)


def timed(label, f, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.time()
        with compute():
            f()
        best = min(best, time.time() - t0)
    print(f"{label}: {best:.2f} s", flush=True)
    return best


lat = torch.randn(1, 4, l, l, generator=g)
step = timed(f"guided ControlNet step {r} px (batch 2)", lambda: noise(lat, 1), repeats=2)
decode = timed(f"VAE decode {r} px", lambda: vae.decode(lat / 0.18215).sample)
big = torch.randn(1, 4, 2 * l, 2 * l, generator=g)
decode2x = timed(f"VAE decode {2 * r} px", lambda: vae.decode(big / 0.18215).sample)
img = torch.rand(1, 3, 2 * r, 2 * r) * 2 - 1
encode2x = timed(f"VAE encode {2 * r} px", lambda: vae.encode(img).latent_dist.sample(g))
wb = a.window_batch
batch = timed(f"MRLF window batch ({wb} windows, batch {2 * wb})", lambda: noise(torch.cat([lat] * wb), wb))
stride = max(1, round(a.stride * r / 512))
n = len(range(0, 2 * l - l + 1, stride)) + (0 if (2 * l - l) % stride == 0 else 1)
per_step = n * n / wb * batch
plain = a.steps * step + decode
mrlf = plain + encode2x + a.steps * per_step + decode2x
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {a.dtype}")
print(f"DDIM-{a.steps} ControlNet image: {plain:.0f} s; MRLF image: {mrlf:.0f} s (MRLF step: {n * n} windows, {per_step:.2f} s)")
