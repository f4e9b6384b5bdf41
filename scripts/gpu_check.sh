#!/usr/bin/env bash
# The CUDA backend's checks and figures on a machine with an NVIDIA GPU:
# install needle into the current Python, list the backends, run the CUDA
# tests, every op/conformance test parameterized on `cuda`, then the issue-8
# figures (matmul 4096^2, add 2^26, ResNet9 step) beside PyTorch CUDA, and
# jitted steps (CUDA graphs) beside eager ones.
#
#   bash scripts/gpu_check.sh [figures|tests|all|kernels|profile] [OUTDIR]
#
# Logs go under OUTDIR (default $OUT, else ./gpu_check).  Each phase fits in
# ten minutes on an H100; `figures` installs, `tests` expects it installed.
set -uo pipefail
phase=${1:-all}
out=${2:-${OUT:-gpu_check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run with a time limit, log to $out/NAME.log
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | tail -n 25
    echo "=== $name rc=${PIPESTATUS[0]}"
}

repo=$(pwd)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if ! (cd /tmp && $py -c "import needle_cuda" 2>/dev/null); then
    step install 240 $py -m pip install -q --no-build-isolation --no-deps --no-index .
fi
if [[ $phase == figures || $phase == all ]]; then
    cd /tmp  # import the installed package, not the source folders
    step backends 60 $py -m needle.cli backends
    step cuda_tests 180 $py -m pytest -q -p no:cacheprovider "$repo/tests/cuda"
    step bench_gpu 90 env PYTHONPATH="$repo" $py -m benchmarks.bench_gpu
    step models 200 env PYTHONPATH="$repo" $py -m benchmarks.models_probe --device cuda --repeat 5
    # needle.jit: CUDA graph replays of training steps beside eager (issue 15)
    step jit 200 env PYTHONPATH="$repo" $py "$repo/benchmarks/compare.py" jit --quick --device cuda
fi
if [[ $phase == tests || $phase == all ]]; then
    cd /tmp
    # import PyTorch once first: eight workers importing a never-imported torch
    # at the same moment broke its import on the lent image (seen 2026-11-23)
    $py -c "import torch" 2>/dev/null
    step cuda_params 540 $py -m pytest -q -p no:cacheprovider -n 8 "$repo/tests" \
        --ignore="$repo/tests/cuda" -k cuda
fi
if [[ $phase == kernels ]]; then  # GPU time per kernel of a model step
    cd /tmp
    for m in ${PROFILE_MODELS:-resnet9 lstm}; do
        step "kernels_$m" 200 env PYTHONPATH="$repo" $py -m benchmarks.gpu_kernel_profile --model "$m" --rows 12
    done
fi
if [[ $phase == profile ]]; then  # where a model step's host time goes
    cd /tmp
    for m in ${PROFILE_MODELS:-lstm resnet9}; do
        step "profile_$m" 200 env PYTHONPATH="$repo" $py -c "import cProfile, pstats
import needle as ndl
from benchmarks import models_probe as mp
probe, dev = mp.PROBES['$m'], ndl.device('cuda')
probe(device=dev, repeat=1)  # imports, kernel compilation, allocator warm-up stay out
cProfile.run('probe(device=dev, repeat=5)', '/tmp/prof')
pstats.Stats('/tmp/prof').sort_stats('tottime').print_stats(25)"
    done
fi
