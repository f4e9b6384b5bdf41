"""Recurrent modules and embeddings: ``RNNCell``, ``RNN``, ``LSTMCell``,
``LSTM``, ``Embedding``.

Sequences are ``(seq_len, batch, features)``.  Weights are stored
``(in, out)`` and applied as ``x @ W`` (the transpose of PyTorch's
``weight_ih_l0``); LSTM gates are ordered i, f, g, o like PyTorch's.
"""

import math

import numpy as np

import needle.backend_ndarray as nd
from needle import init, ops
from needle.autograd import Tensor, TensorOp
from needle.backend_ndarray import NDArray, capture
from needle.errors import ArgumentError, ArgumentTypeError, JitError, ShapeError

from ._checks import check_choice, check_int
from .nn_basic import Module, Parameter

__all__ = ["RNNCell", "RNN", "LSTMCell", "LSTM", "Embedding"]


def _uniform(shape, hidden_size, device, dtype):
    bound = 1.0 / math.sqrt(hidden_size)
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype,
                               requires_grad=True))


def _check_positive(module, **sizes):
    for name, value in sizes.items():
        check_int(module, name, value, 1)


def _check_state_pair(module, h) -> None:
    """An LSTM state is the pair (h0, c0): anything else would fail in unpacking."""
    if not isinstance(h, (tuple, list)) or len(h) != 2:
        raise ArgumentTypeError(f"{module}: h must be None or a pair (h0, c0) of Tensors, got "
                                f"{type(h).__name__}")


def _check_shape(module, what, tensor, expected):
    """``expected`` is a tuple where ``None`` matches any size."""
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and s != e
                                          for s, e in zip(shape, expected)):
        sizes = ["*" if e is None else str(e) for e in expected]
        want = f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''})"  # a shape as Python writes it
        raise ShapeError(f"{module}: {what} has shape {shape}, expected {want}")


def _bias_row(bias_ih, bias_hh, width):
    """``bias_ih + bias_hh`` as a ``(1, width)`` row (None without biases).

    The two biases are always added together, so summing them once per call
    instead of broadcasting each one at every step saves work."""
    if bias_ih is None and bias_hh is None:
        return None
    if bias_ih is None:
        total = bias_hh
    elif bias_hh is None:
        total = bias_ih
    else:
        total = bias_ih + bias_hh
    return ops.reshape(total, (1, width))


def _affine(x, weight, bias_row):
    out = x @ weight
    if bias_row is not None:
        out = out + bias_row  # the add broadcasts the (1, G) row
    return out


