#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds, and runs the
# whole Criterion suite through ctest. Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
BUILD_DIR=${SPLITMESH_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" --timeout 600
