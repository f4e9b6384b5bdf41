#!/usr/bin/env python
"""Speed report: needle's backends beside NumPy and PyTorch, in one process.

    python benchmarks/compare.py                 # every section (or: python -m benchmarks.compare)
    python benchmarks/compare.py kernels --quick # one section, fewer repeats
    needle bench overhead                        # same, through the CLI

Sections:
  kernels   protocol kernels through NDArray vs NumPy (ratio = NumPy time / backend time,
            so > 1 means faster than NumPy)
  overhead  per-op Python overhead of Tensor ops vs PyTorch eager
  conv      convolution forward+backward at ResNet9 layer shapes vs PyTorch
  mlp       one MLPResNet training epoch (Fashion-MNIST sized) vs PyTorch
  models    ResNet9 / LSTM LM / Transformer block training steps vs PyTorch
  fused     the fused softmax loss and multi-tensor SGD/Adam steps on vs off (issue 14)
  jit       training steps eager vs needle.jit (captured, replayed): a tiny MLP beside
            PyTorch eager, the LSTM LM / ResNet9 / Transformer steps of `models`
  distributed  allreduce 4 KB-64 MB (needle.distributed vs mpi4py), a 2-rank MLPResNet
            epoch vs 1 process, share of allreduce hidden behind backward
  memory    peak RSS growth of SmallCNN / ResNet9 training steps vs PyTorch, each
            framework in its own process

Ratios are medians of repeated runs.  Targets live in the issues and the
README; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

if __package__ in (None, ""):  # run as `python benchmarks/compare.py`: import this folder as `benchmarks`
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))


SECTIONS = {}


def section(fn):
    SECTIONS[fn.__name__.removeprefix("section_")] = fn
    return fn


@section
def section_kernels(args):
    from benchmarks.benchmarks.kernels_report import kernels_report  # also shipped in the wheel (needle bench)
    kernels_report(args.quick, args.repeat, args.device, args.filter)


# the other sections each run one probe module's report(): section ->
# (module under benchmarks/, the report() arguments taken from the command line)
PROBES = {
    "overhead": ("overhead", lambda args: {"repeat": args.repeat}),
    "conv": ("conv_probe", lambda args: {"repeat": args.repeat, "quick": args.quick}),
    "mlp": ("training_probe", lambda args: {"quick": args.quick}),
    "models": ("models_probe", lambda args: {"quick": args.quick, "device": args.device}),
    # issue 14 fused loss / multi-tensor optimizer steps, on vs off
    "fused": ("fused_probe", lambda args: {"repeat": 5 if args.quick else 9, "device": args.device}),
    # needle.jit: eager vs captured-and-replayed steps (its own rounds: 11, --quick 3)
    "jit": ("jit_probe", lambda args: {"quick": args.quick, "device": args.device}),
}


def _probe_section(module, arguments):
    def run(args):
        importlib.import_module(f"benchmarks.{module}").report(**arguments(args))
    return run


for _name, (_module, _arguments) in PROBES.items():
    SECTIONS[_name] = _probe_section(_module, _arguments)


@section
def section_distributed(args):
    from benchmarks import distributed_probe  # needs the [mpi] extra
    import mpi4py  # noqa: F401 -- ImportError -> "not available"
    distributed_probe.report(quick=args.quick)


@section
def section_memory(args):
    from benchmarks import memory_probe  # one subprocess per framework and model
    memory_probe.report(steps=5 if args.quick else 25, device=args.device or "cpu", runs=1 if args.quick else 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the largest cases")
    parser.add_argument("--repeat", type=int, default=None, help="timing rounds per case (median)")
    parser.add_argument("--device", default=None, help="only this needle device (e.g. cpu)")
    parser.add_argument("--filter", default=None, help="only kernel cases whose name contains this")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    import numpy as np
    import needle
    print(f"needle {needle.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus")
    print(needle.info.backends_table(with_config=True))
    for name in args.sections or list(SECTIONS):
        try:
            SECTIONS[name](args)
        except ImportError as exc:
            print(f"\n== {name} ==\nnot available: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
