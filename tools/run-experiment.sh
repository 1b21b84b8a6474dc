#!/usr/bin/env bash
# The three measured claims of issue 8, end to end, on the shipped tiny models (docs/EXPERIMENT.md):
#   1. Style Swap output is closer to the photo domain than the ControlNet on U^S, with comparable
#      mask adherence;
#   2. MRLF improves small classes (IoU of a segmenter trained on held-out photo renders, judging
#      generated images against the masks they were generated from);
#   3. a segmenter trained on game source data + generated data (Style Swap + MRLF) generalises
#      to unseen photo renders better than one trained on the source data alone.
# Writes OUT/results.json and OUT/results.md. Every step skips what an earlier run of the same
# settings already finished, so an interrupted run continues where it stopped.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: tools/run-experiment.sh [--quick] [--out DIR] [--seeds "1 2 3"] [--claims "1 2 3"]
                               [--pipeline P] [--unet-source U] [--controlnet CN] [--bin DGINSTYLE]
  --quick        smoke run: a handful of images, few steps, one seed (a couple of minutes)
  --out DIR      output folder (default out/experiment; out/experiment-quick with --quick)
  --seeds S      segmenter training seeds for claim 3 (default "1 2 3"; "1" with --quick)
  --claims C     which claims to run (default "1 2 3"; 2 and 3 need `dginstyle segment`)
  --pipeline, --unet-source, --controlnet
                 the models (default: the shipped weights/tiny-*.dginstyle)
  --bin PATH     a built dginstyle binary (default: swift build -c release, then its binary)
Sizes can be changed with environment variables: N_REF, N_SRC, N_GEN, N_ORACLE, N_TEST, GEN_STEPS,
RESOLUTION, SEG_STEPS, JUDGE_STEPS, SIZE, MRLF_STRIDE (see docs/EXPERIMENT.md).
EOF
}

QUICK=0
OUT=""
SEEDS=""
CLAIMS="1 2 3"
PIPELINE=weights/tiny-sd.dginstyle
UNET_SOURCE=weights/tiny-unet-source.dginstyle
CONTROLNET=weights/tiny-controlnet.dginstyle
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --claims) CLAIMS="$2"; shift 2 ;;
    --pipeline) PIPELINE="$2"; shift 2 ;;
    --unet-source) UNET_SOURCE="$2"; shift 2 ;;
    --controlnet) CONTROLNET="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run-experiment.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if [ "$QUICK" = 1 ]; then
  : "${N_REF:=16}" "${N_SRC:=8}" "${N_GEN:=4}" "${N_ORACLE:=16}" "${N_TEST:=8}" "${GEN_STEPS:=4}" "${SEG_STEPS:=20}" "${JUDGE_STEPS:=20}"
  SEEDS="${SEEDS:-1}"
  OUT="${OUT:-out/experiment-quick}"
else
  # Sized for about 45 minutes on two cores: MRLF images cost ~25 one-pass images each
  # (25 windows at twice the resolution), so N_GEN bounds the run.
  : "${N_REF:=120}" "${N_SRC:=200}" "${N_GEN:=64}" "${N_ORACLE:=300}" "${N_TEST:=100}" "${GEN_STEPS:=20}" "${SEG_STEPS:=600}" "${JUDGE_STEPS:=2000}"
  SEEDS="${SEEDS:-1 2 3}"
  OUT="${OUT:-out/experiment}"
fi
: "${RESOLUTION:=128}" "${SIZE:=256x128}" "${MRLF_STRIDE:=16}"
# Synth seeds of the experiment's data, kept apart from every seed the recipes train on:
# the style references, the game source data (whose masks the generators draw from), the
# photo data the judging segmenter trains on, and the held-out photo test set.
SEED_PHOTO_REF=8101 SEED_GAME_REF=8102 SEED_SOURCE=8201 SEED_ORACLE=8301 SEED_TEST=8401 SEED_GEN=8501

for f in "$PIPELINE" "$UNET_SOURCE" "$CONTROLNET"; do
  [ -e "$f" ] || { echo "run-experiment.sh: $f: not found (the recipes in recipes/ make the shipped models)" >&2; exit 1; }
done
if [ -z "$BIN" ]; then
  swift build -c release --product dginstyle >&2
  BIN="$(swift build -c release --show-bin-path)/dginstyle"
fi
[ -x "$BIN" ] || { echo "run-experiment.sh: $BIN is not an executable" >&2; exit 1; }

