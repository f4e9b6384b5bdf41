"""The CUDA backend: needle's array protocol on NVIDIA GPUs.

Each kernel validates its buffers on the host (type, device, dtype, sizes,
strides) and then queues one CUDA kernel on the device's stream; results are
waited for only when data returns to the host (``to_numpy``).  What only the
device can check (an embedding's indices) is noted there by the kernels and
raised at that point too (``DeviceRuntime.raise_kernel_errors``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from needle.errors import DeviceMismatchError, ShapeError
from needle.protocol import PROTOCOL_VERSION, Backend, UnsupportedDTypeError, check_seed

from . import _cache, _driver, _kernels, _launch, _nvrtc, _runtime
from ._launch import INT32_LIMIT, DevicePtr
from ._memory import CudaArray

__version__ = "0.1.0"

# keyed by dtype object: dtype.name is computed anew on every access
_SUFFIX = {np.dtype("float32"): "f32", np.dtype("float64"): "f64"}


#: (shape, strides, offset) -> (StridedView struct, index bits): a model
#: compacts the same few views every step, and building the struct is costly
_VIEW_PLANS: dict = {}


def _p(buf) -> DevicePtr:
    return DevicePtr(buf.ptr())


def rng_seed(seed) -> np.uint64:
    """``seed`` checked against rand_uniform's contract (``protocol.check_seed``)
    as the uint64 the kernel takes."""
    return np.uint64(check_seed(seed))


class CudaBackend(Backend):
    name = "cuda"
    version = __version__
    protocol_version = PROTOCOL_VERSION
    dtypes = ("float32", "float64")
    __tile_size__ = 8

    #: why the last compile_replay returned None (None when it gave a replay)
    replay_fallback_reason: "str | None" = None

    def __init__(self, device_index: int = 0):
        self.device_index = device_index

    # ------------------------------------------------------------------ #
    # availability / devices / config
    # ------------------------------------------------------------------ #
    def is_available(self):
        ok, reason, _ = _driver.probe()
        return ok, reason

    def device_names(self):
        _, _, count = _driver.probe()
        return ["cuda"] + [f"cuda:{i}" for i in range(1, count)]

    def for_device(self, device_name: str) -> "CudaBackend":
        """One backend object per GPU: buffers and launches belong to its device."""
        index = int(device_name.partition(":")[2] or 0)
        if index == self.device_index:
            return self
        _, _, count = _driver.probe()
        if not 0 <= index < count:
            raise ValueError(f"cuda: no device {device_name!r}; {count} device(s) present")
        per_device = self.__dict__.setdefault("_per_device", {})
        if index not in per_device:
            per_device[index] = CudaBackend(index)
        return per_device[index]

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"kernel_cache": str(_cache.kernel_cache_dir())}
        try:
            cfg["nvrtc"] = "%d.%d" % _nvrtc.version()
            cfg["nvrtc_library"] = _nvrtc.library_path()
        except Exception as exc:  # noqa: BLE001 -- config is informational
            cfg["nvrtc"] = f"unavailable ({exc})"
        ok, reason, count = _driver.probe()
        if not ok:
            cfg["driver"] = f"unavailable ({reason})"
            return cfg
        v = int(_driver.call("cuDriverGetVersion", action="reading the driver version"))
        cfg["driver"] = f"{v // 1000}.{(v % 1000) // 10}"
        devices = []
        for i in range(count):
            rt = _runtime.runtime(i)
            devices.append({"name": rt.name, "arch": rt.arch, "sm_count": rt.sm_count,
                            "cached_bytes": rt.allocator.cached_bytes,
                            "in_use_bytes": rt.allocator.in_use_bytes})
        cfg["devices"] = devices
        return cfg

    def empty_cache(self) -> int:
        """Return every cached (freed) block to the driver; bytes released."""
        return sum(rt.allocator.empty_cache() for rt in _runtime.existing_runtimes())

    def synchronize(self) -> None:
        runtimes = _runtime.existing_runtimes()
        for rt in runtimes:
            rt.synchronize()
        for rt in runtimes:  # after every device has drained
            rt.raise_kernel_errors()

    def compile_replay(self, program):
        """A step recorded by ``needle.jit`` as CUDA graphs: every run of calls
        without a ReplayScalar is captured once into a graph that ``run`` starts
        with one ``cuGraphLaunch``; calls with a ReplayScalar are issued between
        the graphs with the values ``run(scalars)`` passes.  None (needle then
        replays from Python) when capture fails or ``NEEDLE_CUDA_GRAPHS=0``;
        :attr:`replay_fallback_reason` says why.  See ``needle_cuda._replay``."""
        from . import _replay
        return _replay.compile_replay(self, program)

    # ------------------------------------------------------------------ #
    # validation helpers
    # ------------------------------------------------------------------ #
    def _rt(self):
        return _runtime.runtime(self.device_index)

    def _check(self, op: str, *bufs, **named):
        """All buffers are CudaArrays on one device with one dtype; returns
        (runtime, dtype suffix)."""
        items = list(named.items()) or [(f"arg{i}", b) for i, b in enumerate(bufs)]
        rt = None
        dtype = None
        for name, b in items:
            if not isinstance(b, CudaArray):
                raise DeviceMismatchError(
                    f"{op}: '{name}' is a {type(b).__name__}, not a cuda buffer; move arrays to cuda() first")
            if rt is None:
                rt, dtype = b._runtime, b.dtype
            elif b._runtime is not rt:
                raise DeviceMismatchError(
                    f"{op}: buffers on different GPUs (cuda:{rt.index} and cuda:{b._runtime.index})")
            elif b.dtype != dtype:
                raise UnsupportedDTypeError(
                    f"{op}: dtypes differ ({items[0][0]}: {dtype.name}, {name}: {b.dtype.name}); "
                    "one kernel call takes buffers of one dtype")
        return rt, _SUFFIX[dtype]

    @staticmethod
    def _need(op: str, what: str, have: int, need: int):
        if have < need:
            raise ShapeError(f"{op}: {what} has {have} elements but {need} are needed")

    @staticmethod
    def _view_ok(op: str, name: str, buf, shape, strides, offset):
        if len(shape) != len(strides):
            raise ShapeError(f"{op}: shape {tuple(shape)} and strides {tuple(strides)} differ in length")
        if any(int(s) < 0 for s in strides) or any(int(n) < 0 for n in shape) or int(offset) < 0:
            raise ShapeError(f"{op}: negative shape/stride/offset: shape {tuple(shape)}, "
                             f"strides {tuple(strides)}, offset {offset}")
        hi = _launch.max_index(shape, strides, offset)
        if hi >= buf.size:
            raise ShapeError(f"{op}: view shape {tuple(shape)} strides {tuple(strides)} offset {offset} "
                             f"reaches element {hi} of '{name}', which has {buf.size}")

    # ------------------------------------------------------------------ #
    # buffers
    # ------------------------------------------------------------------ #
    def Array(self, size, dtype=np.dtype("float32")):  # noqa: N802
        dt = self.check_dtype(dtype)
        if int(size) < 0:
            raise ShapeError(f"Array: size must be >= 0, got {size}")
        return CudaArray(self._rt(), int(size), dt)

    def from_numpy(self, a, out):
        rt, _ = self._check("from_numpy", out=out)
        host = np.ascontiguousarray(a, dtype=out.dtype).reshape(-1)
        if host.size != out.size:
            raise ShapeError(f"from_numpy: {host.size} elements for a buffer of {out.size}")
        rt.copy_to_device(out.ptr(), host)

    def to_numpy(self, a, shape, strides, offset):
        rt, suf = self._check("to_numpy", a=a)
        shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
        self._view_ok("to_numpy", "a", a, shape, strides, offset)
        n = math.prod(shape)
        host = np.empty(n, dtype=a.dtype)
        if n == 0:
            return host.reshape(shape)
        if _launch.coalesce(shape, strides)[1] == (1,):  # one contiguous run
            rt.copy_to_host(host, a.ptr() + int(offset) * a.dtype.itemsize)
        else:
            tmp = CudaArray(rt, n, a.dtype)
            self.compact(a, tmp, shape, strides, offset)
            rt.copy_to_host(host, tmp.ptr())
        # the stream has drained: an error a kernel noted (a bad embedding index)
        # is raised here, where the results it spoilt would come back
        rt.raise_kernel_errors()
        return host.reshape(shape)

    def fill(self, out, value):
        rt, suf = self._check("fill", out=out)
        if out.size == 0:
            return
        grid, block = _launch.grid_1d(out.size, rt.sm_count, 16 // out.dtype.itemsize)
        rt.launch(f"fill_{suf}", (grid,), (block,),
                  (_p(out), self._scalar(out, value), np.int64(out.size), np.int32(out.ptr() % 16 == 0)))

    @staticmethod
    def _scalar(buf, value):
        with np.errstate(over="ignore"):
            return buf.dtype.type(value)

    # ------------------------------------------------------------------ #
    # strided copies
    # ------------------------------------------------------------------ #
    def _strided(self, op, kernel_prefix, src, dst, strided_buf, shape, strides, offset, first_arg):
        rt, suf = self._check(op, **({"a": src, "out": dst} if src is not None else {"out": dst}))
        shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
        self._view_ok(op, "a" if strided_buf is src else "out", strided_buf, shape, strides, offset)
        n = math.prod(shape)
        compact_buf = dst if strided_buf is src else src
        if compact_buf is not None:
            self._need(op, "the compact buffer", compact_buf.size, n)
        if n == 0:
            return
        key = (shape, strides, int(offset))
        plan = _VIEW_PLANS.get(key)
        if plan is None:
            if len(_VIEW_PLANS) >= 4096:  # bound the memory of odd workloads
                _VIEW_PLANS.clear()
            plan = _VIEW_PLANS[key] = (_launch.strided_view(shape, strides, offset, op),
                                       _launch.index_bits(n, shape, strides, offset))
        view, bits = plan
        grid, block = _launch.grid_1d(n, rt.sm_count)
        rt.launch(f"{kernel_prefix}_{suf}_i{bits}", (grid,), (block,),
                  (first_arg, _p(dst), view, np.int64(n)))

    def compact(self, a, out, shape, strides, offset):
        self._strided("compact", "compact", a, out, a, shape, strides, offset, _p(a))

    def ewise_setitem(self, a, out, shape, strides, offset):
        self._strided("ewise_setitem", "ewise_setitem", a, out, out, shape, strides, offset, _p(a))

    def scalar_setitem(self, size, val, out, shape, strides, offset):
        if int(size) != math.prod(int(s) for s in shape):
            raise ShapeError(f"scalar_setitem: size {size} != prod(shape {tuple(shape)})")
        self._strided("scalar_setitem", "scalar_setitem", None, out, out, shape, strides, offset,
                      self._scalar(out, val))

    # ------------------------------------------------------------------ #
    # element-wise
    # ------------------------------------------------------------------ #
    def _ewise(self, kernel, *bufs, val=None):
        names = ["a", "b"][: len(bufs) - 1] + ["out"]
        rt, suf = self._check(kernel, **dict(zip(names, bufs)))
        out = bufs[-1]
        for nm, b in zip(names, bufs):
            if b.size != out.size:
                raise ShapeError(f"{kernel}: '{nm}' has {b.size} elements, 'out' has {out.size}; "
                                 "element-wise kernels need equal sizes")
        n = out.size
        if n == 0:
            return
        vec = np.int32(all(b.ptr() % 16 == 0 for b in bufs))
        grid, block = _launch.grid_1d(n, rt.sm_count, 16 // out.dtype.itemsize)
        ins = [_p(b) for b in bufs[:-1]]
        if val is not None:
            ins.append(self._scalar(out, val))
        rt.launch(f"{kernel}_{suf}", (grid,), (block,), (*ins, _p(out), np.int64(n), vec))

    def ewise_add(self, a, b, out): self._ewise("ewise_add", a, b, out)
    def ewise_sub(self, a, b, out): self._ewise("ewise_sub", a, b, out)
    def ewise_mul(self, a, b, out): self._ewise("ewise_mul", a, b, out)
    def ewise_div(self, a, b, out): self._ewise("ewise_div", a, b, out)
    def ewise_pow(self, a, b, out): self._ewise("ewise_pow", a, b, out)
    def ewise_maximum(self, a, b, out): self._ewise("ewise_maximum", a, b, out)
    def ewise_eq(self, a, b, out): self._ewise("ewise_eq", a, b, out)
    def ewise_ge(self, a, b, out): self._ewise("ewise_ge", a, b, out)
    def ewise_relu_grad(self, a, g, out): self._ewise("ewise_relu_grad", a, g, out)
    def ewise_neg(self, a, out): self._ewise("ewise_neg", a, out)
    def ewise_log(self, a, out): self._ewise("ewise_log", a, out)
    def ewise_exp(self, a, out): self._ewise("ewise_exp", a, out)
    def ewise_tanh(self, a, out): self._ewise("ewise_tanh", a, out)
    def ewise_sqrt(self, a, out): self._ewise("ewise_sqrt", a, out)

    def rand_uniform(self, out, seed):
        """Op override: uniform numbers in [0, 1) from the protocol's counter-based
        generator (see OP_OVERRIDE_SIGNATURES["rand_uniform"]); one launch."""
        rt, suf = self._check("rand_uniform", out=out)
        s = rng_seed(seed)
        if out.size == 0:
            return
        grid, block = _launch.grid_1d(out.size, rt.sm_count)
        rt.launch(f"rand_uniform_{suf}", (grid,), (block,), (_p(out), s, np.int64(out.size)))

    def scalar_add(self, a, val, out): self._ewise("scalar_add", a, out, val=val)
    def scalar_sub(self, a, val, out): self._ewise("scalar_sub", a, out, val=val)
    def scalar_mul(self, a, val, out): self._ewise("scalar_mul", a, out, val=val)
    def scalar_div(self, a, val, out): self._ewise("scalar_div", a, out, val=val)
    def scalar_rdiv(self, a, val, out): self._ewise("scalar_rdiv", a, out, val=val)
    def scalar_power(self, a, val, out): self._ewise("scalar_power", a, out, val=val)
    def scalar_maximum(self, a, val, out): self._ewise("scalar_maximum", a, out, val=val)
    def scalar_eq(self, a, val, out): self._ewise("scalar_eq", a, out, val=val)
    def scalar_ge(self, a, val, out): self._ewise("scalar_ge", a, out, val=val)

    # ------------------------------------------------------------------ #
    # scalars read on the device (CUDA graph replay, see _replay.py): the
    # scalar_* kernels, fill and rand_uniform with their value taken from
    # vals[slot], a float64 device buffer that _set_scalars writes
    # ------------------------------------------------------------------ #
    @staticmethod
    def _vals_ok(op, rt, vals, slot):
        if not isinstance(vals, CudaArray) or vals._runtime is not rt:
            raise DeviceMismatchError(f"{op}: the scalar buffer is not a cuda buffer on cuda:{rt.index}")
        if vals.dtype != np.float64 or not 0 <= int(slot) < vals.size:
            raise ShapeError(f"{op}: slot {slot} is outside the float64 scalar buffer of {vals.size}")

    def _scalar_dev(self, kernel, a, out, vals, slot):
        """``kernel`` (one of the scalar_* ops) on ``a`` into ``out`` with the
        scalar read from ``vals[slot]`` when the kernel runs."""
        rt, suf = self._check(kernel, a=a, out=out)
        if a.size != out.size:
            raise ShapeError(f"{kernel}: 'a' has {a.size} elements, 'out' has {out.size}; "
                             "element-wise kernels need equal sizes")
        self._vals_ok(kernel, rt, vals, slot)
        n = out.size
        if n == 0:
            return
        vec = np.int32(a.ptr() % 16 == 0 and out.ptr() % 16 == 0)
        grid, block = _launch.grid_1d(n, rt.sm_count, 16 // out.dtype.itemsize)
        rt.launch(f"{kernel}_dev_{suf}", (grid,), (block,),
                  (_p(a), _p(vals), np.int64(slot), _p(out), np.int64(n), vec))

    def _fill_dev(self, out, vals, slot):
        rt, suf = self._check("fill", out=out)
        self._vals_ok("fill", rt, vals, slot)
        if out.size == 0:
            return
        grid, block = _launch.grid_1d(out.size, rt.sm_count, 16 // out.dtype.itemsize)
        rt.launch(f"fill_dev_{suf}", (grid,), (block,),
                  (_p(out), _p(vals), np.int64(slot), np.int64(out.size), np.int32(out.ptr() % 16 == 0)))

    def _rand_uniform_dev(self, out, vals, slot):
        """rand_uniform with the seed read from ``vals[slot]``; the caller checks
        each seed with :func:`rng_seed` before writing it there."""
        rt, suf = self._check("rand_uniform", out=out)
        self._vals_ok("rand_uniform", rt, vals, slot)
        if out.size == 0:
            return
        grid, block = _launch.grid_1d(out.size, rt.sm_count)
        rt.launch(f"rand_uniform_dev_{suf}", (grid,), (block,),
                  (_p(out), _p(vals), np.int64(slot), np.int64(out.size)))

    def _set_scalars(self, vals, values) -> None:
        """Queue ``vals[:len(values)] = values`` on the stream, in launches of
        SCALAR_BLOCK values passed by value (no host memory a queued copy reads)."""
        rt = vals._runtime
        host = np.asarray(values, dtype=np.float64)
        if host.size > vals.size:
            raise ShapeError(f"_set_scalars: {host.size} values for a buffer of {vals.size}")
        step = _kernels.SCALAR_BLOCK
        for first in range(0, host.size, step):
            chunk = np.zeros(step, dtype=np.float64)
            part = host[first:first + step]
            chunk[:part.size] = part
            rt.launch("set_scalars", (1,), (step,),
                      (_p(vals), chunk.view(np.int64), np.int64(first), np.int64(part.size)))

    # ------------------------------------------------------------------ #
    # row-wise: reductions, logsumexp, softmax
    # ------------------------------------------------------------------ #
    def _rowwise(self, op, a, out, rows, R, out_per_row):
        rt, suf = self._check(op, a=a, out=out)
        rows, R = int(rows), int(R)
        if R < 1:
            raise ShapeError(f"{op}: the reduced length must be >= 1, got {R}")
        self._need(op, "'a'", a.size, rows * R)
        self._need(op, "'out'", out.size, rows * (R if out_per_row else 1))
        if rows == 0:
            return
        plan = _launch.row_plan(rows, R, rt.sm_count)
        rt.launch(f"{op}_{plan.variant}_{suf}", (plan.grid,), (plan.block,),
                  (_p(a), _p(out), np.int64(rows), np.int64(R)))

    def _reduce(self, op, a, out, reduce_size):
        rt, _ = self._check(op, a=a, out=out)
        rows, R = out.size, int(reduce_size)
        pieces = _launch.split_rows(rows, R, rt.sm_count)
        if pieces == 1:
            self._rowwise(op, a, out, rows, R, False)
            return
        # two passes: (rows * pieces) partial results, then each row's pieces
        self._need(op, "'a'", a.size, rows * R)
        partial = CudaArray(rt, rows * pieces, a.dtype)
        self._rowwise(op, a, partial, rows * pieces, R // pieces, False)
        self._rowwise(op, partial, out, rows, pieces, False)

    def reduce_sum(self, a, out, reduce_size):
        self._reduce("reduce_sum", a, out, reduce_size)

    def reduce_max(self, a, out, reduce_size):
        self._reduce("reduce_max", a, out, reduce_size)

    def logsumexp(self, a, out, outer, inner):
        self._rowwise("logsumexp", a, out, outer, inner, False)

    def softmax(self, a, out, outer, inner):
        self._rowwise("softmax", a, out, outer, inner, True)

    # ------------------------------------------------------------------ #
    # matmul
    # ------------------------------------------------------------------ #
    @staticmethod
    def _dims_ok(op, **dims):
        for k, v in dims.items():
            if int(v) < 0 or int(v) > INT32_LIMIT:
                raise ShapeError(f"{op}: {k}={v} is outside [0, {INT32_LIMIT}]")

    def _gemm(self, family, rt, suf, M, K, N, batch, args):
        cfg = _launch.gemm_config(M, N, batch, rt.sm_count)
        grid = _launch.gemm_grid(M, N, batch, cfg)
        rt.launch(f"{family}_{suf}_{cfg.name}", grid, (256,), args)

    def matmul(self, a, b, out, m, n, p):
        self.matmul_strided(a, b, out, 1, m, n, p, (m * n, n, 1), 0, (n * p, p, 1), 0)

    def matmul_strided(self, a, b, out, batch, m, n, p, a_strides, a_offset, b_strides, b_offset):
        op = "matmul"
        rt, suf = self._check(op, a=a, b=b, out=out)
        self._dims_ok(op, batch=batch, m=m, n=n, p=p)
        batch, m, n, p = int(batch), int(m), int(n), int(p)
        if len(a_strides) != 3 or len(b_strides) != 3:
            raise ShapeError(f"{op}: a_strides and b_strides need 3 entries (batch, row, col)")
        self._need(op, "'out'", out.size, batch * m * p)
        if batch == 0 or m == 0 or p == 0:
            return
        self._view_ok(op, "a", a, (batch, m, n), a_strides, a_offset)
        self._view_ok(op, "b", b, (batch, n, p), b_strides, b_offset)
        pieces = _launch.split_k(batch, m, n, p, rt.sm_count)
        if pieces > 1:
            # the pieces of K as a batch of products into (pieces, m, p)
            # partials; then out = their sum, reduced as rows of (m*p, pieces)
            kp = n // pieces
            partial = CudaArray(rt, pieces * m * p, a.dtype)
            self._gemm_strided(rt, suf, a, b, partial, pieces, m, kp, p,
                               (kp * a_strides[2], a_strides[1], a_strides[2]), a_offset,
                               (kp * b_strides[1], b_strides[1], b_strides[2]), b_offset)
            rows = CudaArray(rt, pieces * m * p, a.dtype)
            self.compact(partial, rows, (m * p, pieces), (1, m * p), 0)
            self._rowwise("reduce_sum", rows, out, m * p, pieces, False)
            return
        self._gemm_strided(rt, suf, a, b, out, batch, m, n, p, a_strides, a_offset, b_strides, b_offset)

    def _gemm_strided(self, rt, suf, a, b, out, batch, m, n, p, a_strides, a_offset, b_strides, b_offset):
        da = _launch.strided_operand(a_offset, *a_strides)
        db = _launch.strided_operand(b_offset, *b_strides)
        self._gemm("matmul_strided", rt, suf, m, n, p, batch,
                   (_p(a), _p(b), _p(out), np.int32(m), np.int32(n), np.int32(p), np.int64(batch), da, db))

    def matmul_tiled(self, a, b, out, m, n, p):
        op = "matmul_tiled"
        rt, suf = self._check(op, a=a, b=b, out=out)
        t = self.__tile_size__
        if m % t or n % t or p % t:
            raise ShapeError(f"{op}: m, n, p must be multiples of the tile size {t}; got {m}, {n}, {p}")
        self._need(op, "'a'", a.size, m * n)
        self._need(op, "'b'", b.size, n * p)
        self._need(op, "'out'", out.size, m * p)
        if m * p == 0:
            return
        grid, block = _launch.grid_1d(m * p, rt.sm_count)
        rt.launch(f"matmul_tiled_{suf}", (grid,), (block,),
                  (_p(a), _p(b), _p(out), np.int64(m), np.int64(n), np.int64(p), np.int64(t)))

    # ------------------------------------------------------------------ #
    # convolution (op overrides): implicit GEMM, NHWC, weights (K, K, C_in, C_out)
    # ------------------------------------------------------------------ #
    def _conv_check(self, op, N, H, W, C_in, K, C_out, stride, padding, **bufs):
        """Validate a conv call; ``bufs`` maps each argument name to
        ``(buffer, role)`` with role "in" (N,H,W,C_in), "weight" (K,K,C_in,C_out)
        or "out" (N,Ho,Wo,C_out), whose sizes are checked.  Returns
        (runtime, dtype suffix, Ho, Wo)."""
        rt, suf = self._check(op, **{name: buf for name, (buf, _) in bufs.items()})
        self._dims_ok(op, N=N, H=H, W=W, C_in=C_in, K=K, C_out=C_out, padding=padding)
        if int(stride) < 1 or int(K) < 1:
            raise ShapeError(f"{op}: stride and K must be >= 1, got stride={stride}, K={K}")
        Ho = _launch.conv_out_size(H, K, stride, padding)
        Wo = _launch.conv_out_size(W, K, stride, padding)
        if Ho < 1 or Wo < 1:
            raise ShapeError(f"{op}: kernel {K} with padding {padding} does not fit a {H}x{W} input")
        big = {"N*H*W*C_in": N * H * W * C_in, "N*Ho*Wo*C_out": N * Ho * Wo * C_out,
               "K*K*C_in*C_out": K * K * C_in * C_out, "N*H*W": N * H * W, "K*K*C_out": K * K * C_out}
        self._dims_ok(op, **big)
        sizes = {"in": N * H * W * C_in, "weight": K * K * C_in * C_out, "out": N * Ho * Wo * C_out}
        for name, (buf, role) in bufs.items():
            self._need(op, f"'{name}'", buf.size, sizes[role])
        return rt, suf, Ho, Wo

    def conv(self, a, b, out, N, H, W, C_in, K, C_out, stride, padding):
        op = "conv"
        rt, suf, Ho, Wo = self._conv_check(op, N, H, W, C_in, K, C_out, stride, padding,
                                           a=(a, "in"), b=(b, "weight"), out=(out, "out"))
        M, Kd = N * Ho * Wo, K * K * C_in
        if M * C_out == 0:
            return
        g = _launch.conv_geom(N, H, W, C_in, K, C_out, stride, padding)
        self._gemm("conv_fwd", rt, suf, M, Kd, C_out, 1,
                   (_p(a), _p(b), _p(out), np.int32(M), np.int32(Kd), np.int32(C_out), g,
                    _launch.strided_operand(0, 0, C_out, 1)))

    def conv_grad_input(self, g, b, out, N, H, W, C_in, K, C_out, stride, padding):
        op = "conv_grad_input"
        rt, suf, Ho, Wo = self._conv_check(op, N, H, W, C_in, K, C_out, stride, padding,
                                           g=(g, "out"), b=(b, "weight"), out=(out, "in"))
        M, Kd = N * H * W, K * K * C_out
        if M * C_in == 0:
            return
        geom = _launch.conv_geom(N, H, W, C_in, K, C_out, stride, padding)
        self._gemm("conv_grad_input", rt, suf, M, Kd, C_in, 1,
                   (_p(g), _p(b), _p(out), np.int32(M), np.int32(Kd), np.int32(C_in), geom))

    def conv_grad_weight(self, a, g, out, N, H, W, C_in, K, C_out, stride, padding):
        op = "conv_grad_weight"
        rt, suf, Ho, Wo = self._conv_check(op, N, H, W, C_in, K, C_out, stride, padding,
                                           a=(a, "in"), g=(g, "out"), out=(out, "weight"))
        Mw, Kd = K * K * C_in, N * Ho * Wo
        if Mw * C_out == 0:
            return
        geom = _launch.conv_geom(N, H, W, C_in, K, C_out, stride, padding)
        self._gemm("conv_grad_weight", rt, suf, Mw, Kd, C_out, 1,
                   (_p(a), _p(g), _p(out), np.int32(Mw), np.int32(Kd), np.int32(C_out), geom,
                    _launch.strided_operand(0, 0, C_out, 1)))

    # ------------------------------------------------------------------ #
    # embedding (op overrides): nn.Embedding's row gather and its adjoint with
    # the indices on the device, stored in the table's dtype.  Pure device
    # work -- no host read, no allocation beyond scratch -- so needle.jit
    # captures both into its CUDA graphs.  A bad index (not a whole number in
    # [0, num)) is never read or written through; embedding_check notes the
    # first one in the device's error record and to_numpy / synchronize raise
    # it as OutOfBoundsError (see kernels/embedding.cu).
    # ------------------------------------------------------------------ #
    def _embedding_args(self, gather, a, ids, out, rows, num, dim):
        """What both embedding kernels check first -- buffers, sizes -- then the
        queued device-side check of the indices: ``(runtime, dtype suffix,
        rows, num, dim)``.  ``a`` is the table ``w`` (``gather``) or the rows'
        adjoint ``g`` (the scatter-add)."""
        op, name = ("embedding", "w") if gather else ("embedding_grad", "g")
        rt, suf = self._check(op, **{name: a}, ids=ids, out=out)
        self._dims_ok(op, rows=rows, num=num, dim=dim)
        rows, num, dim = int(rows), int(num), int(dim)
        table, per_row = num * dim, rows * dim
        self._need(op, f"'{name}'", a.size, table if gather else per_row)
        self._need(op, "'ids'", ids.size, rows)
        self._need(op, "'out'", out.size, per_row if gather else table)
        if rows:  # even where nothing is written: a bad index is an error
            self._embedding_check(rt, suf, op, ids, rows, num)
        return rt, suf, rows, num, dim

    @staticmethod
    def _embedding_check(rt, suf, op, ids, rows, num):
        """Queue the check of ``ids[:rows]`` that notes ``op``'s first bad index
        (one block: the first position, whatever the block scheduling)."""
        rt.launch(f"embedding_check_{suf}", (1,), (_kernels.EMB_BLOCK,),
                  (_p(ids), np.int64(rows), np.int64(num), rt.error_record(), np.int64(_kernels.EMB_OPS[op])))

    def embedding(self, w, ids, out, rows, num, dim):
        """Op override: ``out[i, :] = w[ids[i], :]`` (OP_OVERRIDE_SIGNATURES["embedding"]);
        a row whose index is bad is written as zeros, and the index reported."""
        rt, suf, rows, num, dim = self._embedding_args(True, w, ids, out, rows, num, dim)
        if rows * dim == 0:
            return
        grid, block = _launch.grid_1d(rows * 32, rt.sm_count)  # a warp per row
        rt.launch(f"embedding_{suf}", (grid,), (block,),
                  (_p(w), _p(ids), _p(out), np.int64(rows), np.int64(num), np.int64(dim)))

    def embedding_grad(self, g, ids, out, rows, num, dim):
        """Op override: ``out (num, dim)`` zero but for ``out[v, :]``, the sum of
        the ``g[i, :]`` with ``ids[i] == v`` added in increasing ``i``
        (OP_OVERRIDE_SIGNATURES["embedding_grad"]): the numpy backend's
        ``np.add.at``, bit for bit.  Four launches after the check: count, scan,
        fill (each id's row into sorted buckets, in an int32 scratch buffer of
        ``num + 1 + rows``) and sum; bad indices are left out of every bucket."""
        rt, suf, rows, num, dim = self._embedding_args(False, g, ids, out, rows, num, dim)
        if num * dim == 0:
            return
        # start[0..num] (bucket offsets), then order[0..rows) (the ids' positions by bucket)
        scratch = CudaArray(rt, num + 1 + rows, np.dtype(np.int32))
        start, order = _p(scratch), DevicePtr(scratch.ptr() + 4 * (num + 1))
        tile = _kernels.EMB_TILE
        tiles = max(1, min(math.ceil(num / tile), 32 * max(1, rt.sm_count), _launch.MAX_GRID_X))
        r, n = np.int64(rows), np.int64(num)
        rt.launch(f"embedding_grad_count_{suf}", (tiles,), (tile,), (_p(ids), r, n, start))
        rt.launch("embedding_grad_scan", (1,), (_kernels.EMB_BLOCK,), (start, n))
        rt.launch(f"embedding_grad_fill_{suf}", (tiles,), (tile,), (_p(ids), r, n, start, order))
        # a block per v, a thread per column (up to 256, the rest looped)
        block = 32 * math.ceil(min(dim, _launch.BLOCK) / 32)
        grid = max(1, min(num, 64 * max(1, rt.sm_count), _launch.MAX_GRID_X))
        rt.launch(f"embedding_grad_sum_{suf}", (grid,), (block,),
                  (_p(g), start, order, _p(out), n, np.int64(dim)))
