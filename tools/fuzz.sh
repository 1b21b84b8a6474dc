#!/usr/bin/env bash
# libFuzzer + AddressSanitizer (LeakSanitizer included) over every parser of outside input.
#
#   tools/fuzz.sh build                   build .build-fuzz/release/DGFuzz
#   tools/fuzz.sh run TARGET [ARGS...]    fuzz one target from Fuzz/corpus/TARGET; new inputs go to
#                                         .build-fuzz/corpus/TARGET (the checked-in seeds stay small)
#   tools/fuzz.sh ci [RUNS]               every target, RUNS executions each (default 2000)
#   tools/fuzz.sh list                    the targets
#
# Targets live in Sources/DGFuzz/Fuzz.swift; docs/RELIABILITY.md records the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH=.build-fuzz
BIN=$SCRATCH/release/DGFuzz
# A parser that needs more than 2 GB or 10 s for one input of at most a few KB is a finding.
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)
export LSAN_OPTIONS="suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0"
# libFuzzer prints the crash's stack itself; Swift's own backtracer, started on the same crash,
# can stall for minutes reading the sanitizer's huge shadow mappings.
export SWIFT_BACKTRACE=enable=no

targets() { ls Fuzz/corpus; }

build() {
    # The whole package beneath DGFuzz gets the sanitizers and coverage, so that libFuzzer sees
    # the parsers' branches; its own scratch path keeps the normal build untouched.
    swift build -c release --product DGFuzz --scratch-path "$SCRATCH" \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DDGFUZZ 2>&1 | grep -v "warning: Cannot export local symbol" || true
    [ -x "$BIN" ] || { echo "fuzz.sh: build failed, no $BIN" >&2; exit 1; }
}

run() {
    local target=$1; shift
    [ -d "Fuzz/corpus/$target" ] || { echo "fuzz.sh: no target $target (known: $(targets | tr '\n' ' '))" >&2; exit 2; }
    [ -x "$BIN" ] || build
    mkdir -p "$SCRATCH/corpus/$target" "$SCRATCH/artifacts/$target"
    DGFUZZ_TARGET=$target "$BIN" "${LIMITS[@]}" -artifact_prefix="$SCRATCH/artifacts/$target/" \
        "$@" "$SCRATCH/corpus/$target" "Fuzz/corpus/$target"
}

case "${1:-}" in
    build) build ;;
    run) shift; [ $# -ge 1 ] || { echo "usage: tools/fuzz.sh run TARGET [libFuzzer args]" >&2; exit 2; }; run "$@" ;;
    list) targets ;;
    ci)
        runs=${2:-2000}
        build
        for t in $(targets); do
            start=$(date +%s)
            # ldmkeys opens a whole checkpoint per input (~10-70 inputs/s): a tenth of the runs.
            r=$runs; [ "$t" = ldmkeys ] && r=$(( runs / 10 ))
            # Seeds only, nothing written back: CI must not grow the checked-in corpus.
            # (libFuzzer writes new inputs to the first folder given: a throwaway one).
            rm -rf "$SCRATCH/ci-corpus/$t"; mkdir -p "$SCRATCH/ci-corpus/$t" "$SCRATCH/artifacts/$t"
            if ! DGFUZZ_TARGET=$t "$BIN" "${LIMITS[@]}" -runs="$r" -seed=1 \
                    -artifact_prefix="$SCRATCH/artifacts/$t/" "$SCRATCH/ci-corpus/$t" "Fuzz/corpus/$t" > "$SCRATCH/ci-$t.log" 2>&1; then
                tail -n 40 "$SCRATCH/ci-$t.log" >&2
                echo "fuzz.sh: target $t failed; the input is in $SCRATCH/artifacts/$t/" >&2
                exit 1
            fi
            echo "fuzz $t: $r runs, $(( $(date +%s) - start )) s, $(grep -o 'cov: [0-9]* ft: [0-9]*' "$SCRATCH/ci-$t.log" | tail -1)"
        done
        ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