class RNNCell(Module):
    """Elman cell: ``h' = act(X @ W_ih + bias_ih + h @ W_hh + bias_hh)``.

    ``forward(X (B, input_size), h (B, hidden_size) or None) -> (B, hidden_size)``.
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 device=None, dtype="float32"):
        super().__init__()
        _check_positive("RNNCell", input_size=input_size, hidden_size=hidden_size)
        check_choice("RNNCell", "nonlinearity", nonlinearity, ("tanh", "relu"))
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.nonlinearity = nonlinearity
        self.device, self.dtype = device, dtype
        H = self.hidden_size
        self.W_ih = _uniform((self.input_size, H), H, device, dtype)
        self.W_hh = _uniform((H, H), H, device, dtype)
        if bias:
            self.bias_ih = _uniform((H,), H, device, dtype)
            self.bias_hh = _uniform((H,), H, device, dtype)
        else:
            self.bias_ih = self.bias_hh = None

    def _activate(self, z):
        return ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z)

    def _step(self, x_proj, h):
        """One step given ``x_proj = X @ W_ih + bias_ih + bias_hh``."""
        return self._activate(x_proj + h @ self.W_hh)

    def forward(self, X, h=None):
        _check_shape("RNNCell", "input X", X, (None, self.input_size))
        batch = X.shape[0]
        if h is None:
            h = init.zeros(batch, self.hidden_size, device=X.device, dtype=X.dtype)
        else:
            _check_shape("RNNCell", "hidden state h", h, (batch, self.hidden_size))
        bias_row = _bias_row(self.bias_ih, self.bias_hh, self.hidden_size)
        return self._step(_affine(X, self.W_ih, bias_row), h)


class LSTMCell(Module):
    """LSTM cell with gates i, f, g, o (PyTorch's order).

    ``forward(X (B, input_size), h=None or (h0, c0) each (B, hidden_size))``
    returns ``(h', c')`` each ``(B, hidden_size)``.
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        _check_positive("LSTMCell", input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.device, self.dtype = device, dtype
        H = self.hidden_size
        self.W_ih = _uniform((self.input_size, 4 * H), H, device, dtype)
        self.W_hh = _uniform((H, 4 * H), H, device, dtype)
        if bias:
            self.bias_ih = _uniform((4 * H,), H, device, dtype)
            self.bias_hh = _uniform((4 * H,), H, device, dtype)
        else:
            self.bias_ih = self.bias_hh = None

    def _step(self, x_proj, h, c):
        """One step given ``x_proj = X @ W_ih + bias_ih + bias_hh``."""
        z = x_proj + h @ self.W_hh
        # gates i, f, g, o (the four H-wide chunks of z) and the new states in
        # one fused node: (B, 2, H) holding h' = o tanh(c'), c' = f c + i g
        h_new, c_new = ops.split(ops.lstm_gates(z, c), 1).tuple()
        return h_new, c_new

    def forward(self, X, h=None):
        _check_shape("LSTMCell", "input X", X, (None, self.input_size))
        batch, H = X.shape[0], self.hidden_size
        if h is None:
            h0 = init.zeros(batch, H, device=X.device, dtype=X.dtype)
            c0 = init.zeros(batch, H, device=X.device, dtype=X.dtype)
        else:
            _check_state_pair("LSTMCell", h)
            h0, c0 = h
            _check_shape("LSTMCell", "h0", h0, (batch, H))
            _check_shape("LSTMCell", "c0", c0, (batch, H))
        bias_row = _bias_row(self.bias_ih, self.bias_hh, 4 * H)
        return self._step(_affine(X, self.W_ih, bias_row), h0, c0)


def _project_all(inputs, cell, width_out):
    """``X_t @ W_ih + bias_ih + bias_hh`` for every step at once, ``(T, B, G)``:
    one ``(T*B, in) @ (in, G)`` matmul and one bias add instead of T of each."""
    T, B, width = inputs.shape
    bias_row = _bias_row(cell.bias_ih, cell.bias_hh, width_out)
    proj = _affine(ops.reshape(inputs, (T * B, width)), cell.W_ih, bias_row)
    return ops.reshape(proj, (T, B, proj.shape[1]))


def _project_sequence(inputs, cell, width_out):
    """:func:`_project_all` split into T ``(B, G)`` tensors."""
    return ops.split(_project_all(inputs, cell, width_out), 0).tuple()


def _check_steps(module, T):
    """As PyTorch: a sequence needs at least one step (an empty one has no last state)."""
    if T == 0:
        raise ShapeError(f"{module}: input X has no time steps (T = 0); the sequence length must be >= 1")


def _initial_states(module, h, num_layers, batch, hidden, device, dtype, what):
    """Per-layer ``(B, H)`` states from an ``(L, B, H)`` tensor, or zeros."""
    if h is None:
        return [init.zeros(batch, hidden, device=device, dtype=dtype)
                for _ in range(num_layers)]
    _check_shape(module, what, h, (num_layers, batch, hidden))
    return list(ops.split(h, 0).tuple())


class RNN(Module):
    """Multi-layer Elman RNN.

    ``forward(X (T, B, input_size), h0 (L, B, H) or None)`` returns
    ``(output (T, B, H), h_n (L, B, H))``: the last layer's hidden state at
    every step, and every layer's last hidden state.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh",
                 device=None, dtype="float32"):
        super().__init__()
        _check_positive("RNN", input_size=input_size, hidden_size=hidden_size,
                        num_layers=num_layers)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers = int(num_layers)
        self.device, self.dtype = device, dtype
        self.rnn_cells = [
            RNNCell(self.input_size if layer == 0 else self.hidden_size, self.hidden_size,
                    bias=bias, nonlinearity=nonlinearity, device=device, dtype=dtype)
            for layer in range(self.num_layers)
        ]

    def forward(self, X, h0=None):
        _check_shape("RNN", "input X", X, (None, None, self.input_size))
        T, B, _ = X.shape
        _check_steps("RNN", T)
        states = _initial_states("RNN", h0, self.num_layers, B, self.hidden_size,
                                 X.device, X.dtype, "h0")
        layer_input, last = X, []
        for cell, h in zip(self.rnn_cells, states):
            outputs = []
            for x_proj in _project_sequence(layer_input, cell, self.hidden_size):
                h = cell._step(x_proj, h)
                outputs.append(h)
            last.append(h)
            layer_input = ops.stack(outputs, 0)
        return layer_input, ops.stack(last, 0)


class LSTM(Module):
    """Multi-layer LSTM.

    ``forward(X (T, B, input_size), h=None or (h0, c0) each (L, B, H))``
    returns ``(output (T, B, H), (h_n, c_n) each (L, B, H))``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 device=None, dtype="float32"):
        super().__init__()
        _check_positive("LSTM", input_size=input_size, hidden_size=hidden_size,
                        num_layers=num_layers)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers = int(num_layers)
        self.device, self.dtype = device, dtype
        self.lstm_cells = [
            LSTMCell(self.input_size if layer == 0 else self.hidden_size, self.hidden_size,
                     bias=bias, device=device, dtype=dtype)
            for layer in range(self.num_layers)
        ]

    def forward(self, X, h=None):
        _check_shape("LSTM", "input X", X, (None, None, self.input_size))
        T, B, _ = X.shape
        _check_steps("LSTM", T)
        L, H = self.num_layers, self.hidden_size
        if h is None:
            h0 = c0 = None
        else:
            _check_state_pair("LSTM", h)
            h0, c0 = h
        hs = _initial_states("LSTM", h0, L, B, H, X.device, X.dtype, "h0")
        cs = _initial_states("LSTM", c0, L, B, H, X.device, X.dtype, "c0")
        layer_input, h_last, c_last = X, [], []
        for cell, h_t, c_t in zip(self.lstm_cells, hs, cs):
            # the recurrence as one node (ops.lstm_layer): the same arithmetic
            # as T cell steps, (T + 1, B, H) = every step's h, then the last c
            seq = ops.lstm_layer(_project_all(layer_input, cell, 4 * H), cell.W_hh, h_t, c_t)
            layer_input = seq[0:T]
            h_last.append(seq[T - 1])
            c_last.append(seq[T])
        return layer_input, (ops.stack(h_last, 0), ops.stack(c_last, 0))


class _RowGather(TensorOp):
    """``weight (V, D) -> weight[ids] (n, D)`` for a fixed flat int array ids.

    Equals ``one_hot(ids, V) @ weight`` exactly (each output row is one
    weight row) without the ``n x V`` one-hot matrix and its two
    ``n*V*D``-flop matmuls, which dominated a language-model step with a
    10,000-word vocabulary.  Works on any device through NumPy."""

    def __init__(self, ids):
        self.ids = ids

    def compute(self, weight):
        rows = weight.numpy()[self.ids]
        return nd.array(rows, dtype=rows.dtype, device=weight.device)

    def gradient(self, out_grad, node):
        return _RowScatterAdd(self.ids, node.inputs[0].shape[0])(out_grad)


class _RowScatterAdd(TensorOp):
    """``g (n, D) -> (V, D)`` whose row v is the sum of the rows of g with
    ``ids == v`` (= ``one_hot(ids, V)^T @ g``); the adjoint of ``_RowGather``."""

    def __init__(self, ids, num_rows):
        self.ids, self.num_rows = ids, num_rows
        # rows sharing an id are summed with one reduceat over a sorted order
        self.order = np.argsort(ids, kind="stable")
        sorted_ids = ids[self.order]
        if len(ids):
            self.starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        else:
            self.starts = np.zeros(0, dtype=np.int64)
        self.unique = sorted_ids[self.starts]

    def compute(self, g):
        g_np = g.numpy()
        out = np.zeros((self.num_rows, g_np.shape[1]), dtype=g_np.dtype)
        if len(self.ids):
            out[self.unique] = np.add.reduceat(g_np[self.order], self.starts, axis=0)
        return nd.array(out, dtype=out.dtype, device=g.device)

    def gradient(self, out_grad, node):
        return _RowGather(self.ids)(out_grad)


def _embedding_kernel(name: str, a, ids, out_shape, num: int):
    """The backend's ``embedding`` / ``embedding_grad`` op override on ``a``
    (the table, or the rows' adjoint) and the ids in its dtype."""
    ids = ids if ids.dtype == a.dtype else ids.cast(a.dtype)
    out = NDArray.call_op_override(name, (a, ids), out_shape, ids.size, num, a.shape[1])
    if out is None:
        raise JitError(f"needle.jit: nn.Embedding inside a captured step needs the backend's {name} kernel, "
                       f"which {a.device} lacks (at {capture.user_line()})")
    return out


class _DeviceRowGather(TensorOp):
    """``(weight (V, D), ids (n,)) -> weight[ids] (n, D)`` with the ids on the
    device (the backend's ``embedding`` op override): the row gather of a
    needle.jit capture, whose replays cannot read the ids on the host."""

    def compute(self, weight, ids):
        num, dim = weight.shape
        return _embedding_kernel("embedding", weight, ids, (ids.size, dim), num)

    def gradient_needed(self, out_grad, node, need):
        weight, ids = node.inputs
        gw = _DeviceRowScatterAdd(weight.shape[0])(out_grad, ids) if need[0] else None
        return gw, (ids * 0.0 if need[1] else None)  # indices: no adjoint


class _DeviceRowScatterAdd(TensorOp):
    """``(g (n, D), ids (n,)) -> (V, D)``, row v the sum of the rows of g with
    ``ids == v``: the adjoint of :class:`_DeviceRowGather` (``embedding_grad``)."""

    def __init__(self, num_rows):
        self.num_rows = num_rows

    def compute(self, g, ids):
        return _embedding_kernel("embedding_grad", g, ids, (self.num_rows, g.shape[1]), self.num_rows)

    def gradient_needed(self, out_grad, node, need):
        g, ids = node.inputs
        return (_DeviceRowGather()(out_grad, ids) if need[0] else None), (ids * 0.0 if need[1] else None)


class Embedding(Module):
    """Lookup table ``weight (num_embeddings, embedding_dim)``, N(0, 1) init.

    ``forward(x (T, B) of integer ids, stored as floats or ints)`` returns
    ``(T, B, embedding_dim)`` = ``one_hot(x) @ weight``, computed as a row
    gather (exactly the same values) whose gradient is the matching
    scatter-add (``one_hot^T @ g``).
    """

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        # as PyTorch: an empty table (0 rows or 0-wide rows) is valid
        check_int("Embedding", "num_embeddings", num_embeddings, 0)
        check_int("Embedding", "embedding_dim", embedding_dim, 0)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.device, self.dtype = device, dtype
        self.weight = Parameter(init.randn(self.num_embeddings, self.embedding_dim,
                                           device=device, dtype=dtype, requires_grad=True))

    def forward(self, x):
        shape = tuple(x.shape)
        if capture.capturing():
            # needle.jit: the ids stay on the device (a replay cannot read them;
            # the kernel refuses a bad one)
            if not isinstance(x, Tensor):
                x = Tensor(np.asarray(x), device=self.weight.device, dtype=self.weight.dtype,
                           requires_grad=False)
        else:
            ids = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
            ids = ids.reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings
                             or not np.all(ids == np.floor(ids))):
                raise ArgumentError(
                    f"Embedding: ids must be integers in [0, {self.num_embeddings}), got values "
                    f"from {ids.min()} to {ids.max()}")
            if not (isinstance(x, Tensor) and x.device == self.weight.device
                    and self.weight.device.op_override("embedding") is not None):
                out = _RowGather(ids.astype(np.int64))(self.weight)
                return ops.reshape(out, shape + (self.embedding_dim,))
        # the backend gathers on the device (no host copy of the table)
        out = _DeviceRowGather()(self.weight, ops.reshape(x.detach(), (x.size,)))
        return ops.reshape(out, shape + (self.embedding_dim,))
