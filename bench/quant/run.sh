#!/usr/bin/env bash
# bench/quant/run.sh: tailored quantization report.
#  1. Sensitivity, measured once (niced) on QUANT_CALIB_SEQS x QUANT_CALIB_LEN
#     tokens of the validation text (calibration only) into a cache file
#     (DIR/sens.cache) that every later quantize call reuses: one mixed file
#     per budget (4x..7x and the sizes of the uniform files, standard ggml
#     types: mixed_*.gguf) and, with --allow-splitmesh-types (W4 group 128),
#     mixedsm_*.gguf. 8x and 10x are tried and their error recorded.
#  2. Uniform Q8_0, Q5_1, Q5_0, Q4_1, Q4_0 files (W8 / W4 at equal size).
#  3. bench_quant on the test text (evaluation only): perplexity, top-1,
#     simulated greedy draft acceptance, against the F32 baseline (cached in
#     DIR/base.cache). Byte-identical files are evaluated once.
#  4. mesh_accept.sh: acceptance as the DRAFT of a real `splitmesh up` mesh
#     (target = the source at f32), greedy, 3 prompts, final stats.
#  5. bench_quant_speed: decode tokens/s of each mixed file against the
#     uniform file of the nearest size, interleaved repeats, medians.
#  6. llama.cpp loads the standard files (llamacpp_check.py, pyenv python3).
#  7. report.py + gnuplot: bench/results/quant.{json,md,png}, quant_speed.json,
#     quant_mesh.json, quant_llamacpp.json.
# A QUANT_DIR that already holds results (a resumed run) is reused step by step.
# Usage: bench/quant/run.sh [build-dir]   (env: SPLITMESH_MODEL, QUANT_DIR,
#        QUANT_CALIB_SEQS (8), QUANT_CALIB_LEN (64), QUANT_EVAL_TOKENS (4096),
#        QUANT_THREADS (2), QUANT_SPEED_REPEATS (5))
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
DATA=${SPLITMESH_DATA:-$(cd .. && pwd)/shared/data}
[ -f "$DATA/wikitext-2-valid.txt" ] || DATA=/work/shared/data
CALIB=$DATA/wikitext-2-valid.txt
TEST=$DATA/wikitext-2-test.txt
SEQS=${QUANT_CALIB_SEQS:-8}
LEN=${QUANT_CALIB_LEN:-64}
EVAL=${QUANT_EVAL_TOKENS:-4096}
THREADS=${QUANT_THREADS:-2}
REPEATS=${QUANT_SPEED_REPEATS:-5}
DIR=${QUANT_DIR:-$(mktemp -d /tmp/splitmesh_quant_XXXXXX)}
mkdir -p "$DIR" bench/results
command -v gnuplot >/dev/null || SPLITMESH_EXTRA_PKGS=gnuplot-nox bash scripts/install-deps.sh >/dev/null
cmake --build "$BUILD_DIR" -j2 --target splitmesh bench_quant bench_quant_speed >/dev/null
SM=$BUILD_DIR/bin/splitmesh
NICE="nice -n 5"
BUDGETS="4x,5x,5.5x,6x,6.5x,7x,143025408,101000448,92595456,84190464,75785472"
BUDGETS_SM="6.5x,7x,75785472"
UNIFORM="q8_0 q5_1 q5_0 q4_1 q4_0"
command_line="bench/quant/run.sh $BUILD_DIR (QUANT_CALIB_SEQS=$SEQS QUANT_CALIB_LEN=$LEN QUANT_EVAL_TOKENS=$EVAL QUANT_THREADS=$THREADS QUANT_SPEED_REPEATS=$REPEATS)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
QARGS=(--model "$MODEL" --calib "$CALIB" --calib-seqs "$SEQS" --calib-len "$LEN" --threads "$THREADS"
       --cache "$DIR/sens.cache" --json)
