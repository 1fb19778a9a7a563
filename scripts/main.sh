#!/usr/bin/env bash
# The README's main job: install the dependencies, build, fetch the model,
# start the local mesh (`splitmesh up`: brokers, tokenizer, split-prefix,
# cloud-target, edge-draft, telemetry) with an emulated edge-cloud link,
# generate an answer through it (`splitmesh generate`, text streamed, its
# statistics printed), and stop the mesh (`splitmesh down`), also when a
# step fails. Exit status: 0 when the mesh answered.
#
# Environment: SPLITMESH_BUILD_DIR (default build), SPLITMESH_MODEL (default:
# the fetched SmolLM2-135M-Instruct), SPLITMESH_RUN_DIR (default: a fresh
# temp dir), MAIN_LINK (default rtt=20), MAIN_PROMPT, MAIN_TOKENS (64),
# MAIN_SPLIT (2).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${SPLITMESH_BUILD_DIR:-build}
LINK=${MAIN_LINK:-rtt=20}
PROMPT=${MAIN_PROMPT:-What is the capital of France?}
TOKENS=${MAIN_TOKENS:-64}
SPLIT=${MAIN_SPLIT:-2}

echo "== install deps and build"
bash scripts/build.sh
SM="$PWD/$BUILD_DIR/bin/splitmesh"

echo "== fetch the model"
MODEL=${SPLITMESH_MODEL:-$PWD/$(bash scripts/fetch-model.sh)}
export SPLITMESH_MODEL=$MODEL

RUN_DIR=${SPLITMESH_RUN_DIR:-$(mktemp -d /tmp/splitmesh-main.XXXXXX)}
export SPLITMESH_RUN_DIR=$RUN_DIR
cleanup() {
  rc=$?
  echo "== splitmesh down"
  "$SM" down --run-dir "$RUN_DIR" || true
  if [ $rc -ne 0 ] && [ -d "$RUN_DIR/logs" ]; then
    echo "== failed (status $rc); logs are in $RUN_DIR/logs"
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

echo "== splitmesh up (split L=$SPLIT, link $LINK)"
"$SM" up --run-dir "$RUN_DIR" --model "$MODEL" --split "$SPLIT" --link "$LINK"

echo "== splitmesh generate --chat -n $TOKENS \"$PROMPT\""
"$SM" generate --run-dir "$RUN_DIR" --chat -n "$TOKENS" "$PROMPT"

echo "== the same request as JSON (what tests and bench/e2e read)"
"$SM" generate --run-dir "$RUN_DIR" --chat -n 16 --json "$PROMPT"
