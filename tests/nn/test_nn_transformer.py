"""MultiHeadAttention, AttentionLayer, TransformerLayer, Transformer against a
NumPy re-implementation of the course API's formulas (including the order of the
dropout draws), numerical gradients and PyTorch's attention when installed."""

import math

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.errors import ShapeError

DEVICES = [d for d in (ndl.cpu_numpy(), ndl.cpu(), ndl.cuda()) if d.enabled()]
DEVICE_IDS = [str(d) for d in DEVICES]
BIG = np.finfo(np.float32).max


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_causal_mask(i, j):
    rows, cols = np.arange(i).reshape(i, 1), np.arange(j).reshape(1, j)
    return np.where(cols - rows >= j - i + 1, -BIG, 0.0).reshape(1, 1, i, j)


def np_dropout(x, p, training):
    if not training:
        return x
    keep = np.random.rand(*x.shape) <= 1 - p
    return x * keep / (1 - p)


def np_mha(q, k, v, causal, p, training):
    D = q.shape[-1]
    logits = q @ np.swapaxes(k, -1, -2) / math.sqrt(D)
    if causal:
        logits = logits + np_causal_mask(q.shape[2], k.shape[2])
    probs = np_dropout(np_softmax(logits), p, training)
    return probs @ v, probs


def np_layernorm(x, mod):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + mod.eps) * mod.weight.numpy() + mod.bias.numpy()


def np_linear(x, mod):
    y = x @ mod.weight.numpy()
    return y if mod.bias is None else y + mod.bias.numpy().reshape(-1)


def np_attention_layer(layer, q, k=None, v=None, training=False):
    k = q if k is None else k
    v = q if v is None else v
    H, D = layer.num_head, layer.dim_head

    def heads(x, norm, proj):
        y = np_linear(np_layernorm(x, norm), proj)
        return y.reshape(x.shape[0], x.shape[1], H, D).transpose(0, 2, 1, 3)

    res, _ = np_mha(heads(q, layer.prenorm_q, layer.q_projection),
                    heads(k, layer.prenorm_k, layer.k_projection),
                    heads(v, layer.prenorm_v, layer.v_projection),
                    layer.attn.causal, layer.attn.dropout.p, training)
    res = res.transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], H * D)
    return np_linear(res, layer.out_projection)


def np_transformer_layer(layer, x, p, training):
    x = x + np_dropout(np_attention_layer(layer.attn_layer, x, training=training), p, training)
    inner = np_dropout(np.maximum(np_linear(np_layernorm(x, layer.norm), layer.linear1), 0),
                       p, training)
    return x + np_dropout(np_linear(inner, layer.linear2), p, training)


def test_causal_mask_values():
    mha = nn.MultiHeadAttention(causal=True)
    for i, j in ((4, 4), (3, 5), (1, 3)):
        m = mha.create_causal_mask(i, j, ndl.cpu_numpy())
        assert tuple(m.shape) == (1, 1, i, j)
        np.testing.assert_array_equal(m.numpy(), np_causal_mask(i, j))
    m = mha.create_causal_mask(3, 3, ndl.cpu_numpy()).numpy()[0, 0]
    assert m[0, 1] == -BIG and m[1, 0] == 0 and m[2, 2] == 0


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("causal,tq,tk", [(False, 5, 5), (True, 5, 5), (False, 3, 6),
                                          (True, 3, 6)])
def test_multihead_attention_matches_numpy(device, causal, tq, tk):
    np.random.seed(0)
    B, H, D = 2, 3, 4
    q = np.random.randn(B, H, tq, D).astype(np.float32)
    k = np.random.randn(B, H, tk, D).astype(np.float32)
    v = np.random.randn(B, H, tk, 5).astype(np.float32)
    mha = nn.MultiHeadAttention(causal=causal, device=device)
    mha.eval()
    res, probs = mha(*(ndl.Tensor(a, device=device) for a in (q, k, v)))
    rres, rprobs = np_mha(q, k, v, causal, 0.0, False)
    assert res.shape == (B, H, tq, 5) and probs.shape == (B, H, tq, tk)
    np.testing.assert_allclose(probs.numpy(), rprobs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.numpy(), rres, rtol=1e-5, atol=1e-5)