# 1. The measurement (the long part; resumable through the cache), then all budgets from it.
if [ ! -s "$DIR/mixed.jsonl" ]; then
  t0=$(date +%s)
  $NICE "$SM" quantize "${QARGS[@]}" --allow-splitmesh-types --budget 6x --out "$DIR/probe_6x.gguf" \
    > "$DIR/probe.jsonl" 2> "$DIR/measure.log"
  echo $(( $(date +%s) - t0 )) > "$DIR/measure_wall_s"
  "$SM" quantize "${QARGS[@]}" --quiet --budget "$BUDGETS" --out "$DIR/mixed_{}.gguf" > "$DIR/mixed.jsonl.tmp"
  "$SM" quantize "${QARGS[@]}" --quiet --allow-splitmesh-types --budget "$BUDGETS_SM" \
    --out "$DIR/mixedsm_{}.gguf" >> "$DIR/mixed.jsonl.tmp"
  mv "$DIR/mixed.jsonl.tmp" "$DIR/mixed.jsonl"
fi
infeasible="{}"
for b in 8x 10x; do
  for allow in "" --allow-splitmesh-types; do
    msg=$("$SM" quantize "${QARGS[@]}" --quiet $allow --budget $b --out "$DIR/never.gguf" 2>&1 || true)
    infeasible=$(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=sys.argv[3]; print(json.dumps(d))' \
                 "$infeasible" "$b${allow:+ (splitmesh types)}" "$msg")
  done
done
# 2. Uniform baselines.
ufiles=
for t in $UNIFORM; do
  [ -s "$DIR/uniform_$t.gguf" ] || "$SM" quantize --quiet --model "$MODEL" --uniform $t --out "$DIR/uniform_$t.gguf" >/dev/null
  ufiles="$ufiles $DIR/uniform_$t.gguf"
done
# Byte-identical files are evaluated once (dups.json maps each to its twin).
mfiles=$(ls "$DIR"/mixed_*.gguf "$DIR"/mixedsm_*.gguf)
/usr/bin/python3 - "$DIR" $ufiles $mfiles <<'PY'
import hashlib, json, sys
d, files = sys.argv[1], sys.argv[2:]
seen, dups, uniq = {}, {}, []
for f in files:
    h = hashlib.md5(open(f, "rb").read()).hexdigest()
    if h in seen:
        dups[f.split("/")[-1]] = seen[h].split("/")[-1]
    else:
        seen[h] = f
        uniq.append(f)
json.dump(dups, open(d + "/dups.json", "w"), indent=1)
open(d + "/unique.txt", "w").write("\n".join(uniq) + "\n")
PY
umixed=$(grep -v '/uniform_' "$DIR/unique.txt" | tr '\n' ' ')
# 3. Quality.
BQ=("$BUILD_DIR/bin/bench_quant" --base "$MODEL" --text "$TEST" --tokens "$EVAL" --ctx 256
    --prompts 3 --gen 32 --k 4 --threads "$THREADS" --base-cache "$DIR/base.cache")
[ -s "$DIR/bench_uniform.jsonl" ] || $NICE "${BQ[@]}" $ufiles > "$DIR/bench_uniform.jsonl"
[ -s "$DIR/bench_mixed.jsonl" ] || $NICE "${BQ[@]}" $umixed > "$DIR/bench_mixed.jsonl"
cat "$DIR/bench_uniform.jsonl" "$DIR/bench_mixed.jsonl" > "$DIR/bench.jsonl"
# 4. Acceptance through a real mesh (the source itself first, as the reference).
head -c 200000 "$TEST" | /usr/bin/python3 -c '
import sys
paras = [l.strip() for l in sys.stdin.read().split("\n") if len(l.strip()) > 200 and not l.strip().startswith("=")]
for p in paras[:3]:
    print(" ".join(p.split()[:40]))' > "$DIR/prompts.txt"
MESH=(env MESH_TARGET_FORMAT=f32 MESH_THREADS=1 $NICE bash bench/quant/mesh_accept.sh "$BUILD_DIR" "$MODEL" "$DIR/prompts.txt")
[ -s "$DIR/mesh_uniform.jsonl" ] || "${MESH[@]}" "$MODEL" $ufiles > "$DIR/mesh_uniform.jsonl"
[ -s "$DIR/mesh_mixed.jsonl" ] || "${MESH[@]}" $umixed > "$DIR/mesh_mixed.jsonl"
cat "$DIR/mesh_uniform.jsonl" "$DIR/mesh_mixed.jsonl" > "$DIR/mesh.jsonl"
# 5. Speed: mixed files against the uniform file of the nearest size.
[ -s "$DIR/speed.jsonl" ] || $NICE "$BUILD_DIR/bin/bench_quant_speed" --threads "$THREADS" --gen 32 \
  --repeats "$REPEATS" --uniform $ufiles --mixed $umixed > "$DIR/speed.jsonl"
# 6. llama.cpp loads the files (splitmesh types included, to record that it cannot).
if python3 -c "import llama_cpp" 2>/dev/null; then
  LC=($NICE python3 bench/quant/llamacpp_check.py --text "$TEST" --tokens 256)
  [ -s "$DIR/llamacpp_uniform.jsonl" ] || "${LC[@]}" "$MODEL" $ufiles > "$DIR/llamacpp_uniform.jsonl" 2>/dev/null || true
  [ -s "$DIR/llamacpp_mixed.jsonl" ] || "${LC[@]}" $umixed > "$DIR/llamacpp_mixed.jsonl" 2>/dev/null || true
  cat "$DIR/llamacpp_uniform.jsonl" "$DIR/llamacpp_mixed.jsonl" > "$DIR/llamacpp.jsonl"
fi
[ -s "$DIR/llamacpp.jsonl" ] && /usr/bin/python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()], indent=1))' \
    "$DIR/llamacpp.jsonl" > bench/results/quant_llamacpp.json
