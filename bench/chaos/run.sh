#!/usr/bin/env bash
# bench/chaos: CHAOS_GENERATIONS (100) greedy generations on the real model
# while every process of a replicated, crypt-proxied mesh is killed (-9),
# stopped (SIGSTOP, SIGCONT later) or restarted in turn (bench/chaos/chaos.py
# says how). Writes bench/results/chaos.json and chaos.md (or $CHAOS_OUT.*)
# with machine, commit, load average and command.
#
#   bench/chaos/run.sh [build-dir]
#   CHAOS_GENERATIONS=24 CHAOS_TOKENS=16 bench/chaos/run.sh   # shorter
#
# Exit status: chaos.py's (0 only when every generation completed with the
# fault-free output, or flagged degraded, and every process was reaped).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
GENERATIONS=${CHAOS_GENERATIONS:-100}
TOKENS=${CHAOS_TOKENS:-32}
EVERY=${CHAOS_FAULT_EVERY:-4}
LINK=${CHAOS_LINK:-rtt=10}
OUT=${CHAOS_OUT:-bench/results/chaos}
PY=${SPLITMESH_PYTHON:-$PWD/.venv/bin/python3}
[ -x "$PY" ] || PY=/usr/bin/python3
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
cmake --build "$BUILD_DIR" -j "${CHAOS_JOBS:-2}" --target splitmesh splitmesh-broker splitmesh-tokenizer \
  splitmesh-split-prefix splitmesh-cloud-target splitmesh-edge-draft splitmesh-crypt-proxy >/dev/null
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
mkdir -p "$(dirname "$OUT")"
command_line="bench/chaos/run.sh $BUILD_DIR (CHAOS_GENERATIONS=$GENERATIONS CHAOS_TOKENS=$TOKENS CHAOS_FAULT_EVERY=$EVERY CHAOS_LINK=$LINK, model $(basename "$MODEL"))"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
status=0
"$PY" bench/chaos/chaos.py --bin-dir "$BUILD_DIR/bin" --model "$MODEL" --json "$tmpdir/chaos.json" \
  --generations "$GENERATIONS" --tokens "$TOKENS" --fault-every "$EVERY" --link "$LINK" \
  --silence-s "${CHAOS_SILENCE_S:-60}" --stop-s "${CHAOS_STOP_S:-5}" --call-timeout-ms "${CHAOS_CALL_TIMEOUT_MS:-8000}" \
  --expiry-ms 30000 --split 2 --format w8 --draft-format w4 ${CHAOS_ARGS:-} || status=$?
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core services broker cli bench/chaos || echo "-dirty")
"$PY" - "$tmpdir/chaos.json" "$OUT" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
r.update({"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$commit", "command": "$command_line",
          "loadavg_before": "$load_before", "loadavg_after": " ".join(open("/proc/loadavg").read().split()[:3])})
out = sys.argv[2]
json.dump(r, open(out + ".json", "w"), indent=2)
open(out + ".json", "a").write("\n")
md = [f"# Chaos: {r['generations']} greedy generations under faults",
      "",
      f"{r['date']}, commit {r['commit']}, {r['machine']['cpu']} x{r['machine']['nproc']} "
      f"(shared by other engineers' builds and tests: load {r['loadavg_before']} before, "
      f"{r['loadavg_after']} after).",
      f"Command: \`{r['command']}\`. Model {r['model']}, {r['max_tokens']} tokens per generation, "
      f"{r['prompts']} prompts cycled, link {r['link']}.",
      f"Mesh: {r['topology']}.",
      "",
      f"- completed: **{r['completed']} / {r['generations']}** "
      f"({r['first_try']} on the first attempt, {r['retried']} retried by the client, {r['failed']} failed)",
      f"- greedy output equal to the fault-free pass: **{r['equal_to_fault_free']} / {r['generations']}**; "
      f"degraded (draft model alone, flagged in gen_stats): {r['degraded']}",
      f"- errors seen by the client, by kind (each retried): {r['errors_by_kind'] or 'none'}",
      f"- every process reaped: {r['all_reaped']}; SIGKILLed at the end: {r['sigkilled_at_stop'] or 'none'}; "
      f"crash logs: {r['crash_logs'] or 'none'}",
      f"- restarts per process: {r['restarts']}",
      "",
      "Recovery: from the fault to the next token or answer the client receives (ms). Stall: the longest "
      "wait between two frames in the rest of that generation (ms), which shows a disruption that hits a round "
      "or two after the fault.",
      "",
      "| fault | n | recovery min | mean | max | stall mean | max |",
      "|---|---|---|---|---|---|---|"]
for k, v in r["recovery_ms_by_fault"].items():
    st = r["stall_ms_by_fault"][k]
    md.append(f"| {k} | {v['n']} | {v['min']} | {v['mean']} | {v['max']} | {st['mean']} | {st['max']} |")
md += ["", "Each fault:", "", "| gen | fault | process | picked by | recovery ms | stall ms | attempts | client errors | equal | degraded |",
       "|---|---|---|---|---|---|---|---|---|---|"]
for f in r["faults"]:
    o = f.get("outcome", {})
    md.append(f"| {f['generation']} | {f['kind']} {f['service']} | {f.get('process')} | {f.get('picked_by', '-')} | "
              f"{f.get('recovery_ms')} | {f.get('stall_ms')} | {o.get('attempts')} | {','.join(o.get('errors') or []) or '-'} | "
              f"{o.get('equal')} | {o.get('degraded')} |")
open(out + ".md", "w").write("\n".join(md) + "\n")
PY
echo "chaos: wrote $OUT.json and $OUT.md (exit $status)"
exit $status
