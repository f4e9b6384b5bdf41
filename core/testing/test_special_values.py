"""One NaN/inf semantics on every backend: the one NumPy and PyTorch share.

* ``relu`` and ``maximum`` (element-wise and scalar) propagate NaN from
  either side; ``relu(-inf) = 0``, ``relu(inf) = inf``.
* ``max`` and ``sum`` reductions follow ``numpy.max`` / ``numpy.sum``: a NaN
  anywhere in the reduced set gives NaN, ``inf + -inf`` is NaN.
* ``logsumexp`` is ``log(sum(exp(x)))`` evaluated exactly: a row holding
  ``+inf`` gives ``+inf`` (not ``inf - inf``), all ``-inf`` gives ``-inf``, a
  NaN gives NaN (``torch.logsumexp``).
* ``softmax`` and ``logsoftmax`` use the max-shifted formula of
  ``torch.softmax`` / ``scipy.special.softmax``: a row holding ``+inf`` or NaN,
  or all ``-inf``, is NaN throughout; ``-inf`` elsewhere gives exactly 0
  (``-inf`` for logsoftmax).

The rows are long enough (101 elements) to reach both the vector body and the
scalar tail of SIMD kernels, and the special value sits in each position
class (first, in the body, in the tail).  Expectations come from NumPy in
float64 (exact for these small finite values), never from a needle backend.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

kernel = pytest.mark.needle_kernel
nan, inf = np.nan, np.inf
# three 4 x 8-lane float32 blocks plus a 5-element scalar tail: a special value
# in the first block must survive two more blocks of vector max/add
WIDTH = 101


def _ndl():
    import needle as ndl  # an ImportError here fails the test: a broken needle.ops must not skip
    return ndl


def _rows():
    """(name, row) pairs: finite filler in [-2, 2] with special values planted."""
    base = np.linspace(-2.0, 2.0, WIDTH)
    rows = {"finite": base.copy()}
    for pos_name, pos in (("first", 0), ("body", 13), ("tail", WIDTH - 2)):
        for val_name, val in (("nan", nan), ("+inf", inf), ("-inf", -inf)):
            r = base.copy()
            r[pos] = val
            rows[f"{val_name}@{pos_name}"] = r
    r = base.copy(); r[3], r[60] = inf, -inf
    rows["+inf,-inf"] = r
    r = base.copy(); r[5], r[97] = inf, nan
    rows["+inf,nan"] = r
    rows["all -inf"] = np.full(WIDTH, -inf)
    rows["all +inf"] = np.full(WIDTH, inf)
    return list(rows.items())


ROWS = _rows()
MATRIX = np.stack([r for _, r in ROWS])


def _np(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args)


def _lse_ref(x):
    return _np(lambda a: np.log(np.exp(a).sum(axis=1)), x.astype(np.float64))


def _shifted(x):
    """x - rowmax (NaN-propagating max), as torch/scipy's softmax."""
    return _np(lambda a: a - a.max(axis=1, keepdims=True), x.astype(np.float64))


def _logsoftmax_ref(x):
    s = _shifted(x)
    return _np(lambda a: a - np.log(np.exp(a).sum(axis=1, keepdims=True)), s)


def _softmax_ref(x):
    s = _shifted(x)
    return _np(lambda a: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True), s)


def _tensor(x, device, dtype="float32"):
    ndl = _ndl()
    return ndl.Tensor(np.asarray(x, dtype=dtype), device=device, dtype=dtype, requires_grad=False)


