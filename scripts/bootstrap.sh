#!/usr/bin/env bash
# Create ./.venv (if missing) and install needle into it, editable, with its
# compiled CPU backend and everything the tests and the main job need.
# Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# in CI a missing test reference is an error (tests/conftest.py fails the run too); locally a warning
ci_fail() {
  if [ "${CI:-}" = "true" ]; then echo "error: $1 (CI=true: the tests' oracles need it)" >&2; exit 1; fi
  echo "warning: $1"
}
"$VPY" -m pip install -q --upgrade pip
# build requirements first, so the editable install can skip build isolation
"$VPY" -m pip install -q "setuptools>=68" wheel "Cython>=3.0" numpy pluggy
# the distribution is named needle-dl (PyPI's "needle" is an unrelated tool): remove an
# install under the old name, whose entry points would register every backend twice
if "$VPY" -m pip show -q needle >/dev/null 2>&1; then "$VPY" -m pip uninstall -y -q needle; fi
echo "==> building and installing needle-dl (editable, Cython CPU backend)"
"$VPY" -m pip install -q --no-build-isolation -e ".[test,plots,bench,mpi]"
if [ "${NEEDLE_WITH_TORCH:-1}" = "1" ] && ! "$VPY" -c "import torch" 2>/dev/null; then
  # PyTorch is a *reference* for tests and benchmarks only, never a needle dependency
  echo "==> installing PyTorch (CPU) as a test reference"
  "$VPY" -m pip install -q torch==2.13.0 || ci_fail "PyTorch not installed; torch comparisons will be skipped"
fi
if [ "${NEEDLE_WITH_NVRTC:-1}" = "1" ] && ! "$VPY" -c "import cuda.bindings" 2>/dev/null; then
  # NVRTC needs no GPU: lets the CUDA kernel-compile test run on CPU-only machines
  "$VPY" -m pip install -q "cuda-python>=12.6" nvidia-cuda-nvrtc || ci_fail "cuda-python/NVRTC not installed; the CUDA compile test will be skipped"
fi
# asv asks for a per-user machine file on first use (and fails without a
# terminal): write it now with the detected defaults, so a plain
# `asv run --python=same --quick` works on a fresh clone after this script
if [ -x .venv/bin/asv ] && [ ! -f "$HOME/.asv-machine.json" ]; then
  ASV=.venv/bin/asv bash scripts/asv.sh machine --yes >/dev/null
fi
