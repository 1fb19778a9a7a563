#!/usr/bin/env bash
# Runs bench_codec and records its numbers, with the machine, the commit and
# the command, in bench/results/codec.json and bench/results/codec.md.
# Usage: bench/codec/run.sh [build-dir] [seconds-per-case]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
SECONDS_PER_CASE=${2:-1}
cmake --build "$BUILD_DIR" --target bench_codec -j2 >/dev/null
mkdir -p bench/results
cmd="$BUILD_DIR/bin/bench_codec $SECONDS_PER_CASE"
numbers=$($cmd)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- schemas bench/codec || echo "-dirty")
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat > bench/results/codec.json <<JSON
{"bench": "codec", "date": "$date", "commit": "$commit", "cpu": "$cpu",
 "nproc": $(nproc), "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": "bench/codec/run.sh $BUILD_DIR $SECONDS_PER_CASE",
 "build_type": "$(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2)",
 "results": $numbers}
JSON
/usr/bin/python3 - bench/results/codec.json > bench/results/codec.md <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("# Wire codec cost per message\n")
print(f"{d['date']}, commit {d['commit']}, {d['cpu']} ({d['nproc']} cores), "
      f"{d['build_type']}, single thread, load average {d['loadavg']} (shared "
      f"machine: treat as upper bounds). Command: `{d['command']}`.\n")
print("| message | bytes | encode us | decode us | encode MB/s | decode MB/s |")
print("|---|---:|---:|---:|---:|---:|")
for name, r in d["results"].items():
    print(f"| {name} | {r['bytes']} | {r['encode_us']:.2f} | {r['decode_us']:.2f} | "
          f"{r['encode_MBps']:.0f} | {r['decode_MBps']:.0f} |")
PY
cat bench/results/codec.md
