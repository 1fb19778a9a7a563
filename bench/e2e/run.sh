#!/usr/bin/env bash
# bench/e2e: tokens/s and per-token latency of cloud-only vs split speculative
# decoding at emulated round trips of 0, 10, 25, 50 and 100 ms, acceptance and
# mean accepted length per drafter (model, n-gram), bytes over the link per
# token, and a gnuplot PNG of the speedup against RTT. Everything goes
# through the real mesh (`splitmesh up/generate/down`, bench/e2e/e2e.py).
# Writes bench/results/e2e.json (with the machine, the commit and the
# command), e2e.md, e2e_speedup.png and e2e_requests.json (every FINAL).
# Usage: bench/e2e/run.sh [build-dir]   (env: E2E_RTTS, E2E_PROMPTS, E2E_TOKENS,
#        E2E_DRAFT_K, E2E_SPLIT, SPLITMESH_MODEL)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
RTTS=${E2E_RTTS:-0,10,25,50,100}
PROMPTS=${E2E_PROMPTS:-6}
TOKENS=${E2E_TOKENS:-64}
DRAFT_K=${E2E_DRAFT_K:-4}
SPLIT=${E2E_SPLIT:-2}
OUT=${E2E_OUT:-e2e}               # results file prefix in bench/results/
# gnuplot draws the PNG; install-deps' extras keep the package list in one place.
command -v gnuplot >/dev/null || SPLITMESH_EXTRA_PKGS=gnuplot-nox bash scripts/install-deps.sh >/dev/null
cmake --build "$BUILD_DIR" -j2 --target splitmesh splitmesh-broker splitmesh-tokenizer \
  splitmesh-split-prefix splitmesh-cloud-target splitmesh-edge-draft >/dev/null
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
mkdir -p bench/results
command_line="bench/e2e/run.sh $BUILD_DIR (E2E_OUT=$OUT E2E_RTTS=$RTTS E2E_PROMPTS=$PROMPTS E2E_TOKENS=$TOKENS E2E_DRAFT_K=$DRAFT_K E2E_SPLIT=$SPLIT)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
/usr/bin/python3 bench/e2e/e2e.py --splitmesh "$BUILD_DIR/bin/splitmesh" --model "$MODEL" \
  --rtts "$RTTS" --prompts "$PROMPTS" --tokens "$TOKENS" --draft-k "$DRAFT_K" --split "$SPLIT" \
  --json "$tmp" --raw bench/results/${OUT}_requests.json
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core services cli bench/e2e || echo "-dirty")
/usr/bin/python3 - "$tmp" bench/results/$OUT.json <<PY
import json, sys
r = json.load(open(sys.argv[1]))
meta = {
    "bench": "e2e", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$commit",
    "machine": {"cpu": "$cpu", "nproc": $(nproc), "loadavg_before": "$load_before",
                "loadavg_after": "$(cut -d' ' -f1-3 /proc/loadavg)"},
    "command": "$command_line", "wall_s": $(( $(date +%s) - start )),
    "model": "$(basename "$MODEL")",
    "placement": ("every process on this one machine: split-prefix, cloud-target and edge-draft "
                  "(with its draft model) each run 1 thread on the same $(nproc) cores, shared with "
                  "other jobs; the link emulator delays the edge-cloud messages only. The cloud "
                  "here is no faster than the edge, so the speedup is from fewer round trips, "
                  "not from a faster target."),
}
meta.update(r)
json.dump(meta, open(sys.argv[2], "w"), indent=1)
PY
# The speedup plot.
dat=$(mktemp)
/usr/bin/python3 - bench/results/$OUT.json > "$dat" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for rtt, s in sorted(d["speedup_vs_cloud_only"].items(), key=lambda kv: int(kv[0])):
    print(rtt, s["split_spec_model"], s["split_spec_ngram"], s.get("split_spec_model_serial", "NaN"))
