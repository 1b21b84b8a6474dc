#!/bin/sh
# The SIGKILL tests of Tests/CommandTests/HardStopTests.swift, many times over: convert (native,
# safetensors, ldm, diffusers), swap, assemble and synth killed ROUNDS times each, generate and
# train-vae ROUNDS/2 times each (resuming after every kill), at delays drawn from a generator
# seeded with SEED. The test suite runs the same tests with 5 rounds.
#
#   tools/kill-soak.sh [ROUNDS=60] [SEED=17]
#
# Prints one line per command (kills, how many struck mid-write, what the destination held) and
# the XCTest verdict; exits non-zero if any check failed.
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-60}
seed=${2:-17}
swift build -c release -Xswiftc -enable-testing --build-tests >/dev/null
start=$(date +%s)
set +e
DGINSTYLE_KILL_ROUNDS=$rounds DGINSTYLE_KILL_SEED=$seed \
    swift test -c release -Xswiftc -enable-testing --skip-build --filter 'HardStopTests.testKilled' >/tmp/kill-soak.$$ 2>&1
status=$?
set -e
grep -E '^kill |error:|Executed .* tests' /tmp/kill-soak.$$ | sort -u
rm -f /tmp/kill-soak.$$
echo "rounds $rounds, seed $seed, $(( $(date +%s) - start )) s, exit status $status"
exit $status
