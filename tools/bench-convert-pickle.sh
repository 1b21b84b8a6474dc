#!/usr/bin/env bash
# Conversion of an SD 1.5-size PyTorch .ckpt (torch.save zip, 4.3 GB f32, random weights of the
# manifest's shapes, in Lightning form {"state_dict": ...}) to native and to a diffusers folder,
# against `cp` of the same file, with peak memory: reading a pickle must stream like safetensors.
# Usage: tools/bench-convert-pickle.sh [SCRATCH_DIR]   (needs ~15 GB free there, and torch: a venv
# at .venv-torch or DGINSTYLE_TORCH_VENV, e.g. `python3 -m venv .venv-torch && .venv-torch/bin/pip
# install torch safetensors numpy`)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/dginstyle-bench}
venv=${DGINSTYLE_TORCH_VENV:-.venv-torch}
mkdir -p "$dir"
# DGINSTYLE_BIN: an already built binary (skips the build).
bin=${DGINSTYLE_BIN:-}
if [ -z "$bin" ]; then bin=$(tools/build.sh); fi
export DGINSTYLE_NO_PROGRESS=1
st=$dir/sd15-synthetic.safetensors
src=$dir/sd15-synthetic.ckpt
[ -f "$st" ] || $bin bench make-checkpoint --manifest Tests/Fixtures/sd15-manifest.json "$st"
[ -f "$src" ] || "$venv/bin/python" -c '
import sys, torch
from safetensors.torch import load_file
torch.save({"state_dict": load_file(sys.argv[1]), "global_step": 0, "epoch": 0}, sys.argv[2])
' "$st" "$src"
size=$(stat -c %s "$src")
sync

# As tools/bench-convert.sh: cold page cache, output on disk at the end, median of $runs runs.
runs=${RUNS:-3}
cold() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
timed() {
    local results=()
    for _ in $(seq "$runs"); do
        cold
        /usr/bin/time -f "%e %M" -o "$dir/time.txt" sh -c "$1 && sync" >/dev/null
        results+=("$(cat "$dir/time.txt")")
        rm -rf "$dir/copy.ckpt" "$dir/p.dginstyle" "$dir/p-diffusers"
    done
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p"
}
read -r t_cp m_cp < <(timed "cp '$src' '$dir/copy.ckpt'")
read -r t_n m_n < <(timed "$bin convert '$src' '$dir/p.dginstyle' --format native --overwrite --quiet")
read -r t_d m_d < <(timed "$bin convert '$src' '$dir/p-diffusers' --format diffusers --overwrite --quiet")
read -r t_sd m_sd < <(timed "$bin convert '$st' '$dir/p-diffusers' --format diffusers --overwrite --quiet")
gb=$(echo "$size / 1000000000" | bc -l)
row() { printf "| %s | %.1f s | %.2f GB/s | %.0f MB | %.2f |\n" "$1" "$2" "$(echo "$gb / $2" | bc -l)" "$(echo "$3 / 1024" | bc -l)" "$(echo "$2 / $t_cp" | bc -l)"; }
echo "Input: $(printf %.2f "$gb") GB SD 1.5-size .ckpt made by torch.save; $(nproc) cores; median of $runs cold-cache runs; $(date -u +%F)"
echo
echo "| step | time | throughput | peak RSS | time vs cp |"
echo "|---|---|---|---|---|"
row "cp (same .ckpt)" "$t_cp" "$m_cp"
row ".ckpt -> native" "$t_n" "$m_n"
row ".ckpt -> diffusers folder" "$t_d" "$m_d"
row "same weights as safetensors -> diffusers" "$t_sd" "$m_sd"
rm -f "$dir/time.txt"