def test_multihead_attention_matches_torch_sdpa_and_gradients():
    torch = pytest.importorskip("torch")
    np.random.seed(1)
    B, H, T, D = 2, 2, 6, 4
    arrs = [np.random.randn(B, H, T, D).astype(np.float32) for _ in range(3)]
    g = np.random.randn(B, H, T, D).astype(np.float32)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrs)
    tres = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    tres.backward(torch.tensor(g))
    mha = nn.MultiHeadAttention(causal=True)
    nq, nk, nv = (ndl.Tensor(a) for a in arrs)
    res, _ = mha(nq, nk, nv)
    res.backward(ndl.Tensor(g))
    np.testing.assert_allclose(res.numpy(), tres.detach().numpy(), rtol=1e-4, atol=1e-5)
    for n, t in ((nq, tq), (nk, tk), (nv, tv)):
        np.testing.assert_allclose(n.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_softmax_treats_max_as_constant_and_has_right_gradient():
    np.random.seed(2)
    x = np.random.randn(1, 2, 3, 4)
    c = np.random.randn(1, 2, 3, 4)
    mha = nn.MultiHeadAttention(dtype="float64")
    t = ndl.Tensor(x, dtype="float64")
    (mha.softmax(t) * ndl.Tensor(c, dtype="float64")).sum().backward()
    s = np_softmax(x)
    # d/dx sum(c * softmax(x)) = s * (c - sum(c * s))
    ref = s * (c - (c * s).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(t.grad.numpy(), ref, rtol=1e-8, atol=1e-10)
    big = ndl.Tensor(np.array([1e4, 0, -1e4, 1e4]).reshape(1, 1, 1, 4), dtype="float64")
    np.testing.assert_allclose(mha.softmax(big).numpy().ravel(), [0.5, 0, 0, 0.5], atol=1e-12)


def test_attention_layer_creation_order():
    np.random.seed(3)
    layer = nn.AttentionLayer(6, 2, 3, k_features=5, v_features=4, out_features=7)
    np.random.seed(3)
    a = math.sqrt(2) * math.sqrt(3 / 6)
    expected = [np.random.rand(6, 6) * 2 * a - a]
    for fin in (5, 4):
        b = math.sqrt(2) * math.sqrt(3 / fin)
        expected.append(np.random.rand(fin, 6) * 2 * b - b)
    b = math.sqrt(2) * math.sqrt(3 / 6)
    expected.append(np.random.rand(6, 7) * 2 * b - b)
    got = [layer.q_projection.weight, layer.k_projection.weight, layer.v_projection.weight,
           layer.out_projection.weight]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-6, atol=1e-7)
    assert layer.q_projection.bias is None and layer.out_projection.bias is None
    names = [id(p) for p in layer.parameters()]
    order = [layer.prenorm_q.weight, layer.prenorm_q.bias, layer.prenorm_k.weight,
             layer.prenorm_k.bias, layer.prenorm_v.weight, layer.prenorm_v.bias,
             layer.q_projection.weight, layer.k_projection.weight, layer.v_projection.weight,
             layer.out_projection.weight]
    assert names == [id(p) for p in order]


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
def test_attention_layer_matches_numpy(device):
    np.random.seed(4)
    layer = nn.AttentionLayer(6, 2, 3, k_features=5, v_features=4, out_features=7,
                              causal=True, device=device)
    layer.eval()
    # non-trivial norm parameters
    for norm in (layer.prenorm_q, layer.prenorm_k, layer.prenorm_v):
        norm.weight.data = ndl.Tensor(np.random.rand(norm.dim).astype(np.float32) + 0.5,
                                      device=device)
        norm.bias.data = ndl.Tensor(np.random.randn(norm.dim).astype(np.float32),
                                    device=device)
    q = np.random.randn(2, 4, 6).astype(np.float32)
    k = np.random.randn(2, 5, 5).astype(np.float32)
    v = np.random.randn(2, 5, 4).astype(np.float32)
    out = layer(*(ndl.Tensor(a, device=device) for a in (q, k, v)))
    assert out.shape == (2, 4, 7) and out.device == device
    np.testing.assert_allclose(out.numpy(), np_attention_layer(layer, q, k, v), rtol=1e-4,
                               atol=1e-5)
    self_out = layer.__class__(6, 2, 3, device=device)
    self_out.eval()
    np.testing.assert_allclose(self_out(ndl.Tensor(q, device=device)).numpy(),
                               np_attention_layer(self_out, q), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_transformer_layer_matches_numpy_with_dropout_rng_order(device, dropout):
    np.random.seed(5)
    layer = nn.TransformerLayer(8, 2, 4, 16, dropout=dropout, device=device)
    x = np.random.randn(3, 5, 8).astype(np.float32)
    np.random.seed(6)
    out = layer(ndl.Tensor(x, device=device)).numpy()
    after = np.random.rand()
    np.random.seed(6)
    ref = np_transformer_layer(layer, x, dropout, training=True)
    assert np.random.rand() == after  # exactly four draws, no more
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    layer.eval()
    state = np.random.get_state()[1].copy()
    out_eval = layer(ndl.Tensor(x, device=device)).numpy()
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # eval draws nothing
    np.testing.assert_allclose(out_eval, np_transformer_layer(layer, x, dropout, False),
                               rtol=1e-4, atol=1e-5)


def test_transformer_layer_creation_order():
    np.random.seed(7)
    layer = nn.TransformerLayer(4, 2, 3, 5)
    np.random.seed(7)
    draws = [(4, 6), (4, 6), (4, 6), (6, 4), (4, 5), (5, 1), (5, 4), (4, 1)]
    expected = []
    for fin, fout in draws:
        b = math.sqrt(2) * math.sqrt(3 / fin)
        expected.append(np.random.rand(fin, fout) * 2 * b - b)
    got = [layer.attn_layer.q_projection.weight, layer.attn_layer.k_projection.weight,
           layer.attn_layer.v_projection.weight, layer.attn_layer.out_projection.weight,
           layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy().reshape(e.shape), e, rtol=1e-6, atol=1e-7)


def test_transformer_gradients_match_numerical_differences():
    np.random.seed(8)
    layer = nn.TransformerLayer(4, 2, 2, 6, dtype="float64")
    layer.eval()
    x = np.random.randn(2, 3, 4)
    c = np.random.randn(2, 3, 4)
    nx = ndl.Tensor(x, dtype="float64")
    (layer(nx) * ndl.Tensor(c, dtype="float64")).sum().backward()

    def loss():
        return float((np_transformer_layer(layer, x, 0.0, False) * c).sum())

    num = np.zeros_like(x)
    for j in range(x.size):
        old = x.flat[j]
        x.flat[j] = old + 1e-6
        hi = loss()
        x.flat[j] = old - 1e-6
        lo = loss()
        x.flat[j] = old
        num.flat[j] = (hi - lo) / 2e-6
    np.testing.assert_allclose(nx.grad.numpy(), num, rtol=1e-5, atol=1e-7)
    for p in layer.parameters():
        assert p.grad is not None and p.grad.shape == p.shape


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
def test_transformer_positional_embedding_first_and_forward(device):
    np.random.seed(9)
    T, B, E = 5, 2, 8
    model = nn.Transformer(E, 12, 2, num_head=2, dim_head=4, device=device, sequence_len=10)
    np.random.seed(9)
    np.testing.assert_allclose(model.positional_embedding.weight.numpy(),
                               np.random.randn(10, E), rtol=1e-6, atol=1e-7)
    model.eval()
    x = np.random.randn(T, B, E).astype(np.float32)
    out, h = model(ndl.Tensor(x, device=device))
    assert out.shape == (T, B, E) and h.shape == (T, B, E) and out.device == device
    np.testing.assert_array_equal(h.numpy(), 0)
    ref = x.transpose(1, 0, 2) + model.positional_embedding.weight.numpy()[:T]
    for layer in model.layers:
        ref = np_transformer_layer(layer, ref, 0.0, False)
    np.testing.assert_allclose(out.numpy(), ref.transpose(1, 0, 2), rtol=1e-4, atol=1e-4)

    model.batch_first = True
    out_bf, _ = model(ndl.Tensor(x.transpose(1, 0, 2).copy(), device=device))
    np.testing.assert_allclose(out_bf.numpy(), ref, rtol=1e-4, atol=1e-4)

    model.train()
    out, _ = model(ndl.Tensor(x.transpose(1, 0, 2).copy(), device=device))
    out.backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape


def test_transformer_rejects_bad_input():
    model = nn.Transformer(8, 12, 1, num_head=2, dim_head=4, sequence_len=4)
    with pytest.raises(ShapeError, match="sequence_len"):
        model(ndl.Tensor(np.zeros((5, 1, 8), dtype=np.float32)))
    with pytest.raises(ShapeError, match="Transformer"):
        model(ndl.Tensor(np.zeros((3, 1, 7), dtype=np.float32)))
    with pytest.raises(ShapeError, match="MultiHeadAttention"):
        nn.MultiHeadAttention()(*(ndl.Tensor(np.zeros((1, 2, 3), dtype=np.float32)),) * 3)
