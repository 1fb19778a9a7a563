#!/usr/bin/env bash
# bench/engine/run.sh: engine vs llama.cpp prompt/decode tokens/s, same machine, file and tokens.
#
# For each thread count (1, 2) runs bench_engine for f32, w8, w4 and
# llama-cpp-python (pyenv python3) on the same GGUF and token ids, then
# writes bench/results/engine.json and engine.md with the machine, commit
# and command. The token ids are llama.cpp's tokenization of the start of
# ../shared/data/wikitext-2-test.txt (the WikiText-2 test split).
# "w8act1" is W8 with one-level int8 activations (SPLITMESH_W8_ACT_LEVELS=1),
# the cost baseline for W8's default two-level activations.
#
# usage: bench/engine/run.sh [--prompt 128] [--decode 128] [--repeat 3]  (repeat = rounds)
# env:   SPLITMESH_MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf),
#        SPLITMESH_BUILD_DIR (default build), PYTHON (default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PROMPT=128 DECODE=128 REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt) PROMPT=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
MODEL=${SPLITMESH_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BUILD=${SPLITMESH_BUILD_DIR:-build}
PY=${PYTHON:-python3}
TEXT=$ROOT/../shared/data/wikitext-2-test.txt
[ -f "$TEXT" ] || TEXT=/work/shared/data/wikitext-2-test.txt
[ -f "$MODEL" ] || { echo "run.sh: model $MODEL absent (scripts/fetch-model.sh)" >&2; exit 1; }
cmake --build "$BUILD" -j2 --target bench_engine >/dev/null
BENCH=$BUILD/bin/bench_engine
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" bench/engine/llamacpp_bench.py --model "$MODEL" --tokenize "$TEXT" --out "$TMP/ids.txt"
: >"$TMP/results.jsonl"
# Rounds: every configuration once per round, REPEAT rounds, best kept. The
# machine is shared, so interleaving gives each configuration the same
# chances at a quiet moment; /proc/loadavg is recorded with each run.
for r in $(seq "$REPEAT"); do
  for t in 1 2; do
    for f in f32 w8 w8act1 w4; do
      lv=2 fmt=$f
      [ "$f" = w8act1 ] && { lv=1; fmt=w8; }
      SPLITMESH_W8_ACT_LEVELS=$lv "$BENCH" --model "$MODEL" --tokens "$TMP/ids.txt" --format $fmt --threads $t \
        --prompt "$PROMPT" --decode "$DECODE" --repeat 1 \
        | sed "s/\"format\":\"$fmt\"/\"format\":\"$f\"/; s/}\$/,\"round\":$r,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}/" \
        | tee -a "$TMP/results.jsonl"
    done
    "$PY" bench/engine/llamacpp_bench.py --model "$MODEL" --tokens "$TMP/ids.txt" --threads $t \
      --prompt "$PROMPT" --decode "$DECODE" --repeat 1 | sed "s/}\$/, \"round\": $r, \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}/" \
      | tee -a "$TMP/results.jsonl"
  done
done
mkdir -p bench/results
CMD="bench/engine/run.sh --prompt $PROMPT --decode $DECODE --repeat $REPEAT"
/usr/bin/python3 - "$TMP/results.jsonl" "$MODEL" "$CMD" <<'PY'
import json, platform, subprocess, sys, datetime
all_runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
model, cmd = sys.argv[2], sys.argv[3]
best = {}
for r in all_runs:
    k = (r.get("engine", "splitmesh"), r["format"], r["threads"])
    b = best.setdefault(k, dict(r))
    b["prompt_tps"] = max(b["prompt_tps"], r["prompt_tps"])
    b["decode_tps"] = max(b["decode_tps"], r["decode_tps"])
rows = list(best.values())
def cpu():
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            return l.split(":", 1)[1].strip()
    return platform.processor()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
out = {"machine": {"cpu": cpu(), "cores": __import__("os").cpu_count(), "kernel": platform.release()},
       "commit": commit + ("-dirty" if dirty else ""), "command": cmd, "model": model.split("/")[-1],
       "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "tokens": "llama.cpp tokenization of the start of wikitext-2-test.txt",
       "method": "best of REPEAT interleaved rounds (every configuration once per round); prompt = one prefill call of prompt_tokens; decode = greedy steps of one token (forward+head+argmax)",
       "best": rows, "all_runs": all_runs}
for r in rows:
    t = r["threads"]
    if r.get("engine") == "llama.cpp":
        out[f"llamacpp_decode_tps_q4_{t}t"] = r["decode_tps"]
        out[f"llamacpp_prompt_tps_q4_{t}t"] = r["prompt_tps"]
    else:
        out[f"decode_tps_{r['format']}_{t}t"] = r["decode_tps"]
        out[f"prompt_tps_{r['format']}_{t}t"] = r["prompt_tps"]
for t in (1, 2):
    if f"decode_tps_w8_{t}t" in out and f"decode_tps_w8act1_{t}t" in out:
        out[f"decode_ratio_w8_two_level_vs_one_level_{t}t"] = round(out[f"decode_tps_w8_{t}t"] / out[f"decode_tps_w8act1_{t}t"], 3)
        out[f"prompt_ratio_w8_two_level_vs_one_level_{t}t"] = round(out[f"prompt_tps_w8_{t}t"] / out[f"prompt_tps_w8act1_{t}t"], 3)
    if f"llamacpp_decode_tps_q4_{t}t" in out and f"decode_tps_w4_{t}t" in out:
        out[f"decode_ratio_w4_vs_llamacpp_{t}t"] = round(out[f"decode_tps_w4_{t}t"] / out[f"llamacpp_decode_tps_q4_{t}t"], 3)
md = ["# Engine throughput (bench/engine)", "",
      f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores. Commit {out['commit']}. "
      f"Model {out['model']}. Date {out['date']}.", f"Command: `{cmd}`", "",
      f"Method: {out['method']}. Tokens: {out['tokens']}.", "",
      "| engine | format | threads | prompt tok/s | decode tok/s |", "|---|---|---|---|---|"]
for r in sorted(rows, key=lambda r: (r["threads"], r.get("engine", "splitmesh"))):
    md.append(f"| {r.get('engine', 'splitmesh')} | {r['format']} | {r['threads']} | {r['prompt_tps']} | {r['decode_tps']} |")
loads = [float(r["loadavg"].split()[0]) for r in all_runs if "loadavg" in r]
if loads:
    out["loadavg_1min_range"] = [min(loads), max(loads)]
    md.append("")
    md.append(f"Machine load (1-min loadavg on {out['machine']['cores']} cores) during the runs: "
              f"{min(loads)} to {max(loads)}. Above the core count every number here is depressed, "
              "2-thread runs most (spinning workers lose their core), llama.cpp's as much as ours.")
md.append("")
for t in (1, 2):
    k = f"decode_ratio_w4_vs_llamacpp_{t}t"
    if k in out:
        md.append(f"- W4 decode vs llama.cpp Q4_1, {t} thread(s): {out[k]}x")
    k = f"decode_ratio_w8_two_level_vs_one_level_{t}t"
    if k in out:
        md.append(f"- W8 two-level activations vs one level (w8act1), {t} thread(s): decode {out[k]}x, "
                  f"prompt {out[f'prompt_ratio_w8_two_level_vs_one_level_{t}t']}x")
json.dump(out, open("bench/results/engine.json", "w"), indent=1)
open("bench/results/engine.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
