#!/usr/bin/env bash
# Cross-builds the kernel checks for AArch64 and runs them under qemu: the
# NEON family without and with the dot product extension, against the
# scalar reference. Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and
# qemu-user-static (Debian); skips (exit 0) with a message without them.
set -euo pipefail
cd "$(dirname "$0")/../.."
CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64-static}
if ! command -v "$CC" >/dev/null || ! command -v "$QEMU" >/dev/null; then
  echo "run-neon: $CC or $QEMU missing; skipped"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
srcs="core/quant.c core/kernels.c core/kernels_neon.c core/kernels_avx2.c core/kernels_avx512.c
      core/threadpool.c core/ggml_types.c tests/cross/neon_check.c"
for march in armv8-a armv8.2-a+dotprod; do
  # shellcheck disable=SC2086
  "$CC" -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -march=$march -Icore -static \
    $srcs -lpthread -lm -o "$out/neon_check"
  echo "== -march=$march"
  "$QEMU" -cpu max "$out/neon_check"
done