def _check_rows(got, want, what):
    """Same NaN pattern, same infinities, finite values close; name the failing rows."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    bad = []
    for i, (name, _) in enumerate(ROWS):
        g, w = got[i], want[i]
        same = (np.isnan(g) == np.isnan(w)) & ((g == w) | np.isnan(w) | (np.abs(g - w) <= 1e-4 + 1e-4 * np.abs(w)))
        if not np.all(same):
            bad.append(f"{name}: got {g if g.ndim == 0 else g[~same][:4]}, want {w if w.ndim == 0 else w[~same][:4]}")
    assert not bad, f"{what} disagrees with NumPy on special values:\n  " + "\n  ".join(bad)


@pytest.fixture(params=("float32", "float64"))
def sdtype(request, conformance_device):
    if request.param not in conformance_device.require().dtypes:
        pytest.skip(f"backend declares dtypes {conformance_device.require().dtypes}")
    return request.param


@kernel("scalar_maximum")
def test_relu_propagates_nan(conformance_device, sdtype):
    ndl = _ndl()
    out = ndl.ops.relu(_tensor(MATRIX, conformance_device, sdtype)).numpy()
    _check_rows(out, _np(np.maximum, MATRIX, 0.0), "relu")


@kernel("ewise_maximum", "scalar_maximum")
def test_maximum_propagates_nan_from_either_side(conformance_device, sdtype):
    import needle.backend_ndarray as nd
    a = MATRIX
    b = np.roll(MATRIX, 1, axis=1)[::-1].copy()  # specials meet finite values and each other
    x = nd.array(a.astype(sdtype), device=conformance_device, dtype=sdtype)
    y = nd.array(b.astype(sdtype), device=conformance_device, dtype=sdtype)
    _check_rows(x.maximum(y).numpy(), np.maximum(a, b), "maximum(a, b)")
    _check_rows(y.maximum(x).numpy(), np.maximum(b, a), "maximum(b, a)")
    _check_rows(x.maximum(0.5).numpy(), np.maximum(a, 0.5), "maximum(a, 0.5)")
    assert np.isnan(x.maximum(nan).numpy()).all(), "maximum(a, nan) must be nan everywhere"


@kernel("reduce_max", "reduce_sum")
def test_max_and_sum_follow_numpy(conformance_device, sdtype):
    ndl = _ndl()
    t = _tensor(MATRIX, conformance_device, sdtype)
    _check_rows(ndl.ops.max(t, axes=(1,)).numpy(), _np(np.max, MATRIX, 1), "max over a row")
    _check_rows(ndl.ops.summation(t, axes=(1,)).numpy(), _np(np.sum, MATRIX, 1), "sum over a row")
    # over axis 0 (a strided reduction: each output gathers one column)
    tt = _tensor(MATRIX.T.copy(), conformance_device, sdtype)
    _check_rows(ndl.ops.max(tt, axes=(0,)).numpy(), _np(np.max, MATRIX, 1), "max over a column")
    _check_rows(ndl.ops.summation(tt, axes=(0,)).numpy(), _np(np.sum, MATRIX, 1), "sum over a column")


@kernel("override:logsumexp")
def test_logsumexp_follows_numpy(conformance_device, sdtype):
    ndl = _ndl()
    want = _lse_ref(MATRIX)
    assert want[[n for n, _ in ROWS].index("+inf@body")] == inf  # the reference itself
    out = ndl.ops.logsumexp(_tensor(MATRIX, conformance_device, sdtype), axes=(1,)).numpy()
    _check_rows(out, want, "logsumexp")
    # over the leading axis: the op permutes (override) or reduces a strided axis (composition)
    out0 = ndl.ops.logsumexp(_tensor(MATRIX.T.copy(), conformance_device, sdtype), axes=(0,)).numpy()
    _check_rows(out0, want, "logsumexp over axis 0")


@kernel("override:logsumexp")
def test_logsoftmax_and_softmax_follow_numpy(conformance_device, sdtype):
    ndl = _ndl()
    want = _logsoftmax_ref(MATRIX)
    assert np.isnan(want[[n for n, _ in ROWS].index("+inf@tail")]).all()  # the reference itself
    out = ndl.ops.logsoftmax(_tensor(MATRIX, conformance_device, sdtype))
    _check_rows(out.numpy(), want, "logsoftmax")
    _check_rows(ndl.ops.exp(out).numpy(), _softmax_ref(MATRIX), "softmax = exp(logsoftmax)")


@kernel("override:softmax")
def test_softmax_kernel_follows_numpy(conformance_device, sdtype):
    be = conformance_device.require()
    fn = dict(be.op_overrides() or {}).get("softmax")
    if fn is None:
        pytest.skip(f"backend {be.name!r} has no softmax override (the op uses its composition)")
    from .reference import from_buffer, to_buffer
    rows, width = MATRIX.shape
    out = be.Array(rows * width, np.dtype(sdtype))
    fn(to_buffer(be, MATRIX.astype(sdtype)), out, rows, width)
    want = _softmax_ref(MATRIX)
    _check_rows(from_buffer(be, out).reshape(rows, width), want, "softmax kernel")


UNARY_VALUES = np.array([nan, inf, -inf, 0.0, -0.0, 1.0, -1.0, 0.5, 20.0, -20.0, 80.0, -80.0, 3.0, 1e-3])


@kernel("ewise_exp", "ewise_log", "ewise_tanh", "ewise_sqrt")
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sqrt"])
def test_unary_math_on_special_values(conformance_device, sdtype, name):
    """NaN in, NaN out; exp(-inf) = 0, exp(inf) = inf, log(0) = -inf, log(-1) = nan,
    tanh(+-inf) = +-1, sqrt(-1) = nan -- in the vector body and the tail alike."""
    import needle.backend_ndarray as nd
    x = np.resize(UNARY_VALUES, 3 * 32 + 7)  # every value in every lane class
    if name == "log":
        x = np.abs(x)
        x[[1, 20, 50]] = -1.0
    want = _np(getattr(np, name), x.astype(np.float64))
    a = nd.array(x.astype(sdtype), device=conformance_device, dtype=sdtype)
    got = getattr(a, name)().numpy().astype(np.float64)
    same = (np.isnan(got) == np.isnan(want)) & (np.isnan(want) | (got == want)
                                                  | (np.abs(got - want) <= 1e-6 + 1e-5 * np.abs(want)))
    assert same.all(), f"{name}: inputs {x[~same][:6]} gave {got[~same][:6]}, NumPy {want[~same][:6]}"
