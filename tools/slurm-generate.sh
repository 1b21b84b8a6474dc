#!/usr/bin/env bash
# Submits a `dginstyle generate` run as a Slurm array job: task I of N runs
# `generate ... --shard I/N`. Every item's content depends on --seed and its index alone, so the
# shards together give exactly the items of one process, and a task run again skips the items it
# already finished: resubmitting a failed or killed task is always safe.
#
#   tools/slurm-generate.sh -n N [--resubmit] [--dginstyle PATH] [--sbatch "ARGS"] -- GENERATE OPTIONS...
#
#   -n N          number of array tasks (shards)
#   --resubmit    submit only the shards `dginstyle status` reports incomplete (none: nothing is submitted)
#   --dginstyle   the binary (default: dginstyle on PATH, else .build/release/dginstyle); it and
#                 every path in the options must be readable from the compute nodes
#   --sbatch      extra sbatch options, e.g. "--partition cpu --cpus-per-task 16 --time 24:00:00"
#
# Prints the array job id. Task logs: OUT/slurm/JOBID_TASK.out. DGINSTYLE_THREADS is set to the
# task's --cpus-per-task (1 when not given) unless already set: shards are bit-identical to one run
# only when they all use the same thread count (the kernels' float reductions are split by it).
set -euo pipefail
die() { echo "slurm-generate: $*" >&2; exit 1; }

shards="" resubmit=0 binary="" extra=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--shards) [ $# -ge 2 ] || die "$1 needs a value"; shards="$2"; shift 2 ;;
        --resubmit) resubmit=1; shift ;;
        --dginstyle) [ $# -ge 2 ] || die "$1 needs a value"; binary="$2"; shift 2 ;;
        --sbatch) [ $# -ge 2 ] || die "$1 needs a value"; extra="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (generate's options go after --)" ;;
    esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "-n N (a positive shard count) is required"
[ $# -gt 0 ] || die "no generate options after --"
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --out) out="${args[i+1]:-}" ;;
        --out=*) out="${args[i]#--out=}" ;;
        --shard|--shard=*) die "do not pass --shard: each task gets its own" ;;
    esac
done
[ -n "$out" ] || die "the generate options need --out DIR"
if [ -z "$binary" ]; then
    binary=$(command -v dginstyle || true)
    [ -n "$binary" ] || binary="$(cd "$(dirname "$0")/.." && pwd)/.build/release/dginstyle"
fi
[ -x "$binary" ] || die "$binary: not an executable (pass --dginstyle PATH)"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
command -v sbatch >/dev/null || die "sbatch not found: not on a Slurm submit host"
mkdir -p "$out/slurm"
out_abs=$(cd "$out" && pwd)
# The job name names the output folder, so a resubmission can see tasks of the run still queued.
name="dginstyle:$out_abs"

array="0-$((shards - 1))"
if [ "$resubmit" -eq 1 ]; then
    if squeue -h -o '%j' 2>/dev/null | grep -Fxq "$name"; then
        die "tasks of this run are still queued or running (squeue -n '$name'); wait for them or scancel them first"
    fi
    if [ -f "$out/run.json" ]; then
        array=$("$binary" status "$out" --shards "$shards" --incomplete) || die "status failed"
    fi
    if [ -z "$array" ]; then echo "slurm-generate: $out is complete; nothing to resubmit" >&2; exit 0; fi
fi

# The job script carries the options quoted as given, so paths with spaces survive.
script="$out/slurm/generate.sbatch"
{
    echo '#!/usr/bin/env bash'
    echo 'set -euo pipefail'
    echo 'export DGINSTYLE_THREADS="${DGINSTYLE_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"'
    printf 'exec %q generate' "$binary"
    printf ' %q' "${args[@]}"
    printf ' --shard "$SLURM_ARRAY_TASK_ID/%d" --quiet\n' "$shards"
} > "$script.tmp"
mv "$script.tmp" "$script"
# shellcheck disable=SC2086  # $extra is a list of sbatch options, split on purpose
jobid=$(sbatch --parsable --array="$array" --job-name="$name" --output="$out_abs/slurm/%A_%a.out" $extra "$script") \
    || die "sbatch failed"
jobid=${jobid%%;*}
echo "$jobid"
echo "slurm-generate: submitted array job $jobid, shards $array of $shards; progress: $binary status $out --shards $shards" >&2
