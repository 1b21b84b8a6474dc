#!/usr/bin/env bash
# Benchmark of checkpoint conversion at full SD 1.5 size (issue: foundation). Makes a synthetic
# SD 1.5 single file (UNet + VAE + CLIP, ~4.3 GB f32, names and shapes from the manifest), then
# times safetensors -> native -> safetensors against `cp` of the same file, with peak memory.
# Usage: tools/bench-convert.sh [SCRATCH_DIR]   (needs ~18 GB free there)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/dginstyle-bench}
mkdir -p "$dir"
bin=$(tools/build.sh)
export DGINSTYLE_NO_PROGRESS=1
src=$dir/sd15-synthetic.safetensors
[ -f "$src" ] || $bin bench make-checkpoint --manifest Tests/Fixtures/sd15-manifest.json "$src"
size=$(stat -c %s "$src")
sync


# Each step starts from a cold page cache and ends when its output is on disk (our writers
# fsync; cp is followed by sync), so reads and writes are counted alike. Median of $runs runs.
runs=${RUNS:-3}
cold() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
timed() {
    local results=()
    for _ in $(seq "$runs"); do
        cold
        /usr/bin/time -f "%e %M" -o "$dir/time.txt" sh -c "$1 && sync" >/dev/null
        results+=("$(cat "$dir/time.txt")")
        rm -f "$dir/copy.safetensors"
    done
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p"
}
read -r t_cp m_cp < <(timed "cp '$src' '$dir/copy.safetensors'")
read -r t_n m_n < <(timed "$bin convert '$src' '$dir/sd15.dginstyle' --format native --overwrite --quiet")
read -r t_s m_s < <(timed "$bin convert '$dir/sd15.dginstyle' '$dir/back.safetensors' --format ldm --overwrite --quiet")
read -r t_z m_z < <(timed "$bin convert '$src' '$dir/sd15-z.dginstyle' --format native --compress --overwrite --quiet")
read -r t_h m_h < <(timed "$bin convert '$src' '$dir/sd15-f16.dginstyle' --format native --dtype f16 --overwrite --quiet")
gb=$(echo "$size / 1000000000" | bc -l)
row() { printf "| %s | %.1f s | %.2f GB/s | %.0f MB | %.2f |\n" "$1" "$2" "$(echo "$gb / $2" | bc -l)" "$(echo "$3 / 1024" | bc -l)" "$(echo "$2 / $t_cp" | bc -l)"; }
echo "Input: $(printf %.2f "$gb") GB synthetic SD 1.5 single file; $(nproc) cores; median of $runs cold-cache runs; $(date -u +%F)"
echo
echo "| step | time | throughput | peak RSS | time vs cp |"
echo "|---|---|---|---|---|"
row "cp (same file)" "$t_cp" "$m_cp"
row "safetensors (LDM) -> native" "$t_n" "$m_n"
row "native -> safetensors (LDM)" "$t_s" "$m_s"
row "safetensors -> native, zstd" "$t_z" "$m_z"
row "safetensors -> native, f16" "$t_h" "$m_h"
echo
echo "native: $(stat -c %s "$dir/sd15.dginstyle") B, zstd: $(stat -c %s "$dir/sd15-z.dginstyle") B, f16: $(stat -c %s "$dir/sd15-f16.dginstyle") B"
cmp <($bin inspect "$src" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["components"], sort_keys=True))') \
    <($bin inspect "$dir/back.safetensors" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["components"], sort_keys=True))') \
    && echo "round trip: same components, names, dtypes and shapes"
rm -f "$dir/sd15.dginstyle" "$dir/back.safetensors" "$dir/sd15-z.dginstyle" "$dir/sd15-f16.dginstyle" "$dir/time.txt"
