#!/usr/bin/env python3
"""Reads a dginstyle run's TensorBoard event files with TensorBoard's own reader (the
EventAccumulator that `tensorboard --logdir` uses) and checks them against metrics.jsonl: every
update's loss, learning rate and gradient norm as scalars at its step (after TensorBoard's purge of
the steps a killed run logged past its last checkpoint), and the validation images.

    tools/check-tensorboard.py RUN_FOLDER      (needs tensorboard: pip install tensorboard)
"""
import json, math, sys
from tensorboard.backend.event_processing import event_accumulator

run = sys.argv[1]
acc = event_accumulator.EventAccumulator(run + "/logs", size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
records = [json.loads(l) for l in open(run + "/metrics.jsonl") if l.strip()]
updates = [r for r in records if "loss" in r]
ok = True
for key in ["loss", "lr", "grad_norm"]:
    scalars = acc.Scalars("train/" + key)
    events = {e.step: e.value for e in scalars}
    want = {r["step"]: r[key] for r in updates}
    if len(scalars) != len(events):
        print(f"train/{key}: {len(scalars) - len(events)} steps logged twice (a killed run's, not purged)"); ok = False
    if sorted(events) != sorted(want):
        print(f"train/{key}: steps {sorted(events)} != metrics.jsonl {sorted(want)}"); ok = False; continue
    worst = max(abs(events[s] - want[s]) / max(abs(want[s]), 1e-30) for s in want)
    if worst > 1e-6:  # float32 in the event, float64 in the JSON
        print(f"train/{key}: relative difference {worst:.2e}"); ok = False
    print(f"train/{key}: {len(events)} steps, equal to metrics.jsonl (worst rel. {worst:.1e})")
images = tags.get("images", [])
validations = [r for r in records if "validation" in r]
if validations:
    got = acc.Images("validation") if "validation" in images else []
    if sorted(i.step for i in got) != sorted(r["step"] for r in validations):
        print(f"validation images at {[i.step for i in got]}, metrics.jsonl has {[r['step'] for r in validations]}"); ok = False
    else:
        print(f"validation: {len(got)} images ({got[0].width}x{got[0].height}) at steps {[i.step for i in got]}")
print("scalar tags:", ", ".join(sorted(tags["scalars"])))
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
