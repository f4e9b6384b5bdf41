"""Attention modules: ``MultiHeadAttention``, ``AttentionLayer``,
``TransformerLayer`` and the decoder-style ``Transformer`` (hw4_extra).

Layouts: attention heads work on ``(B, H, T, D)``; layers on ``(B, T, D)``;
``Transformer`` takes ``(T, B, E)`` unless ``batch_first``.

Random draws happen in a fixed order (attention-probs dropout, then the
three dropouts of each layer) because golden values come from a seeded
NumPy global RNG.
"""

import math

import numpy as np

import needle.backend_ndarray as nd
from needle import init, ops
from needle.autograd import Tensor
from needle.errors import ShapeError

from ._checks import check_int, check_probability
from .nn_basic import Dropout, LayerNorm1d, Linear, Module, ReLU
from .nn_sequence import Embedding

__all__ = ["MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer"]


class MultiHeadAttention(Module):
    """Scaled dot-product attention over already-projected heads.

    ``forward(q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv))`` returns
    ``(result (B, H, Tq, Dv), probs (B, H, Tq, Tk))``; ``probs`` is returned
    after dropout.  With ``causal`` a query at row r (of Tq) may look at keys
    up to column ``r + Tk - Tq``.
    """

    def __init__(self, *, dropout=0.0, causal=False, device=None, dtype="float32"):
        check_probability("MultiHeadAttention", "dropout", dropout)
        super().__init__()
        self.device, self.dtype = device, dtype
        self.causal = causal
        self.dropout = Dropout(dropout)

    def create_causal_mask(self, i, j, device):
        """NDArray ``(1, 1, i, j)``: ``-finfo(float32).max`` where
        ``col - row >= j - i + 1`` (the future), 0 elsewhere."""
        mask = -np.finfo(np.float32).max * np.triu(np.ones((1, 1, i, j), dtype=np.float32),
                                                   j - i + 1)
        return nd.array(mask, dtype="float32", device=device)

    def matmul(self, a, b_transpose):
        """``a @ b_transpose^T`` batched over all leading axes:
        ``(..., m, d) x (..., n, d) -> (..., m, n)``."""
        return a @ ops.transpose(b_transpose)

    def softmax(self, logit):
        """Softmax over axis 3 of a 4-D tensor (one fused node, ``ops.softmax``:
        the row max is subtracted for stability and cancels in the result)."""
        if len(logit.shape) != 4:
            raise ShapeError(f"MultiHeadAttention.softmax: logit must be (B, H, Tq, Tk), "
                             f"got shape {tuple(logit.shape)}")
        return ops.softmax(logit)

    def forward(self, q, k, v):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if len(t.shape) != 4:
                raise ShapeError(f"MultiHeadAttention: {name} must be (B, H, T, D), "
                                 f"got shape {tuple(t.shape)}")
        B, H, Tq, D = q.shape
        _, _, Tk, _ = k.shape
        if tuple(k.shape[:2]) != (B, H) or k.shape[3] != D or tuple(v.shape[:3]) != (B, H, Tk):
            raise ShapeError(
                f"MultiHeadAttention: q {tuple(q.shape)}, k {tuple(k.shape)} and v "
                f"{tuple(v.shape)} must share B and H, q and k must share D, "
                f"k and v must share T")
        logits = self.matmul(q, k) / math.sqrt(D)
        if self.causal:
            mask = Tensor(self.create_causal_mask(Tq, Tk, logits.device),
                          device=logits.device, dtype=logits.dtype, requires_grad=False)
            logits = logits + mask  # (1, 1, Tq, Tk) broadcasts over batch and heads
        probs = self.dropout(self.softmax(logits))
        return probs @ v, probs


class AttentionLayer(Module):
    """Pre-norm multi-head attention with its projections.

    ``forward(q (B, Tq, q_features), k=None, v=None)`` (k and v default to q)
    returns ``(B, Tq, out_features)``.
    """

    def __init__(self, q_features, num_head, dim_head, *, k_features=None, v_features=None,
                 out_features=None, dropout=0.0, causal=True, device=None, dtype="float32"):
        for name, value in (("q_features", q_features), ("num_head", num_head), ("dim_head", dim_head)):
            check_int("AttentionLayer", name, value, 1)
        for name, value in (("k_features", k_features), ("v_features", v_features),
                            ("out_features", out_features)):
            if value is not None:
                check_int("AttentionLayer", name, value, 1)
        check_probability("AttentionLayer", "dropout", dropout)
        super().__init__()
        self.device, self.dtype = device, dtype
        k_features = q_features if k_features is None else k_features
        v_features = q_features if v_features is None else v_features
        out_features = q_features if out_features is None else out_features
        self.q_features, self.k_features, self.v_features = q_features, k_features, v_features
        self.out_features = out_features
        self.num_head, self.dim_head = num_head, dim_head
        inner = num_head * dim_head

        self.prenorm_q = LayerNorm1d(q_features, device=device, dtype=dtype)
        self.prenorm_k = LayerNorm1d(k_features, device=device, dtype=dtype)
        self.prenorm_v = LayerNorm1d(v_features, device=device, dtype=dtype)
        self.q_projection = Linear(q_features, inner, bias=False, device=device, dtype=dtype)
        self.k_projection = Linear(k_features, inner, bias=False, device=device, dtype=dtype)
        self.v_projection = Linear(v_features, inner, bias=False, device=device, dtype=dtype)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, device=device, dtype=dtype)
        self.out_projection = Linear(inner, out_features, bias=False, device=device, dtype=dtype)

    def _heads(self, x, prenorm, projection, features, what):
        if len(x.shape) != 3 or x.shape[2] != features:
            raise ShapeError(f"AttentionLayer: {what} has shape {tuple(x.shape)}, "
                             f"expected (B, T, {features})")
        B, T, _ = x.shape
        x = projection(prenorm(x))
        # (B, T, H*D) -> (B, T, H, D) -> (B, H, T, D)
        return ops.transpose(ops.reshape(x, (B, T, self.num_head, self.dim_head)), (1, 2))

    def forward(self, q, k=None, v=None):
        k = q if k is None else k
        v = q if v is None else v
        qh = self._heads(q, self.prenorm_q, self.q_projection, self.q_features, "q")
        B, Tq = q.shape[0], q.shape[1]  # after _heads has checked q is (B, T, q_features)
        kh = self._heads(k, self.prenorm_k, self.k_projection, self.k_features, "k")
        vh = self._heads(v, self.prenorm_v, self.v_projection, self.v_features, "v")
        result, _ = self.attn(qh, kh, vh)
        # (B, H, Tq, D) -> (B, Tq, H, D) -> (B, Tq, H*D)
        result = ops.reshape(ops.transpose(result, (1, 2)),
                             (B, Tq, self.num_head * self.dim_head))
        return self.out_projection(result)


