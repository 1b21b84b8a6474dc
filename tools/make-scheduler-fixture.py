"""Reference values for the scheduler tests: Tests/Fixtures/schedulers.json.

Run with a Python that has torch and diffusers (the values in the file came from diffusers 0.42.1,
torch 2.15, CPU, float32):  python tools/make-scheduler-fixture.py
"""
import json, os
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

root = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures")
config = json.load(open(os.path.join(root, "sd-tiny", "tiny-sd", "scheduler", "scheduler_config.json")))
gen = torch.Generator().manual_seed(20240601)
shape = [1, 4, 3, 5]


def randn():
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def flat(t):
    return [float(v) for v in t.flatten().tolist()]


out = {"config": config, "shape": shape, "ddim": {"timesteps": {}}, "dpm": {"timesteps": {}, "sigmas": {}, "runs": []}}

for spacing in ["leading", "trailing", "linspace"]:
    for steps in [20, 16, 7]:
        s = DDIMScheduler.from_config({**config, "timestep_spacing": spacing})
        s.set_timesteps(steps)
        out["ddim"]["timesteps"][f"{spacing}/{steps}"] = s.timesteps.tolist()
        d = DPMSolverMultistepScheduler.from_config({**config, "timestep_spacing": spacing})
        d.set_timesteps(steps)
        out["dpm"]["timesteps"][f"{spacing}/{steps}"] = d.timesteps.tolist()
        out["dpm"]["sigmas"][f"{spacing}/{steps}"] = [float(v) for v in d.sigmas.tolist()]

# DDIM with eta > 0: a whole 5-step run with given model outputs and variance noise.
s = DDIMScheduler.from_config(config)
s.set_timesteps(5)
x = randn()
run = {"steps": 5, "eta": 0.5, "x": [flat(x)], "eps": [], "noise": []}
for t in s.timesteps:
    eps, noise = randn(), randn()
    x = s.step(eps, t, x, eta=0.5, variance_noise=noise).prev_sample
    run["eps"].append(flat(eps)); run["noise"].append(flat(noise)); run["x"].append(flat(x))
out["ddim"]["eta_run"] = run

# DPM-Solver++ 2M runs: the model outputs are fixed noise (the solver does not care where they
# come from), the samples are what each step returns.
for spacing, steps, strength in [("leading", 20, 1.0), ("trailing", 10, 1.0), ("leading", 8, 1.0), ("leading", 10, 0.6)]:
    d = DPMSolverMultistepScheduler.from_config({**config, "timestep_spacing": spacing})
    d.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = d.timesteps[t_start * d.order:]
    d.set_begin_index(t_start * d.order)
    run = {"spacing": spacing, "steps": steps, "strength": strength, "start": t_start}
    if strength < 1:
        clean, noise = randn(), randn()
        x = d.add_noise(clean, noise, timesteps[:1])
        run["clean"] = flat(clean); run["noise"] = flat(noise)
    else:
        x = randn()
    run["x"] = [flat(x)]; run["eps"] = []
    for t in timesteps:
        eps = randn()
        x = d.step(eps, t, x).prev_sample
        run["eps"].append(flat(eps)); run["x"].append(flat(x))
    out["dpm"]["runs"].append(run)

with open(os.path.join(root, "schedulers.json"), "w") as f:
    json.dump(out, f, indent=None, separators=(",", ":"))
    f.write("\n")
print("wrote", os.path.join(root, "schedulers.json"))
