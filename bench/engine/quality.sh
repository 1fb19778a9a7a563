#!/usr/bin/env bash
# bench/engine/quality.sh: logits quality of F32/W8/W4 against transformers fp32, per kernel family.
#
# Runs tests/test_forward_ref.c (which compares every position of the
# transformers golden, tests/golden/logits/hf_smollm2_f32.bin) once per SIMD
# family (scalar, avx2, avx512; SPLITMESH_SIMD caps it), collects its
# statistics, adds llama.cpp's own agreement with the same golden, and writes
# bench/results/quality.json and .md with machine, commit and command.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${SPLITMESH_BUILD_DIR:-build}
MODEL=${SPLITMESH_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
export SPLITMESH_MODEL=$MODEL
cmake --build "$BUILD" -j2 --target test_forward_ref >/dev/null
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
for s in scalar avx2 avx512; do
  SPLITMESH_SIMD=$s SPLITMESH_QUALITY_OUT=$TMP "$BUILD/bin/test_forward_ref" --jobs=1 \
    --filter 'forward_ref/[fw]*' >/dev/null 2>&1 || echo "quality.sh: test_forward_ref failed under $s" >&2
done
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
       "what": "logits at every position of 6 prompts (99 positions) vs transformers fp32 (hf_smollm2_f32.bin) and, for 2 prompts, vs llama.cpp (llamacpp_smollm2_q4_1.bin); KL is KL(reference || engine)",
       "rows": rows}
json.dump(out, open("bench/results/quality.json", "w"), indent=1)
md = ["# Logits quality by weight format (bench/engine/quality.sh)", "",
      f"{out['what']}.", f"Machine: {cpu}. Commit {out['commit']}. Date {out['date']}. Command: `{out['command']}`", "",
      "| format | kernels | reference | positions | top-1 agree | fp16 ties | worst cosine | mean KL |",
      "|---|---|---|---|---|---|---|---|"]
for r in rows:
    md.append(f"| {r['format']} | {r.get('simd', r.get('engine', ''))} | {r['reference']} | {r['positions']} | "
              f"{r['top1_pct']}% | {r.get('top1_fp16_ties', '')} | {r['min_cosine']} | {r['mean_kl']} |")
open("bench/results/quality.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
