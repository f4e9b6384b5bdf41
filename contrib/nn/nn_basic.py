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

from ._checks import check_bool, check_float, check_int, check_loss_inputs, check_module, check_probability

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


def _named_tensors(value: object, prefix: str, legacy: bool = False) -> Iterator[tuple[str, Tensor]]:
    """(dotted name, tensor) for every Tensor (parameters and buffers) in ``value``.

    ``legacy`` names the entries of a container module's item attribute
    through that attribute (``modules.0.weight``), as checkpoints written
    before the PyTorch-style names did.
    """
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Module):
        entries = value.__dict__.items() if legacy else value._named_entries()
        for key, item in entries:
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else key, legacy)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key), legacy)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_tensors(item, f"{prefix}.{i}" if prefix else str(i), legacy)


_NDARRAY = np.ndarray  # one global lookup in Module.__call__, not two


def _checked_value(value: Any) -> tuple[Any, str]:
    """(a numeric NumPy array, "") for a loadable state-dict value, else (None, why not)."""
    try:
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except Exception as exc:  # any array-like that cannot become an array is reported, not raised
        return None, f"cannot convert {type(value).__name__} to an array ({type(exc).__name__}: {exc})"
    if arr.dtype.kind not in "biuf":
        return None, f"dtype {arr.dtype} is not numeric (got {type(value).__name__})"
    return arr, ""