mkdir -p "$OUT"
SETTINGS="quick=$QUICK n_ref=$N_REF n_src=$N_SRC n_gen=$N_GEN n_oracle=$N_ORACLE n_test=$N_TEST gen_steps=$GEN_STEPS resolution=$RESOLUTION size=$SIZE seg_steps=$SEG_STEPS judge_steps=$JUDGE_STEPS mrlf_stride=$MRLF_STRIDE seeds=$SEEDS pipeline=$PIPELINE unet_source=$UNET_SOURCE controlnet=$CONTROLNET"
if [ -f "$OUT/settings.txt" ] && [ "$(cat "$OUT/settings.txt")" != "$SETTINGS" ]; then
  echo "run-experiment.sh: $OUT holds a run with other settings ($OUT/settings.txt); remove it or pass another --out" >&2
  exit 1
fi
echo "$SETTINGS" > "$OUT/settings.txt"

TIMINGS=""
phase() {  # phase NAME COMMAND...: runs a step, records its wall time
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "== $name" >&2
  "$@"
  local dt=$(( $(date +%s) - t0 ))
  TIMINGS="$TIMINGS${TIMINGS:+, }\"$name\": $dt"
  echo "   $name: ${dt} s" >&2
}
has() { case " $CLAIMS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
synth() {  # synth NAME STYLE SEED COUNT
  [ -f "$OUT/data/$1/synth.json" ] || "$BIN" synth --out "$OUT/data/$1" --style "$2" --seed "$3" --count "$4" --size "$SIZE" --overwrite
}
generate() {  # generate NAME [extra generate arguments]: one variant over the source masks
  local name="$1"; shift
  "$BIN" generate --pipeline "$PIPELINE" --controlnet "$CONTROLNET" --labels "$OUT/data/game-source" --out "$OUT/gen/$name" \
    --count "$N_GEN" --seed "$SEED_GEN" --steps "$GEN_STEPS" --resolution "$RESOLUTION" "$@"
}
json_or_null() { if [ -s "$1" ]; then cat "$1"; else echo null; fi; }

phase data_source synth game-source game "$SEED_SOURCE" "$N_SRC"
phase data_test synth photo-test photo "$SEED_TEST" "$N_TEST"

SEGMENT=0
if "$BIN" --help 2>/dev/null | grep -qE "^  segment "; then SEGMENT=1; fi
if { has 2 || has 3; } && [ "$SEGMENT" = 0 ]; then
  echo "run-experiment.sh: this dginstyle has no segment command; claims 2 and 3 are skipped" >&2
fi

mkdir -p "$OUT/measure" "$OUT/seg"
if has 1; then
  synth photo-ref photo "$SEED_PHOTO_REF" "$N_REF"
  synth game-ref game "$SEED_GAME_REF" "$N_REF"
  phase generate_a generate a-source-unet --unet "$UNET_SOURCE" --no-mrlf
  phase generate_b generate b-style-swap --no-mrlf
  # References pass through the pipeline's VAE, so both domains carry the blur generated images have.
  phase measure_style "$BIN" measure style --photo "$OUT/data/photo-ref" --game "$OUT/data/game-ref" \
    --images "$OUT/gen/a-source-unet" --images "$OUT/gen/b-style-swap" --reference-vae "$PIPELINE" --seed 1 --json \
    > "$OUT/measure/style.json"
  for d in gen/a-source-unet gen/b-style-swap data/game-source data/photo-test; do
    "$BIN" measure masks --images "$OUT/$d" --json > "$OUT/measure/masks-$(basename "$d").json"
  done
fi

train() {  # train NAME STEPS SEED DATA... [-- EXTRA ARGUMENTS]: a segmenter, unless already trained
  local name="$1" steps="$2" seed="$3"; shift 3
  local args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=(--data "$1"); shift; done
  [ $# -gt 0 ] && shift
  [ -f "$OUT/seg/$name/segmenter.dginstyle" ] || "$BIN" segment train "${args[@]}" --out "$OUT/seg/$name" --steps "$steps" --seed "$seed" "$@"
}
evaluate() {  # evaluate NAME DATA OUTPUT [EXTRA ARGUMENTS]
  local name="$1" data="$2" output="$3"; shift 3
  [ -s "$output" ] || { "$BIN" segment eval --model "$OUT/seg/$name/segmenter.dginstyle" --data "$data" --json "$@" > "$output.tmp" && mv "$output.tmp" "$output"; }
}

if [ "$SEGMENT" = 1 ] && { has 2 || has 3; }; then
  phase generate_c generate c-style-swap-mrlf --mrlf --stride "$MRLF_STRIDE"
  for d in gen/c-style-swap-mrlf; do
    "$BIN" measure masks --images "$OUT/$d" --json > "$OUT/measure/masks-$(basename "$d").json"
  done
fi
if [ "$SEGMENT" = 1 ] && has 2; then
  [ -d "$OUT/gen/b-style-swap" ] || phase generate_b generate b-style-swap --no-mrlf
  synth photo-oracle photo "$SEED_ORACLE" "$N_ORACLE"
  # The judge of claim 2 is trained on photo renders (the target domain), none of whose scenes
  # the generators or the test set hold: it rates how recognisable each class is in the generated
  # images, not how well they imitate the game data. Class-balanced loss and more steps than
  # claim 3's segmenters: unweighted, a judge of this size never predicts the thin classes the
  # claim is about (IoU 0 for all seven on photo renders after 600 steps).
  phase train_oracle train oracle "$JUDGE_STEPS" 1 "$OUT/data/photo-oracle" -- --balance-classes
  phase eval_oracle evaluate oracle "$OUT/data/photo-test" "$OUT/measure/oracle-photo-test.json"
  # Per-image matrices: the report's bootstrap interval of the small classes' gain over images.
  evaluate oracle "$OUT/gen/b-style-swap" "$OUT/measure/oracle-without-mrlf.json" --per-image
  evaluate oracle "$OUT/gen/c-style-swap-mrlf" "$OUT/measure/oracle-with-mrlf.json" --per-image
fi
if [ "$SEGMENT" = 1 ] && has 3; then
  for s in $SEEDS; do
    phase "train_source_$s" train "source-$s" "$SEG_STEPS" "$s" "$OUT/data/game-source"
    phase "train_source_generated_$s" train "source-generated-$s" "$SEG_STEPS" "$s" "$OUT/data/game-source" "$OUT/gen/c-style-swap-mrlf"
    evaluate "source-$s" "$OUT/data/photo-test" "$OUT/measure/source-$s.json"
    evaluate "source-generated-$s" "$OUT/data/photo-test" "$OUT/measure/source-generated-$s.json"
  done
fi

# results.json: the settings and every measurement, as the commands printed them.
{
  echo "{"
  printf '  "settings": {"quick": %s, "n_ref": %s, "n_src": %s, "n_gen": %s, "n_oracle": %s, "n_test": %s, "gen_steps": %s, ' \
    "$([ "$QUICK" = 1 ] && echo true || echo false)" "$N_REF" "$N_SRC" "$N_GEN" "$N_ORACLE" "$N_TEST" "$GEN_STEPS"
  printf '"resolution": %s, "size": "%s", "mrlf_stride": %s, "seg_steps": %s, "judge_steps": %s, "seeds": "%s", "pipeline": "%s", "unet_source": "%s", "controlnet": "%s"},\n' \
    "$RESOLUTION" "$SIZE" "$MRLF_STRIDE" "$SEG_STEPS" "$JUDGE_STEPS" "$SEEDS" "$PIPELINE" "$UNET_SOURCE" "$CONTROLNET"
  echo "  \"timings_s\": {$TIMINGS},"
  echo "  \"style\": $(json_or_null "$OUT/measure/style.json"),"
  echo "  \"masks\": {"
  first=1
  for name in game-source photo-test a-source-unet b-style-swap c-style-swap-mrlf; do
    f="$OUT/measure/masks-$name.json"
    [ -s "$f" ] || continue
    [ "$first" = 1 ] || echo ","
    printf '    "%s": %s' "$name" "$(cat "$f")"
    first=0
  done
  echo ""
  echo "  },"
  echo "  \"mrlf\": {\"oracle\": $(json_or_null "$OUT/measure/oracle-photo-test.json"), \"without\": $(json_or_null "$OUT/measure/oracle-without-mrlf.json"), \"with\": $(json_or_null "$OUT/measure/oracle-with-mrlf.json")},"
  src="" gen="" seeds=""
  for s in $SEEDS; do
    [ -s "$OUT/measure/source-$s.json" ] && [ -s "$OUT/measure/source-generated-$s.json" ] || continue
    src="$src${src:+, }$(cat "$OUT/measure/source-$s.json")"
    gen="$gen${gen:+, }$(cat "$OUT/measure/source-generated-$s.json")"
    seeds="$seeds${seeds:+, }\"$s\""
  done
  echo "  \"generalisation\": {\"seeds\": [$seeds], \"source_only\": [$src], \"source_plus_generated\": [$gen]}"
  echo "}"
} > "$OUT/results.json.tmp"
mv "$OUT/results.json.tmp" "$OUT/results.json"
"$BIN" measure report "$OUT/results.json" --out "$OUT/results.md" >&2
cat "$OUT/results.md"
