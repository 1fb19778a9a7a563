#!/usr/bin/env bash
# bench/soak: SOAK_SESSIONS (64) concurrent generation sessions for
# SOAK_SECONDS (600) against a real mesh (`splitmesh up`), then `down`.
# Records duration, requests, errors, p50/p90/p99 latency, RSS of every
# process and sanitizer findings in bench/results/soak.json (or $SOAK_JSON).
#
#   bench/soak/run.sh [build-dir]                     # the real model
#   SOAK_MODEL=tiny SOAK_SECONDS=60 bench/soak/run.sh # a tiny random model (CI-sized)
#   SOAK_ASAN=1 bench/soak/run.sh                     # ASan+UBSan+LSan build in build-asan/
#
# With SOAK_ASAN=1 the mesh is built with -DSPLITMESH_SANITIZE=ON (CUDA,
# tests and benches off) and LeakSanitizer checks every process when `down`
# stops it; any report fails the run. Exit status: soak.py's (1 on any error).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
SESSIONS=${SOAK_SESSIONS:-64}
SECONDS_=${SOAK_SECONDS:-600}
TOKENS=${SOAK_TOKENS:-16}
LINK=${SOAK_LINK:-rtt=10}
OUT=${SOAK_JSON:-bench/results/soak.json}
# Sized for the sessions: one edge-draft generation worker per session, and
# broker queues that hold a request 30 s (not 5) before answering 504, since
# split-prefix and cloud-target take the 64 sessions' calls one at a time.
export SPLITMESH_WORKERS=${SOAK_WORKERS:-$SESSIONS}
export SPLITMESH_BROKER_EXPIRY_MS=${SOAK_EXPIRY_MS:-30000}
# edge-draft's per-attempt call timeout (SPLITMESH_TIMEOUT_MS): at its default
# (5 s) a cloud call queued behind 63 others times out and the session goes on
# with the draft model alone ("degraded"), so the soak would time queueing in
# degraded mode, not verified generations. 120 s lets sessions queue instead;
# soak.json counts any that still degrade ("degraded").
export SPLITMESH_TIMEOUT_MS=${SOAK_TIMEOUT_MS:-120000}
if [ "${SOAK_ASAN:-0}" = 1 ]; then
  BUILD_DIR=${SOAK_ASAN_BUILD_DIR:-build-asan}
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPLITMESH_SANITIZE=ON \
    -DSPLITMESH_CUDA=OFF -DSPLITMESH_TESTS=OFF -DSPLITMESH_BENCH=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "${SOAK_JOBS:-2}" --target splitmesh splitmesh-broker splitmesh-tokenizer \
  splitmesh-split-prefix splitmesh-cloud-target splitmesh-edge-draft >/dev/null
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
case "${SOAK_MODEL:-real}" in
  tiny)
    MODEL=$tmpdir/tiny.gguf
    "$BUILD_DIR/bin/splitmesh" tiny-model --out "$MODEL" >/dev/null ;;
  real)
    MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)} ;;
  *)
    MODEL=$SOAK_MODEL ;;
esac
mkdir -p "$(dirname "$OUT")"
command_line="bench/soak/run.sh $BUILD_DIR (SOAK_SESSIONS=$SESSIONS SOAK_SECONDS=$SECONDS_ SOAK_TOKENS=$TOKENS SOAK_LINK=$LINK SOAK_MODEL=${SOAK_MODEL:-real} SOAK_ASAN=${SOAK_ASAN:-0} SPLITMESH_WORKERS=$SPLITMESH_WORKERS SPLITMESH_BROKER_EXPIRY_MS=$SPLITMESH_BROKER_EXPIRY_MS SPLITMESH_TIMEOUT_MS=$SPLITMESH_TIMEOUT_MS)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
status=0
/usr/bin/python3 bench/soak/soak.py --splitmesh "$BUILD_DIR/bin/splitmesh" --model "$MODEL" \
  --sessions "$SESSIONS" --duration "$SECONDS_" --tokens "$TOKENS" --link "$LINK" \
  --json "$tmpdir/soak.json" || status=$?
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core services broker cli bench/soak || echo "-dirty")
/usr/bin/python3 - "$tmpdir/soak.json" "$OUT" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
r.update({"edge_timeout_ms": $SPLITMESH_TIMEOUT_MS, "model_kind": "${SOAK_MODEL:-real}", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$commit", "command": "$command_line",
          "asan": "${SOAK_ASAN:-0}" == "1", "loadavg_before": "$load_before",
          "loadavg_after": open("/proc/loadavg").read().split()[:3]})
json.dump(r, open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
PY
echo "soak: wrote $OUT (exit $status)"
exit $status
