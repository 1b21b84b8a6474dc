"""LoRA parity against diffusers / PEFT, and the fixtures the Swift tests compare with: Tests/Fixtures/lora/.

1. Makes LoRA files with this project's own binary: a short `finetune-unet --lora` run on the tiny pipeline
   (targets attn, rank 4, alpha 8, and targets all, rank 2: convolution adapters too; a high learning rate,
   so the adapters move the outputs clearly), written in diffusers layout by the run and converted to
   kohya's by `dginstyle lora convert`.
2. Loads each file into diffusers' StableDiffusionPipeline with `pipe.load_lora_weights` (diffusers' own
   kohya conversion for the kohya files, PEFT underneath) and runs the UNet on fixed inputs.
3. One training step as PEFT does it: the attn LoRA's adapters trainable, everything else frozen, loss =
   MSE(UNet(noisy, t, text), noise); the loss and every adapter gradient.

Everything lands in Tests/Fixtures/lora/ (the LoRA files and lora_io.safetensors); the Swift tests
(DGModelsTests/LoRAFileTests) read them without torch and report the errors.

Run from the repository root after `swift build -c release`, with a Python that has torch, diffusers and
peft:  .venv-torch/bin/python tools/lora-parity.py
"""
import json, os, shutil, subprocess, sys, tempfile
import torch
from safetensors.torch import save_file, load_file
from diffusers import StableDiffusionPipeline

root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
binary = os.path.join(root, ".build", "release", "dginstyle")
tiny = os.path.join(root, "Tests", "Fixtures", "sd-tiny", "tiny-sd")
out = os.path.join(root, "Tests", "Fixtures", "lora")
os.makedirs(out, exist_ok=True)
torch.set_num_threads(max(1, os.cpu_count() or 1))


def run(*args):
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL)


# 1. LoRA files from our own training run.
work = tempfile.mkdtemp(prefix="lora-parity-")
run("synth", "--out", f"{work}/data", "--count", "4", "--size", "128x64", "--seed", "3")
variants = {"attn": ["--lora", "4", "--lora-alpha", "8"], "all": ["--lora", "2", "--lora-alpha", "1", "--lora-targets", "all"]}
for name, flags in variants.items():
    run("finetune-unet", "--pipeline", tiny, "--images", f"{work}/data", "--out", f"{work}/{name}", "--resolution", "64",
        "--steps", "12", "--lr", "3e-2", "--checkpoint-every", "0", "--quiet", "--seed", "5", *flags)
    shutil.copy(f"{work}/{name}/pytorch_lora_weights.safetensors", f"{out}/{name}.diffusers.safetensors")
    run("lora", "convert", f"{out}/{name}.diffusers.safetensors", f"{out}/{name}.kohya.safetensors", "--format", "kohya")
shutil.rmtree(work)

# 2. Fixed inputs; the UNet's output with each file loaded by diffusers.
g = torch.Generator().manual_seed(20261203)
io = {
    "sample": torch.randn(2, 4, 16, 16, generator=g),
    "timesteps": torch.tensor([250.0, 999.0]),
    "text": torch.randn(2, 77, 32, generator=g),
    "noise": torch.randn(2, 4, 16, 16, generator=g),
}
pipe = StableDiffusionPipeline.from_pretrained(tiny, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
unet = pipe.unet.eval()


def forward():
    return unet(io["sample"], io["timesteps"], encoder_hidden_states=io["text"]).sample


with torch.no_grad():
    io["base.out"] = forward()
    for name in variants:
        for layout in ["diffusers", "kohya"]:
            pipe.load_lora_weights(out, weight_name=f"{name}.{layout}.safetensors", adapter_name="x")
            io[f"{name}.{layout}.out"] = forward()
            # Scale 0.5 (set_adapters' weight): the dial's midpoint.
            pipe.set_adapters(["x"], adapter_weights=[0.5])
            io[f"{name}.{layout}.half.out"] = forward()
            pipe.unload_lora_weights()
    for key in [k for k in io if k.endswith(".out") and k != "base.out"]:
        change = (io[key] - io["base.out"]).abs().max().item()
        assert change > 1e-2, f"{key}: the LoRA hardly changes the output ({change}); the check would be weak"

# 3. One training step of the attn LoRA, as PEFT computes it.
pipe.load_lora_weights(out, weight_name="attn.diffusers.safetensors", adapter_name="x")
unet.train()
for n, p in unet.named_parameters():
    p.requires_grad_(".lora_" in n)
loss = torch.nn.functional.mse_loss(forward(), io["noise"])
loss.backward()
io["step.loss"] = loss.detach().reshape(1)
count = 0
for n, p in unet.named_parameters():
    if ".lora_" in n:
        io["grad." + n.replace(".lora_A.x.", ".lora_A.").replace(".lora_B.x.", ".lora_B.")] = p.grad.detach().clone()
        count += 1
save_file({k: v.contiguous() for k, v in io.items()}, f"{out}/lora_io.safetensors",
          metadata={"made_by": "tools/lora-parity.py", "diffusers": __import__("diffusers").__version__,
                    "peft": __import__("peft").__version__, "torch": torch.__version__})
print(f"wrote {out}: 4 LoRA files, outputs of {len([k for k in io if k.endswith('.out')])} forwards, loss and {count} adapter gradients")
