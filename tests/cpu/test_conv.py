"""Convolution overrides (NHWC forward, grad input, grad weight) against a NumPy reference."""

import numpy as np
import pytest

from needle.errors import ShapeError

from cpu_buffers import get, put


def conv_ref(x, w, stride, pad):
    """Direct NHWC cross-correlation in float64."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    N, H, W, C = x.shape
    K, _, _, Co = w.shape
    Ho, Wo = (H - K) // stride + 1, (W - K) // stride + 1
    out = np.zeros((N, Ho, Wo, Co))
    for i in range(K):
        for j in range(K):
            patch = x[:, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride, :]
            out += patch @ w[i, j].astype(np.float64)
    return out


def grads_ref(x, w, g, stride, pad):
    """Gradients of sum(conv(x, w) * g) by the adjoint of conv_ref's loop."""
    N, H, W, C = x.shape
    K = w.shape[0]
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    Ho, Wo = g.shape[1:3]
    g = g.astype(np.float64)
    for i in range(K):
        for j in range(K):
            sl = (slice(None), slice(i, i + stride * (Ho - 1) + 1, stride),
                  slice(j, j + stride * (Wo - 1) + 1, stride), slice(None))
            dw[i, j] = np.einsum("nhwc,nhwo->co", xp[sl], g)
            dxp[sl] += g @ w[i, j].astype(np.float64).T
    return dxp[:, pad:pad + H, pad:pad + W, :], dw


CASES = [  # N, H, W, Cin, K, Cout, stride, padding
    (2, 5, 5, 3, 3, 4, 1, 1), (1, 7, 6, 2, 3, 5, 2, 0), (3, 8, 8, 4, 1, 6, 1, 0),
    (2, 9, 9, 3, 5, 2, 2, 2), (1, 4, 4, 1, 4, 1, 1, 0), (2, 6, 6, 3, 1, 2, 2, 1),
    (4, 16, 16, 16, 3, 32, 1, 1), (2, 3, 3, 2, 3, 3, 3, 1),
    # maps small enough that some taps read only padding (the kernels skip
    # those taps): ResNet9's 3x3 on 1x1 (centre tap only), 2x2 -> 1x1 with
    # stride 2 (4 of 9 taps), a 1-row map (one live tap row, all columns),
    # a 7x7 stride-4 first layer on 8x8 (live window on the low side only)
    (3, 1, 1, 5, 3, 4, 1, 1), (2, 2, 2, 3, 3, 6, 2, 1), (2, 1, 6, 3, 3, 2, 1, 1),
    (2, 8, 8, 3, 7, 4, 4, 3), (2, 2, 3, 2, 5, 3, 1, 2),
    # padding wider than the kernel: the corner outputs read no input at all,
    # and with a large stride no tap of the only output pixel is live
    (1, 2, 2, 2, 3, 2, 1, 4), (2, 1, 1, 2, 3, 3, 20, 5),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_and_grads(be, dtype, case):
    N, H, W, C, K, Co, s, p = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((K, K, C, Co)).astype(dtype)
    ref = conv_ref(x, w, s, p)
    Ho, Wo = ref.shape[1:3]
    g = rng.standard_normal(ref.shape).astype(dtype)
    ov = be.op_overrides()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)

    y = be.Array(ref.size, dtype)
    ov["conv"](put(be, x), put(be, w), y, N, H, W, C, K, Co, s, p)
    np.testing.assert_allclose(get(be, y, ref.shape), ref, **tol)

    dx_ref, dw_ref = grads_ref(x, w, g, s, p)
    dx = be.Array(x.size, dtype)
    be.fill(dx, np.nan)  # must be overwritten everywhere, also where no output pixel reads
    ov["conv_grad_input"](put(be, g), put(be, w), dx, N, H, W, C, K, Co, s, p)
    np.testing.assert_allclose(get(be, dx, x.shape), dx_ref, **tol)

    dw = be.Array(w.size, dtype)
    be.fill(dw, np.nan)
    ov["conv_grad_weight"](put(be, x), put(be, g), dw, N, H, W, C, K, Co, s, p)
    np.testing.assert_allclose(get(be, dw, w.shape), dw_ref, **tol)


def test_conv_matches_torch(be):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 12, 12, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.tensor(x).permute(0, 3, 1, 2),
                                     torch.tensor(w).permute(3, 2, 0, 1), stride=2, padding=1)
    ref = ref.permute(0, 2, 3, 1).numpy()
    y = be.Array(ref.size)
    be.conv(put(be, x), put(be, w), y, 8, 12, 12, 5, 3, 7, 2, 1)
    np.testing.assert_allclose(get(be, y, ref.shape), ref, rtol=1e-4, atol=1e-4)


def test_conv_validation(be):
    x, w = be.Array(2 * 5 * 5 * 3), be.Array(3 * 3 * 3 * 4)
    with pytest.raises(ShapeError, match="conv"):
        be.conv(x, w, be.Array(2 * 5 * 5 * 4 - 1), 2, 5, 5, 3, 3, 4, 1, 1)
    with pytest.raises(ShapeError):
        be.conv(x, w, be.Array(1000), 2, 5, 5, 3, 3, 4, 0, 1)     # stride 0
    with pytest.raises(ShapeError):
        be.conv(x, w, be.Array(1000), 2, 5, 5, 3, 7, 4, 1, 0)     # kernel > input
    with pytest.raises(ShapeError):
        be.conv(x, be.Array(10), be.Array(1000), 2, 5, 5, 3, 3, 4, 1, 1)
    with pytest.raises(ShapeError):
        be.conv_grad_input(be.Array(10), w, x, 2, 5, 5, 3, 3, 4, 1, 1)
    with pytest.raises(ShapeError):
        be.conv_grad_weight(x, be.Array(10), w, 2, 5, 5, 3, 3, 4, 1, 1)
