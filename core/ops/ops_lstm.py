"""The LSTM cell's gate arithmetic as one op (``nn.LSTMCell``'s hot path),
and a whole layer's recurrence over a sequence as one op (``nn.LSTM``'s).

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
from .ops_mathematic import matmul, reshape, sigmoid, tanh
from .ops_tuple import split, stack
from .registry import register_op

__all__ = ["LSTMGates", "LSTMGatesGrad", "lstm_gates", "LSTMLayer", "LSTMLayerGrad", "lstm_layer"]


def _check(z: NDArray, c: NDArray):
    if z.ndim != 2 or c.ndim != 2 or z.shape[1] != 4 * c.shape[1] or z.shape[0] != c.shape[0]:
        raise ShapeError(f"lstm_gates: expected z (B, 4H) and c (B, H), got z {z.shape} and c {c.shape}")
    _same_device_dtype("lstm_gates", "z", z, (("c", c),))


def _same_device_dtype(op: str, name: str, first: NDArray, others):
    """Every ``(name, array)`` of ``others`` on ``first``'s device, in its dtype."""
    every = "both" if len(others) == 1 else "all"
    for other_name, x in others:
        if x.device != first.device:
            raise DeviceMismatchError(f"{op}: {name} is on {first.device} and {other_name} on "
                                      f"{x.device}; {every} must share one device")
        if x.dtype != first.dtype:
            raise UnsupportedDTypeError(f"{op}: {name} is {first.dtype} and {other_name} {x.dtype}; "
                                        f"{every} must share one dtype")


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


# --------------------------------------------------------------------------- #
# a whole layer: the recurrence over the sequence as one node
# --------------------------------------------------------------------------- #
def _check_layer(p: NDArray, w: NDArray, h0: NDArray, c0: NDArray):
    if p.ndim != 3 or p.shape[0] < 1 or p.shape[2] % 4:
        raise ShapeError(f"lstm_layer: expected p (T >= 1, B, 4H), got {p.shape}")
    steps, batch, width = p.shape
    hidden = width // 4
    if w.shape != (hidden, width) or h0.shape != (batch, hidden) or c0.shape != (batch, hidden):
        raise ShapeError(f"lstm_layer: for p {p.shape} expected w_hh ({hidden}, {width}) and h0, c0 "
                         f"({batch}, {hidden}), got {w.shape}, {h0.shape}, {c0.shape}")
    _same_device_dtype("lstm_layer", "p", p, (("w_hh", w), ("h0", h0), ("c0", c0)))


def _at(x: NDArray, t: int) -> NDArray:
    """``x[t]`` with the leading axis dropped: a view (no copy)."""
    return x[t].as_strided(x.shape[1:], x.strides[1:])


class LSTMLayer(TensorOp):
    """``(p (T, B, 4H), w_hh (H, 4H), h0 (B, H), c0 (B, H)) -> (T + 1, B, H)``:
    ``[t]`` is the hidden state after step t (t < T), ``[T]`` the last cell
    state.  Keeps each step's pre-activations and states for its backward."""

    def compute(self, p: NDArray, w: NDArray, h0: NDArray, c0: NDArray) -> NDArray:
        _check_layer(p, w, h0, c0)
        steps, batch, width = p.shape
        hidden = width // 4
        p = p.compact()
        gates = LSTMGates()
        # hs[0] = h0, hs[t + 1] = h after step t; the output is hs[1:] and c_T
        hs = NDArray.make((steps + 1, batch, hidden), device=p.device, dtype=p.dtype)
        hs[0:1] = h0
        zs, cs = [], [c0]
        h, c = h0, c0
        for t in range(steps):
            z = _at(p, t) + h @ w
            hc = gates.compute(z, c)
            h, c = hc[:, 0:1, :], hc[:, 1:2, :].compact().reshape((batch, hidden))
            hs[t + 1:t + 2] = h
            h = _at(hs, t + 1)
            zs.append(z)
            cs.append(c)
        self.saved = (zs, cs, hs)
        out = NDArray.make((steps + 1, batch, hidden), device=p.device, dtype=p.dtype)
        out[0:steps] = hs[1:]
        out[steps:steps + 1] = c
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        shared = {}
        return tuple(Tensor.make_from_op(LSTMLayerGrad(which, self, shared), tuple(node.inputs) + (out_grad,))
                     for which in range(4))


def _composed_layer(p: Tensor, w: Tensor, h: Tensor, c: Tensor) -> Tensor:
    """:class:`LSTMLayer` as Tensor ops (its higher-order gradients)."""
    hs = []
    for p_t in split(p, 0).tuple():
        h, c = split(_composed(p_t + matmul(h, w), c), 1).tuple()
        hs.append(h)
    return stack(hs + [c], 0)


class LSTMLayerGrad(TensorOp):
    """The adjoint of input ``which`` (0 p, 1 w_hh, 2 h0, 3 c0) of an
    :class:`LSTMLayer` node given ``g (T + 1, B, H)``: backpropagation through
    time over the states the forward kept.  The four made by one backward
    share one pass through ``shared``."""

    def __init__(self, which: int, forward: LSTMLayer, shared: dict = None):
        self.which, self.forward = which, forward
        self.shared = {} if shared is None else shared

    def compute(self, p: NDArray, w: NDArray, h0: NDArray, c0: NDArray, g: NDArray) -> NDArray:
        hit = self.shared.pop(self.which, None)
        if hit is not None and hit[0] is g:
            return hit[1]
        zs, cs, hs = self.forward.saved
        steps, batch, width = p.shape
        hidden = width // 4
        g_in, g = g, g.compact()  # the others are keyed by the array they were given
        dz_all = NDArray.make((steps, batch, width), device=p.device, dtype=p.dtype)
        wt = w.permute((1, 0))
        dc = _at(g, steps)
        dh = None
        for t in range(steps - 1, -1, -1):
            gh = _at(g, t)
            if dh is not None:
                gh = gh + dh
            both = NDArray.make((batch, 2, hidden), device=p.device, dtype=p.dtype)
            both[:, 0:1, :] = gh
            both[:, 1:2, :] = dc
            pair = {}
            dz = LSTMGatesGrad(0, pair).compute(zs[t], cs[t], both)
            dc = LSTMGatesGrad(1, pair).compute(zs[t], cs[t], both)
            dz_all[t:t + 1] = dz
            dh = dz @ wt
        rows = steps * batch
        dw = hs.as_strided((rows, hidden), (hidden, 1)).permute((1, 0)) @ dz_all.reshape((rows, width))
        grads = (dz_all, dw, dh, dc.compact())
        for k in range(4):
            if k != self.which:
                self.shared[k] = (g_in, grads[k])
        return grads[self.which]

    def gradient(self, out_grad: Tensor, node: Tensor):
        p, w, h0, c0, g = node.inputs
        first = local_vjp(_composed_layer(p, w, h0, c0), (p, w, h0, c0), g)
        return local_vjp(first[self.which], (p, w, h0, c0, g), out_grad)


def lstm_layer(p, w_hh, h0, c0):
    """An LSTM layer's recurrence over a sequence: ``p (T, B, 4H)`` holds each
    step's input projection (``X_t @ W_ih`` plus the biases), gates in the
    order i, f, g, o; returns ``(T + 1, B, H)``: the hidden state after each
    step, then the last cell state."""
    return LSTMLayer()(p, w_hh, h0, c0)


register_op("lstm_layer", LSTMLayer, lstm_layer)
