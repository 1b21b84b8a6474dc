#!/usr/bin/env bash
# Issue 7's benchmark in one go: the same SD 1.5 workloads (random weights) in dginstyle and in
# PyTorch on the CPU, one process per workload: median time, peak memory, ratio dginstyle/PyTorch;
# then one generated image (DDIM-20 ControlNet, and MRLF) from its timed parts in both; then sgemm at
# the UNet's shapes against OpenBLAS's best on this machine; then checkpoint conversion against cp.
# Makes a local venv with torch + diffusers the first time (never needed by CI or tests).
# Usage: tools/bench-vs-torch.sh [WORKLOAD...]   e.g. "unet:256:1" (workload:resolution:batch[:ckpt][:bf16][:8bit];
# bf16: our weights, or a training step's frozen UNet, in bf16, against PyTorch's f32 and, for a
# forward, also against PyTorch's bf16 autocast; 8bit: a training step with 8-bit AdamW state, ours
# against bitsandbytes' AdamW8bit and against torch.optim.AdamW)
# SKIP="models generation sgemm convert" leaves sections out; RUNS=N sets the timed runs per workload.
# GENERATION_DTYPE=bf16 times the generated images with our weights in bf16, against PyTorch's f32
# and its bf16 autocast (default f32: both sides f32).
# BENCH_DIR=DIR is the conversion benchmark's scratch folder (default /tmp/dginstyle-bench, ~18 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DGINSTYLE_TORCH_VENV:-.venv-torch}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch diffusers peft
fi
# The :8bit rows compare with bitsandbytes' AdamW8bit.
if [[ " $* " == *:8bit* ]] && ! "$venv/bin/python" -c "import bitsandbytes" 2>/dev/null; then
    "$venv/bin/pip" install -q bitsandbytes
fi
bin=$(tools/build.sh)
export DGINSTYLE_NO_PROGRESS=1
runs=${RUNS:-3}
skip=" ${SKIP:-} "
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(unet:256:1 unet:512:1 unet:512:2 controlnet:512:1 controlnet-train-step:256:1 \
    controlnet-train-step:256:1:ckpt unet-train-step:256:1 lora-train-step:256:1 unet-train-step:512:1 lora-train-step:512:1 \
    vae-encode:512:1 vae-decode:512:1)
[[ $skip != *" models "* ]] || workloads=()
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
row() {  # row NOTE [bench_torch.py arguments]: PyTorch's side of the current workload, and its table row
    local note="$1"; shift
    theirs=$("$venv/bin/python" tools/bench_torch.py "$name" --resolution "$res" --batch "$batch" --runs "$runs" $flag "$@")
    b=$(echo "$theirs" | field seconds); mb=$(echo "$theirs" | field peak_rss_mb)
    printf "| %s%s | %s | %s | %.2f s | %.2f s | %.2f | %.0f MB | %.0f MB | %.2f |\n" "$name" "${note:+ ($note)}" "$res" "$batch" "$a" "$b" \
        "$(echo "$a / $b" | bc -l)" "$ma" "$mb" "$(echo "$ma / $mb" | bc -l)"
}
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%F %H:%M') UTC; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median of $runs runs after a warm-up; torch $("$venv/bin/python" -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
echo
echo "### 1-4. Model workloads"
echo
echo "| workload | px | batch | dginstyle | PyTorch | ratio | dginstyle peak RSS | PyTorch peak RSS | memory ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
    IFS=: read -r name res batch extra1 extra2 extra3 <<<"$w"
    flag="" dtype="" note="" optimizer=""
    for e in ${extra1:-} ${extra2:-} ${extra3:-}; do
        case $e in
            ckpt) flag="--checkpointing"; note="${note:+$note, }checkpointing" ;;
            bf16) dtype="--dtype bf16"; note="${note:+$note, }bf16 vs PyTorch f32" ;;
            8bit) optimizer="--optimizer adamw8bit"; note="${note:+$note, }AdamW8bit vs bitsandbytes' AdamW8bit" ;;
            *) echo "bad workload $w" >&2; exit 2 ;;
        esac
    done
    ours=$($bin bench model "$name" --resolution "$res" --batch "$batch" --runs "$runs" $flag $dtype $optimizer --json)
    a=$(echo "$ours" | field seconds); ma=$(echo "$ours" | field peak_rss_mb)
    row "$note" $optimizer
    # 8-bit state against PyTorch's f32 AdamW too: the memory a user saves by switching.
    if [ -n "$optimizer" ]; then row "${note/bitsandbytes\' AdamW8bit/torch.optim.AdamW}"; fi
    # A bf16 forward is compared twice: with PyTorch's f32 and with its bf16 autocast (issue 19's two goals).
    if [ -n "$dtype" ] && [[ $name != *train-step ]]; then row "${note/PyTorch f32/PyTorch bf16 autocast}" --dtype autocast; fi
done

if [[ $skip != *" generation "* ]]; then
    gdtype=${GENERATION_DTYPE:-f32}
    echo
    echo "### Generation (issue 5): one 512 px image from its timed parts, our weights in $gdtype"
    echo
    ours=$($bin bench generation --manifest Tests/Fixtures/sd15-manifest.json --dtype "$gdtype" 2>/dev/null)
    total() { grep -m1 "$1" | grep -oE '[0-9]+(\.[0-9]+)?' | tail -1; }
    op=$(echo "$ours" | total "DDIM-20 ControlNet image"); om=$(echo "$ours" | total "MRLF image")
    # PyTorch's summary line: "DDIM-20 ControlNet image: 202 s; MRLF image: 5306 s (MRLF step: ...)".
    first_after() { grep -oE "$1 [0-9]+(\.[0-9]+)?" | head -1 | grep -oE '[0-9]+(\.[0-9]+)?$'; }
    echo "| image | dginstyle ($gdtype) | PyTorch | ratio |"
    echo "|---|---|---|---|"
    theirs_all=""
    # bf16 weights are compared with PyTorch's f32 and with its autocast (issue 19's two references).
    for tdtype in f32 $([ "$gdtype" = bf16 ] && echo autocast); do
        theirs=$("$venv/bin/python" tools/bench-generation.py --dtype "$tdtype" 2>/dev/null)
        theirs_all+="$theirs"$'\n'
        tp=$(echo "$theirs" | first_after "ControlNet image:"); tm=$(echo "$theirs" | first_after "MRLF image:")
        printf "| DDIM-20 ControlNet, guidance 7.5, 512 px, vs PyTorch %s | %.0f s | %.0f s | %.2f |\n" "$tdtype" "$op" "$tp" "$(echo "$op / $tp" | bc -l)"
        printf "| MRLF (512 px + 1024 px windows), 20 steps each, vs PyTorch %s | %.0f s | %.0f s | %.2f |\n" "$tdtype" "$om" "$tm" "$(echo "$om / $tm" | bc -l)"
    done
    echo
    echo "dginstyle parts:"; echo "$ours"
    echo; echo "PyTorch parts:"; echo "$theirs_all" | sed 's/^/    /'
fi

if [[ $skip != *" sgemm "* ]]; then
    echo
    echo "### 5. sgemm at the UNet's shapes (OpenBLAS with its own choice of kernel for this CPU)"
    echo
    env -u OPENBLAS_CORETYPE $bin bench sgemm
fi

if [[ $skip != *" convert "* ]]; then
    echo
    echo "### 6. Checkpoint conversion against cp"
    echo
    RUNS=$runs tools/bench-convert.sh ${BENCH_DIR:+"$BENCH_DIR"}
fi
