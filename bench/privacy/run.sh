#!/usr/bin/env bash
# bench/privacy/run.sh: the privacy audit of issue 6 and its report.
#   bench/results/privacy.json  every (L, sigma) setting (splitmesh privacy-audit)
#   bench/results/privacy.md    the table, with the setting stated
#   bench/results/privacy.png   recovery and quality cost against noise, per L
# Runtime is bounded for a 2-core machine: 256 eval tokens, 2048 calibration
# tokens (about 10 min at load). SPLITMESH_MODEL picks the model; REPORT_ONLY=1
# redraws the report from an existing JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SPLITMESH_BIN_DIR:-build/bin}
MODEL=${SPLITMESH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${SPLITMESH_DATA:-../shared/data}
[ -d "$DATA" ] || DATA=/work/shared/data
if [ -z "${REPORT_ONLY:-}" ]; then
  "$BIN/splitmesh" privacy-audit --model "$MODEL" \
    --calib "$DATA/wikitext-2-valid.txt" --eval "$DATA/wikitext-2-test.txt" \
    --depths 1,2,4,8,15 --sigmas 0,0.01,0.03,0.1,0.3,1 \
    --eval-tokens 256 --fit-tokens 2048 --window 128 --threads 2 \
    --out bench/results/privacy.json
fi
/usr/bin/python3 bench/privacy/report.py bench/results/privacy.json bench/results/privacy
