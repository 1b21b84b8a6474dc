#!/usr/bin/env bash
# Proves tools/slurm-generate.sh on a real Slurm: starts a one-node cluster on this machine
# (munged, slurmctld and slurmd on loopback, all state in a temporary folder), submits a 4-task
# array over the tiny models, cancels one task once it has finished an item, resubmits it with
# --resubmit, and checks the merged output is byte-identical to one process running the whole job.
# Needs root for the daemons; installs slurm-wlm and munge (Debian) when they are missing.
# Stops the cluster and removes the folder on exit. Usage: tools/test-slurm.sh [DGINSTYLE_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/.build/release/dginstyle}
tiny=$root/Tests/Fixtures/sd-tiny
start=$(date +%s)
say() { echo "test-slurm [$(( $(date +%s) - start ))s]: $*"; }
fail() { echo "test-slurm: FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "$bin: build dginstyle first (tools/build.sh)"
[ "$(id -u)" -eq 0 ] || fail "run as root (the Slurm and munge daemons of the test cluster)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm munge"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

tmp=$(mktemp -d /tmp/dginstyle-slurm.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    local rc=$?
    if [ -n "${SLURM_CONF:-}" ] && [ -f "${SLURM_CONF}" ]; then scancel --quiet --user root 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ $rc -ne 0 ]; then
        for log in "$tmp"/slurmctld.log "$tmp"/slurmd.log; do [ -f "$log" ] && { echo "--- $log"; tail -15 "$log"; }; done >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# munge: a fresh key and a private socket, so the machine's own munged (if any) is not touched.
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool"
chmod 711 "$tmp/munge"
mungekey --create --keyfile="$tmp/munge/munge.key" 2>/dev/null || dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$tmp/munge/munge.key"
munged --force --foreground --socket="$tmp/munge/munge.socket" --key-file="$tmp/munge/munge.key" \
    --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/munged.seed" \
    >"$tmp/munge/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$tmp/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$tmp/munge/munge.socket" ] || fail "munged did not start"

cpus=$(nproc)
cat > "$tmp/slurm.conf" <<CONF
ClusterName=dginstyle-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$tmp/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N localhost -f "$SLURM_CONF" >"$tmp/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^idle' && break
    sleep 0.3
done
sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^idle' || fail "the node did not come up: $(sinfo -N 2>&1 | tail -2)"
say "cluster up: $(sinfo -h -o '%P %D %T %c' | head -1) cpus, $(sinfo -V)"

# The job: 12 items over 4 shards (3 each), tiny models, MRLF, 128 px.
"$bin" synth --out "$tmp/synth" --count 4 --size 192x144 --seed 3 >/dev/null
job=(--pipeline "$tiny/tiny-sd" --controlnet "$tiny/tiny-controlnet" --labels "$tmp/synth"
     --count 12 --steps 2 --resolution 128 --seed 7)
export DGINSTYLE_THREADS=1
t0=$(date +%s)
"$bin" generate "${job[@]}" --out "$tmp/single" --quiet >/dev/null
say "single process: 12 items in $(( $(date +%s) - t0 ))s"

wait_job() {  # until no task of array job $1 is queued or running
    for _ in $(seq 1200); do
        [ -z "$(squeue -h -j "$1" -o '%i' 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    fail "job $1 still queued after 240s: $(squeue -j "$1" 2>&1)"
}
records() { find "$tmp/sharded/records" -name "$1" 2>/dev/null | wc -l; }

# Task 1 renders items 1, 5, 9: cancel it as soon as item 1's record lands. The cancel has two
# items' render time to land; should the task still finish first (a stalled machine), the whole
# submission is repeated, so the test proves a mid-way cancel rather than depending on timing.
for attempt in 1 2 3; do
    rm -rf "$tmp/sharded"
    jobid=$("$root/tools/slurm-generate.sh" -n 4 --dginstyle "$bin" -- "${job[@]}" --out "$tmp/sharded" 2>/dev/null)
    say "submitted array job $jobid (4 tasks)"
    for _ in $(seq 3000); do
        [ "$(records '000001_*.json')" -gt 0 ] && break
        sleep 0.05
    done
    [ "$(records '000001_*.json')" -gt 0 ] || fail "task 1 wrote no record"
    state=$(squeue -h -j "${jobid}_1" -o '%T' 2>/dev/null || true)
    scancel "${jobid}_1"
    say "cancelled task ${jobid}_1 (state ${state:-gone}) after its first record"
    wait_job "$jobid"
    left=$(( $(records '000005_*.json') + $(records '000009_*.json') ))
    [ "$left" -lt 2 ] && break
    [ "$attempt" -lt 3 ] || fail "task 1 finished before it was cancelled, 3 times"
    say "task 1 finished before the cancel landed; submitting again"
done
"$bin" status "$tmp/sharded" | sed 's/^/  /'
incomplete=$("$bin" status "$tmp/sharded" --incomplete)
[ "$incomplete" = "1" ] || fail "status reports incomplete shards '$incomplete', expected 1"

rejob=$("$root/tools/slurm-generate.sh" -n 4 --resubmit --dginstyle "$bin" -- "${job[@]}" --out "$tmp/sharded" 2>/dev/null)
say "resubmitted shard 1 as job $rejob"
wait_job "$rejob"
"$bin" status "$tmp/sharded" | sed 's/^/  /'
[ -z "$("$bin" status "$tmp/sharded" --incomplete)" ] || fail "the run is still incomplete after the resubmission"
again=$("$root/tools/slurm-generate.sh" -n 4 --resubmit --dginstyle "$bin" -- "${job[@]}" --out "$tmp/sharded" 2>&1)
[[ "$again" == *"nothing to resubmit"* ]] || fail "a complete run was resubmitted: $again"

# Every file of the single run, byte for byte; only slurm/ (the task logs and job script) and
# shards.json (it names the shard count) differ by design, and a temporary file a killed task may
# leave behind (.NAME.tmp-PID-N, never read) is not output.
diff -r --exclude=slurm --exclude=shards.json --exclude=".*.tmp-*" "$tmp/single" "$tmp/sharded" || fail "the sharded output differs from the single run"
files=$(cd "$tmp/single" && find . -type f | wc -l)
say "PASS: 4-task array with one task cancelled and resubmitted == single process, byte for byte ($files files in: $(cd "$tmp/single" && ls -A | tr '\n' ' '))"
