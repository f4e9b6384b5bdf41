"""Kernel benchmark cases, defined once for asv and for benchmarks/compare.py.

Each case builds float32 inputs with NumPy, then times the same computation
on a needle device (NDArray level: what a backend kernel costs, including
the output allocation) and in NumPy.  ``work`` is the FLOPs or bytes moved
per call, for GFLOP/s and GB/s figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    shapes: tuple                     # input shapes
    needle: Callable                  # f(*NDArrays) -> NDArray
    numpy: Callable                   # f(*ndarrays) -> ndarray
    work: float                       # flops or bytes per call
    unit: str                         # "GFLOP/s" or "GB/s"
    transpose_inputs: tuple = ()      # indices of inputs passed as transposed views


def _mm(m, n, p, ta=False, tb=False, label=None):
    name = label or f"matmul {m}x{n}@{n}x{p}"
    sa = (n, m) if ta else (m, n)
    sb = (p, n) if tb else (n, p)
    tr = tuple(i for i, t in enumerate((ta, tb)) if t)
    return Case(name, (sa, sb), lambda a, b: a @ b, lambda a, b: a @ b, 2.0 * m * n * p, "GFLOP/s", tr)


N24 = 1 << 24
N16 = 1 << 16
def _sqrt_quiet(a):
    with np.errstate(invalid="ignore"):
        return np.sqrt(a)


KERNEL_CASES = [
    Case("add 2^24", ((N24,), (N24,)), lambda a, b: a + b, lambda a, b: a + b, 12.0 * N24, "GB/s"),
    Case("mul 2^24", ((N24,), (N24,)), lambda a, b: a * b, lambda a, b: a * b, 12.0 * N24, "GB/s"),
    Case("add_scalar 2^24", ((N24,),), lambda a: a + 1.5, lambda a: a + np.float32(1.5), 8.0 * N24, "GB/s"),
    Case("exp 2^22", ((1 << 22,),), lambda a: a.exp(), np.exp, 8.0 * (1 << 22), "GB/s"),
    Case("sum last axis 4096x4096", ((4096, 4096),), lambda a: a.sum(axis=1), lambda a: a.sum(axis=1),
         4.0 * 4096 * 4096, "GB/s"),
    Case("max last axis 4096x4096", ((4096, 4096),), lambda a: a.max(axis=1), lambda a: a.max(axis=1),
         4.0 * 4096 * 4096, "GB/s"),
    Case("compact transposed 4096x4096", ((4096, 4096),), lambda a: a.compact(),
         np.ascontiguousarray, 8.0 * 4096 * 4096, "GB/s", (0,)),
    Case("div 2^22", ((1 << 22,), (1 << 22,)), lambda a, b: a / b, lambda a, b: a / b, 12.0 * (1 << 22), "GB/s"),
    Case("maximum 2^22", ((1 << 22,), (1 << 22,)), lambda a, b: a.maximum(b), np.maximum,
         12.0 * (1 << 22), "GB/s"),
    Case("eq 2^22", ((1 << 22,), (1 << 22,)), lambda a, b: a == b,
         lambda a, b: (a == b).astype(np.float32), 12.0 * (1 << 22), "GB/s"),
    Case("ge 2^22", ((1 << 22,), (1 << 22,)), lambda a, b: a >= b,
         lambda a, b: (a >= b).astype(np.float32), 12.0 * (1 << 22), "GB/s"),
    Case("power_scalar 2^22", ((1 << 22,),), lambda a: a ** 2.0, lambda a: a ** np.float32(2.0),
         8.0 * (1 << 22), "GB/s"),
    Case("scalar_maximum (relu) 2^22", ((1 << 22,),), lambda a: a.maximum(0.0),
         lambda a: np.maximum(a, np.float32(0)), 8.0 * (1 << 22), "GB/s"),
    Case("log 2^22", ((1 << 22,),), lambda a: (a * a + 1.0).log(), lambda a: np.log(a * a + np.float32(1)),
         24.0 * (1 << 22), "GB/s"),
    Case("tanh 2^22", ((1 << 22,),), lambda a: a.tanh(), np.tanh, 8.0 * (1 << 22), "GB/s"),
    # half the inputs are negative: nan for both sides, as IEEE sqrt gives
    Case("sqrt 2^22", ((1 << 22,),), lambda a: a.sqrt(), _sqrt_quiet, 8.0 * (1 << 22), "GB/s"),
    Case("neg 2^22", ((1 << 22,),), lambda a: -a, np.negative, 8.0 * (1 << 22), "GB/s"),
    Case("sub 2^22", ((1 << 22,), (1 << 22,)), lambda a, b: a - b, np.subtract, 12.0 * (1 << 22), "GB/s"),
    Case("setitem strided 2048x2048 <- 1024x1024", ((2048, 2048), (1024, 1024)),
         lambda a, b: a.__setitem__((slice(0, None, 2), slice(0, None, 2)), b),
         lambda a, b: a.__setitem__((slice(0, None, 2), slice(0, None, 2)), b), 8.0 * 1024 * 1024, "GB/s"),
    Case("setitem scalar 2048x2048[::2, ::2]", ((2048, 2048),),
         lambda a: a.__setitem__((slice(0, None, 2), slice(0, None, 2)), 1.0),
         lambda a: a.__setitem__((slice(0, None, 2), slice(0, None, 2)), 1.0), 4.0 * 1024 * 1024, "GB/s"),
    Case("compact broadcast row 4096 -> 4096x4096", ((1, 4096),), lambda a: a.broadcast_to((4096, 4096)).compact(),
         lambda a: np.ascontiguousarray(np.broadcast_to(a, (4096, 4096))), 4.0 * 4096 * 4096, "GB/s"),
    _mm(256, 256, 256), _mm(512, 512, 512), _mm(1024, 1024, 1024), _mm(2048, 2048, 2048),
    _mm(128, 784, 100, label="MLP fwd 128x784@784x100"),
    _mm(128, 100, 10, label="MLP fwd 128x100@100x10"),
    _mm(784, 128, 100, ta=True, label="MLP bwd X^T@G 784x128@128x100"),
    _mm(128, 100, 784, tb=True, label="MLP bwd G@W^T 128x100@100x784"),
    _mm(100, 128, 10, ta=True, label="MLP bwd H^T@G 100x128@128x10"),
    _mm(128, 10, 100, tb=True, label="MLP bwd G@W2^T 128x10@10x100"),
    # medium element-wise ops (a Transformer's ~65k-element activations): no OpenMP fork pays here
    Case("add 2^16", ((N16,), (N16,)), lambda a, b: a + b, lambda a, b: a + b, 12.0 * N16, "GB/s"),
    Case("mul 2^16", ((N16,), (N16,)), lambda a, b: a * b, lambda a, b: a * b, 12.0 * N16, "GB/s"),
    Case("relu 2^16", ((N16,),), lambda a: a.maximum(0.0), lambda a: np.maximum(a, np.float32(0)),
         8.0 * N16, "GB/s"),
    # relu's gradient on random signs: a comparison in the loop (vectorised only
    # with -fno-trapping-math; a branch per element before, 20x slower)
    Case("relu grad 2^18", ((1 << 18,), (1 << 18,)), lambda x, g: x.relu_grad(g),
         lambda x, g: g * (x > 0), 12.0 * (1 << 18), "GB/s"),
    # a Transformer backward's (batch, seq, features) -> (features, seq, batch) copy
    Case("compact permuted (32,256,64) axes 0<->2", ((32, 256, 64),),
         lambda a: a.permute((2, 1, 0)).compact(),
         lambda a: np.ascontiguousarray(a.transpose(2, 1, 0)), 8.0 * 32 * 256 * 64, "GB/s"),
    # a bias row read with stride 0 (no materialised broadcast)
    Case("add broadcast row 256x256 + 1x256", ((256, 256), (1, 256)), lambda a, b: a + b,
         lambda a, b: a + b, 4.0 * (2 * 256 * 256 + 256), "GB/s"),
    # attention: q @ k^T on (batch, seq, heads, dim) permuted to (batch, heads, seq, dim)
    Case("attention q@k^T 32x4x(32x16@16x32) permuted", ((32, 32, 4, 16), (32, 32, 4, 16)),
         lambda q, k: q.permute((0, 2, 1, 3)) @ k.permute((0, 2, 3, 1)),
         lambda q, k: q.transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1), 2.0 * 32 * 4 * 32 * 16 * 32,
         "GFLOP/s"),
    # a bias's gradient: the LSTM LM's logits (seq*batch, vocab) summed over rows,
    # read in place by the cpu backend's sum_leading (no transposed copy)
    Case("sum leading axis 400x10000", ((400, 10000),), lambda a: a.sum(axis=0), lambda a: a.sum(axis=0),
         4.0 * 400 * 10000, "GB/s"),
    Case("batched matmul 64x(64x64@64x64)", ((64, 64, 64), (64, 64, 64)), lambda a, b: a @ b,
         lambda a, b: a @ b, 2.0 * 64 * 64 ** 3, "GFLOP/s"),
    # ReLU on nn.Conv's output: an NCHW view of channels-last (NHWC) memory.  The
    # result keeps that memory order (no transposing copy), as NumPy's does
    Case("relu NCHW view of NHWC 128x8x8x32", ((128, 8, 8, 32),),
         lambda a: a.permute((0, 3, 1, 2)).maximum(0.0),
         lambda a: np.maximum(a.transpose(0, 3, 1, 2), np.float32(0)), 8.0 * 128 * 8 * 8 * 32, "GB/s"),
]

QUICK_SKIP = {"matmul 2048x2048@2048x2048"}


def make_inputs(case: Case, seed: int = 0):
    """NumPy float32 inputs; transposed ones come back as ``.T`` views."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in case.shapes]
    return [a.T if i in case.transpose_inputs else a for i, a in enumerate(arrays)]


def to_device(arrays, device):
    """Copy NumPy inputs to ``device``; transposed views stay transposed views."""
    import needle.backend_ndarray as nd
    out = []
    for a in arrays:
        if a.ndim == 2 and not a.flags.c_contiguous and a.T.flags.c_contiguous:
            out.append(nd.array(a.T, device=device).permute((1, 0)))
        else:
            out.append(nd.array(a, device=device))
    return out


def available_devices():
    import needle.backend_ndarray as nd
    from needle import discovery
    devs = []
    for info in discovery.backend_infos():
        if info.available:
            devs.append(nd.device(info.devices[0]))
    return devs
