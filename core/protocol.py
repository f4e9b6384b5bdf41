"""The array protocol: the contract between needle's core and a backend.

A backend plugin subclasses :class:`Backend` and implements its kernels.  The
core (``NDArray``) owns every view concept -- shapes, strides, offsets,
broadcasting, slicing -- and hands a backend only flat buffers plus the
integers that describe how to walk them.  This module is the only part of
needle that a plugin needs to import.

Conventions shared by every kernel
----------------------------------
* A *buffer* is the object returned by :meth:`Backend.Array`.  It has a
  ``size`` attribute (number of elements it was asked for), a ``dtype``
  attribute (a ``numpy.dtype``) and a ``ptr()`` method returning an integer
  that identifies its storage (its address for native backends).
* Sizes, shapes, strides and offsets are counted in **elements**, never bytes.
* Every kernel writes its result into an ``out`` buffer that the core
  allocated beforehand with the right size and dtype; kernels never allocate
  their results.  ``out`` never aliases an input unless the kernel says so.
* All buffers passed to one kernel call share one dtype (the core converts
  before calling).  Comparison kernels write 0.0/1.0 in that same dtype.
* The core has validated every shape, stride and offset before a kernel
  runs: for strided kernels every reachable index ``offset + sum(i_k *
  strides[k])`` lies inside the buffer.  A kernel may therefore skip bounds
  checks -- but must not read or write outside what the arguments describe.
* "Compact" means row-major and dense: element ``i`` of the logical array is
  element ``i`` of the buffer.

Optional kernels and op overrides
---------------------------------
Methods below marked *optional* have a default implementation here, built
from the required kernels, so an older or simpler backend keeps working when
the protocol grows.  A backend overrides them when it can do better.

Products and binary element-wise ops take their operands *through strides*
(:meth:`Backend.matmul_strided`, :meth:`Backend.matmul_batched`,
:meth:`Backend.ewise_strided`): ``NDArray`` passes transposed, permuted and
broadcast (stride 0) views as they are, and never compacts them first.  A
backend that reads strides in place (the ``cpu`` backend packs GEMM operands
straight from them) saves the copy; one that does not inherits defaults that
gather compact operands and call the compact kernels, as the core used to.

*Op overrides* are fused kernels for whole ops (convolution, logsumexp, ...).
A backend defines them as methods named after the op's registry name, and
:meth:`Backend.op_overrides` lists them; the op uses the override when present
(through ``NDArray.call_op_override``) and its composition of protocol kernels
otherwise.  The signature of each known override is documented in
:data:`OP_OVERRIDE_SIGNATURES`.
"""

from __future__ import annotations

import abc
import numbers
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, UnsupportedDTypeError
from .hookspecs import hookimpl

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "Backend",
    "hookimpl",
    "OP_OVERRIDE_SIGNATURES",
    "ReplayScalar",
    "check_seed",
    "counter_uniform",
    "UnsupportedDTypeError",
]

#: Version of this protocol.  Bumped when a kernel is added (minor, optional
#: kernels get defaults) or changed (major).  A backend declares the version
#: it was written for in :attr:`Backend.protocol_version`.
#: 2: optional ``matmul_batched`` and ``ewise_strided`` (operands read in
#: place through their strides).
#: 3: optional ``compile_replay`` (a native replay of a needle.jit step) and
#: the op overrides ``rand_uniform``, ``embedding``, ``embedding_grad``.
PROTOCOL_VERSION = 3

#: Oldest protocol version a backend may declare and still be loaded.
MIN_PROTOCOL_VERSION = 1


class ReplayScalar(float):
    """A scalar kernel argument that changes between replays of a captured
    step (``needle.jit``): the learning rate, Adam's folded bias corrections,
    a dropout seed.  It is a ``float`` holding its value at capture, so a
    kernel that receives one during capture just uses it; ``slot`` indexes the
    ``scalars`` sequence that a native replay's ``run`` receives (see
    :meth:`Backend.compile_replay`)."""

    def __new__(cls, value: float, slot: int):
        obj = super().__new__(cls, value)
        obj.slot = slot
        return obj

    def __reduce__(self):
        return (ReplayScalar, (float(self), self.slot))


