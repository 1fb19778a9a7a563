#!/usr/bin/env bash
# bench/quant/run.sh: tailored quantization report. Measures per-matrix
# sensitivity once on the calibration text and writes one mixed-precision
# file per budget (4x..7x smaller than fp32, plus the sizes of uniform Q8_0
# and Q4_1 for equal-size comparisons), writes the uniform Q4_0/Q4_1/Q8_0
# files, evaluates all of them against the F32 baseline (bench_quant:
# perplexity, top-1 agreement, greedy draft acceptance, tokens/s), checks
# that llama.cpp loads them (llamacpp_check.py, when the pyenv python3 has
# llama_cpp), and writes bench/results/quant.json, quant.md, quant.png and
# quant_llamacpp.json. Budgets of 8x and 10x are tried and their error
# (below the smallest assignment) recorded.
# Usage: bench/quant/run.sh [build-dir]   (env: SPLITMESH_MODEL, QUANT_DIR (work
#        dir for the GGUF files, kept), QUANT_CALIB_SEQS, QUANT_CALIB_LEN,
#        QUANT_EVAL_TOKENS, QUANT_THREADS)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
DATA=${SPLITMESH_DATA:-$(cd .. && pwd)/shared/data}
[ -f "$DATA/wikitext-2-valid.txt" ] || DATA=/work/shared/data
CALIB=$DATA/wikitext-2-valid.txt
TEST=$DATA/wikitext-2-test.txt
SEQS=${QUANT_CALIB_SEQS:-2}
LEN=${QUANT_CALIB_LEN:-32}
EVAL=${QUANT_EVAL_TOKENS:-768}
THREADS=${QUANT_THREADS:-2}
DIR=${QUANT_DIR:-$(mktemp -d /tmp/splitmesh_quant_XXXXXX)}
mkdir -p "$DIR" bench/results
command -v gnuplot >/dev/null || SPLITMESH_EXTRA_PKGS=gnuplot-nox bash scripts/install-deps.sh >/dev/null
cmake --build "$BUILD_DIR" -j2 --target splitmesh bench_quant >/dev/null
SM=$BUILD_DIR/bin/splitmesh
BUDGETS="143025408,4x,4.5x,5x,5.5x,6x,84190464,6.5x,7x"
files="$DIR/uniform_q8_0.gguf $DIR/uniform_q4_1.gguf $DIR/uniform_q4_0.gguf"
for b in ${BUDGETS//,/ }; do files="$files $DIR/mixed_$b.gguf"; done
command_line="bench/quant/run.sh $BUILD_DIR (QUANT_CALIB_SEQS=$SEQS QUANT_CALIB_LEN=$LEN QUANT_EVAL_TOKENS=$EVAL QUANT_THREADS=$THREADS)"
start=$(date +%s)
# The measurement (the long part) starts first; the uniform files are
# written meanwhile, and the evaluation waits for each mixed file, so all
# three overlap. A QUANT_DIR that already holds results (a resumed run) is reused.
measure_pid=
if [ ! -s "$DIR/mixed.jsonl" ]; then
  "$SM" quantize --model "$MODEL" --budget "$BUDGETS" --out "$DIR/mixed_{}.gguf" --calib "$CALIB" \
    --calib-seqs "$SEQS" --calib-len "$LEN" --threads "$THREADS" --json > "$DIR/mixed.jsonl" \
    2> "$DIR/measure.log" &
  measure_pid=$!
fi
for t in q4_0 q4_1 q8_0; do
  [ -s "$DIR/uniform_$t.gguf" ] || "$SM" quantize --quiet --model "$MODEL" --uniform $t --out "$DIR/uniform_$t.gguf" >/dev/null
done
n_files=$(echo $files | wc -w)
if [ ! -s "$DIR/bench.jsonl" ] || [ "$(wc -l < "$DIR/bench.jsonl")" -lt $((n_files + 1)) ]; then
  "$BUILD_DIR/bin/bench_quant" --base "$MODEL" --text "$TEST" --tokens "$EVAL" --ctx 256 \
    --prompts 3 --gen 32 --k 4 --threads "$THREADS" $files > "$DIR/bench.jsonl"
fi
[ -z "$measure_pid" ] || wait $measure_pid
infeasible="{}"
for b in 8x 10x; do
  msg=$("$SM" quantize --model "$MODEL" --budget $b --out "$DIR/never.gguf" --calib "$CALIB" 2>&1 || true)
  infeasible=$(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=sys.argv[3]; print(json.dumps(d))' "$infeasible" "$b" "$msg")
done
if python3 -c "import llama_cpp" 2>/dev/null; then
  python3 bench/quant/llamacpp_check.py --text "$TEST" --tokens 256 "$MODEL" $files > "$DIR/llamacpp.jsonl" || true
  /usr/bin/python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()], indent=1))' \
    "$DIR/llamacpp.jsonl" > bench/results/quant_llamacpp.json
fi
calib_tokens=$((SEQS * LEN))
/usr/bin/python3 - "$DIR/meta.json" <<PY
import json, sys
json.dump({
  "commit": "$(git rev-parse --short HEAD)", "date": "$(date -u +%FT%TZ)",
  "machine": "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load before $(cut -d' ' -f1-3 /proc/loadavg), shared",
  "command": "$command_line", "model": "$(basename "$MODEL")",
  "calibration": "wikitext-2-valid.txt, first $calib_tokens tokens ($SEQS sequences x $LEN)",
  "evaluation": "wikitext-2-test.txt, first $EVAL tokens in windows of 256 (perplexity, top-1); 3 prompts x 32 greedy tokens (acceptance, k=4)",
  "k": 4, "wall_s": $(( $(date +%s) - start )),
  "infeasible": json.loads('''$infeasible'''),
}, open(sys.argv[1], "w"), indent=1)
PY
/usr/bin/python3 bench/quant/report.py "$DIR" bench/results/quant.json bench/results/quant.md "$DIR/plot.dat"
gnuplot <<GP
set terminal pngcairo size 900,520 noenhanced
set output 'bench/results/quant.png'
set title 'SmolLM2-135M: quality retained vs compression (baseline: dequantized Q4_1 at F32)'
set xlabel 'x smaller than fp32 (tensor bytes)'
set ylabel 'quality retained (baseline ppl / ppl), top-1 agreement'
set key bottom left
set grid
set yrange [0.3:1.02]
set arrow from 3.5,0.98 to 7.5,0.98 nohead dt 2
plot '$DIR/plot.dat' index 0 using 2:3 with linespoints lw 2 pt 7 title 'mixed (KL budget): quality', \
     '' index 1 using 2:3 with points pt 5 ps 2 title 'uniform Q8_0 / Q4_1 / Q4_0: quality', \
     '' index 0 using 2:4 with linespoints lw 1 pt 6 title 'mixed: top-1 agreement', \
     '' index 1 using 2:4 with points pt 4 ps 2 title 'uniform: top-1 agreement', \
     '' index 0 using 2:5 with linespoints lw 2 dt 3 pt 8 lc rgb 'dark-red' title 'mixed: draft acceptance'
GP
echo "bench/quant: wrote bench/results/quant.{json,md,png} (files in $DIR)"
