"""Every argument list the host packs matches the kernel's parameters, as
NVRTC declares them in PTX -- the check a GPU would otherwise be needed for
(a mismatch reads garbage, silently).  Launches come from the fake driver,
both direct and captured into CUDA graphs."""

import re

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")

from needle.protocol import ReplayScalar  # noqa: E402
from needle_cuda import CudaBackend, _kernels, _nvrtc  # noqa: E402
from needle_cuda._launch import DevicePtr  # noqa: E402

_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\((.*?)\)", re.S)
_PARAM = re.compile(r"\.param\s+(?:\.align\s+\d+\s+)?\.(\w+)\s+\w+(?:\[(\d+)\])?")


@pytest.fixture(scope="module")
def ptx_params():
    """kernel name -> [(PTX type, bytes)] for every exported kernel."""
    out = {}
    for file in _kernels.KERNEL_FILES:
        ptx, _ = _nvrtc.compile_source(_kernels.source(file), f"{file}.cu", "compute_80", kind="ptx")
        for name, params in _ENTRY.findall(ptx.decode()):
            decl = []
            for kind, count in _PARAM.findall(params):
                width = int(count) if count else int(re.sub(r"\D", "", kind)) // 8
                decl.append((kind, width))
            out[name] = decl
    return out


def _fits(arg, kind: str, width: int) -> bool:
    if type(arg) is np.ndarray:       # a by-value struct: int64 words
        return kind == "b8" and arg.dtype == np.int64 and arg.nbytes == width
    if isinstance(arg, DevicePtr):
        return width == 8 and kind in ("u64", "b64", "s64")
    expected = {np.float32: ("f32",), np.float64: ("f64",), np.int32: ("u32", "s32", "b32"),
                np.int64: ("u64", "s64", "b64"), np.uint64: ("u64", "s64", "b64")}[type(arg)]
    return kind in expected and np.dtype(type(arg)).itemsize == width


def _check_launch(ptx_params, name, args):
    decl = ptx_params[name]
    assert len(decl) == len(args), f"{name}: {len(args)} arguments for {len(decl)} parameters"
    for i, (a, (kind, width)) in enumerate(zip(args, decl)):
        assert _fits(a, kind, width), f"{name} argument {i}: {type(a).__name__} for .{kind} ({width} bytes)"


def test_every_launch_matches_its_kernels_parameters(fake_driver, ptx_params):
    be = CudaBackend()
    for dt in ("float32", "float64"):
        n = 64
        a, b, o = be.Array(n, dt), be.Array(n, dt), be.Array(n, dt)
        for k in _kernels.EWISE_BINARY:
            getattr(be, k)(a, b, o)
        for k in _kernels.EWISE_UNARY:
            getattr(be, k)(a, o)
        for k in _kernels.SCALAR:
            getattr(be, k)(a, 1.5, o)
        be.fill(o, 2.0)
        be.rand_uniform(o, 3)
        be.compact(a, o, (8, 8), (1, 8), 0)
        be.ewise_setitem(a, o, (8, 8), (1, 8), 0)
        be.scalar_setitem(64, 1.0, o, (8, 8), (1, 8), 0)
        be.reduce_sum(a, be.Array(8, dt), 8)
        be.reduce_max(be.Array(8 * 5000, dt), be.Array(8, dt), 5000)
        be.matmul(a, b, o, 8, 8, 8)
        be.matmul_tiled(a, b, o, 8, 8, 8)
        be.logsumexp(a, be.Array(8, dt), 8, 8)
        be.softmax(a, o, 8, 8)
        x, w, y = be.Array(2 * 4 * 4 * 2, dt), be.Array(3 * 3 * 2 * 4, dt), be.Array(2 * 4 * 4 * 4, dt)
        be.conv(x, w, y, 2, 4, 4, 2, 3, 4, 1, 1)
        be.conv_grad_input(y, w, x, 2, 4, 4, 2, 3, 4, 1, 1)
        be.conv_grad_weight(x, y, w, 2, 4, 4, 2, 3, 4, 1, 1)
        be.embedding(a, b, o, 8, 8, 8)
        be.embedding_grad(a, b, o, 8, 8, 8)
        # the variants a CUDA graph replay captures, and the launch that feeds them
        program = [(k, (a, ReplayScalar(0.5, 0), o)) for k in _kernels.SCALAR]
        program += [("fill", (o, ReplayScalar(0.5, 0))), ("rand_uniform", (o, ReplayScalar(7.0, 1))),
                    ("embedding", (a, b, o, 8, 8, 8)), ("embedding_grad", (a, b, o, 8, 8, 8))]
        be.compile_replay(program).run([0.5, 7.0])
    captured = [(node[1], node[4]) for e in fake_driver.instantiated for node in e.graph.nodes
                if node[0] == "kernel"]
    direct = [(fn, args) for fn, _, _, args in fake_driver.launches]
    seen = set()
    for name, args in direct + captured:
        _check_launch(ptx_params, name, args)
        seen.add(name)
    assert {f"{k}_dev_f32" for k in _kernels.SCALAR} <= seen and "set_scalars" in seen
    assert {"rand_uniform_f64", "rand_uniform_dev_f64", "fill_dev_f32"} <= seen
    assert set(_kernels.EXPORTS["embedding"]) <= seen           # every embedding kernel, both dtypes
