"""Basic neural-network modules: the MLP building blocks of needle.nn.

Conventions (course API §4, docs/design.md): dense weights are stored ``(in, out)`` and
applied as ``x @ W + b``; parameters are created in the listed order because
that order fixes the NumPy RNG stream the course goldens were made with.
Forward paths are kept short (few ops, broadcasting done by the element-wise
ops themselves) because for small models Python overhead per op dominates.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

import needle.init as init
from needle import ops
from needle import autograd
from needle.autograd import Tensor
from needle.errors import ShapeError, StateDictError

__all__ = [
    "Parameter",
    "Module",
    "StateDictError",
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "SoftmaxLoss",
    "BatchNorm1d",
    "LayerNorm1d",
    "Dropout",
    "Residual",
]


class Parameter(Tensor):
    """A Tensor that a Module reports as learnable.

    ``Parameter(init.xxx(...))`` shares the source's array and always
    requires a gradient.
    """

    def __init__(self, array, *args, **kwargs):
        kwargs["requires_grad"] = True
        super().__init__(array, *args, **kwargs)


def _unpack_params(value: object) -> list[Tensor]:
    """Every Parameter reachable from ``value``, in attribute/list/dict order."""
    if isinstance(value, Parameter):
        return [value]
    if isinstance(value, Module):
        return value.parameters()
    if isinstance(value, dict):
        found = []
        for item in value.values():
            found += _unpack_params(item)
        return found
    if isinstance(value, (list, tuple)):
        found = []
        for item in value:
            found += _unpack_params(item)
        return found
    return []


def _child_modules(value: object) -> list["Module"]:
    """Every Module reachable from ``value`` (itself included), depth first."""
    if isinstance(value, Module):
        return [value] + value._children()
    if isinstance(value, dict):
        found = []
        for item in value.values():
            found += _child_modules(item)
        return found
    if isinstance(value, (list, tuple)):
        found = []
        for item in value:
            found += _child_modules(item)
        return found
    return []


def _named_tensors(value: object, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """(dotted name, tensor) for every Tensor (parameters and buffers) in ``value``."""
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Module):
        for key, item in value.__dict__.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_tensors(item, f"{prefix}.{i}" if prefix else str(i))


def _numpy_of(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


class Module:
    """Base class of all layers.

    Sub-modules and parameters are found by walking ``self.__dict__`` in
    attribute order, descending into Modules, dicts (value order), lists and
    tuples.  Tensors that are not Parameters (running statistics) are buffers:
    not learnable, but part of :meth:`state_dict`.
    """

    def __init__(self):
        self.training = True

    def parameters(self) -> list[Tensor]:
        """Every Parameter of this module and its children, in creation order."""
        return _unpack_params(self.__dict__)

    def _children(self) -> list["Module"]:
        return _child_modules(self.__dict__)

    def eval(self):
        self.training = False
        for m in self._children():
            m.training = False
        return self

    def train(self, mode: bool = True):
        self.training = bool(mode)
        for m in self._children():
            m.training = bool(mode)
        return self

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # -- checkpoints ---------------------------------------------------------
    def named_tensors(self) -> list[tuple[str, Tensor]]:
        """(dotted name, tensor) for every parameter and buffer, e.g. ``modules.0.weight``.

        A tensor reachable under two names (weight tying) is listed once, under
        its first name.
        """
        seen: set[int] = set()
        out = []
        for name, t in _named_tensors(self.__dict__, ""):
            if id(t) in seen:
                continue
            seen.add(id(t))
            out.append((name, t))
        return out

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> NumPy copy of every parameter and buffer."""
        return OrderedDict((name, t.numpy()) for name, t in self.named_tensors())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy values from ``state_dict`` (name -> array-like) into this module.

        Every shape must match.  With ``strict`` every name of this module must
        be present and no other name may be; otherwise only matching names load.
        Errors are collected and raised together as :class:`StateDictError`,
        listing each offending key (as PyTorch does).  Values take the dtype
        and device of the tensor they replace.  Nothing is modified on error.
        """
        own = OrderedDict(self.named_tensors())
        errors = []
        if strict:
            missing = [k for k in own if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own]
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
            if unexpected:
                errors.append(
                    "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + "."
                )
        arrays = {}
        for name, t in own.items():
            if name not in state_dict:
                continue
            value = _numpy_of(state_dict[name])
            if tuple(value.shape) != tuple(t.shape):
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {tuple(value.shape)} "
                    f"from checkpoint, the shape in current model is {tuple(t.shape)}."
                )
                continue
            arrays[name] = value
        if errors:
            raise StateDictError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
            )
        for name, value in arrays.items():
            t = own[name]
            t.data = Tensor(value.astype(t.dtype, copy=False), device=t.device, dtype=t.dtype, requires_grad=False)

    # -- printing ------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(k, v) for k, v in self.__dict__.items() if _child_modules(v)]
        lines = []
        for key, value in children:
            if isinstance(value, Module):
                lines.append(f"({key}): " + repr(value).replace("\n", "\n  "))
            else:
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for i, item in items:
                    if isinstance(item, Module):
                        lines.append(f"({key}.{i}): " + repr(item).replace("\n", "\n  "))
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Identity(Module):
    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight + bias.

    x: ``(..., in_features)`` -> ``(..., out_features)``.  ``weight`` is
    ``(in, out)`` (kaiming uniform); ``bias`` is ``(1, out)`` (kaiming uniform
    with fan_in = out_features, as in the course).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, device=device, dtype=dtype))
        if bias:
            b = init.kaiming_uniform(out_features, 1, device=device, dtype=dtype)
            self.bias = Parameter(b.reshape((1, out_features)))
        else:
            self.bias = None

    def forward(self, X):
        out = X @ self.weight
        if self.bias is not None:
            # the add broadcasts (1, out) or (out,) itself: one op, not two
            out = out + self.bias
        return out

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """``(B, d1, d2, ...)`` -> ``(B, d1*d2*...)``."""

    def forward(self, X):
        shape = X.shape
        flat = 1
        for d in shape[1:]:
            flat *= d
        if len(shape) == 2:
            return X
        return X.reshape((shape[0], flat))


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return (ops.exp(-x) + 1) ** -1


class Sequential(Module):
    """Applies ``modules`` in order; they are kept as the tuple ``.modules``."""

    def __init__(self, *modules):
        super().__init__()
        self.modules = modules

    def forward(self, x):
        for module in self.modules:
            x = module(x)
        return x


class SoftmaxLoss(Module):
    """Mean cross-entropy: logits ``(B, k)``, class ids ``y (B,)`` -> 0-d Tensor."""

    def forward(self, logits, y):
        batch, classes = logits.shape
        y_one_hot = init.one_hot(classes, y, device=logits.device, dtype=logits.dtype)
        lse = ops.logsumexp(logits, axes=(1,)).sum()
        picked = (logits * y_one_hot).sum()
        return (lse - picked) / batch


class BatchNorm1d(Module):
    """Batch normalisation over axis 0 of ``(B, dim)`` inputs.

    Training uses the batch mean and biased variance and updates the running
    statistics with them (detached); eval uses the running statistics.
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.momentum = momentum
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    def forward(self, x):
        if len(x.shape) != 2:
            raise ShapeError(
                f"{type(self).__name__}: expected a 2-D input (batch, {self.dim}), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.dim:
            raise ShapeError(
                f"{type(self).__name__}({self.dim}): input has {x.shape[1]} features "
                f"(shape {tuple(x.shape)}), expected {self.dim}"
            )
        if self.training and not autograd.LAZY_MODE:
            # one fused graph node (ops.batch_norm_train) instead of ~12; it
            # leaves the batch mean and biased variance for the running stats
            op = ops.BatchNormTrain(self.eps)
            out = op(x, self.weight, self.bias)
            m = self.momentum
            self.running_mean.data = self.running_mean.realize_cached_data() * (1 - m) + op.mean * m
            self.running_var.data = self.running_var.realize_cached_data() * (1 - m) + op.var * m
            return out
        if self.training:
            n = x.shape[0]
            # x + (-mean) instead of x - mean: subtraction is add(negate), one graph op more
            neg_mean = x.sum((0,)) * (-1.0 / n)
            centred = x + neg_mean
            var = (centred * centred).sum((0,)) / n
            m = self.momentum
            # running stats are constants: update their arrays directly, no graph node
            self.running_mean.data = (self.running_mean.realize_cached_data() * (1 - m)
                                      - neg_mean.realize_cached_data() * m)
            self.running_var.data = (self.running_var.realize_cached_data() * (1 - m)
                                     + var.realize_cached_data() * m)
            # fold weight and 1/std into one (dim,) scale so only two big ops follow
            scale = self.weight * (var + self.eps) ** -0.5
            return centred * scale + self.bias
        scale = self.weight * ((self.running_var + self.eps) ** -0.5)
        return (x - self.running_mean) * scale + self.bias

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm1d(Module):
    """Normalises over the last axis of ``(..., dim)`` inputs (biased variance)."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))

    def forward(self, x):
        shape = tuple(x.shape)
        if not shape or shape[-1] != self.dim:
            raise ShapeError(
                f"LayerNorm1d({self.dim}): last axis of the input must be {self.dim}, got shape {shape}"
            )
        last = len(shape) - 1
        keep = shape[:-1] + (1,)
        mean = (x.sum((last,)) / self.dim).reshape(keep)
        centred = x - mean
        var = ((centred * centred).sum((last,)) / self.dim).reshape(keep)
        return centred * (var + self.eps) ** -0.5 * self.weight + self.bias

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zeroes each element with probability p in training, scaling the rest by 1/(1-p)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        keep = 1 - self.p
        mask = init.randb(*x.shape, p=keep, device=x.device, dtype=x.dtype)
        if keep != 0:
            # fold 1/keep into the constant mask: one graph op instead of two
            mask.data = mask.realize_cached_data() * (1.0 / keep)
        return x * mask

    def extra_repr(self):
        return f"p={self.p}"


class Residual(Module):
    """fn(x) + x."""

    def __init__(self, fn: Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x
