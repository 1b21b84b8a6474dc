#!/usr/bin/env bash
# Installs what the build needs from Debian's packages. Safe to run again: it installs only
# what is missing.
set -euo pipefail
need=()
for pkg in libopenblas-dev libpng-dev libzstd-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
echo "setup: libopenblas-dev libpng-dev libzstd-dev present"
