"""The asv benchmarks of the issue-14 kernels run: each parameter combination
of these classes goes through setup, one timed call and teardown on the cpu
device (a SIMD path this CPU lacks must be skipped, not crash).  Nothing is
timed here; a benchmark that rots would otherwise surface only in asv."""

import importlib
import itertools
from pathlib import Path

import pytest

pytest.importorskip("asv_runner")
pytest.importorskip("needle_cpu")
from asv_runner.benchmarks.mark import SkipNotImplemented  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

CLASSES = [("bench_fused_ops", "ConvResNet9Layers"), ("bench_fused_ops", "CpuSimdRowKernels"),
           ("bench_kernels", "CpuSimdPaths"), ("bench_jit", "JitSteps")]


def _combos(cls):
    params = cls.params if isinstance(cls.params, tuple) else (cls.params,)
    names = [n for n in cls.param_names]
    for combo in itertools.product(*params):
        if "device" in names and combo[names.index("device")] != "cpu":
            continue
        yield combo


@pytest.mark.parametrize("module,name", CLASSES, ids=lambda x: str(x))
def test_new_kernel_benchmarks_run_on_cpu(module, name, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    mod = importlib.import_module(f"benchmarks.benchmarks.{module}")
    cls = getattr(mod, name)
    ran = 0
    for combo in _combos(cls):
        bench = cls()
        try:
            bench.setup(*combo)
        except SkipNotImplemented:
            continue
        try:
            for attr in dir(bench):
                if attr.startswith("time_"):
                    getattr(bench, attr)(*combo)
                    ran += 1
        finally:
            if hasattr(bench, "teardown"):
                bench.teardown(*combo)
    assert ran > 0
