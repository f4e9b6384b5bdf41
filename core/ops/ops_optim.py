"""Multi-tensor optimizer steps (issue 14): one backend call updates every
parameter of a group.

These are not graph ops (optimizers work on detached arrays): each function
takes lists of NDArrays and returns new lists, or None when the backend does
not offer the op override (``sgd_step``/``adam_step`` in
``protocol.OP_OVERRIDE_SIGNATURES``) for these arrays -- then the optimizer
runs its per-parameter composition, which gives the same values
(``needle.optim``).  The results are fresh arrays, as the composition's
are, except where the caller names arrays to write into (``out_*``): the
optimizers name a parameter's or a state's own array when nothing else can
see it (``NDArray.unshared``), which saves a fresh buffer per parameter and
step -- a language model's 4 MB embedding and output weights came back as
new pages (huge-page faults, zeroing) every step.
"""

from __future__ import annotations

from ..backend_ndarray import NDArray
from ..errors import UnsupportedDTypeError
from ..protocol import ReplayScalar

__all__ = ["multi_tensor_sgd_step", "multi_tensor_adam_step"]


def _num(x) -> float:
    """``float(x)``, but a needle.jit replay-time scalar stays one."""
    return x if type(x) is ReplayScalar else float(x)


def _call(name, inputs, outputs, *args):
    try:
        return NDArray.call_multi_tensor_override(name, inputs, outputs, *args)
    except UnsupportedDTypeError:  # e.g. float64 parameters on a float32-only kernel
        return None


def multi_tensor_sgd_step(params, grads, moms, lr, momentum, weight_decay,
                          out_params=None, out_moms=None):
    """One SGD step (course API: ``u = m*u + (1-m)*g``, ``p - lr*u``;
    ``g = grad + wd*p``) over NDArray lists; ``moms`` is None without
    momentum (a missing state is zeros: ``m*0 + (1-m)*g`` is exactly the
    first step's ``(1-m)*g``).  ``out_params`` / ``out_moms``: per element an
    array to write the result into (may be the input) or None for a fresh
    one.  Returns ``(new_params, new_moms)`` or None."""
    has_mom = bool(momentum)
    out = _call("sgd_step", (list(params), list(grads), list(moms) if has_mom else None),
                (out_params or True, (out_moms or True) if has_mom else False),
                _num(lr), float(momentum), float(1 - momentum), float(weight_decay))
    return None if out is None else (out[0], out[1])


def multi_tensor_adam_step(params, grads, ms, vs, beta1, beta2, weight_decay, k, eps_s, frozen,
                           out_params=None, out_ms=None, out_vs=None):
    """One Adam step over NDArray lists with the scalars ``needle.optim.Adam``
    folds (``k``, ``eps_s``); ``out_*`` as in :func:`multi_tensor_sgd_step`.
    Returns ``(new_params, new_ms, new_vs)`` or None (``new_params`` is None
    when ``frozen``)."""
    out = _call("adam_step", (list(params), list(grads), list(ms), list(vs)),
                (False if frozen else (out_params or True), out_ms or True, out_vs or True),
                float(beta1), float(1 - beta1), float(beta2), float(1 - beta2), float(weight_decay),
                _num(k), _num(eps_s), bool(frozen))
    return None if out is None else (out[0], out[1], out[2])
