#!/usr/bin/env bash
# bench/gpu/pack.sh: run HERE (the build machine). Builds the GPU test and
# bench binaries and the mesh's service binaries and puts them, stripped, with the shared libraries they
# need that a bare GPU host lacks (criterion, czmq, zmq, msgpack, ...; not
# glibc, libstdc++ or cuBLASLt, which the host has) into .device/gpu/, and
# packs that as .device/gpu.tgz; splits the model (SPLITMESH_MODEL) into
# parts of 36 MB in .device/ (uploads are limited to 64 MiB a call: carry
# gpu.tgz and the first part, then one part a call). device.sh runs there.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${SPLITMESH_BUILD_DIR:-build}
MODEL=${SPLITMESH_MODEL:-/work/models/SmolLM2-135M-Instruct.Q4_1.gguf}
cmake -S . -B "$BUILD" >/dev/null
# The GPU tests and benches, and the mesh's processes (test_gpu_mesh runs
# `splitmesh up` with a CUDA cloud-target; bench_gpu_service drives the
# broker + cloud-target).
BINS="test_gpu test_gpu_model test_gpu_target test_gpu_mesh bench_gpu bench_gpu_service splitmesh
      splitmesh-broker splitmesh-tokenizer splitmesh-split-prefix splitmesh-cloud-target
      splitmesh-edge-draft"
cmake --build "$BUILD" -j2 --target $BINS
D=.device/gpu
rm -rf "$D"; mkdir -p "$D/bin" "$D/lib"
for b in $BINS; do
  strip -o "$D/bin/$b" "$BUILD/bin/$b"
done
ldd "$D"/bin/* | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|ld-linux*|libgcc_s.so*|libstdc++.so*|libcublas*|libcuda.so*) ;;
    *) cp -L "$lib" "$D/lib/" ;;
  esac
done
if [ -f "$MODEL" ]; then
  # Parts of 36 MB: each call carries one beside the ~12 MB working tree
  # (the first also gpu.tgz, ~9 MB), under the 64 MiB an upload holds.
  rm -f .device/model.part-*
  split -b 36000000 -d "$MODEL" .device/model.part-
  stat -c %s "$MODEL" > .device/model.size
fi
git rev-parse --short HEAD > "$D/COMMIT" 2>/dev/null || echo unknown > "$D/COMMIT"
git diff --quiet HEAD 2>/dev/null || echo "+dirty" >> "$D/COMMIT"
tar -C .device -czf .device/gpu.tgz gpu
du -sh .device/gpu.tgz .device/model.part-* 2>/dev/null
