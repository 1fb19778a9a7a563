#!/usr/bin/env bash
# bench/services: per-request latency of split-prefix and cloud-target (CPU
# backend) on the real model, and the activation bytes on the wire per
# position. Writes bench/results/services.json and .md.
#   bench/services/run.sh [--model PATH] [--split L] [--format w8] [--reps N]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
[ -x .venv/bin/python3 ] && PY=.venv/bin/python3
exec "$PY" bench/services/bench_services.py --bin "${SPLITMESH_BUILD_DIR:-build}/bin" "$@"
