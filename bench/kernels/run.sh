#!/usr/bin/env bash
# Builds and runs bench_kernels; writes bench/results/kernels.json and
# kernels.md with the machine, the commit and this command. Extra arguments
# go to bench_kernels (--threads 1,2 --tokens 1,2,4,8,16 --rounds N --bw-mb MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${SPLITMESH_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD_DIR" --target bench_kernels -j2 >/dev/null
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- core bench/kernels 2>/dev/null; then
  commit="$commit+dirty"
fi
mkdir -p bench/results
# llama.cpp's decode time for the same model, when llama-cpp-python (pyenv
# python3) and the model file are there: the reference for the engine's goal.
MODEL=${SPLITMESH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
llama=()
if [ -f "$MODEL" ]; then
  for ref in $(python3 bench/kernels/llama_ref.py "$MODEL" 1 2 2>/dev/null || true); do
    llama+=(--llama "$ref")
  done
fi
"$BUILD_DIR/bin/bench_kernels" --out bench/results --commit "$commit" \
  --command "bench/kernels/run.sh $*" "${llama[@]}" "$@"
