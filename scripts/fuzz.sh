#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_*.c) with clang, ASan and UBSan
# into build-fuzz/, and runs each for a bounded time on a copy of its
# committed seed corpus (fuzz/corpus/<name>/). Exits non-zero if any target
# crashes; the crashing input is left in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [seconds per target, default 60]
#
# Needs clang with libFuzzer's runtime: install-deps.sh installs them when
# SPLITMESH_FUZZ=1, as done here. A summary (machine, commit, command,
# executions per target) is appended to $FUZZ_RESULTS when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
SPLITMESH_FUZZ=1 bash scripts/install-deps.sh
BUILD_DIR=${SPLITMESH_FUZZ_BUILD_DIR:-build-fuzz}
CC=${CC:-clang}
if ! command -v "$CC" >/dev/null; then
  echo "fuzz.sh: $CC not found (install clang)" >&2
  exit 2
fi

CC=$CC cmake -S . -B "$BUILD_DIR" -DSPLITMESH_FUZZ=ON -DSPLITMESH_CUDA=OFF \
  -DSPLITMESH_TESTS=OFF -DSPLITMESH_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=()
for src in fuzz/fuzz_*.c; do
  t=$(basename "$src" .c)
  targets+=("$t")
done
cmake --build "$BUILD_DIR" -j "${FUZZ_JOBS:-2}" --target "${targets[@]}" >/dev/null

mkdir -p "$BUILD_DIR/artifacts"
status=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  work="$BUILD_DIR/corpus/$name"
  rm -rf "$work"
  mkdir -p "$work"
  if [ -d "fuzz/corpus/$name" ]; then cp fuzz/corpus/"$name"/* "$work"/; fi
  dict=()
  if [ -f "fuzz/$name.dict" ]; then dict=(-dict="fuzz/$name.dict"); fi
  log="$BUILD_DIR/$t.log"
  echo "fuzz.sh: running $t for ${SECONDS_PER_TARGET}s (log $log)"
  if "$BUILD_DIR/bin/$t" "$work" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" \
       -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$BUILD_DIR/artifacts/$t-" >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
    line="fuzz.sh: $t ok: ${execs:-?} executions in ${SECONDS_PER_TARGET}s, coverage ${cov:-?}, corpus $(ls "$work" | wc -l) files, no crash"
    echo "$line"
    if [ -n "${FUZZ_RESULTS:-}" ]; then
      { echo "$(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)" \
             "machine $(uname -m) $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
        echo "  command: scripts/fuzz.sh $SECONDS_PER_TARGET ($CC $($CC --version | head -1 | sed 's/.*version //'), ASan+UBSan)"
        echo "  $line"; } >> "$FUZZ_RESULTS"
    fi
  else
    status=1
    echo "fuzz.sh: $t FAILED; see $log and $BUILD_DIR/artifacts/" >&2
    grep -E 'ERROR|SUMMARY|property failed|runtime error' "$log" | head -20 >&2 || true
  fi
done
exit $status
