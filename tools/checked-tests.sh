#!/usr/bin/env bash
# The fast test suites in a debug build: bounds checks and preconditions live in every target,
# including DGTensor, DGAutograd and DGLayers, which release builds compile -Ounchecked.
# (~3 minutes to build and ~30 s to run on 2 cores.)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build --filter "DGCheckpointTests|DGDataTests|DGAutogradTests|CLIPTokenizerTests|ModelConfigTests"
