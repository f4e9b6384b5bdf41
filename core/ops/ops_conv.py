"""2-D convolution on NHWC inputs with ``(K, K, C_in, C_out)`` weights.

Forward, input-gradient and weight-gradient are three ops that are each
other's adjoints, so gradients of any order are exact:

* ``Y = conv(X, W)``        -> ``dX = conv_grad_input(G, W)``, ``dW = conv_grad_weight(X, G)``
* ``conv_grad_input(G, W)`` -> ``dG = conv(H, W)``,  ``dW = conv_grad_weight(H, G)``
* ``conv_grad_weight(X, G)``-> ``dX = conv_grad_input(G, M)``, ``dG = conv(X, M)``

Each uses the backend's fused kernel when the device offers one (op
overrides ``conv``, ``conv_grad_input``, ``conv_grad_weight``) and otherwise
an im2col composition of NDArray operations: a strided window view of the
padded input, one compact copy and one matmul.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..errors import DeviceMismatchError, ShapeError
from .registry import register_op

__all__ = ["Conv", "ConvGradInput", "ConvGradWeight", "conv", "conv_output_size"]


def conv_output_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


def _promote(a: NDArray, b: NDArray):
    if a.device != b.device:
        raise DeviceMismatchError(f"conv: operands on different devices: {a.device} and {b.device}; "
                                  f"move one with .to(device)")
    if a.dtype != b.dtype:
        dt = np.promote_types(a.dtype, b.dtype)
        a, b = a.cast(dt), b.cast(dt)
    return a, b


def _check(a_shape, b_shape, stride, padding, op):
    if len(a_shape) != 4 or len(b_shape) != 4:
        raise ShapeError(f"{op}: expected input (N, H, W, C_in) and weights (K, K, C_in, C_out), "
                         f"got shapes {a_shape} and {b_shape}")
    N, H, W, C = a_shape
    K, K2, Cin, Cout = b_shape
    if K != K2:
        raise ShapeError(f"{op}: kernel must be square, got weights of shape {b_shape}")
    if Cin != C:
        raise ShapeError(f"{op}: input has {C} channels (shape {a_shape}) but the weights expect "
                         f"{Cin} (shape {b_shape})")
    if stride < 1 or padding < 0:
        raise ShapeError(f"{op}: need stride >= 1 and padding >= 0, got stride={stride}, "
                         f"padding={padding}")
    if H + 2 * padding < K or W + 2 * padding < K:
        raise ShapeError(f"{op}: kernel size {K} exceeds the padded input ({H}+2*{padding}, "
                         f"{W}+2*{padding})")
    return N, H, W, C, K, Cout


def _check_adjoint(x_shape, b_shape, g_shape, stride, padding, op):
    """An adjoint's operands must be those of one conv: ``x_shape`` and
    ``b_shape`` pass conv's checks and ``g`` has exactly that conv's output
    shape (the fused kernels read that many elements; the composition would
    pad or crop a mismatched ``g`` instead of refusing it)."""
    N, H, W, _, K, Cout = _check(x_shape, b_shape, stride, padding, op)
    want = (N, conv_output_size(H, K, stride, padding), conv_output_size(W, K, stride, padding), Cout)
    if tuple(g_shape) != want:
        raise ShapeError(f"{op}: gradient of shape {tuple(g_shape)} is not the conv output {want} of an "
                         f"input {tuple(x_shape)} and weights {tuple(b_shape)} with stride={stride}, "
                         f"padding={padding}")


def _windows(ap: NDArray, K: int, stride: int, Ho: int, Wo: int) -> NDArray:
    """The ``(N, Ho, Wo, K, K, C)`` window view of a compact NHWC array."""
    N, _, _, C = ap.shape
    sN, sH, sW, sC = ap.strides
    return ap.as_strided((N, Ho, Wo, K, K, C), (sN, sH * stride, sW * stride, sH, sW, sC))


def _pad_hw(a: NDArray, top: int, bottom: int, left: int, right: int) -> NDArray:
    if top == bottom == left == right == 0:
        return a.compact()
    return a.pad(((0, 0), (top, bottom), (left, right), (0, 0)))


def conv_forward_array(a: NDArray, b: NDArray, stride: int, padding: int) -> NDArray:
    """NHWC cross-correlation of ``a`` with ``b`` (NDArrays)."""
    a, b = _promote(a, b)
    N, H, W, C, K, Cout = _check(a.shape, b.shape, stride, padding, "conv")
    Ho, Wo = conv_output_size(H, K, stride, padding), conv_output_size(W, K, stride, padding)
    out = NDArray.call_op_override("conv", (a, b), (N, Ho, Wo, Cout), N, H, W, C, K, Cout, stride, padding)
    if out is not None:
        return out
    ap = _pad_hw(a, padding, padding, padding, padding)
    cols = _windows(ap, K, stride, Ho, Wo).compact().reshape((N * Ho * Wo, K * K * C))
    out = cols @ b.compact().reshape((K * K * C, Cout))
    return out.reshape((N, Ho, Wo, Cout))


def conv_grad_input_array(g: NDArray, b: NDArray, in_hw, stride: int, padding: int) -> NDArray:
    """Adjoint of the conv in its input: ``(N, H, W, C_in)`` from ``g`` ``(N, Ho, Wo, C_out)``."""
    g, b = _promote(g, b)
    H, W = in_hw
    if g.ndim != 4 or b.ndim != 4:
        raise ShapeError(f"conv_grad_input: expected gradient (N, Ho, Wo, C_out) and weights "
                         f"(K, K, C_in, C_out), got shapes {g.shape} and {b.shape}")
    _check_adjoint((g.shape[0], H, W, b.shape[2]), b.shape, g.shape, stride, padding, "conv_grad_input")
    N, Ho, Wo, Cout = g.shape
    K, _, Cin, _ = b.shape
    out = NDArray.call_op_override("conv_grad_input", (g, b), (N, H, W, Cin),
                                   N, H, W, Cin, K, Cout, stride, padding)
    if out is not None:
        return out
    # Dilate g by the stride (interior zeros only), then a full correlation
    # with the flipped, channel-swapped kernel gives the adjoint on the padded
    # input, rows 0 .. (Ho-1)*stride+K-1; rows past that got no contribution.
    if stride > 1:
        gd = NDArray.make((N, (Ho - 1) * stride + 1, (Wo - 1) * stride + 1, Cout),
                          device=g.device, dtype=g.dtype)
        gd.fill(0.0)
        gd[:, ::stride, ::stride, :] = g
    else:
        gd = g
    wf = b.flip((0, 1)).permute((0, 1, 3, 2))
    dap = conv_forward_array(gd, wf, 1, K - 1)
    rh = H + 2 * padding - dap.shape[1]
    rw = W + 2 * padding - dap.shape[2]
    if rh or rw:
        dap = dap.pad(((0, 0), (0, rh), (0, rw), (0, 0)))
    return dap[:, padding:padding + H, padding:padding + W, :].compact()


def conv_grad_weight_array(a: NDArray, g: NDArray, K: int, stride: int, padding: int) -> NDArray:
    """Adjoint of the conv in its weights: ``(K, K, C_in, C_out)``."""
    a, g = _promote(a, g)
    if a.ndim != 4 or g.ndim != 4:
        raise ShapeError(f"conv_grad_weight: expected input (N, H, W, C_in) and gradient "
                         f"(N, Ho, Wo, C_out), got shapes {a.shape} and {g.shape}")
    _check_adjoint(a.shape, (K, K, a.shape[3], g.shape[3]), g.shape, stride, padding, "conv_grad_weight")
    N, H, W, C = a.shape
    _, Ho, Wo, Cout = g.shape
    out = NDArray.call_op_override("conv_grad_weight", (a, g), (K, K, C, Cout),
                                   N, H, W, C, K, Cout, stride, padding)
    if out is not None:
        return out
    ap = _pad_hw(a, padding, padding, padding, padding)
    cols = _windows(ap, K, stride, Ho, Wo).compact().reshape((N * Ho * Wo, K * K * C))
    dw = cols.permute((1, 0)) @ g.compact().reshape((N * Ho * Wo, Cout))
    return dw.reshape((K, K, C, Cout))


def _int(v, name):
    if isinstance(v, (tuple, list)):
        # (s, s) is s; a non-square (1, 2) is refused rather than cut to 1
        if len(v) == 0 or any(x != v[0] for x in v):
            raise ShapeError(f"conv: {name} must be one int or equal ones (square), got {v!r}")
        v = v[0]
    if not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"conv: {name} must be an int, got {v!r}")
    return int(v)


class Conv(TensorOp):
    """NHWC convolution (cross-correlation): input ``(N, H, W, C_in)``, weights
    ``(K, K, C_in, C_out)``, zero padding on H and W, output ``(N, (H+2p-K)//s+1,
    (W+2p-K)//s+1, C_out)``; equals torch ``conv2d`` on NCHW/OIHW."""

    def __init__(self, stride: int = 1, padding: int = 0):
        self.stride = _int(stride, "stride")
        self.padding = _int(padding, "padding")
        self._dense_input = None  # (input view, its compact copy) once compute made one

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        dense = a.compact()
        if dense is not a:
            # a copy (nn.Conv's NHWC view of an NCHW data batch): the weight
            # gradient reads the same input, so it is kept for it instead of
            # being made again (ResNet9's first layer compacted its batch twice)
            self._dense_input = (a, dense)
        return conv_forward_array(dense, b, self.stride, self.padding)

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        # a network's first conv reads a data batch that needs no adjoint:
        # skipping it saves a full-size conv and its batch-sized result
        a, b = node.inputs
        _, H, W, _ = a.shape
        ga = ConvGradInput(self.stride, self.padding, (H, W))(out_grad, b) if need[0] else None
        dense = self._dense_input
        gb = ConvGradWeight(self.stride, self.padding, b.shape[0], dense)(a, out_grad) if need[1] else None
        return ga, gb


class ConvGradInput(TensorOp):
    """``conv``'s adjoint in its input: ``(g (N,Ho,Wo,C_out), W) -> (N,H,W,C_in)``."""

    def __init__(self, stride: int, padding: int, in_hw):
        self.stride, self.padding, self.in_hw = stride, padding, tuple(in_hw)

    def compute(self, g: NDArray, b: NDArray) -> NDArray:
        return conv_grad_input_array(g, b, self.in_hw, self.stride, self.padding)

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, b = node.inputs
        dg = Conv(self.stride, self.padding)(out_grad, b)
        db = ConvGradWeight(self.stride, self.padding, b.shape[0])(out_grad, g)
        return dg, db


class ConvGradWeight(TensorOp):
    """``conv``'s adjoint in its weights: ``(X, g) -> (K, K, C_in, C_out)``."""

    def __init__(self, stride: int, padding: int, kernel_size: int, dense_input=None):
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        # (view, its compact copy) from the forward Conv, used when this op's
        # input is that very view
        self._dense_input = dense_input

    def compute(self, a: NDArray, g: NDArray) -> NDArray:
        if self._dense_input is not None and self._dense_input[0] is a:
            a = self._dense_input[1]
        return conv_grad_weight_array(a, g, self.kernel_size, self.stride, self.padding)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, g = node.inputs
        _, H, W, _ = a.shape
        da = ConvGradInput(self.stride, self.padding, (H, W))(g, out_grad)
        dg = Conv(self.stride, self.padding)(a, out_grad)
        return da, dg


def conv(a, b, stride=1, padding=1):
    """``Conv(stride, padding)(a, b)``; note the function's default padding is 1."""
    return Conv(stride, padding)(a, b)


register_op("conv", Conv, conv)
register_op("conv_grad_input", ConvGradInput)
register_op("conv_grad_weight", ConvGradWeight)