/usr/bin/python3 - "$DIR/meta.json" <<PY
import json, sys
json.dump({
  "commit": "$(git rev-parse --short HEAD)", "date": "$(date -u +%FT%TZ)",
  "machine": "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg), shared by 7 engineers",
  "command": "$command_line", "model": "$(basename "$MODEL")",
  "calibration": "wikitext-2-valid.txt, first $((SEQS * LEN)) tokens ($SEQS sequences x $LEN)",
  "evaluation": "wikitext-2-test.txt, first $EVAL tokens in windows of 256 (perplexity, top-1); 3 prompts x 32 greedy tokens (simulated acceptance, k=4); mesh: 3 test-text prompts x 32 greedy tokens, k=4 fixed, target = source at f32",
  "k": 4, "wall_s": $(( $(date +%s) - start )),
  "measure_wall_s": $(cat "$DIR/measure_wall_s" 2>/dev/null || echo null),
  "infeasible": json.loads('''$infeasible'''),
}, open(sys.argv[1], "w"), indent=1)
PY
/usr/bin/python3 bench/quant/report.py "$DIR" bench/results/quant.json bench/results/quant.md "$DIR/plot.dat"
gnuplot <<GP
set terminal pngcairo size 900,520 noenhanced
set output 'bench/results/quant.png'
set title 'SmolLM2-135M: quality retained vs compression (baseline: dequantized Q4_1 at F32)'
set xlabel 'x smaller than fp32 (tensor bytes)'
set ylabel 'quality (baseline ppl / ppl), acceptance'
set key bottom left
set grid
set yrange [0.25:1.02]
set arrow from 3.5,0.98 to 7.5,0.98 nohead dt 2
set arrow from 6,0.25 to 6,1.02 nohead dt 3
plot '$DIR/plot.dat' index 0 using 2:3 with linespoints lw 2 pt 7 title 'mixed (standard types): quality', \
     '' index 1 using 2:3 with linespoints lw 2 pt 9 title 'mixed + W4 group 128: quality', \
     '' index 2 using 2:3 with points pt 5 ps 2 title 'uniform Q8_0/Q5_1/Q5_0/Q4_1/Q4_0: quality', \
     '' index 0 using 2:5 with linespoints lw 1 dt 3 pt 8 lc rgb 'dark-red' title 'mixed: mesh draft acceptance', \
     '' index 2 using 2:5 with points pt 4 ps 1.5 lc rgb 'dark-red' title 'uniform: mesh draft acceptance'
GP
echo "bench/quant: wrote bench/results/quant.{json,md,png} (files in $DIR)"
