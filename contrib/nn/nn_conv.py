"""Convolutional modules: ``Conv``, ``BatchNorm2d``, ``MaxPool2d``, ``AvgPool2d``.

Every module here takes and returns NCHW tensors (the course convention, and
PyTorch's), while the ``ops.conv`` / pooling ops work on NHWC: the channel
axis is moved last on the way in and back on the way out.  ``ops.transpose``
swaps exactly two axes, so each move is two swaps.
"""

import math

from needle import autograd, init, ops
from needle.errors import ShapeError

from ._checks import check_int
from .nn_basic import BatchNorm1d, Module, Parameter

__all__ = ["Conv", "Conv2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d"]


def _nchw_to_nhwc(x):
    # (N, C, H, W) -> (N, H, C, W) -> (N, H, W, C)
    return ops.transpose(ops.transpose(x, (1, 2)), (2, 3))


def _nhwc_to_nchw(x):
    # (N, H, W, C) -> (N, H, C, W) -> (N, C, H, W)
    return ops.transpose(ops.transpose(x, (2, 3)), (1, 2))


def _first(value):
    """The course accepts ``kernel_size=(3, 3)`` and uses its first entry."""
    return value[0] if isinstance(value, (tuple, list)) else value


def _square(module, name, value):
    """A pooling window's side: an int, or equal entries ((2, 2) is 2); a
    non-square (2, 3) is refused rather than cut to 2."""
    if isinstance(value, (tuple, list)) and (len(value) == 0 or any(v != value[0] for v in value)):
        raise ShapeError(f"{module}: {name} must be one positive int or equal ones (square windows), "
                         f"got {value!r}")
    return _first(value)


def _check_nchw(module, x, channels):
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ShapeError(
            f"{module}: expected an NCHW input of 4 dimensions, got shape {shape}"
        )
    if channels is not None and shape[1] != channels:
        raise ShapeError(
            f"{module}: input shape {shape} has {shape[1]} channels on axis 1 "
            f"(NCHW), the module was built for {channels}"
        )


class Conv(Module):
    """2-D convolution with 'same'-style padding ``kernel_size // 2``.

    Input ``(N, C_in, H, W)``, output ``(N, C_out, H', W')`` with
    ``H' = (H + 2*(k//2) - k) // stride + 1``.  The weight is stored
    ``(k, k, C_in, C_out)`` (the layout of ``ops.conv``); PyTorch's
    ``Conv2d.weight`` is its ``(3, 2, 0, 1)`` permutation.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True,
                 device=None, dtype="float32"):
        super().__init__()
        kernel_size, stride = _first(kernel_size), _first(stride)
        # 0 channels are allowed, as in PyTorch (empty weights); kernel and stride must be >= 1
        for name, value, least in (("in_channels", in_channels, 0), ("out_channels", out_channels, 0),
                                   ("kernel_size", kernel_size, 1), ("stride", stride, 1)):
            check_int("Conv", name, value, least)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = self.kernel_size // 2
        self.device = device
        self.dtype = dtype

        k = self.kernel_size
        fan_in = self.in_channels * k * k
        fan_out = self.out_channels * k * k
        self.weight = Parameter(init.kaiming_uniform(
            fan_in, fan_out, shape=(k, k, self.in_channels, self.out_channels),
            device=device, dtype=dtype, requires_grad=True))
        if bias:
            bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0  # PyTorch skips the bound at fan_in 0
            self.bias = Parameter(init.rand(self.out_channels, low=-bound, high=bound,
                                            device=device, dtype=dtype, requires_grad=True))
        else:
            self.bias = None

    def forward(self, x):
        _check_nchw("Conv", x, self.in_channels)
        out = ops.conv(_nchw_to_nhwc(x), self.weight, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            out = out + ops.reshape(self.bias, (1, 1, 1, self.out_channels))
        return _nhwc_to_nchw(out)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, bias={self.bias is not None}")


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation over N, H and W for each channel of an NCHW input.

    Same parameters, buffers and update rule as ``BatchNorm1d(C)``: the input
    is viewed as ``N*H*W`` samples of ``C`` features.
    """

    def forward(self, x):
        _check_nchw("BatchNorm2d", x, None)
        if x.shape[1] != self.dim:
            raise ShapeError(f"BatchNorm2d({self.dim}): input shape {tuple(x.shape)} has "
                             f"{x.shape[1]} channels on axis 1 (NCHW), expected {self.dim}")
        if self._fused_training(x):
            # one fused node over N, H and W for each channel, wherever the
            # input lies (NCHW or the channels-last view nn.Conv returns)
            return self._train_step(x)
        n, c, h, w = x.shape
        flat = ops.reshape(_nchw_to_nhwc(x), (n * h * w, c))
        y = super().forward(flat)
        return _nhwc_to_nchw(ops.reshape(y, (n, h, w, c)))


