#!/usr/bin/env bash
# Fetches llama.cpp's vocab-only test files (gpt-2, llama-bpe; MIT License)
# from the llama-cpp-python sdist on PyPI into models/llama-vocab/, where
# tests/test_tokenizer_golden.c finds them. The sdist also holds
# vendor/llama.cpp/models/ for tokenizer_golden.py --vocab-dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=models/llama-vocab
VERSION=0.3.36
if [ -f "$DEST/ggml-vocab-gpt-2.gguf" ] && [ -f "$DEST/ggml-vocab-llama-bpe.gguf" ]; then
  echo "fetch_llama_vocab: already present in $DEST"; exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP"
mkdir -p "$DEST"
tar -xzf "$TMP"/llama_cpp_python-$VERSION.tar.gz -C "$TMP" \
  "llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf" \
  "llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf"
cp "$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp/models/"ggml-vocab-{gpt-2,llama-bpe}.gguf "$DEST/"
echo "fetch_llama_vocab: wrote $DEST"
