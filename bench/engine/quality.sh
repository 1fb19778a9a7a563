#!/usr/bin/env bash
# bench/engine/quality.sh: logits quality of F32/W8/W4 against transformers fp32, per kernel family.
#
# Runs tests/test_forward_ref.c (every position of the transformers goldens:
# hf_smollm2_f32.bin, full fp16 rows, 99 positions; hf_smollm2_topk.bin, top-64
# fp32 logits + log-sum-exp, 792 positions) once per SIMD family (scalar,
# avx2, avx512; SPLITMESH_SIMD caps it), plus W4 with two-level activations
# and W8 with one level (the alternatives, via SPLITMESH_W4/W8_ACT_LEVELS),
# and tests/test_llamacpp_greedy.c once; collects their statistics, adds
# llama.cpp's own agreement with the full-row golden, and writes
# bench/results/quality.json and .md with machine, commit and command.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${SPLITMESH_BUILD_DIR:-build}
MODEL=${SPLITMESH_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
export SPLITMESH_MODEL=$MODEL
cmake --build "$BUILD" -j2 --target test_forward_ref test_llamacpp_greedy >/dev/null
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
for s in scalar avx2 avx512; do
  SPLITMESH_SIMD=$s SPLITMESH_QUALITY_OUT=$TMP "$BUILD/bin/test_forward_ref" --jobs=1 \
    --filter 'forward_ref/[fw]*' >/dev/null 2>&1 || echo "quality.sh: test_forward_ref failed under $s" >&2
done
# The other activation choices, on the best family (their tests assert the
# default's bounds, so a failure here is expected for W8 with one level).
SPLITMESH_W4_ACT_LEVELS=2 SPLITMESH_QUALITY_OUT=$TMP "$BUILD/bin/test_forward_ref" --jobs=1 \
  --filter 'forward_ref/w4*' >/dev/null 2>&1 || true
SPLITMESH_W8_ACT_LEVELS=1 SPLITMESH_QUALITY_OUT=$TMP "$BUILD/bin/test_forward_ref" --jobs=1 \
  --filter 'forward_ref/w8*' >/dev/null 2>&1 || true
SPLITMESH_QUALITY_OUT=$TMP "$BUILD/bin/test_llamacpp_greedy" --jobs=1 >/dev/null 2>&1 \
  || echo "quality.sh: test_llamacpp_greedy failed" >&2
if ${PYTHON:-python3} -c "import llama_cpp" 2>/dev/null; then
  ${PYTHON:-python3} scripts/reference/llamacpp_quality.py --model "$MODEL" \
    --golden tests/golden/logits/hf_smollm2_f32.bin >>"$TMP"
fi
mkdir -p bench/results
/usr/bin/python3 - "$TMP" "$MODEL" <<'PY'
import json, os, subprocess, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
out = {"machine": {"cpu": cpu, "cores": os.cpu_count()}, "commit": commit + ("-dirty" if dirty else ""),
       "command": "bench/engine/quality.sh", "model": os.path.basename(sys.argv[2]),
       "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "what": "logits at every position vs transformers fp32: hf_smollm2_topk.bin (8 prompts, 792 positions, top-64 fp32 logits + log-sum-exp; KL over the top 64 plus one tail bin, a lower bound of the full KL) and hf_smollm2_f32.bin (6 prompts, 99 positions, full fp16 rows); for 2 prompts vs llama.cpp (llamacpp_smollm2_q4_1.bin); KL is KL(reference || engine). Greedy: 6 prompts x 64 tokens vs llama.cpp (test_llamacpp_greedy)",
       "rows": rows}
json.dump(out, open("bench/results/quality.json", "w"), indent=1)
md = ["# Logits quality by weight format (bench/engine/quality.sh)", "",
      f"{out['what']}.", f"Machine: {cpu}. Commit {out['commit']}. Date {out['date']}. Command: `{out['command']}`", "",
      "## 792 positions (hf_smollm2_topk.bin, the issue's thresholds: W8 >= 99%, W4 >= 97%)", "",
      "| format | kernels | act levels (w8/w4) | positions | top-1 agree | misses at ref margin < 1e-3 | max log-prob err (top 64) | mean KL (binned) |",
      "|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "mean_kl_binned" in r:
        md.append(f"| {r['format']} | {r['simd']} | {r['w8_act_levels']}/{r['w4_act_levels']} | {r['positions']} | "
                  f"{r['top1_pct']}% | {r['top1_ties_1e-3']} | {r['max_logprob_err_topk']} | {r['mean_kl_binned']} |")
md += ["", "## Full rows (hf_smollm2_f32.bin, 99 positions) and llama.cpp logits", "",
       "| format | kernels | reference | positions | top-1 agree | fp16 ties | worst cosine | mean KL |",
       "|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "min_cosine" in r:
        lv = f" (act {r['w8_act_levels']}/{r['w4_act_levels']})" if "w8_act_levels" in r else ""
        md.append(f"| {r['format']} | {r.get('simd', r.get('engine', ''))}{lv} | {r['reference']} | {r['positions']} | "
                  f"{r['top1_pct']}% | {r.get('top1_fp16_ties', '')} | {r['min_cosine']} | {r['mean_kl']} |")
md += ["", "## Greedy continuations vs llama.cpp (test_llamacpp_greedy)", "",
       "| engine format | llama.cpp golden | prompts | steps compared | divergences | allowed only at margins below (both engines) |",
       "|---|---|---|---|---|---|"]
for r in rows:
    if "greedy" in r:
        md.append(f"| {r['format']} ({r['simd']}) | {r['greedy']} | {r['prompts']} | {r['steps_compared']} | "
                  f"{r['divergences']} | {r['margin_bound']} |")
md += ["", "llamacpp_smollm2_f32_kvf32.txt: llama.cpp on the Q4_1 weights dequantized to an F32 GGUF "
       "(scripts/reference/gguf_to_f32.py) with an f32 KV cache, the same function as the engine's F32 path. "
       "llamacpp_smollm2_q4_1.txt: llama.cpp on the Q4_1 file (q8_1 activations, f16 KV cache), a different "
       "function; each divergence there is printed by the test with both engines' margins."]
open("bench/results/quality.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