class Module:
    """Base class of all layers.

    Sub-modules and parameters are found by walking ``self.__dict__`` in
    attribute order, descending into Modules, dicts (value order), lists and
    tuples.  Tensors that are not Parameters (running statistics) are buffers:
    not learnable, but part of :meth:`state_dict`.
    """

    #: Name of the attribute whose items are named by position/key alone in
    #: state dicts and ``named_children`` (``Sequential.modules``: ``0.weight``,
    #: as PyTorch names them); None for ordinary modules.
    _items_attr: str | None = None

    def __init__(self):
        self.training = True

    def parameters(self) -> list[Tensor]:
        """Every Parameter of this module and its children, in creation order."""
        return _unpack_params(self.__dict__)

    def _named_entries(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of each attribute, the items attribute flattened."""
        for key, value in self.__dict__.items():
            if key != self._items_attr:
                yield key, value
            elif isinstance(value, dict):
                yield from ((str(k), v) for k, v in value.items())
            else:
                yield from ((str(i), v) for i, v in enumerate(value))

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
        # one type check on the hot path: a NumPy input (x, or every argument
        # when x is one) is converted; a Tensor x leaves the call untouched
        if args and type(args[0]) is _NDARRAY:
            args = self._tensors_from_numpy(args)
        return self.forward(*args, **kwargs)

    def _tensors_from_numpy(self, args) -> tuple:
        """NumPy arguments become constant Tensors on the module's device,
        with its parameters' dtype (so a float64 array meets float32 weights
        as float32, the way a batch from the DataLoader does); a module
        without parameters keeps the Tensor constructor's rules."""
        params = self.parameters()
        device = params[0].device if params else None
        dtype = params[0].dtype if params else None
        return tuple(Tensor(a, device=device, dtype=dtype, requires_grad=False) if type(a) is np.ndarray else a
                     for a in args)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # -- checkpoints ---------------------------------------------------------
    def named_tensors(self, legacy: bool = False) -> list[tuple[str, Tensor]]:
        """(dotted name, tensor) for every parameter and buffer, e.g. ``0.weight``
        in a Sequential (``modules.0.weight`` with ``legacy``, the names of
        checkpoints written before PyTorch-style names).

        A tensor reachable under two names (weight tying) is listed once, under
        its first name.
        """
        seen: set[int] = set()
        out = []
        for name, t in _named_tensors(self, "", legacy):
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
        call = f"{type(self).__name__}.load_state_dict"
        if not (hasattr(state_dict, "items") and hasattr(state_dict, "__contains__")
                and hasattr(state_dict, "__iter__")):
            raise StateDictError(f"{call}: expected a mapping of name -> array, got {type(state_dict).__name__}")
        own = OrderedDict(self.named_tensors())
        state_dict = self._rename_legacy_keys(state_dict, own)
        errors = []
        bad_keys = [k for k in state_dict if not isinstance(k, str)]
        if bad_keys:
            errors.append(f"Non-string key(s) in state_dict: {bad_keys[:5]!r}.")
        if strict:
            missing = [k for k in own if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own and isinstance(k, str)]
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
            value, problem = _checked_value(state_dict[name])
            if problem:
                errors.append(f"invalid value for {name}: {problem}.")
                continue
            if tuple(value.shape) != tuple(t.shape):
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {tuple(value.shape)} "
                    f"from checkpoint, the shape in current model is {tuple(t.shape)}."
                )
                continue
            arrays[name] = value
        if errors:
            raise StateDictError(
                f"Error(s) in {call}:\n\t" + "\n\t".join(errors)
            )
        # build every new array before replacing any: all or nothing
        new = {name: Tensor(value.astype(own[name].dtype, copy=False), device=own[name].device,
                            dtype=own[name].dtype, requires_grad=False)
               for name, value in arrays.items()}
        for name, value in new.items():
            own[name].data = value

    def _rename_legacy_keys(self, state_dict, own):
        """A checkpoint written with the old container names (``modules.0.weight``)
        loads into the new ones (``0.weight``): each legacy key that is not
        also a current name is mapped to the current name of the same tensor."""
        legacy = {old: new for (old, _), (new, _) in zip(self.named_tensors(legacy=True), own.items())
                  if old != new}
        if not legacy or not any(k in legacy and k not in own for k in state_dict):
            return state_dict
        return {(legacy[k] if k in legacy and k not in own else k): v for k, v in state_dict.items()}

    # -- PyTorch-style helpers (docs/for-pytorch-users.md) ---------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(dotted name, Parameter) pairs, named as in :meth:`state_dict`."""
        for name, t in self.named_tensors():
            if isinstance(t, Parameter):
                yield (f"{prefix}.{name}" if prefix else name), t

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(dotted name, Tensor) for every tensor that is not a Parameter (running statistics)."""
        for name, t in self.named_tensors():
            if not isinstance(t, Parameter):
                yield (f"{prefix}.{name}" if prefix else name), t

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) of each direct sub-module; one inside a list or dict
        attribute is named ``attr.i`` / ``attr.key``, as in state dict keys."""
        seen: set[int] = set()
        for key, value in self._named_entries():
            if isinstance(value, Module):
                found = [(key, value)]
            elif isinstance(value, dict):
                found = [(f"{key}.{k}", v) for k, v in value.items() if isinstance(v, Module)]
            elif isinstance(value, (list, tuple)):
                found = [(f"{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, Module)]
            else:
                continue
            for name, module in found:
                if id(module) not in seen:
                    seen.add(id(module))
                    yield name, module

    def children(self) -> Iterator["Module"]:
        """Each direct sub-module once."""
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module (named ``prefix``, "" by default) and every descendant once, depth first."""
        seen: set[int] = set()

        def walk(module, name):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self) -> Iterator["Module"]:
        """This module and every descendant once (PyTorch's ``Module.modules()``).

        On a :class:`Sequential` the course's ``.modules`` tuple attribute
        shadows this method: there use ``Module.modules(seq)`` or ``seq.children()``.
        """
        for _, module in self.named_modules():
            yield module

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (sets ``.grad = None``).

        needle's ``backward()`` overwrites gradients rather than adding to them,
        so clearing is optional here; ``set_to_none=False`` is accepted and
        also sets None (a later ``backward`` writes fresh gradients either way).
        """
        for p in self.parameters():
            p.grad = None

    def to(self, device=None, dtype=None) -> "Module":
        """Move (and/or cast) every parameter and buffer in place; returns self.

        ``device`` is a device object (``ndl.cuda()``) or a name (``"cuda"``,
        ``"cpu:0"``).  Parameters stay the same objects, so an optimizer built
        before the move keeps working.  Modules that remember a ``device`` /
        ``dtype`` for the tensors they create in ``forward`` (RNN states,
        attention masks) are updated too.
        """
        if isinstance(device, str):
            import needle
            device = needle.device(device)
        for _, t in self.named_tensors():
            array = t.realize_cached_data()
            if device is not None and array.device != device:
                array = array.to(device)
            if dtype is not None and array.dtype != dtype:
                array = array.cast(dtype)
            # assign the array directly: the data setter would cast back to the old dtype
            t.cached_data = array
        for m in Module.modules(self):  # not self.modules(): Sequential's tuple shadows it
            if device is not None and "device" in m.__dict__:
                m.device = device
            if dtype is not None and "dtype" in m.__dict__:
                m.dtype = dtype
        return self

    # -- printing ------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(k, v) for k, v in self._named_entries() if _child_modules(v)]
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
        in_features = check_int("Linear", "in_features", in_features, 0)
        out_features = check_int("Linear", "out_features", out_features, 0)
        check_bool("Linear", "bias", bias)
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
    """Applies ``modules`` in order; they are kept as the tuple ``.modules``.

    State-dict keys name the items by position (``0.weight``), as PyTorch does;
    checkpoints with the older ``modules.0.weight`` keys still load.  The
    tuple attribute is the course's, so ``seq.modules()`` (PyTorch's method)
    is not callable here: use ``seq.children()`` or ``nn.Module.modules(seq)``.
    """

    _items_attr = "modules"

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            check_module("Sequential", f"module {i}", m)
        super().__init__()
        self.modules = modules

    def forward(self, x):
        for module in self.modules:
            x = module(x)
        return x


class SoftmaxLoss(Module):
    """Mean cross-entropy: logits ``(B, k)``, class ids ``y (B,)`` -> 0-d Tensor."""

    def forward(self, logits, y):
        check_loss_inputs("SoftmaxLoss", logits, y)
        batch = logits.shape[0]
        if not (isinstance(y, Tensor) and y.device == logits.device):
            host = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
            # (not numbers: the op names the bad labels)
            y = Tensor(host.astype(logits.dtype), device=logits.device, dtype=logits.dtype,
                       requires_grad=False) if host.dtype.kind in "biuf" else host
        # one fused node per row (logsumexp - the label's logit, no one-hot
        # matrix where the backend offers it; the old composition otherwise);
        # per row first, then the batch: summing each term over the batch
        # before subtracting lets one very confident row (logits ~1e4) swamp
        # the float32 sums and cancel every other row's loss
        return ops.softmax_cross_entropy(logits, y).sum() / batch


class BatchNorm1d(Module):
    """Batch normalisation over axis 0 of ``(B, dim)`` inputs.

    Training uses the batch mean and biased variance and updates the running
    statistics with them (detached); eval uses the running statistics.
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        call = type(self).__name__
        dim = check_int(call, "dim", dim, 0)
        check_float(call, "eps", eps, 0.0)
        check_probability(call, "momentum", momentum)
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
        if self._fused_training(x):
            return self._train_step(x)
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

    def _fused_training(self, x) -> bool:
        """Whether training mode takes the fused node: eager mode, and one dtype
        for input and parameters (mixed float32/float64 goes the composed way,
        which promotes as NumPy does)."""
        return (self.training and not autograd.LAZY_MODE
                and x.dtype == self.weight.dtype and x.dtype == self.bias.dtype)

    def _train_step(self, x):
        # one fused graph node (ops.batch_norm_train) instead of ~12; it
        # leaves the batch mean and biased variance for the running stats
        op = ops.BatchNormTrain(self.eps)
        out = op(x, self.weight, self.bias)
        m = self.momentum
        self.running_mean.data = self.running_mean.realize_cached_data() * (1 - m) + op.mean * m
        self.running_var.data = self.running_var.realize_cached_data() * (1 - m) + op.var * m
        return out

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm1d(Module):
    """Normalises over the last axis of ``(..., dim)`` inputs (biased variance)."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        dim = check_int("LayerNorm1d", "dim", dim, 0)
        check_float("LayerNorm1d", "eps", eps, 0.0)
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
        # one fused node (values of the course's composition: mean, biased
        # variance, (var + eps) ** -0.5, then * weight + bias)
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zeroes each element with probability p in training, scaling the rest by 1/(1-p)."""

    def __init__(self, p=0.5):
        check_probability("Dropout", "p", p)
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
        check_module("Residual", "fn", fn)
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x