class _Pool2d(Module):
    _op_name = None

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = check_int(name, "kernel_size", _square(name, "kernel_size", kernel_size), 1)
        self.stride = self.kernel_size if stride is None else \
            check_int(name, "stride", _square(name, "stride", stride), 1)

    def forward(self, x):
        name = type(self).__name__
        _check_nchw(name, x, None)
        if x.shape[2] < self.kernel_size or x.shape[3] < self.kernel_size:
            raise ShapeError(
                f"{name}: input shape {tuple(x.shape)} is smaller than the "
                f"{self.kernel_size}x{self.kernel_size} window")
        pool = getattr(ops, self._op_name)
        return _nhwc_to_nchw(pool(_nchw_to_nhwc(x), self.kernel_size, self.stride))

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Max over ``kernel_size x kernel_size`` windows (no padding) of an NCHW
    input; ``stride`` defaults to ``kernel_size``.  Output
    ``(N, C, (H - k) // s + 1, (W - k) // s + 1)``."""

    _op_name = "max_pool2d"


class AvgPool2d(_Pool2d):
    """Mean over ``kernel_size x kernel_size`` windows (no padding) of an NCHW
    input; ``stride`` defaults to ``kernel_size``."""

    _op_name = "avg_pool2d"


class Conv2d(Conv):
    """PyTorch's name and signature over :class:`Conv`: ``padding`` is explicit.

    ``padding`` is an int, an equal pair, ``"valid"`` (0) or ``"same"``
    (``kernel_size // 2``, stride 1 and odd kernels only); the default 0 is
    PyTorch's, whereas the course's ``Conv`` always pads ``kernel_size // 2``.
    Parameters are created exactly as by ``Conv`` (same init and RNG draws),
    so the weight keeps needle's ``(k, k, C_in, C_out)`` layout: a PyTorch
    ``(C_out, C_in, k, k)`` weight loads after ``.transpose(2, 3, 1, 0)``.
    ``dilation``, ``groups`` other than 1 and padding modes other than
    ``"zeros"`` are refused.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype="float32"):
        for name, value in (("dilation", dilation), ("groups", groups)):
            if _first(value) != 1 or (isinstance(value, (tuple, list)) and len(set(value)) != 1):
                raise ValueError(f"Conv2d: only {name}=1 is supported, got {value!r}")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias,
                         device=device, dtype=dtype)
        self.padding = self._padding_amount(padding)

    def _padding_amount(self, padding) -> int:
        k = self.kernel_size
        if padding == "valid":
            return 0
        if padding == "same":
            if self.stride != 1 or k % 2 == 0:
                raise ValueError(
                    f"Conv2d: padding='same' needs stride 1 and an odd kernel_size, got stride={self.stride}, "
                    f"kernel_size={k}")
            return k // 2
        if isinstance(padding, (tuple, list)):
            if len(set(padding)) != 1:
                raise ValueError(f"Conv2d: padding must be equal on H and W, got {padding!r}")
            padding = padding[0]
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(
                f"Conv2d: padding must be a non-negative int, an equal pair, 'same' or 'valid', got {padding!r}")
        return padding

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