def counter_uniform(n: int, seed: int, dtype) -> np.ndarray:
    """The ``rand_uniform`` op override's numbers in NumPy (the reference a
    backend's kernel must equal bit for bit): element ``i`` is the splitmix64
    mix of ``seed * 0x9E3779B97F4A7C15 + i`` (mod 2**64), its top 24 bits
    scaled to [0, 1) for float32, its top 53 for float64."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.arange(n, dtype=np.uint64)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    if np.dtype(dtype) == np.float32:
        return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def check_seed(seed) -> int:
    """``rand_uniform``'s seed checked against its contract -- a whole number
    in [0, 2**32), given as an int or a float (a :class:`ReplayScalar` is a
    float) -- as an int.  A float such as 3.5 or nan is refused rather than
    truncated: two different seeds must never draw the same numbers."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Real):
        raise ArgumentTypeError(
            f"rand_uniform: the seed must be a whole number (int or float), got {type(seed).__name__}")
    if isinstance(seed, numbers.Integral):
        value = int(seed)
    else:
        f = float(seed)
        if not f.is_integer():
            raise ArgumentError(f"rand_uniform: the seed must be a whole number, got {f!r}")
        value = int(f)
    if not 0 <= value < 2**32:
        raise ArgumentError(f"rand_uniform: the seed must be in [0, 2**32), got {value}")
    return value


