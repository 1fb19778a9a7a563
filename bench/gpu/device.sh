#!/usr/bin/env bash
# bench/gpu/device.sh: run on the GPU host, from the repository root, after
# bench/gpu/pack.sh made .device/ on the build machine (binaries there are
# built with the static CUDA runtime; cuBLASLt and the driver come from the
# host). Runs the GPU tests (tiny model and SmolLM2 against the CPU engine),
# the benchmark (8B-shaped synthetic weights, SmolLM2 graphs on/off,
# 10,000 verify calls) and PyTorch's fp16 eager forward of the same shapes,
# writes every log and result under $OUT and prints a short table last.
#
# usage: OUT=/some/dir [PACK_LOGS=1] bench/gpu/device.sh [--skip-tests] [--skip-torch] [--reps N]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/.device/out}
mkdir -p "$OUT"
SKIP_TESTS=0 SKIP_TORCH=0 REPS=30
ARGV="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-tests) SKIP_TESTS=1; shift ;;
    --skip-torch) SKIP_TORCH=1; shift ;;
    --reps) REPS=$2; shift 2 ;;
    *) echo "device.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
D=$PWD/.device/gpu
if [ -f .device/gpu.tgz ] && { [ ! -x "$D/bin/bench_gpu" ] || [ .device/gpu.tgz -nt "$D/bin/bench_gpu" ]; }; then
  rm -rf "$D"; tar -C .device -xzf .device/gpu.tgz
