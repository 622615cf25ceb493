#!/usr/bin/env bash
# Sets up a fresh machine for holitok-slm: system speech tools, a virtualenv in .venv, torch (CPU) first, then the project.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox libsndfile1"
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# Torch first, pinned to the local CPU wheel: any other spec pulls gigabytes of CUDA packages.
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null || pip install -q torch==2.13.0
echo "torch==2.13.0" > .venv/constraints.txt
pip install -q -c .venv/constraints.txt -e ".[all]"
# resemblyzer pulls webrtcvad, whose import fails on current setuptools; the same module from webrtcvad-wheels
# must be the one on disk, whatever order pip installed them in.
python -c "import webrtcvad" 2>/dev/null || pip install -q --force-reinstall --no-deps webrtcvad-wheels==2.0.14.post1
