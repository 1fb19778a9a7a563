#!/usr/bin/env bash
# bench/engine/perplexity.sh: perplexity of the F32, W8 and W4 weight formats on WikiText-2.
#
# Text: ../shared/data/wikitext-2-test.txt, the WikiText-2 test split
# (word-tokenized, with <unk> markers) as published in pytorch/examples
# (word_language_model/data/wikitext-2/test.txt); see ../shared/data/README.md.
# The first --tokens tokens (model tokenizer) are cut into windows of --ctx;
# every token after a window's first is scored. llama-cpp-python, when the
# python (PYTHON, default python3) has it, scores the same windows. Writes
# bench/results/perplexity.json and .md with machine, commit and command.
#
# usage: bench/engine/perplexity.sh [--tokens 8192] [--ctx 512] [--threads 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TOKENS=8192 CTX=512 THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --tokens) TOKENS=$2; shift 2 ;;
    --ctx) CTX=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "perplexity.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
MODEL=${SPLITMESH_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BUILD=${SPLITMESH_BUILD_DIR:-build}
TEXT=$ROOT/../shared/data/wikitext-2-test.txt
[ -f "$TEXT" ] || TEXT=/work/shared/data/wikitext-2-test.txt
cmake --build "$BUILD" -j2 --target splitmesh >/dev/null
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
for f in f32 w8 w4; do
  "$BUILD/bin/splitmesh" perplexity --model "$MODEL" --file "$TEXT" --format $f \
    --tokens "$TOKENS" --ctx "$CTX" --threads "$THREADS" --json | tee -a "$TMP"
done
# llama.cpp on the same file, windows and scoring, as a cross-check.
if ${PYTHON:-python3} -c "import llama_cpp" 2>/dev/null; then
  ${PYTHON:-python3} scripts/reference/llamacpp_perplexity.py --model "$MODEL" --file "$TEXT" \
    --tokens "$TOKENS" --ctx "$CTX" --threads "$THREADS" | tee -a "$TMP"
fi
mkdir -p bench/results
CMD="bench/engine/perplexity.sh --tokens $TOKENS --ctx $CTX --threads $THREADS"
/usr/bin/python3 - "$TMP" "$MODEL" "$CMD" <<'PY'
import json, subprocess, sys, datetime, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
out = {"machine": {"cpu": cpu, "cores": os.cpu_count()}, "commit": commit + ("-dirty" if dirty else ""),
       "command": sys.argv[3], "model": os.path.basename(sys.argv[2]),
       "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "text": "wikitext-2-test.txt (WikiText-2 test split, pytorch/examples word_language_model copy, from ../shared/data/)",
       "method": "first `tokens` tokens of the file (model tokenizer), non-overlapping windows of `ctx`, each from an empty cache; every token after a window's first is scored",
       "runs": rows}
for r in rows:
    key = "llamacpp_q4_1" if r["format"].startswith("llama.cpp") else r["format"]
    out[f"perplexity_{key}"] = r["perplexity"]
json.dump(out, open("bench/results/perplexity.json", "w"), indent=1)
md = ["# Perplexity by weight format (bench/engine/perplexity.sh)", "",
      f"Model {out['model']}; text {out['text']}.", f"Method: {out['method']}.",
      f"Machine: {cpu}. Commit {out['commit']}. Date {out['date']}.", f"Command: `{out['command']}`", "",
      "| format | tokens | windows x ctx | predictions | perplexity | eval tok/s |", "|---|---|---|---|---|---|"]
for r in rows:
    md.append(f"| {r['format']} | {r['tokens']} | {r['windows']} x {r['ctx']} | {r['scored']} | {r['perplexity']} | {r['tokens_per_s']} |")
open("bench/results/perplexity.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