fi
[ -x "$D/bin/bench_gpu" ] || { echo "device.sh: $D missing: run bench/gpu/pack.sh on the build machine" >&2; exit 1; }
# The model arrives in parts (upload limit); join them once.
MODEL=${SPLITMESH_MODEL:-$PWD/.device/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$MODEL" ] && [ -f .device/model.size ] &&
   [ "$(cat .device/model.part-* 2>/dev/null | wc -c)" = "$(cat .device/model.size)" ]; then
  cat .device/model.part-* > "$MODEL.tmp" && mv "$MODEL.tmp" "$MODEL"
fi
# cuBLASLt 13 from the CUDA toolkit or PyTorch's wheel, whichever is there.
CUBLAS=$( (ls -d /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib 2>/dev/null;
           python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null | sed 's|$|/nvidia/cu13/lib|';
           find / -xdev -name 'libcublasLt.so.13*' -printf '%h\n' 2>/dev/null | head -3) |
         while read -r d; do [ -e "$d/libcublasLt.so.13" ] && echo "$d"; done | head -1)
export LD_LIBRARY_PATH=$D/lib${CUBLAS:+:$CUBLAS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export SPLITMESH_BIN_DIR=$D/bin SPLITMESH_SOURCE_DIR=$PWD
{ uptime; nvidia-smi; echo "cublasLt from: $CUBLAS"; ldd "$D/bin/bench_gpu"; } > "$OUT/env.txt" 2>&1
echo "cublasLt: ${CUBLAS:-NOT FOUND}"
status=0
: > "$OUT/tests.txt"
if [ $SKIP_TESTS = 0 ]; then
  "$D/bin/test_gpu" --jobs=1 --verbose > "$OUT/test_gpu.log" 2>&1 || status=1
  [ -f "$MODEL" ] && export SPLITMESH_MODEL=$MODEL
  "$D/bin/test_gpu_model" --jobs=1 --verbose > "$OUT/test_gpu_model.log" 2>&1 || status=1
  "$D/bin/test_gpu_target" --jobs=1 --verbose > "$OUT/test_gpu_target.log" 2>&1 || status=1
  #  The mesh check: fp16, w8a8 and w8 cloud-targets against GPU target-only greedy.
  for fmt in fp16 w8a8 w8; do
    SPLITMESH_GPU_FORMAT=$fmt "$D/bin/test_gpu_mesh" --jobs=1 --verbose > "$OUT/test_gpu_mesh_$fmt.log" 2>&1 || status=1
  done
  grep -h -E "Synthesis|SMOLLM2|FAIL|\[FAIL\]|rel err|Assertion|histogram|gpu_mesh:" "$OUT/test_gpu.log" \
    "$OUT/test_gpu_model.log" "$OUT/test_gpu_target.log" "$OUT"/test_gpu_mesh_*.log > "$OUT/tests.txt"
  tail -n 30 "$OUT/tests.txt"
fi
ARGS=(--reps "$REPS")
[ -f "$MODEL" ] && ARGS+=(--model "$MODEL")
# Per-kernel profile of the 8B verify and the tuning variants (text).
"$D/bin/bench_gpu" --profile --formats w8a8,fp16 --reps 15 > /dev/null 2> "$OUT/profile.txt" || status=1
"$D/bin/bench_gpu" "${ARGS[@]}" > "$OUT/bench.json" 2> "$OUT/bench.log" || status=1
tail -n 20 "$OUT/bench.log"
# Through the service: broker + CUDA cloud-target (SmolLM2, continuous
# batching) and the same sweep with batching off (capacity 1) as the peer.
: > "$OUT/service.json"
if [ -f "$MODEL" ]; then
  # capacity 64 with the adaptive wait (default), with the fixed 1 ms
  # wait (SPLITMESH_BATCH_ADAPTIVE=0, the session-1 service), capacity 1.
  for run in 64 64_fixed_wait 1; do
    cap=${run%%_*}
    adaptive=1; [ "$run" = 64_fixed_wait ] && adaptive=0
    EP=tcp://127.0.0.1:$((24000 + cap + 1 - adaptive))
    "$D/bin/splitmesh-broker" -e "$EP" > "$OUT/service_broker_$run.log" 2>&1 & BPID=$!
    SPLITMESH_TARGET_BACKEND=cuda SPLITMESH_GPU_FORMAT=${SERVICE_FORMAT:-w8a8} SPLITMESH_BATCH_CAPACITY=$cap \
      SPLITMESH_BATCH_ADAPTIVE=$adaptive \
      "$D/bin/splitmesh-cloud-target" --broker "$EP" --model "$MODEL" --split 0 --ctx 512 \
      --max-sessions 64 > "$OUT/service_target_$run.log" 2>&1 & TPID=$!
    for i in $(seq 60); do grep -q ready "$OUT/service_target_$run.log" && break; sleep 0.5; done
    timeout 240 "$D/bin/bench_gpu_service" --broker "$EP" --rounds 50 --label "capacity_$run" \
      >> "$OUT/service.json" 2>> "$OUT/service.log" || status=1
    kill $TPID $BPID 2>/dev/null; wait $TPID $BPID 2>/dev/null
  done
  tail -n 8 "$OUT/service.log"
fi
if [ $SKIP_TORCH = 0 ]; then
  python3 bench/gpu/torch_ref.py --reps "$REPS" > "$OUT/torch.json" 2> "$OUT/torch.log" || status=1
  tail -n 6 "$OUT/torch.log"
fi
GPU_COMMIT=$(tr -d "\n" < "$D/COMMIT" 2>/dev/null) GPU_COMMAND="bench/gpu/device.sh $ARGV" \
  python3 bench/gpu/report.py "$OUT/bench.json" "$OUT/torch.json" "$OUT/tests.txt" "$OUT/gpu.json" "$OUT/gpu.md" "$OUT/service.json" || status=1
# PACK_LOGS=1 (the device tool returns at most 8 files): every log in
# $OUT/logs.tgz beside gpu.json, gpu.md and tests.txt.
if [ "${PACK_LOGS:-0}" = 1 ]; then
  tar -C "$OUT" -czf /tmp/gpu_logs.tgz . &&
    find "$OUT" -type f ! -name gpu.json ! -name gpu.md ! -name tests.txt -delete &&
    mv /tmp/gpu_logs.tgz "$OUT/logs.tgz"
fi
exit $status
