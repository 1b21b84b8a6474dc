#!/usr/bin/env bash
# The three measured claims, end to end, on the shipped tiny models (docs/EXPERIMENT.md):
#   1. Style Swap output is closer to the photo domain than the ControlNet on U^S, with comparable
#      mask adherence;
#   2. MRLF improves small classes (IoU of a segmenter trained on held-out photo renders, judging
#      generated images against the masks they were generated from), and which anchor noise level
#      (the reference's t-1 or the next timestep) does it better;
#   3. the component ablation: segmenters trained on game source data alone, plus (a) the ControlNet
#      on U^S, (b) Style Swap, (c) Style Swap + MRLF, and a control without diffusion (photometric
#      augmentation), each with the same steps and image count, over segmenter and generation seeds,
#      evaluated on unseen photo renders.
# Writes OUT/results.json and OUT/results.md. Every output (a data set, a generated set, a trained
# segmenter, a measurement) is cached with OUTPUT.identity: the sha256 of the command that made it
# and of the identities of its inputs (for the models, their contents). A rerun reuses an output
# only when its identity is the one this run would make, and otherwise makes it again, so no result
# can come from other data or settings; an interrupted step (OUTPUT.pending) is continued when its
# identity still matches.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: tools/run-experiment.sh [--quick] [--out DIR] [--seeds "1 2 3"] [--gen-seeds "8501 8502"] [--claims "1 2 3"]
                               [--pipeline P] [--unet-source U] [--controlnet CN] [--bin DGINSTYLE]
  --quick        smoke run: a handful of images, few steps (a few minutes)
  --out DIR      output folder (default out/experiment; out/experiment-quick with --quick)
  --seeds S      segmenter training seeds of claim 3 (default "1 2 3"; "1" with --quick)
  --gen-seeds G  generation seeds (default "8501 8502"); claim 1 measures the first
  --claims C     which claims to run (default "1 2 3"; 2 and 3 need `dginstyle segment`)
  --pipeline, --unet-source, --controlnet
                 the models (default: the shipped weights/tiny-*.dginstyle)
  --bin PATH     a built dginstyle binary (default: tools/build.sh, then its binary)
Sizes and sampling can be changed with environment variables: N_REF, N_SRC, N_GEN, N_ORACLE, N_TEST,
GEN_STEPS, GUIDANCE, CONDITIONING_SCALE, RESOLUTION, SEG_STEPS, JUDGE_STEPS, SIZE, MRLF_STRIDE
(see docs/EXPERIMENT.md).
EOF
}

COMMAND_LINE="tools/run-experiment.sh $*"
QUICK=0
OUT=""
SEEDS=""
GEN_SEEDS="8501 8502"
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
    --gen-seeds) GEN_SEEDS="$2"; shift 2 ;;
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
  : "${N_REF:=120}" "${N_SRC:=200}" "${N_GEN:=64}" "${N_ORACLE:=300}" "${N_TEST:=100}" "${GEN_STEPS:=20}" "${SEG_STEPS:=600}" "${JUDGE_STEPS:=2000}"
  SEEDS="${SEEDS:-1 2 3}"
  OUT="${OUT:-out/experiment}"
fi
# GUIDANCE: the miniature's scale, as `dginstyle demo` samples it (MiniatureSampling in the code).
: "${RESOLUTION:=128}" "${SIZE:=256x128}" "${MRLF_STRIDE:=16}" "${GUIDANCE:=3}" "${CONDITIONING_SCALE:=1}"
# Synth seeds of the experiment's data, kept apart from every seed the recipes train on:
# the style references, the game source data (whose masks the generators draw from), the
# photo data the judging segmenter trains on, and the held-out photo test set.
SEED_PHOTO_REF=8101 SEED_GAME_REF=8102 SEED_SOURCE=8201 SEED_ORACLE=8301 SEED_TEST=8401
FIRST_GEN_SEED="${GEN_SEEDS%% *}"

for f in "$PIPELINE" "$UNET_SOURCE" "$CONTROLNET"; do
  [ -e "$f" ] || { echo "run-experiment.sh: $f: not found (the recipes in recipes/ make the shipped models)" >&2; exit 1; }
