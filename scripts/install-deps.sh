#!/usr/bin/env bash
# Installs everything splitmesh needs to build, test and run on Debian 12.
# Idempotent: a second run only checks. Used by the README's commands and .ci/run.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }
SUDO=$(need_root)

PKGS=(
  build-essential cmake pkg-config git ca-certificates curl unzip
  libzmq3-dev libczmq-dev libsodium-dev libmsgpack-dev
  libcriterion-dev libpcre2-dev libmicrohttpd-dev
  python3 python3-msgpack python3-zmq python3-numpy
)
# Fuzzing (scripts/fuzz.sh sets SPLITMESH_FUZZ=1): clang and libFuzzer's runtime.
FUZZ_PKGS=(clang libclang-rt-14-dev)
if [ -n "${SPLITMESH_FUZZ:-}" ]; then
  PKGS+=("${FUZZ_PKGS[@]}")
fi
# Optional extras that tests for later issues use; keep this list in one place.
if [ -n "${SPLITMESH_EXTRA_PKGS:-}" ]; then
  # shellcheck disable=SC2206
  PKGS+=(${SPLITMESH_EXTRA_PKGS})
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: ok"
