#!/usr/bin/env bash
# Runs bench_crypt (direct path vs crypt-proxy pair, same run) and records
# its numbers, with the machine, the commit and the command, in
# bench/results/crypt.json and bench/results/crypt.md.
# Usage: bench/crypt/run.sh [build-dir] [seconds-per-case] [rtt-requests] [window] [repeats]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
SECONDS_PER_CASE=${2:-2}
RTT_REQUESTS=${3:-2000}
WINDOW=${4:-32}
REPEATS=${5:-3}
cmake --build "$BUILD_DIR" --target bench_crypt -j2 >/dev/null
mkdir -p bench/results
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
numbers=$("$BUILD_DIR/bin/bench_crypt" "$SECONDS_PER_CASE" "$RTT_REQUESTS" "$WINDOW" "$REPEATS" 2>/dev/null)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services/crypt-proxy core bench/crypt || echo "-dirty")
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat > bench/results/crypt.json <<JSON
{"bench": "crypt", "date": "$date", "commit": "$commit", "cpu": "$cpu",
 "nproc": $(nproc), "loadavg_before": "$load_before", "loadavg_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "command": "bench/crypt/run.sh $BUILD_DIR $SECONDS_PER_CASE $RTT_REQUESTS $WINDOW $REPEATS",
 "build_type": "$(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2)",
 "zmq": "$(pkg-config --modversion libzmq)", "czmq": "$(pkg-config --modversion libczmq)",
 "results": $numbers}
JSON
/usr/bin/python3 - bench/results/crypt.json > bench/results/crypt.md <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
print("# crypt-proxy: cost of the CurveZMQ bridge\n")
print(f"{d['date']}, commit {d['commit']}, {d['cpu']} ({d['nproc']} cores), {d['build_type']}, "
      f"libzmq {d['zmq']}, CZMQ {d['czmq']}. Load average {d['loadavg_before']} before, "
      f"{d['loadavg_after']} after (shared machine: treat as upper bounds). "
      f"Command: `{d['command']}`.\n")
print("direct: client -> cloud broker -> echo worker. proxied: client -> device broker -> "
      "device proxy ==CURVE tcp==> cloud proxy -> cloud broker -> echo worker. All in one "
      "process over loopback TCP, same run. Round trips: sequential requests "
      f"({r['rtt_requests']} for 1 KB, a quarter of that for 64 KB). Throughput: "
      f"{r['window']} requests in flight for {r['seconds_per_case']} s; MB/s counts request "
      f"bodies (the same bytes come back). {r['repeats']} repeats, interleaved direct/proxied; "
      "each row is the median repeat, with the throughput range.\n")
print("| path | body | RTT p50 us | RTT p99 us | msgs/s | msgs/s range | MB/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for c in r["cases"]:
    size = f"{c['body_bytes'] // 1024} KB"
    print(f"| {c['path']} | {size} | {c['rtt_p50_us']:.0f} | {c['rtt_p99_us']:.0f} | "
          f"{c['msgs_per_s']:.0f} | {c['msgs_per_s_min']:.0f}-{c['msgs_per_s_max']:.0f} | "
          f"{c['MB_per_s']:.1f} |")
print(f"\nProxy counters after the run: device `{r['device_proxy']}`; cloud `{r['cloud_proxy']}`.")
PY
cat bench/results/crypt.md
