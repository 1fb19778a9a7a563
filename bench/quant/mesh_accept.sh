#!/usr/bin/env bash
# bench/quant/mesh_accept.sh: speculative acceptance of quantized files as the
# DRAFT, through a real mesh. For each file: `splitmesh up` with the target =
# the source model (--format, default w8) and the draft = the file at f32 (its
# own dequantized values, so the acceptance is the file's and not a runtime
# conversion's), edge-draft k fixed (--fixed-k, --draft-k K), greedy
# `splitmesh generate --json` of N tokens for each prompt, then `splitmesh
# down`. Acceptance = sum of the FINAL stats' drafts_accepted / drafts_proposed
# over the prompts. One JSON object per file on stdout.
# Usage: bench/quant/mesh_accept.sh BUILD_DIR SOURCE.gguf PROMPTS.txt FILE.gguf...
#        (env: MESH_TARGET_FORMAT=w8, MESH_K=4, MESH_TOKENS=32, MESH_THREADS=1)
# PROMPTS.txt: one prompt a line.
set -uo pipefail
BUILD_DIR=$1; SRC=$2; PROMPTS=$3; shift 3
SM=$BUILD_DIR/bin/splitmesh
FMT=${MESH_TARGET_FORMAT:-w8}
K=${MESH_K:-4}
N=${MESH_TOKENS:-32}
THREADS=${MESH_THREADS:-1}
RUN=$(mktemp -d /tmp/splitmesh_qmesh_XXXXXX)
cleanup () { "$SM" down --run-dir "$RUN" >/dev/null 2>&1; rm -rf "$RUN"; }
trap cleanup EXIT
for f in "$@"; do
  t0=$(date +%s)
  if ! "$SM" up --model "$SRC" --format "$FMT" --draft-model "$f" --draft-format f32 \
       --draft-k "$K" --fixed-k --threads "$THREADS" --run-dir "$RUN" --no-gateway --no-telemetry \
       --timeout 300 > "$RUN/up.log" 2>&1; then
    echo "{\"file\":\"$f\",\"error\":\"splitmesh up failed: $(tail -1 "$RUN/up.log" | tr -d '"\\')\"}"
    "$SM" down --run-dir "$RUN" >/dev/null 2>&1
    continue
  fi
  prop=0; acc=0; toks=0; n_ok=0
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    out=$("$SM" generate --run-dir "$RUN" --json -n "$N" --temperature 0 --draft-k "$K" \
          --mode speculative --privacy none --timeout 300 "$p" 2>/dev/null) || continue
    read -r a b c < <(printf '%s' "$out" | /usr/bin/python3 -c '
import json, sys
s = json.loads(sys.stdin.read())["stats"]
print(s["drafts_proposed"], s["drafts_accepted"], s["tokens"])')
    prop=$((prop + a)); acc=$((acc + b)); toks=$((toks + c)); n_ok=$((n_ok + 1))
  done < "$PROMPTS"
  "$SM" down --run-dir "$RUN" >/dev/null 2>&1
  /usr/bin/python3 -c 'import json, sys
f, p, a, t, n, k, fmt, s = sys.argv[1:]
p, a = int(p), int(a)
print(json.dumps({"file": f, "mesh_acceptance": round(a / p, 4) if p else None,
                  "drafts_proposed": p, "drafts_accepted": a, "tokens": int(t), "prompts": int(n),
                  "k": int(k), "target_format": fmt, "draft_format": "f32", "wall_s": int(s)}))' \
    "$f" "$prop" "$acc" "$toks" "$n_ok" "$K" "$FMT" "$(( $(date +%s) - t0 ))"
done
