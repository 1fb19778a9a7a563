#!/usr/bin/env bash
# bench/e2e/profile.sh: where one speculative round spends its time.
# Starts a verbose mesh at one emulated RTT, runs a few greedy prompts with
# the model drafter and summarises edge-draft's per-round log lines
# ("draft X ms, extend Y ms, verify Z ms, N drafted ahead") and the FINAL
# stats. Usage: bench/e2e/profile.sh [build-dir] (env: PROFILE_RTT=50,
# PROFILE_TOKENS=64, PROFILE_SPLIT=2, PROFILE_DRAFT_K=4, PROFILE_UP_ARGS).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
RTT=${PROFILE_RTT:-50}
TOKENS=${PROFILE_TOKENS:-64}
SPLIT=${PROFILE_SPLIT:-2}
DRAFT_K=${PROFILE_DRAFT_K:-4}
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
SM=$BUILD_DIR/bin/splitmesh
run_dir=$(mktemp -d /tmp/sm-profile.XXXXXX)
trap '"$SM" down --run-dir "$run_dir" -q >/dev/null 2>&1 || true; rm -rf "$run_dir"' EXIT
"$SM" up --run-dir "$run_dir" --model "$MODEL" --split "$SPLIT" --threads 1 \
  --link "rtt=$RTT" --no-telemetry --timeout 300 -v ${PROFILE_UP_ARGS:-} >/dev/null
"$SM" generate --run-dir "$run_dir" -n 8 --temperature 0 "warm up" >/dev/null
log=$(ls "$run_dir"/logs/*edge*draft*.log)
: > "$log.mark"
start_line=$(wc -l < "$log")
for p in "The history of the Roman Empire begins with" \
         "Here is a list of the days of the week: Monday, Tuesday, Wednesday," \
         "A good night's sleep is important because"; do
  for mode in cloud_only speculative; do
    "$SM" generate --run-dir "$run_dir" --json -n "$TOKENS" --temperature 0 --mode $mode \
      --drafter model --draft-k "$DRAFT_K" "$p" |
      /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["stats"]; print("'$mode'", "tokens", s["tokens"], "elapsed_ms", r["client"]["elapsed_ms"], "ms/token %.1f" % (r["client"]["elapsed_ms"]/s["tokens"]), "accepted", s["drafts_accepted"], "/", s["drafts_proposed"])'
  done
done
tail -n +"$((start_line + 1))" "$log" | /usr/bin/python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    m = re.search(r"(\d+)/(\d+) accepted, next -?\d+ \(draft ([\d.]+) ms, extend ([\d.]+) ms, verify ([\d.]+) ms, (\d+) drafted ahead(, sent early)?", line)
    if m:
        rows.append([float(x) for x in m.groups()[:6]] + [1.0 if m.group(7) else 0.0])
spec = [r for r in rows if r[1] > 0]
if not spec:
    sys.exit("no speculative rounds in the log")
n = len(spec)
avg = lambda i: sum(r[i] for r in spec) / n
full = sum(1 for r in spec if r[0] == r[1])
print(f"speculative rounds: {n}; mean k {avg(1):.2f}, accepted {avg(0):.2f} (all accepted in {full}); "
      f"per round: draft {avg(2):.1f} ms (exposed), extend {avg(3):.1f} ms, "
      f"verify {avg(4):.1f} ms (link + target, drafting ahead meanwhile: {avg(5):.1f} tokens)")
print(f"tokens per round {avg(0) + 1:.2f}; round {avg(2) + avg(3) + avg(4):.1f} ms; "
      f"{int(sum(r[6] for r in spec))} rounds whose verify was sent during the previous one")
'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