done
if [ -z "$BIN" ]; then
  BIN="$(tools/build.sh)"
fi
[ -x "$BIN" ] || { echo "run-experiment.sh: $BIN is not an executable" >&2; exit 1; }
mkdir -p "$OUT"
START=$(date +%s)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
MACHINE="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //; s/"/ /g' || uname -m), $(nproc) cores"
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
# Every invocation on OUT is logged, finished or not: a run continued across sessions lists each one
# (results.json "invocations", and the report).
printf '{"started": "%s", "commit": "%s", "machine": "%s", "command": "%s"}\n' "$STARTED" "$COMMIT" "$MACHINE" "$COMMAND_LINE" \
  >>"$OUT/invocations.jsonl"

# dg ARGS: the binary. Commands are recorded (and hashed) as "dg ...", so an identity does not
# depend on where the binary was built.
dg() { "$BIN" "$@"; }
sha() { sha256sum | cut -d' ' -f1; }
# The identity of an input: the one recorded when this run made it, or for anything from outside
# the run (the models) the sha256 of its content.
input_id() {
  if [ -f "$1.identity" ]; then cat "$1.identity"
  elif [ -f "$1" ]; then sha <"$1"
  elif [ -d "$1" ]; then (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha
  else echo "run-experiment.sh: $1: missing input" >&2; return 1; fi
}
# cached OUTPUT [--in INPUT]... -- COMMAND...: makes OUTPUT with COMMAND unless OUTPUT.identity
# names the same command and inputs. USED lists this invocation's outputs; MADE and REUSED count
# them (a published run is one invocation that reused nothing).
USED=() MADE=0 REUSED=0
cached() {
  local output="$1"; shift
  local inputs=() id
  while [ "$1" = "--in" ]; do inputs+=("$2"); shift 2; done
  shift  # --
  id=$( { printf '%s\n' "$@"; for i in "${inputs[@]}"; do input_id "$i"; done; } | sha)
  USED+=("$output")
  if [ -e "$output" ] && [ "$(cat "$output.identity" 2>/dev/null)" = "$id" ]; then
    echo "   cached: $output" >&2
    REUSED=$((REUSED + 1))
    return 0
  fi
  MADE=$((MADE + 1))
  rm -f "$output.identity"
  # Made before from other data or settings, or by an unfinished run of another identity: remove.
  [ "$(cat "$output.pending" 2>/dev/null)" = "$id" ] || rm -rf "$output"
  mkdir -p "$(dirname "$output")"
  echo "$id" >"$output.pending"
  "$@"
  mv "$output.pending" "$output.identity"
}
# to FILE COMMAND...: COMMAND's standard output into FILE, atomically.
to() { local file="$1"; shift; "$@" >"$file.tmp" && mv "$file.tmp" "$file"; }

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
  cached "$OUT/data/$1" -- dg synth --out "$OUT/data/$1" --style "$2" --seed "$3" --count "$4" --size "$SIZE" --overwrite
}
generate() {  # generate GEN_SEED NAME [extra generate arguments]: one variant over the source masks
  local seed="$1" name="$2"; shift 2
  local out="$OUT/gen/$seed/$name" unet=() ins=(--in "$PIPELINE" --in "$CONTROLNET" --in "$OUT/data/game-source")
  if [ "$name" = a-source-unet ]; then ins+=(--in "$UNET_SOURCE"); fi
  cached "$out" "${ins[@]}" -- dg generate --pipeline "$PIPELINE" --controlnet "$CONTROLNET" --labels "$OUT/data/game-source" \
    --out "$out" --count "$N_GEN" --seed "$seed" --steps "$GEN_STEPS" --guidance "$GUIDANCE" \
    --conditioning-scale "$CONDITIONING_SCALE" --resolution "$RESOLUTION" "$@" --quiet
}
masks() {  # masks DIR NAME: mask R² of a folder
  cached "$OUT/measure/masks-$2.json" --in "$1" -- to "$OUT/measure/masks-$2.json" dg measure masks --images "$1" --json
}
train() {  # train NAME STEPS SEED DATA... [-- EXTRA ARGUMENTS]: a segmenter (continued if interrupted)
  local name="$1" steps="$2" seed="$3"; shift 3
  local args=() ins=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=(--data "$1"); ins+=(--in "$1"); shift; done
  [ $# -gt 0 ] && shift
  cached "$OUT/seg/$name" "${ins[@]}" -- dg segment train "${args[@]}" --out "$OUT/seg/$name" --steps "$steps" --seed "$seed" "$@" --resume --quiet
}
evaluate() {  # evaluate NAME DATA OUTPUT [EXTRA ARGUMENTS]
  local name="$1" data="$2" output="$3"; shift 3
  cached "$output" --in "$OUT/seg/$name" --in "$data" -- \
    to "$output" dg segment eval --model "$OUT/seg/$name/segmenter.dginstyle" --data "$data" --json "$@" --quiet
}
json_or_null() { if [ -s "$1" ]; then cat "$1"; else echo null; fi; }

phase data_source synth game-source game "$SEED_SOURCE" "$N_SRC"
phase data_test synth photo-test photo "$SEED_TEST" "$N_TEST"

SEGMENT=0
if dg --help 2>/dev/null | grep -qE "^  segment "; then SEGMENT=1; fi
if { has 2 || has 3; } && [ "$SEGMENT" = 0 ]; then
  echo "run-experiment.sh: this dginstyle has no segment command; claims 2 and 3 are skipped" >&2
fi
RUN2=0 RUN3=0
if [ "$SEGMENT" = 1 ]; then
  if has 2; then RUN2=1; fi
  if has 3; then RUN3=1; fi
fi

# The generated sets: (a) and (b) for claims 1 and 3, (c) for claims 2 and 3, (c) with the anchor
# at the next timestep for claim 2's comparison; the same masks, crops, captions and seeds in each.
G1="$OUT/gen/$FIRST_GEN_SEED"
for g in $GEN_SEEDS; do
  if has 1 || [ "$RUN3" = 1 ]; then
    phase "generate_a_$g" generate "$g" a-source-unet --unet "$UNET_SOURCE" --no-mrlf
  fi
  if has 1 || [ "$RUN2" = 1 ] || [ "$RUN3" = 1 ]; then
    phase "generate_b_$g" generate "$g" b-style-swap --no-mrlf
  fi
  if [ "$RUN2" = 1 ] || [ "$RUN3" = 1 ]; then
    phase "generate_c_$g" generate "$g" c-style-swap-mrlf --mrlf --stride "$MRLF_STRIDE" --mrlf-anchor-noise t-1
  fi
  if [ "$RUN2" = 1 ]; then
    phase "generate_c_next_$g" generate "$g" c-style-swap-mrlf-next --mrlf --stride "$MRLF_STRIDE" --mrlf-anchor-noise next
  fi
done

mkdir -p "$OUT/measure"
if has 1; then
  synth photo-ref photo "$SEED_PHOTO_REF" "$N_REF"
  synth game-ref game "$SEED_GAME_REF" "$N_REF"
  # References pass through the pipeline's VAE, so both domains carry the blur generated images have.
  phase measure_style cached "$OUT/measure/style.json" --in "$OUT/data/photo-ref" --in "$OUT/data/game-ref" \
    --in "$G1/a-source-unet" --in "$G1/b-style-swap" --in "$PIPELINE" -- \
    to "$OUT/measure/style.json" dg measure style --photo "$OUT/data/photo-ref" --game "$OUT/data/game-ref" \
    --images "$G1/a-source-unet" --images "$G1/b-style-swap" --reference-vae "$PIPELINE" --seed 1 --json
  for d in "$G1/a-source-unet" "$G1/b-style-swap" "$OUT/data/game-source" "$OUT/data/photo-test"; do masks "$d" "$(basename "$d")"; done
fi
if [ "$RUN2" = 1 ] || [ "$RUN3" = 1 ]; then masks "$G1/c-style-swap-mrlf" c-style-swap-mrlf; fi

if [ "$RUN2" = 1 ]; then
  synth photo-oracle photo "$SEED_ORACLE" "$N_ORACLE"
  # The judge of claim 2 is trained on photo renders (the target domain), none of whose scenes
  # the generators or the test set hold: it rates how recognisable each class is in the generated
  # images, not how well they imitate the game data. Class-balanced loss and more steps than
  # claim 3's segmenters: unweighted, a judge of this size never predicts the thin classes the
  # claim is about (IoU 0 for all seven on photo renders after 600 steps).
  phase train_oracle train oracle "$JUDGE_STEPS" 1 "$OUT/data/photo-oracle" -- --balance-classes
  phase eval_oracle evaluate oracle "$OUT/data/photo-test" "$OUT/measure/oracle-photo-test.json"
  # The same renders through the pipeline's VAE: what the judge can see at best in generated images.
  cached "$OUT/data/photo-test-vae" --in "$OUT/data/photo-test" --in "$PIPELINE" -- \
    dg measure vae --pipeline "$PIPELINE" --data "$OUT/data/photo-test" --out "$OUT/data/photo-test-vae" --seed 1 --quiet
  evaluate oracle "$OUT/data/photo-test-vae" "$OUT/measure/oracle-photo-test-vae.json"
  # Per-image matrices: the report's bootstrap intervals over images.
  for g in $GEN_SEEDS; do
    for v in b-style-swap c-style-swap-mrlf c-style-swap-mrlf-next; do
      evaluate oracle "$OUT/gen/$g/$v" "$OUT/measure/oracle-$g-$v.json" --per-image
    done
  done
fi

# Claim 3's control arm sees the same images as the generated arms — the source set plus N_GEN
# more, here copies of the source renders the generators drew their masks from (as the generation
# records name them) — with photometric augmentation instead of diffusion.
matched_copies() {  # matched_copies RECORDS DEST
  mkdir -p "$2/images" "$2/labels"
  local record label name
  for record in "$1"/records/*.json; do
    label=$(sed -E 's/.*"file": ?"([^"]*)".*/\1/' "$record")
    name="$(basename "$record" .json).png"
    cp "$label" "$2/labels/$name"
    cp "${label%/labels/*}/images/$(basename "$label")" "$2/images/$name"
  done
}
declare -A ARM_RUNS=()
if [ "$RUN3" = 1 ]; then
  cached "$OUT/data/game-source-matched" --in "$G1/c-style-swap-mrlf" -- matched_copies "$G1/c-style-swap-mrlf" "$OUT/data/game-source-matched"
  for s in $SEEDS; do
    phase "train_source_$s" train "source-$s" "$SEG_STEPS" "$s" "$OUT/data/game-source"
    evaluate "source-$s" "$OUT/data/photo-test" "$OUT/measure/source-$s.json" --per-image
    ARM_RUNS[source]+="${ARM_RUNS[source]:+, }{\"seg_seed\": \"$s\", \"eval\": $(cat "$OUT/measure/source-$s.json")}"
    phase "train_photometric_$s" train "photometric-$s" "$SEG_STEPS" "$s" "$OUT/data/game-source" "$OUT/data/game-source-matched" -- --photometric
    evaluate "photometric-$s" "$OUT/data/photo-test" "$OUT/measure/photometric-$s.json" --per-image
    ARM_RUNS[photometric]+="${ARM_RUNS[photometric]:+, }{\"seg_seed\": \"$s\", \"eval\": $(cat "$OUT/measure/photometric-$s.json")}"
    for g in $GEN_SEEDS; do
      for arm in a:a-source-unet b:b-style-swap c:c-style-swap-mrlf; do
        key="${arm%%:*}" set="${arm#*:}" name="${arm%%:*}-$g-$s"
        phase "train_${key}_${g}_$s" train "$name" "$SEG_STEPS" "$s" "$OUT/data/game-source" "$OUT/gen/$g/$set"
        evaluate "$name" "$OUT/data/photo-test" "$OUT/measure/$name.json" --per-image
        ARM_RUNS[$key]+="${ARM_RUNS[$key]:+, }{\"seg_seed\": \"$s\", \"gen_seed\": \"$g\", \"eval\": $(cat "$OUT/measure/$name.json")}"
      done
    done
  done
fi

# results.json: the settings, where and how long it ran, every output's identity and every
# measurement as the commands printed it.
WALL=$(( $(date +%s) - START ))
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"started": "%s", "finished": "%s", "wall_s": %s, "outputs_made": %s, "outputs_reused": %s}\n' \
  "$STARTED" "$FINISHED" "$WALL" "$MADE" "$REUSED" >>"$OUT/invocations.jsonl"
