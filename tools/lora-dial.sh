#!/usr/bin/env bash
# Style Swap as a dial, measured on the shipped miniature (docs/LORA.md, "The dial"): U^S as a LoRA
# (extracted from the shipped full U^S by `lora extract`), generated at --lora-scale 0, 0.25, 0.5,
# 0.75, 1 on U^P with the shipped ControlNet, beside the full U^S; the same masks and seeds for all.
# Measures, as claim 1 of tools/run-experiment.sh does: the style (P(photo) of a photo-vs-game
# classifier on VAE-passed references) and the mask R² of each set.
#
#   tools/lora-dial.sh [OUT]      (environment: BIN, N_REF, N_SRC, GEN_STEPS, RANK, TARGETS; LORA=FILE measures that
#                                  LoRA U^S instead of extracting one)
set -euo pipefail
OUT=${1:-out/lora-dial}
BIN=${BIN:-$("$(dirname "$0")/build.sh")}
: "${N_REF:=32}" "${N_SRC:=16}" "${GEN_STEPS:=10}" "${RANK:=16}" "${TARGETS:=all}" "${RESOLUTION:=128}" "${SIZE:=256x128}"
PIPELINE=weights/tiny-sd.dginstyle UNET_SOURCE=weights/tiny-unet-source.dginstyle CONTROLNET=weights/tiny-controlnet.dginstyle
mkdir -p "$OUT/gen" "$OUT/measure"
# The seeds of tools/run-experiment.sh, so the masks and references are the experiment's.
synth() { [ -f "$OUT/data/$1/synth.json" ] || "$BIN" synth --out "$OUT/data/$1" --style "$2" --seed "$3" --count "$4" --size "$SIZE" --overwrite >/dev/null; }
synth game-source game 8201 "$N_SRC"
synth photo-ref photo 8101 "$N_REF"
synth game-ref game 8102 "$N_REF"
if [ -n "${LORA:-}" ]; then  # a LoRA U^S given (a finetune-unet --lora run's), instead of one extracted
  cp "$LORA" "$OUT/us-lora.safetensors"
else
  "$BIN" lora extract --base "$PIPELINE" --tuned "$UNET_SOURCE" --rank "$RANK" --targets "$TARGETS" --out "$OUT/us-lora.safetensors" \
    | grep "keeps" | tee "$OUT/measure/extract.txt"
fi
generate() {
  local name="$1"; shift
  [ -f "$OUT/gen/$name/generation.jsonl" ] && [ "$(wc -l < "$OUT/gen/$name/generation.jsonl")" -ge "$N_SRC" ] && return
  "$BIN" generate --pipeline "$PIPELINE" --controlnet "$CONTROLNET" --labels "$OUT/data/game-source" --out "$OUT/gen/$name" \
    --count "$N_SRC" --seed 8501 --steps "$GEN_STEPS" --resolution "$RESOLUTION" --no-mrlf --quiet "$@" >/dev/null
}
generate full-us --unet "$UNET_SOURCE"
sets=(--images "$OUT/gen/full-us")
for s in 0 0.25 0.5 0.75 1; do
  generate "lora-$s" --unet-lora "$OUT/us-lora.safetensors" --lora-scale "$s"
  sets+=(--images "$OUT/gen/lora-$s")
done
"$BIN" measure style --photo "$OUT/data/photo-ref" --game "$OUT/data/game-ref" "${sets[@]}" --reference-vae "$PIPELINE" --seed 1 --json \
  > "$OUT/measure/style.json"
for d in "$OUT"/gen/*/; do "$BIN" measure masks --images "$d" --json > "$OUT/measure/masks-$(basename "$d").json"; done
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
style = json.load(open(f"{out}/measure/style.json"))
c = style["classifier"]
print(f"classifier held-out accuracy {c['held_out_accuracy']}, reference gap {c['reference_gap']}")
print("| set | mean P(photo) | share photo | photo closeness | mask R² mean (median) |")
print("|---|---|---|---|---|")
series = {}  # set name -> (mean P(photo), mean mask R²), for the plot
for s in style["sets"]:
    m = json.load(open(f"{out}/measure/masks-{s['name']}.json"))
    series[s["name"]] = (s["mean_p_photo"], m["mean"])
    print(f"| {s['name']} | {s['mean_p_photo']:.3f} | {s['photo_share']:.3f} | {s['photo_closeness']:.3f} | {m['mean']:.3f} ({m['median']:.3f}) |")
# The plot of docs/EXPERIMENT.md: P(photo) and mask R² against s, the full U^S as squares at s = 1.
scales = [0, 0.25, 0.5, 0.75, 1]
values = [v for pair in series.values() for v in pair]
lo, hi = int(min(values) * 10) / 10, int(max(values) * 10 + 1) / 10
X = lambda v: 60 + 310 * v
Y = lambda v: 250 - 220 * (v - lo) / (hi - lo)
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="520" height="300" font-family="sans-serif" font-size="12">',
       '<rect width="520" height="300" fill="white"/>',
       '<text x="180.0" y="18" font-size="13">Style Swap as a dial (rank-16 LoRA U^S)</text>']
tick = lo
while tick <= hi + 1e-9:
    svg.append(f'<line x1="60" x2="370" y1="{Y(tick):.1f}" y2="{Y(tick):.1f}" stroke="#ddd"/><text x="30" y="{Y(tick) + 4:.1f}">{tick:.1f}</text>')
    tick += 0.1
for v in scales:
    svg.append(f'<text x="{X(v) - 8:.1f}" y="268">{v:g}</text>')
svg.append('<text x="155.0" y="288">LoRA scale s (0 = Style Swap)</text>')
for i, colour in [(0, "#1f77b4"), (1, "#d62728")]:
    pts = [(X(v), Y(series["lora-" + str(v)][i])) for v in scales]
    svg.append('<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + f'" fill="none" stroke="{colour}" stroke-width="2"/>')
    svg += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
    svg.append(f'<rect x="376.0" y="{Y(series["full-us"][i]) - 4:.1f}" width="8" height="8" fill="none" stroke="{colour}" stroke-width="2"/>')
svg += ['<line x1="395" x2="415" y1="40" y2="40" stroke="#1f77b4" stroke-width="2"/><text x="420" y="44">mean P(photo)</text>',
        '<line x1="395" x2="415" y1="58" y2="58" stroke="#d62728" stroke-width="2"/><text x="420" y="62">mask R² (mean)</text>',
        '<rect x="401" y="72" width="8" height="8" fill="none" stroke="#555" stroke-width="2"/><text x="420" y="80">full U^S</text>', '</svg>']
open(f"{out}/lora-dial.svg", "w").write("\n".join(svg) + "\n")
print(f"plot: {out}/lora-dial.svg")
PY