class TransformerLayer(Module):
    """Pre-norm transformer block on ``(B, T, q_features)``:

    ``x = x + Dropout(attn(x))``;
    ``x = x + Dropout(Linear2(Dropout(ReLU(Linear1(LayerNorm(x))))))``.
    """

    def __init__(self, q_features, num_head, dim_head, hidden_size, *, dropout=0.0,
                 causal=True, device=None, dtype="float32"):
        for name, value in (("q_features", q_features), ("num_head", num_head), ("dim_head", dim_head),
                            ("hidden_size", hidden_size)):
            check_int("TransformerLayer", name, value, 1)
        check_probability("TransformerLayer", "dropout", dropout)
        super().__init__()
        self.device, self.dtype = device, dtype
        self.attn_layer = AttentionLayer(q_features, num_head, dim_head, dropout=dropout,
                                         causal=causal, device=device, dtype=dtype)
        self.norm = LayerNorm1d(q_features, device=device, dtype=dtype)
        self.linear1 = Linear(q_features, hidden_size, device=device, dtype=dtype)
        self.linear2 = Linear(hidden_size, q_features, device=device, dtype=dtype)
        self.relu = ReLU()
        self.dropout_attn = Dropout(dropout)
        self.dropout_inner = Dropout(dropout)
        self.dropout_outer = Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout_attn(self.attn_layer(x))
        inner = self.dropout_inner(self.relu(self.linear1(self.norm(x))))
        return x + self.dropout_outer(self.linear2(inner))


class Transformer(Module):
    """Stack of causal ``TransformerLayer`` s with a learned positional embedding.

    ``forward(x (T, B, E) or (B, T, E) if batch_first, h=None)`` returns
    ``(output in the input layout, zeros_like(x))``; the second item mirrors
    the ``(output, state)`` interface of ``RNN``/``LSTM``.
    """

    def __init__(self, embedding_size, hidden_size, num_layers, *, num_head=8, dim_head=32,
                 dropout=0.0, causal=True, device=None, dtype="float32", batch_first=False,
                 sequence_len=2048):
        for name, value in (("embedding_size", embedding_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("num_head", num_head), ("dim_head", dim_head),
                            ("sequence_len", sequence_len)):
            check_int("Transformer", name, value, 1)
        check_probability("Transformer", "dropout", dropout)
        super().__init__()
        self.device, self.dtype = device, dtype
        self.embedding_size = embedding_size
        self.batch_first = batch_first
        self.sequence_len = sequence_len
        self.positional_embedding = Embedding(sequence_len, embedding_size,
                                              device=device, dtype=dtype)
        self.layers = [
            TransformerLayer(embedding_size, num_head, dim_head, hidden_size, dropout=dropout,
                             causal=causal, device=device, dtype=dtype)
            for _ in range(num_layers)
        ]

    def forward(self, x, h=None):
        if len(x.shape) != 3 or x.shape[2] != self.embedding_size:
            raise ShapeError(f"Transformer: input has shape {tuple(x.shape)}, expected "
                             f"({'B, T' if self.batch_first else 'T, B'}, {self.embedding_size})")
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        B, T, E = x.shape
        if T > self.sequence_len:
            raise ShapeError(f"Transformer: sequence length {T} exceeds sequence_len "
                             f"{self.sequence_len} of the positional embedding")
        # embed positions once as (1, T) and broadcast over the batch
        positions = Tensor(np.arange(T, dtype=np.float32).reshape(1, T), device=x.device,
                           dtype=x.dtype, requires_grad=False)
        x = x + self.positional_embedding(positions)  # (1, T, E) broadcasts over B
        for layer in self.layers:
            x = layer(x)
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        return x, init.zeros_like(x)
