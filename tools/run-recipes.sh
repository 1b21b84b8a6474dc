#!/usr/bin/env bash
# Trains the embedded miniature (issue 8) with our own recipes, in dependency order: tiny VAE,
# base UNet U^P (-> weights/tiny-sd.dginstyle), U^S by DreamBooth, the ControlNet on U^S.
# Run from anywhere; works in the repository root. Re-running continues a killed run: finished
# steps are skipped and training resumes from its newest checkpoint. Log: runs/recipes/run.log.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(tools/build.sh)
mkdir -p runs/recipes
for r in tiny-vae tiny-base-unet tiny-source-unet tiny-controlnet; do
    "$bin" recipe "recipes/$r.json" "$@" || exit 1
done 2>&1 | tee -a runs/recipes/run.log
