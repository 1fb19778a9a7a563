#!/usr/bin/env bash
# Builds and runs bench_bus; writes bench/results/bus.json and bus.md with
# the machine, the commit and this command. Extra arguments go to bench_bus
# (--rounds N --messages N --window N --payload BYTES).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${SPLITMESH_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD_DIR" --target bench_bus -j2 >/dev/null
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- core broker bench/bus 2>/dev/null; then
  commit="$commit+dirty"
fi
mkdir -p bench/results
"$BUILD_DIR/bin/bench_bus" --out bench/results --commit "$commit" \
  --command "bench/bus/run.sh${*:+ $*}" "$@"
