#!/usr/bin/env bash
# Builds the dginstyle command in the one configuration the project uses everywhere: the README's
# test command's (release, -enable-testing), so going between the tests, the tools and the demo never
# rebuilds the whole package (a switch of flags costs ~5 minutes on 2 cores). -enable-testing costs
# nothing measurable at run time (docs/PERFORMANCE.md, "One build configuration"). Prints the binary's
# path; the build's output only if it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release -Xswiftc -enable-testing)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! swift build "${flags[@]}" --product dginstyle >"$log" 2>&1; then
    cat "$log" >&2
    echo "tools/build.sh: the build failed" >&2
    exit 1
fi
echo "$(swift build "${flags[@]}" --show-bin-path)/dginstyle"
