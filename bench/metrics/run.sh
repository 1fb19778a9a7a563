#!/usr/bin/env bash
# Runs bench_metrics and records its numbers, with the machine, the commit and
# the command, in bench/results/metrics.json and bench/results/metrics.md.
# Usage: bench/metrics/run.sh [build-dir] [events]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
EVENTS=${2:-60000}
cmake --build "$BUILD_DIR" --target bench_metrics -j2 >/dev/null
mkdir -p bench/results
cmd="$BUILD_DIR/bin/bench_metrics $EVENTS"
numbers=$($cmd)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core broker bench/metrics || echo "-dirty")
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat > bench/results/metrics.json <<JSON
{"bench": "metrics", "date": "$date", "commit": "$commit", "cpu": "$cpu",
 "nproc": $(nproc), "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": "bench/metrics/run.sh $BUILD_DIR $EVENTS",
 "build_type": "$(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2)",
 "results": $numbers}
JSON
/usr/bin/python3 - bench/results/metrics.json > bench/results/metrics.md <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
p = r["pipeline"]
e = r["exposition"]
print("# Telemetry cost\n")
print(f"{d['date']}, commit {d['commit']}, {d['cpu']} ({d['nproc']} cores), "
      f"{d['build_type']}, load average {d['loadavg']} (shared machine: treat as upper bounds). "
      f"Command: `{d['command']}`.\n")
print("| what | number |")
print("|---|---:|")
print(f"| `metrics_count` on the caller's thread | {r['count_ns']:.0f} ns |")
print(f"| `metrics_observe` on the caller's thread | {r['observe_ns']:.0f} ns |")
print(f"| publisher -> broker proxy (ipc) -> decode -> store | {p['events_per_s']:.0f} events/s "
      f"({p['received']} of {p['events']} arrived in {p['seconds']:.3f} s) |")
print(f"| render /metrics, {e['series']} series ({e['bytes']} bytes) | {e['us']:.0f} us |")
PY
cat bench/results/metrics.md