def _collapse_batch(shape: tuple, strides: tuple):
    """The one stride that walks batch axes ``shape`` (row-major) given their
    ``strides``, or None when they do not collapse into one (size-1 axes are
    ignored; all-zero strides collapse to 0)."""
    dims = [(d, s) for d, s in zip(shape, strides) if d != 1]
    if not dims:
        return 0
    for (d0, s0), (d1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * d1:
            return None
    return dims[-1][1]


#: The argument lists of the op overrides the core knows how to call.
OP_OVERRIDE_SIGNATURES: dict[str, str] = {
    "conv": (
        "conv(a, b, out, N, H, W, C_in, K, C_out, stride, padding) -- a: compact "
        "NHWC input (N,H,W,C_in); b: compact weights (K,K,C_in,C_out); out: compact "
        "(N,H_out,W_out,C_out) with H_out=(H+2*padding-K)//stride+1 (W_out alike). "
        "Zero padding, cross-correlation."
    ),
    "conv_grad_input": (
        "conv_grad_input(g, b, out, N, H, W, C_in, K, C_out, stride, padding) -- g: "
        "compact (N,H_out,W_out,C_out) adjoint; b: weights; out: compact (N,H,W,C_in) "
        "gradient with respect to the (unpadded) input."
    ),
    "conv_grad_weight": (
        "conv_grad_weight(a, g, out, N, H, W, C_in, K, C_out, stride, padding) -- a: "
        "input; g: adjoint; out: compact (K,K,C_in,C_out) gradient of the weights."
    ),
    "sum_leading": (
        "sum_leading(a, out, outer, inner) -- a: compact (outer, inner); out: (inner,) "
        "with out[j] = sum_i a[i,j]: a sum over leading axes (a bias's gradient) without "
        "the transposed copy the composition makes."
    ),
    "logsumexp": (
        "logsumexp(a, out, outer, inner) -- a: compact (outer, inner); out: (outer,) "
        "with out[i] = log(sum_j exp(a[i,j])) computed stably (max subtracted)."
    ),
    "softmax": (
        "softmax(a, out, outer, inner) -- a, out: compact (outer, inner); each row "
        "of out is the softmax of the row of a (max subtracted)."
    ),
    # ---- issue 14 fused ops: softmax cross-entropy, multi-tensor optimizer steps ----
    "softmax_xent": (
        "softmax_xent(z, labels, out, rows, classes) -- z: compact logits (rows, classes); "
        "labels: (rows,) class indices stored in z's dtype; out: (rows,) with "
        "out[i] = logsumexp(z[i, :]) - z[i, labels[i]] (max subtracted; no one-hot matrix). "
        "The core has checked the labels; a kernel still refuses (OutOfBoundsError) a label "
        "outside [0, classes) rather than read outside a row."
    ),
    "softmax_xent_grad": (
        "softmax_xent_grad(z, labels, g, out, rows, classes) -- z, labels as softmax_xent; "
        "g: (rows,) adjoint of the per-row losses; out: compact (rows, classes) with "
        "out[i, j] = (softmax(z[i, :])_j - [j == labels[i]]) * g[i]."
    ),
    "sgd_step": (
        "sgd_step(params, grads, moms, out_params, out_moms, lr, momentum, one_minus_momentum, "
        "weight_decay) -- one call for a whole parameter group: lists of compact buffers, "
        "list by list of equal sizes; moms and out_moms are None when momentum is 0. "
        "Per element: g = grad + weight_decay*p (when weight_decay != 0); u' = momentum*u + "
        "one_minus_momentum*g and g = u' (with momentum); p' = p - lr*g. Results go to the out "
        "buffers; an out buffer may be its input's own buffer (out_params[i] is params[i], "
        "out_moms[i] is moms[i]: the optimizers update arrays nothing else sees in place), so "
        "each element is read before it is written; no other input is ever written. A backend raises UnsupportedDTypeError for a "
        "dtype it does not do; the optimizer then runs its per-parameter composition."
    ),
    "adam_step": (
        "adam_step(params, grads, ms, vs, out_params, out_ms, out_vs, beta1, c1, beta2, c2, "
        "weight_decay, k, eps_s, frozen) -- one call for a whole parameter group (lists as "
        "sgd_step). Per element: g = grad + weight_decay*p (when weight_decay != 0); m' = "
        "beta1*m + c1*g; v' = beta2*v + (c2*g)*g; unless frozen, p' = p - m' / (sqrt(v'*k) + "
        "eps_s) (k, eps_s fold lr and the bias corrections; see needle.optim.Adam); frozen: "
        "out_params is left unwritten. As in sgd_step, out_params / out_ms / out_vs may be "
        "the buffers of params / ms / vs themselves."
    ),
}

# random numbers made on the device (needle.jit: a captured dropout draws a fresh
# mask every replay from a seed the replay passes in)
OP_OVERRIDE_SIGNATURES["rand_uniform"] = (
    "rand_uniform(out, seed) -- out: compact; seed: a whole number in [0, 2**32) "
    "(a float or int). Element i gets a uniform number in [0, 1) from the counter-based "
    "generator z = splitmix64_mix(seed * 0x9E3779B97F4A7C15 + i) (mod 2**64; mix: z ^= z >> 30; "
    "z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31), "
    "u = (z >> 40) * 2**-24 for float32 and (z >> 11) * 2**-53 for float64, so every "
    "backend draws the same stream."
)

# an embedding's row gather and its adjoint with the indices on the device
# (nn.Embedding inside a needle.jit capture: a replay cannot read them on the host)
OP_OVERRIDE_SIGNATURES["embedding"] = (
    "embedding(w, ids, out, rows, num, dim) -- w: compact (num, dim); ids: (rows,) indices "
    "stored in w's dtype; out: compact (rows, dim) with out[i, :] = w[ids[i], :]. A kernel "
    "refuses (OutOfBoundsError) an index that is not a whole number in [0, num)."
)
OP_OVERRIDE_SIGNATURES["embedding_grad"] = (
    "embedding_grad(g, ids, out, rows, num, dim) -- g: compact (rows, dim); ids as embedding; "
    "out: compact (num, dim) with out[v, :] = the sum of g[i, :] over the i with ids[i] == v, "
    "added in increasing i (zero rows elsewhere)."
)

# [i14f2 fused norm] batch-norm op overrides (ops.batch_norm_train): every
# operand is compact and viewed as (outer, channels, inner), normalised per
# channel -- (B, D) is (B, D, 1), NCHW is (N, C, H*W), channels-last memory
# (N*H*W, C, 1).  The four go together: a backend offers all or none.
OP_OVERRIDE_SIGNATURES.update({
    "batch_norm_stats": (
        "batch_norm_stats(x, w, out, outer, channels, inner, eps) -- x: compact (outer, "
        "channels, inner) with outer*inner >= 1; w: (channels,); out: (4, channels), the rows "
        "mean, biased variance var, inv_std = (var + eps) ** -0.5 and scale = inv_std * w of "
        "each channel over the outer and inner axes (var, var + eps and the power each "
        "rounded to the dtype, as the composition rounds them)."
    ),
    "batch_norm_apply": (
        "batch_norm_apply(x, st, sh, out, outer, channels, inner) -- x, out: compact (outer, "
        "channels, inner); st: batch_norm_stats's (4, channels) rows; sh: (channels,); "
        "out = (x - mean[c]) * scale[c] + sh[c]."
    ),
    "batch_norm_grad_stats": (
        "batch_norm_grad_stats(g, x, st, out, outer, channels, inner) -- g, x: compact "
        "(outer, channels, inner); st: batch_norm_stats's (4, channels) rows; out: (2, "
        "channels), row 0 the sum of g and row 1 the sum of g * (x - mean) (rounded to the "
        "dtype) times inv_std, over each channel."
    ),
    "batch_norm_grad_input": (
        "batch_norm_grad_input(g, x, st, gs, out, outer, channels, inner) -- g, x, out: "
        "compact (outer, channels, inner); st: batch_norm_stats's rows; gs: "
        "batch_norm_grad_stats's (2, channels) rows; with n = outer * inner, out = g * a[c] "
        "+ (x - mean[c]) * b[c] + k[c] where a = scale, b = scale * inv_std * gs[1] * (-1/n) "
        "and k = scale * gs[0] * (-1/n), each product rounded to the dtype left to right."
    ),
    # rows over the last axis (ops.softmax, ops.layer_norm): compact (outer, inner)
    "softmax_grad": (
        "softmax_grad(y, g, out, outer, inner) -- y (a softmax), g, out: compact "
        "(outer, inner); out = y * (g - sum_j(g * y)) for each row."
    ),
    "layer_norm": (
        "layer_norm(x, w, b, out, outer, inner, eps) -- x, out: compact (outer, inner); "
        "w, b: (inner,); each row out = (x - mean) / sqrt(var + eps) * w + b with the "
        "row's mean and biased variance."
    ),
    "layer_norm_grad_input": (
        "layer_norm_grad_input(g, x, w, out, outer, inner, eps) -- the input's adjoint "
        "of layer_norm: out = (gw - mean(gw) - xhat * mean(gw * xhat)) / sqrt(var + eps) "
        "per row, gw = g * w."
    ),
    "layer_norm_grad_params": (
        "layer_norm_grad_params(g, x, out, outer, inner, eps) -- out: (2, inner), row 0 "
        "the sum over rows of g * xhat (the weight's adjoint), row 1 the sum of g."
    ),
    "lstm_gates": (
        "lstm_gates(z, c, out, batch, hidden) -- z: compact (B, 4H), the pre-activations "
        "of the gates i, f, g, o; c: (B, H); out: (B, 2, H) with out[:, 1] = c' = "
        "sigmoid(f) * c + sigmoid(i) * tanh(g) and out[:, 0] = h' = sigmoid(o) * tanh(c')."
    ),
    "lstm_gates_grad": (
        "lstm_gates_grad(z, c, g, out, batch, hidden) -- g: (B, 2, H), the adjoints of h' "
        "and c'; out: B*4H + B*H elements, the adjoint of z (B, 4H) followed by that of c (B, H)."
    ),
})
# [/i14f2 fused norm]


_DTYPE_CACHE: dict = {}


class Backend(abc.ABC):
    """Abstract array backend.  Subclass it and implement every abstract kernel.

    Class attributes a subclass sets:

    * ``name`` -- the backend's name (``"numpy"``, ``"cpu"``, ``"cuda"``).
    * ``version`` -- the plugin's own version string.
    * ``protocol_version`` -- the :data:`PROTOCOL_VERSION` it was written for.
    * ``dtypes`` -- the dtypes it supports, as NumPy dtype names.
    * ``__tile_size__`` -- tile edge of :meth:`matmul_tiled` (course API).
    * ``host_memory`` -- True when every buffer's ``ptr()`` is a host address
      of ``size * dtype.itemsize`` bytes the CPU may read and write while the
      buffer lives.  Then :meth:`NDArray.host_view` shares it with NumPy
      (zero-copy exchange with host libraries such as MPI).  Default False.
    """

    name: str = "abstract"
    host_memory: bool = False
    version: str = "0"
    protocol_version: int = PROTOCOL_VERSION
    dtypes: tuple[str, ...] = ("float32", "float64")
    __tile_size__: int = 8

    # ------------------------------------------------------------------ #
    # Availability and devices
    # ------------------------------------------------------------------ #
    def is_available(self) -> tuple[bool, str]:
        """Return ``(True, "")`` when usable here, else ``(False, reason)``.

        Called once, lazily, the first time the backend is listed or used.  It
        must not raise; the reason is shown to users verbatim ("no NVIDIA
        driver found", ...).
        """
        return True, ""

    def device_names(self) -> list[str]:
        """Names of the devices this backend offers, e.g. ``["cpu"]`` or
        ``["cuda", "cuda:1"]``.  The first is its default device.  Only called
        when the backend is available."""
        return [self.name]

    def for_device(self, device_name: str) -> "Backend":
        """The backend object that serves ``device_name`` (one of
        :meth:`device_names`).  Backends whose buffers belong to one device
        (a GPU each) return one instance per device; the default serves every
        device with ``self``."""
        return self

    def config(self) -> dict[str, Any]:
        """Build and runtime facts shown by ``needle.show_config()``: e.g.
        ``{"openmp": True, "simd": "avx2", "threads": 2}``."""
        return {}

    def check_dtype(self, dtype: np.dtype, op: str = "allocate") -> np.dtype:
        """Return ``dtype`` as a ``numpy.dtype`` or raise
        :class:`UnsupportedDTypeError` naming the backend and the dtype."""
        key = (self.dtypes, dtype)
        try:
            return _DTYPE_CACHE[key]
        except KeyError:
            pass
        except TypeError:  # unhashable dtype spec
            key = None
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise UnsupportedDTypeError(f"{op}: {dtype!r} is not a dtype") from None
        if dt.name not in self.dtypes:
            raise UnsupportedDTypeError(
                f"{op}: backend '{self.name}' does not support dtype {dt.name}; "
                f"supported: {', '.join(self.dtypes)}"
            )
        if key is not None:
            _DTYPE_CACHE[key] = dt  # allocation is on every op's hot path
        return dt

    def compile_replay(self, program: Sequence[tuple[str, tuple]]):
        """*Optional.* A native replay of a captured step, or None.

        ``program`` is the step ``needle.jit`` recorded and planned: a list of
        ``(name, args)`` where ``name`` is one of this backend's kernels or op
        overrides and ``args`` the exact arguments to call it with (buffers
        of this backend, ints, floats, tuples, lists of buffers, strings).
        A scalar that changes between replays comes as a :class:`ReplayScalar`.
        The calls run in order; every buffer stays alive while the returned
        object does.

        Return an object with ``run(scalars)``: execute every call in order
        (``scalars[s.slot]`` replacing each ReplayScalar ``s``), raising after
        the calls when a kernel reported an error.  The default returns None
        and needle replays the program from Python, calling the kernels one
        by one -- correct on every backend, but with a Python call per kernel
        that a native loop (``cpu``) or a CUDA graph (``cuda``) avoids.
        """
        return None

    def op_overrides(self) -> Mapping[str, Callable[..., None]]:
        """Fused kernels for whole ops, keyed by op name: every method of the
        backend named like a key of :data:`OP_OVERRIDE_SIGNATURES` (``conv``,
        ``logsumexp`` ...), so defining the method is all a backend does."""
        return {name: getattr(self, name) for name in OP_OVERRIDE_SIGNATURES
                if callable(getattr(self, name, None))}

    # ------------------------------------------------------------------ #
    # Buffers
    # ------------------------------------------------------------------ #
    @abc.abstractmethod
    def Array(self, size: int, dtype: np.dtype = np.dtype("float32")):  # noqa: N802 (course name)
        """Allocate an uninitialised buffer of ``size`` elements of ``dtype``.

        ``size`` may be 0.  The returned object has ``size``, ``dtype`` and
        ``ptr()``.  Raise :class:`UnsupportedDTypeError` for a dtype not in
        :attr:`dtypes` and ``MemoryError`` when the memory is not there."""

    @abc.abstractmethod
    def from_numpy(self, a: np.ndarray, out) -> None:
        """Copy the C-contiguous 1-D NumPy array ``a`` (same dtype and size as
        ``out``) into ``out``."""

    @abc.abstractmethod
    def to_numpy(self, a, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
        """Return a NumPy array (a copy, or a read-only view the caller copies)
        of the strided view ``(shape, strides, offset)`` of buffer ``a``."""

    @abc.abstractmethod
    def fill(self, out, value: float) -> None:
        """Set every element of ``out`` to ``value``."""

    # ------------------------------------------------------------------ #
    # Strided copies
    # ------------------------------------------------------------------ #
    @abc.abstractmethod
    def compact(self, a, out, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Gather the strided view of ``a`` into compact ``out``.

        ``out[i]`` = ``a[offset + sum(idx_k * strides[k])]`` where ``idx`` is
        the row-major multi-index of ``i`` in ``shape``.  ``out.size ==
        prod(shape)``.  Strides may be 0 (broadcast) but never negative."""

    @abc.abstractmethod
    def ewise_setitem(self, a, out, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Scatter compact ``a`` (``prod(shape)`` elements) into the strided view
        ``(shape, strides, offset)`` of ``out`` -- the inverse of :meth:`compact`.
        The view never has stride 0 on an axis longer than 1."""

    @abc.abstractmethod
    def scalar_setitem(self, size: int, val: float, out, shape: Sequence[int],
                       strides: Sequence[int], offset: int) -> None:
        """Write ``val`` to every element of the strided view of ``out``;
        ``size == prod(shape)``."""

    # ------------------------------------------------------------------ #
    # Element-wise kernels: a, b, out compact with the same size.
    # ------------------------------------------------------------------ #
    @abc.abstractmethod
    def ewise_add(self, a, b, out) -> None:
        """``out = a + b``."""

    @abc.abstractmethod
    def ewise_mul(self, a, b, out) -> None:
        """``out = a * b``."""

    @abc.abstractmethod
    def ewise_div(self, a, b, out) -> None:
        """``out = a / b`` (IEEE: x/0 is ±inf or nan)."""

    @abc.abstractmethod
    def ewise_maximum(self, a, b, out) -> None:
        """``out = max(a, b)``."""

    @abc.abstractmethod
    def ewise_eq(self, a, b, out) -> None:
        """``out = 1.0 if a == b else 0.0``."""

    @abc.abstractmethod
    def ewise_ge(self, a, b, out) -> None:
        """``out = 1.0 if a >= b else 0.0``."""

    @abc.abstractmethod
    def ewise_log(self, a, out) -> None:
        """``out = ln(a)`` (nan below 0, -inf at 0)."""

    @abc.abstractmethod
    def ewise_exp(self, a, out) -> None:
        """``out = exp(a)``."""

    @abc.abstractmethod
    def ewise_tanh(self, a, out) -> None:
        """``out = tanh(a)``."""

    # Scalar kernels: a and out compact with the same size; val a Python float.
    @abc.abstractmethod
    def scalar_add(self, a, val: float, out) -> None:
        """``out = a + val``."""

    @abc.abstractmethod
    def scalar_mul(self, a, val: float, out) -> None:
        """``out = a * val``."""

    @abc.abstractmethod
    def scalar_div(self, a, val: float, out) -> None:
        """``out = a / val``."""

    @abc.abstractmethod
    def scalar_power(self, a, val: float, out) -> None:
        """``out = a ** val`` (nan for a negative base and a non-integer val)."""

    @abc.abstractmethod
    def scalar_maximum(self, a, val: float, out) -> None:
        """``out = max(a, val)``."""

    @abc.abstractmethod
    def scalar_eq(self, a, val: float, out) -> None:
        """``out = 1.0 if a == val else 0.0``."""

    @abc.abstractmethod
    def scalar_ge(self, a, val: float, out) -> None:
        """``out = 1.0 if a >= val else 0.0``."""

    # ------------------------------------------------------------------ #
    # Reductions over the last axis of a compact (outer, reduce_size) array
    # ------------------------------------------------------------------ #
    @abc.abstractmethod
    def reduce_sum(self, a, out, reduce_size: int) -> None:
        """``out[i] = sum(a[i*reduce_size:(i+1)*reduce_size])``;
        ``out.size * reduce_size == a.size``; ``reduce_size >= 1``."""

    @abc.abstractmethod
    def reduce_max(self, a, out, reduce_size: int) -> None:
        """``out[i] = max(a[i*reduce_size:(i+1)*reduce_size])``; ``reduce_size >= 1``."""

    # ------------------------------------------------------------------ #
    # Matrix multiplication
    # ------------------------------------------------------------------ #
    @abc.abstractmethod
    def matmul(self, a, b, out, m: int, n: int, p: int) -> None:
        """``out (m, p) = a (m, n) @ b (n, p)``, all compact.  ``n`` may be 0
        (out is then zeros)."""

    # ------------------------------------------------------------------ #
    # Optional kernels (defaults compose the required ones)
    # ------------------------------------------------------------------ #
    def matmul_strided(self, a, b, out, batch: int, m: int, n: int, p: int,
                       a_strides: Sequence[int], a_offset: int,
                       b_strides: Sequence[int], b_offset: int) -> None:
        """*Optional.* Batched matmul on strided operands, compact output.

        ``out[t, i, j] = sum_k a[a_offset + t*as0 + i*as1 + k*as2] *
        b[b_offset + t*bs0 + k*bs1 + j*bs2]`` with ``(as0, as1, as2) =
        a_strides`` and likewise for b; ``out`` is compact ``(batch, m, p)``.
        Strides may be 0 (broadcast batch) or swapped (a transposed operand),
        so a backend can pack operands directly instead of copying them
        compact first.  The default gathers each operand compact and calls
        :meth:`matmul` per batch."""
        dt = out.dtype
        ta, tb, to = self.Array(m * n, dt), self.Array(n * p, dt), self.Array(m * p, dt)
        for t in range(batch):
            self.compact(a, ta, (m, n), tuple(a_strides[1:]), a_offset + t * a_strides[0])
            self.compact(b, tb, (n, p), tuple(b_strides[1:]), b_offset + t * b_strides[0])
            self.matmul(ta, tb, to, m, n, p)
            self.ewise_setitem(to, out, (m, p), (p, 1), t * m * p)

    def matmul_batched(self, a, b, out, batch_shape: Sequence[int], m: int, n: int, p: int,
                       a_strides: Sequence[int], a_offset: int,
                       b_strides: Sequence[int], b_offset: int) -> None:
        """*Optional.* :meth:`matmul_strided` over several batch axes whose
        strides need not collapse into one (an attention layout: ``(B, S, H,
        D)`` permuted to ``(B, H, S, D)``).  ``a_strides`` has
        ``len(batch_shape) + 2`` entries (batch axes, then row and column; 0
        for a broadcast batch axis), likewise ``b_strides``; ``out`` is compact
        ``batch_shape + (m, p)``.  The default gathers an operand compact when
        its batch axes do not collapse and calls :meth:`matmul_strided`."""
        nb = 1
        for d in batch_shape:
            nb *= d
        ops = []
        for x, st, off, (r, c) in ((a, a_strides, a_offset, (m, n)), (b, b_strides, b_offset, (n, p))):
            bs = _collapse_batch(tuple(batch_shape), tuple(st[:-2]))
            if bs is None:  # no single batch stride: gather (batch, r, c) compact
                shape, strides = tuple(batch_shape) + (r, c), tuple(st)
                tmp = self.Array(nb * r * c, out.dtype)
                self.compact(x, tmp, shape, strides, off)
                x, off, st, bs = tmp, 0, (c, 1), r * c
            ops.append((x, (bs, st[-2], st[-1]), off))
        (xa, sa, oa), (xb, sb, ob) = ops
        self.matmul_strided(xa, xb, out, nb, m, n, p, sa, oa, sb, ob)

    #: binary kernels :meth:`ewise_strided` may be asked to run
    EWISE_STRIDED_KERNELS = ("ewise_add", "ewise_sub", "ewise_mul", "ewise_div", "ewise_maximum",
                             "ewise_eq", "ewise_ge", "ewise_relu_grad", "ewise_pow")

    def ewise_strided(self, kernel: str, a, b, out, shape: Sequence[int],
                      a_strides: Sequence[int], a_offset: int,
                      b_strides: Sequence[int], b_offset: int) -> None:
        """*Optional.* A binary element-wise kernel on strided operands,
        compact output: ``out[idx] = kernel(a[a_offset + idx . a_strides],
        b[b_offset + idx . b_strides])`` for every index ``idx`` of ``shape``
        (``prod(shape) >= 1``).  ``kernel`` is one of
        :attr:`EWISE_STRIDED_KERNELS` (``"ewise_relu_grad"``: a is the input,
        b the gradient).  Strides may be 0 (a broadcast operand) or anything
        a view has (transposed, sliced), so a backend can read them in place
        instead of materialising a broadcast or a compact copy first; values
        must equal the compact kernel's.  The default gathers both operands
        compact and calls the compact kernel."""
        if kernel not in self.EWISE_STRIDED_KERNELS:
            raise ValueError(f"ewise_strided: kernel must be one of {self.EWISE_STRIDED_KERNELS}, "
                             f"got {kernel!r}")
        shape = tuple(shape)
        size, dense = 1, []
        for d in reversed(shape):
            dense.insert(0, size)
            size *= d

        def gathered(x, strides, offset):
            if (offset == 0 and x.size == size
                    and all(d == 1 or s == c for d, s, c in zip(shape, strides, dense))):
                return x  # already the whole buffer, dense: no copy
            tmp = self.Array(size, out.dtype)
            self.compact(x, tmp, shape, tuple(strides), offset)
            return tmp

        getattr(self, kernel)(gathered(a, a_strides, a_offset), gathered(b, b_strides, b_offset), out)

    def matmul_tiled(self, a, b, out, m: int, n: int, p: int) -> None:
        """*Optional* (course API).  Matmul on tiled buffers: ``a`` is
        ``(m/T, n/T, T, T)``, ``b`` ``(n/T, p/T, T, T)``, ``out`` ``(m/T, p/T, T,
        T)`` with ``T = __tile_size__``; m, n, p are multiples of T.  Overwrites
        ``out`` entirely."""
        t = self.__tile_size__
        dt = out.dtype
        ca, cb, co = self.Array(m * n, dt), self.Array(n * p, dt), self.Array(m * p, dt)
        # untile: (m/T, T, n/T, T) view of the tiled layout
        self.compact(a, ca, (m // t, t, n // t, t), (n * t, t, t * t, 1), 0)
        self.compact(b, cb, (n // t, t, p // t, t), (p * t, t, t * t, 1), 0)
        self.matmul(ca, cb, co, m, n, p)
        self.ewise_setitem(co, out, (m // t, t, p // t, t), (p * t, t, t * t, 1), 0)

    def ewise_sub(self, a, b, out) -> None:
        """*Optional.* ``out = a - b``."""
        self.scalar_mul(b, -1.0, out)
        self.ewise_add(a, out, out)

    def ewise_pow(self, a, b, out) -> None:
        """*Optional.* ``out = a ** b`` element-wise (nan for a negative base
        and a non-integer exponent).  Default: exp(b * log a), exact for a > 0."""
        self.ewise_log(a, out)
        self.ewise_mul(out, b, out)
        self.ewise_exp(out, out)

    def scalar_rdiv(self, a, val: float, out) -> None:
        """*Optional.* ``out = val / a``."""
        self.fill(out, val)
        self.ewise_div(out, a, out)

    def scalar_sub(self, a, val: float, out) -> None:
        """*Optional.* ``out = a - val``."""
        self.scalar_add(a, -val, out)

    def ewise_neg(self, a, out) -> None:
        """*Optional.* ``out = -a``."""
        self.scalar_mul(a, -1.0, out)

    def ewise_sqrt(self, a, out) -> None:
        """*Optional.* ``out = sqrt(a)`` (nan below 0), correctly rounded as
        IEEE sqrt is.  Default: ``scalar_power(a, 0.5)`` (same values up to
        float rounding, usually much slower than a native square root), times
        ``m / m`` with ``m = (a >= 0)``: 1, or nan below 0 -- IEEE pow gives
        ``pow(-inf, 0.5) = +inf`` where sqrt gives nan."""
        mask = self.Array(out.size, out.dtype)
        self.scalar_ge(a, 0.0, mask)
        self.ewise_div(mask, mask, mask)
        self.scalar_power(a, 0.5, out)
        self.ewise_mul(out, mask, out)

    def ewise_relu_grad(self, a, g, out) -> None:
        """*Optional.* ``out = g if a > 0 else 0`` (ReLU's backward)."""
        # a > 0  ==  1 - (0 >= a)  ==  1 - ge(-a, 0)
        self.scalar_mul(a, -1.0, out)
        self.scalar_ge(out, 0.0, out)
        self.scalar_mul(out, -1.0, out)
        self.scalar_add(out, 1.0, out)
        self.ewise_mul(out, g, out)


def kernel_names() -> list[str]:
    """Names of every protocol kernel (required and optional), in definition order."""
    skip = {"is_available", "device_names", "for_device", "config", "check_dtype", "op_overrides",
            "compile_replay"}
    return [
        n for n, v in Backend.__dict__.items()
        if callable(v) and not n.startswith("_") and n not in skip
    ]


def required_kernel_names() -> list[str]:
    """Names of the abstract kernels every backend must implement."""
    return sorted(Backend.__abstractmethods__)
