#!/usr/bin/env bash
# The same SD 1.5 workloads (random weights) in dginstyle and in PyTorch on the CPU, one process
# per workload, in one go: median time, peak memory and the ratio dginstyle / PyTorch.
# Makes a local venv with torch + diffusers the first time (never needed by CI or tests).
# Usage: tools/bench-vs-torch.sh [WORKLOAD...]   e.g. "unet:256:1" (workload:resolution:batch[:ckpt])
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DGINSTYLE_TORCH_VENV:-.venv-torch}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch diffusers
fi
swift build -c release --product dginstyle >/dev/null
runs=${RUNS:-3}
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(unet:256:1 unet:512:1 unet:512:2 controlnet:512:1 controlnet-train-step:256:1 \
    controlnet-train-step:256:1:ckpt vae-encode:512:1 vae-decode:512:1)
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
echo "$(nproc) cores; $(date -u +%F); median of $runs runs after a warm-up; torch $("$venv/bin/python" -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
echo
echo "| workload | px | batch | dginstyle | PyTorch | ratio | dginstyle peak RSS | PyTorch peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
    IFS=: read -r name res batch ckpt <<<"$w"
    flag=""
    [ "${ckpt:-}" = "ckpt" ] && flag="--checkpointing"
    ours=$(DGINSTYLE_NO_PROGRESS=1 .build/release/dginstyle bench model "$name" --resolution "$res" --batch "$batch" --runs "$runs" $flag --json)
    theirs=$("$venv/bin/python" tools/bench_torch.py "$name" --resolution "$res" --batch "$batch" --runs "$runs" $flag)
    a=$(echo "$ours" | field seconds); b=$(echo "$theirs" | field seconds)
    ma=$(echo "$ours" | field peak_rss_mb); mb=$(echo "$theirs" | field peak_rss_mb)
    printf "| %s%s | %s | %s | %.2f s | %.2f s | %.2f | %.0f MB | %.0f MB |\n" "$name" "${flag:+ (checkpointing)}" "$res" "$batch" "$a" "$b" \
        "$(echo "$a / $b" | bc -l)" "$ma" "$mb"
done