list() {  # list FILE...: a JSON list of the existing files' contents
  local out="" f
  for f in "$@"; do if [ -s "$f" ]; then out="$out${out:+, }$(cat "$f")"; fi; done
  echo "[$out]"
}
{
  echo "{"
  printf '  "settings": {"quick": %s, "n_ref": %s, "n_src": %s, "n_gen": %s, "n_oracle": %s, "n_test": %s, "gen_steps": %s, "guidance": %s, "conditioning_scale": %s, ' \
    "$([ "$QUICK" = 1 ] && echo true || echo false)" "$N_REF" "$N_SRC" "$N_GEN" "$N_ORACLE" "$N_TEST" "$GEN_STEPS" "$GUIDANCE" "$CONDITIONING_SCALE"
  printf '"resolution": %s, "size": "%s", "mrlf_stride": %s, "seg_steps": %s, "judge_steps": %s, "seeds": "%s", "gen_seeds": "%s", "pipeline": "%s", "unet_source": "%s", "controlnet": "%s"},\n' \
    "$RESOLUTION" "$SIZE" "$MRLF_STRIDE" "$SEG_STEPS" "$JUDGE_STEPS" "$SEEDS" "$GEN_SEEDS" "$PIPELINE" "$UNET_SOURCE" "$CONTROLNET"
  printf '  "provenance": {"command": "%s", "finished": "%s", "wall_s": %s, "outputs_made": %s, "outputs_reused": %s, "machine": "%s", "commit": "%s"},\n' \
    "$COMMAND_LINE" "$FINISHED" "$WALL" "$MADE" "$REUSED" "$MACHINE" "$COMMIT"
  echo "  \"invocations\": [$(paste -sd, "$OUT/invocations.jsonl")],"
  echo "  \"timings_s\": {$TIMINGS},"
  echo "  \"identities\": {"
  for f in "${USED[@]}"; do
    printf '    "%s": "%s"\n' "${f#"$OUT"/}" "$(cat "$f.identity")"
  done | sed '$!s/$/,/'
  echo "  },"
  echo "  \"style\": $(json_or_null "$OUT/measure/style.json"),"
  masks=""
  for name in game-source photo-test a-source-unet b-style-swap c-style-swap-mrlf; do
    f="$OUT/measure/masks-$name.json"
    if [ -s "$f" ]; then masks="$masks${masks:+, }\"$name\": $(cat "$f")"; fi
  done
  echo "  \"masks\": {$masks},"
  without=() with=() next=()
  for g in $GEN_SEEDS; do
    without+=("$OUT/measure/oracle-$g-b-style-swap.json")
    with+=("$OUT/measure/oracle-$g-c-style-swap-mrlf.json")
    next+=("$OUT/measure/oracle-$g-c-style-swap-mrlf-next.json")
  done
  if [ "$RUN2" = 1 ]; then
    echo "  \"mrlf\": {\"oracle\": $(json_or_null "$OUT/measure/oracle-photo-test.json"), \"oracle_vae\": $(json_or_null "$OUT/measure/oracle-photo-test-vae.json"), \"gen_seeds\": \"$GEN_SEEDS\", \"without\": $(list "${without[@]}"), \"with\": $(list "${with[@]}"), \"with_next\": $(list "${next[@]}")},"
  fi
  rows=""
  for key in source a b c photometric; do
    if [ -n "${ARM_RUNS[$key]:-}" ]; then rows="$rows${rows:+, }{\"name\": \"$key\", \"runs\": [${ARM_RUNS[$key]}]}"; fi
  done
  echo "  \"ablation\": {\"rows\": [$rows]}"
  echo "}"
} >"$OUT/results.json.tmp"
mv "$OUT/results.json.tmp" "$OUT/results.json"
dg measure report "$OUT/results.json" --out "$OUT/results.md" >&2
cat "$OUT/results.md"
echo "run-experiment.sh: $WALL s" >&2