PY
gnuplot <<GP
set terminal pngcairo size 800,500 noenhanced
set output 'bench/results/${OUT}_speedup.png'
set title 'Split speculative vs cloud-only decoding (SmolLM2-135M, greedy, $(nproc) shared cores)'
set xlabel 'emulated edge-cloud round trip (ms)'
set ylabel 'speedup in tokens/s over cloud-only'
set key top left
set grid
set yrange [0:*]
set xrange [-5:*]
plot '$dat' using 1:2 with linespoints lw 2 pt 7 title 'draft model (W4), pipelined verifies (default)', \
     '$dat' using 1:4 with linespoints lw 2 pt 9 title 'draft model (W4), --no-pipeline', \
     '$dat' using 1:3 with linespoints lw 2 pt 5 title 'n-gram prompt lookup', \
     1 with lines dt 2 lc rgb 'gray' title 'cloud-only', \
     2.5 with lines dt 3 lc rgb 'red' title 'goal at 50 ms (2.5x)'
GP
rm -f "$dat"
/usr/bin/python3 - bench/results/$OUT.json "$OUT" > bench/results/$OUT.md <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["config"]
m = d["machine"]
print("# End to end: cloud-only vs split speculative decoding\n")
print(f"{d['date']}, commit {d['commit']}, {m['cpu']} ({m['nproc']} cores), load average "
      f"{m['loadavg_before']} before, {m['loadavg_after']} after. Command: `{d['command']}` "
      f"({d['wall_s']} s).\n")
print(f"Model {d['model']}: target W8 split at L={c['split']} (split-prefix layers [0, L) on the "
      f"device, cloud-target the rest), draft the same file at W4; greedy, {c['prompts']} prompts x "
      f"{c['tokens_per_request']} tokens per cell, draft_k {c['draft_k']} (adaptive), activations "
      f"int8 on the wire. cloud_only sends token ids and runs one verify of k = 0 per token (one round "
      f"trip per token).\n")
print(f"Placement: {d['placement']}\n")
print("| RTT ms | path | tok/s | per-token ms | TTFT ms | acceptance | accepted/round | link B/token | speedup |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for cell in d["cells"]:
    s = d["speedup_vs_cloud_only"][str(cell["rtt_ms"])].get(cell["config"], 1.0)
    acc = "" if cell["acceptance_rate"] is None else f"{cell['acceptance_rate']:.3f}"
    mal = "" if cell["mean_accepted_len"] is None else f"{cell['mean_accepted_len']:.2f}"
    print(f"| {cell['rtt_ms']} | {cell['config']} | {cell['tokens_per_s']:.2f} | {cell['per_token_ms']:.1f} | "
          f"{cell['ttft_ms_mean']:.1f} | {acc} | {mal} | {cell['link_bytes_per_token']:.0f} | "
          f"{s if s is not None else 1.0:.2f}x |")
print()
print(f"Headline: speedup over cloud-only at 50 ms RTT **{d['speedup_vs_cloud_only_rtt50ms']}x** (draft model, "
      f"default: pipelined verifies, the next round's verify sent before this one's answer), "
      f"{d.get('speedup_vs_cloud_only_rtt50ms_serial')}x (draft model, edge-draft --no-pipeline: one verify at "
      f"a time, the next round drafted while it travels; split_spec_model_serial, same run), "
      f"{d['speedup_vs_cloud_only_rtt50ms_ngram']}x (n-gram). Goal: 2.5x.\n")
pe = d.get("pipelined_equals_serial")
if pe:
    print(f"Pipelined (default) vs --no-pipeline greedy output: {pe['identical']} of {pe['generations']} generations "
          f"identical.\n")
print("Per drafter (all RTTs pooled):\n")
print("| drafter | acceptance | mean accepted drafts per round | link bytes per token |")
print("|---|---:|---:|---:|")
for k, v in d["per_drafter"].items():
    print(f"| {k} | {v['acceptance_rate']} | {v['mean_accepted_len']} | {v['link_bytes_per_token']} |")
print(f"\ncloud_only link bytes per token: {d['link_bytes_per_token_cloud_only']}.\n")
a = d["int8_greedy_agreement"]
print(f"int8 activations vs the cloud-only path (the whole target in one process): "
      f"{a['generations_fully_identical']} of {a['generations']} greedy generations identical; "
      f"{a['identical_prefix_tokens']} of {a['compared_tokens']} tokens ({a['fraction']}) agree before "
      f"the first difference. (With fp32 activations the mesh equals target-only greedy exactly: "
      f"tests/test_e2e_greedy.c.)\n")
print(f"![speedup]({sys.argv[2]}_speedup.png)")
PY
echo "bench/e2e: wrote bench/results/$OUT.json, $OUT.md, ${OUT}_speedup.png, ${OUT}_requests.json" >&2
