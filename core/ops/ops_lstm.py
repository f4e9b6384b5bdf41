"""The LSTM cell's gate arithmetic as one op (``nn.LSTMCell``'s hot path).

``lstm_gates(z, c)`` takes the pre-activations ``z (B, 4H)`` of the gates
i, f, g, o (PyTorch's order) and the cell state ``c (B, H)`` and returns
``(B, 2, H)``: ``[:, 0]`` is ``h' = sigmoid(o) * tanh(c')``, ``[:, 1]`` is
``c' = sigmoid(f) * c + sigmoid(i) * tanh(g)`` (course API's LSTMCell).  It
replaces the ~15 nodes of the composition; its backward is two nodes
(``LSTMGatesGrad`` for z and for c) sharing one kernel call.  Backends
without the ``lstm_gates`` override run the NDArray composition; higher-order
gradients differentiate the Tensor composition (``local_vjp``).
"""

from __future__ import annotations

from ..autograd import Tensor, TensorOp, local_vjp
from ..backend_ndarray import NDArray
from ..errors import DeviceMismatchError, ShapeError, UnsupportedDTypeError
from .ops_mathematic import reshape, sigmoid, tanh
from .ops_tuple import split, stack
from .registry import register_op

__all__ = ["LSTMGates", "LSTMGatesGrad", "lstm_gates"]


def _check(z: NDArray, c: NDArray):
    if z.ndim != 2 or c.ndim != 2 or z.shape[1] != 4 * c.shape[1] or z.shape[0] != c.shape[0]:
        raise ShapeError(f"lstm_gates: expected z (B, 4H) and c (B, H), got z {z.shape} and c {c.shape}")
    if z.device != c.device:
        raise DeviceMismatchError(f"lstm_gates: z is on {z.device} and c on {c.device}; "
                                  f"both must share one device")
    if z.dtype != c.dtype:
        raise UnsupportedDTypeError(f"lstm_gates: z is {z.dtype} and c {c.dtype}; both must "
                                    f"share one dtype")


def _sig(a: NDArray) -> NDArray:
    return ((a * 0.5).tanh() + 1.0) * 0.5  # as ops.sigmoid


def _gates(z: NDArray, hidden: int):
    z = z.compact()
    h = hidden
    i, f, g, o = (z[:, k * h:(k + 1) * h] for k in range(4))
    return _sig(i), _sig(f), g.tanh(), _sig(o)


class LSTMGates(TensorOp):
    """``(z (B, 4H), c (B, H)) -> (B, 2, H)`` holding ``h'`` and ``c'``."""

    def compute(self, z: NDArray, c: NDArray) -> NDArray:
        _check(z, c)
        batch, hidden = c.shape
        out = NDArray.call_op_override("lstm_gates", (z, c), (batch, 2, hidden), batch, hidden)
        if out is not None:
            return out
        i, f, g, o = _gates(z, hidden)
        c_new = f * c + i * g
        out = NDArray.make((batch, 2, hidden), device=z.device, dtype=z.dtype)
        out[:, 1:2, :] = c_new.reshape((batch, 1, hidden))
        out[:, 0:1, :] = (o * c_new.tanh()).compact().reshape((batch, 1, hidden))
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        z, c = node.inputs
        shared = {}
        return (Tensor.make_from_op(LSTMGatesGrad(0, shared), (z, c, out_grad)),
                Tensor.make_from_op(LSTMGatesGrad(1, shared), (z, c, out_grad)))


def _composed(z: Tensor, c: Tensor) -> Tensor:
    """The course's LSTMCell arithmetic as Tensor ops, stacked as (B, 2, H)."""
    batch, hidden = c.shape
    i, f, g, o = split(reshape(z, (batch, 4, hidden)), 1).tuple()
    i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    c_new = f * c + i * g
    return stack([o * tanh(c_new), c_new], 1)


class LSTMGatesGrad(TensorOp):
    """The adjoint of z (``which=0``, (B, 4H)) or of c (``which=1``, (B, H)) of
    :class:`LSTMGates`; inputs ``(z, c, g)`` with ``g (B, 2, H)``.  The two
    made by one backward share one kernel call through ``shared``."""

    def __init__(self, which: int, shared: dict = None):
        self.which = which
        self.shared = {} if shared is None else shared

    def compute(self, z: NDArray, c: NDArray, g: NDArray) -> NDArray:
        cached = self.shared.pop(self.which, None)
        if cached is not None and cached[0] is g:
            return cached[1]
        g_in = g
        batch, hidden = c.shape
        both = NDArray.call_op_override("lstm_gates_grad", (z, c, g), (5 * batch * hidden,), batch, hidden)
        if both is not None:
            nz = 4 * batch * hidden
            parts = (both[0:nz].compact().reshape((batch, 4 * hidden)),
                     both[nz:].compact().reshape((batch, hidden)))
        else:
            i, f, gg, o = _gates(z, hidden)
            g = g.compact()
            gh = g[:, 0:1, :].compact().reshape((batch, hidden))
            gc = g[:, 1:2, :].compact().reshape((batch, hidden))
            c = c.compact()
            th = (f * c + i * gg).tanh()
            dcn = gc + gh * o * (1.0 - th * th)
            dz = NDArray.make((batch, 4 * hidden), device=z.device, dtype=z.dtype)
            for k, part in enumerate((dcn * gg * i * (1.0 - i), dcn * c * f * (1.0 - f),
                                      dcn * i * (1.0 - gg * gg), gh * th * o * (1.0 - o))):
                dz[:, k * hidden:(k + 1) * hidden] = part
            parts = (dz, dcn * f)
        self.shared[1 - self.which] = (g_in, parts[1 - self.which])
        return parts[self.which]

    def gradient(self, out_grad: Tensor, node: Tensor):
        z, c, g = node.inputs
        # the first-order adjoint rebuilt from Tensor ops, then differentiated
        zc = local_vjp(_composed(z, c), (z, c), g)
        return local_vjp(zc[self.which], (z, c, g), out_grad)


def lstm_gates(z, c):
    """LSTM gate arithmetic: ``(B, 2, H)`` holding ``h'`` and ``c'`` from the gate
    pre-activations ``z (B, 4H)`` (order i, f, g, o) and the cell state ``c``."""
    return LSTMGates()(z, c)


register_op("lstm_gates", LSTMGates, lstm_gates)
