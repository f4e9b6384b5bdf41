"""SGD and Adam (course API §5, docs/design.md) plus global-norm gradient clipping.

Updates run on the parameters' raw NDArrays, never on Tensors: no graph node
is created, gradients are only read (tests compare them before and after
``step``), and each new value is cast back to the parameter's dtype.
"""

from __future__ import annotations

import functools
import math

import numpy as np

import needle.backend_ndarray as nd
from needle import ops
from needle.autograd import Tensor
from needle.backend_ndarray import capture
from needle.errors import HyperParameterError, StateDictError
from needle.validation import check_float

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm"]


def _numeric(call: str, key: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise StateDictError(f"{call}: {key} is not an array ({type(exc).__name__}: {exc})") from None
    if arr.dtype.kind not in "biuf":
        raise StateDictError(f"{call}: {key} has dtype {arr.dtype}; expected numbers")
    return arr


def _array_of(t: Tensor):
    return t.realize_cached_data()


def _set_state(table: dict, p: Tensor, value) -> None:
    """``table[p] = value`` for an optimizer state (momentum, Adam's moments);
    under needle.jit the state keeps its buffer across replays."""
    old = table.get(p)
    table[p] = value
    if old is not None and capture.keeps_buffers():
        capture.state_moved(old, value, functools.partial(table.__setitem__, p))


def _assign(p: Tensor, value) -> None:
    """Replace p's array with ``value`` (an NDArray), keeping p's dtype."""
    # the data setter swaps the array in (casting to p's dtype) without a graph node
    p.data = value


class _GroupValue:
    """A hyper-parameter attribute (``opt.lr``) backed by ``param_groups``.

    Reading gives the first group's value; assigning sets it in every group,
    so course-style code (``opt.lr = 0.1``) and PyTorch-style code
    (``for g in opt.param_groups: g["lr"] = 0.1``) see the same state.
    """

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.param_groups[0][self.name]

    def __set__(self, obj, value) -> None:
        for group in obj.param_groups:
            group[self.name] = value


class Optimizer:
    """Base class: holds ``params`` (a list) and clears their gradients.

    ``params`` is an iterable of Tensors or, as in PyTorch, of dicts
    ``{"params": [...], "lr": ...}`` (one *param group* each; keys a group
    leaves out take the constructor's values).  ``self.param_groups`` is that
    list of dicts; ``self.params`` every parameter, group after group.
    """

    def __init__(self, params, defaults: dict | None = None):
        self.defaults = dict(defaults or {})
        self.param_groups: list[dict] = []
        self.params: list = []
        params = list(params)
        if params and all(isinstance(g, dict) for g in params):
            for group in params:
                self.add_param_group(group)
        else:
            if any(isinstance(g, dict) for g in params):
                raise TypeError(f"{type(self).__name__}: params must be all Tensors or all param-group dicts")
            self.add_param_group({"params": params})

    def add_param_group(self, group: dict) -> None:
        """Append a group: ``{"params": [...], <hyper-parameter>: value, ...}``."""
        if "params" not in group:
            raise KeyError(f"{type(self).__name__}.add_param_group: the group has no 'params' key: {sorted(group)}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise KeyError(f"{type(self).__name__}.add_param_group: unknown option(s) {sorted(unknown)}; "
                           f"valid: {sorted(self.defaults)}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        known = {id(p) for p in self.params}
        if any(id(p) in known for p in params):
            raise ValueError(f"{type(self).__name__}.add_param_group: a parameter is already in another group")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self.param_groups.append(full)
        self.params.extend(params)

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError()

    def reset_grad(self):
        for p in self.params:
            p.grad = None

    def zero_grad(self, set_to_none: bool = True):
        """PyTorch's name for :meth:`reset_grad` (gradients become None either way:
        needle's ``backward`` overwrites them instead of accumulating)."""
        self.reset_grad()

    def clip_grad_norm(self, max_norm=0.25):
        """Clip this optimizer's gradients by global norm (see :func:`clip_grad_norm`)."""
        return clip_grad_norm(self.params, max_norm)

    # -- checkpoints: state keyed by parameter position ----------------------
    _slots: tuple[str, ...] = ()
    _scalars: tuple[str, ...] = ("lr",)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Hyper-parameters and per-parameter state as NumPy arrays.

        Keys: ``"<scalar>"`` (lr, t, ...) and ``"<slot>.<index>"`` where index
        is the parameter's position in ``self.params``.
        """
        state = {name: np.asarray(getattr(self, name)) for name in self._scalars}
        if len(self.param_groups) > 1:
            for i, group in enumerate(self.param_groups):
                for name in self.defaults:
                    state[f"param_groups.{i}.{name}"] = np.asarray(group[name])
        index = {id(p): i for i, p in enumerate(self.params)}
        for slot in self._slots:
            for p, value in getattr(self, slot).items():
                state[f"{slot}.{index[id(p)]}"] = value.numpy()
        return state

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`'s output; every value is checked before
        any is applied (all or nothing); a malformed one is a StateDictError
        naming its key."""
        call = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "items"):
            raise StateDictError(f"{call}: expected a mapping, got {type(state).__name__}")
        scalars = {}
        for name in self._scalars:
            if name in state:
                value = _numeric(call, name, state[name])
                if value.size != 1 or not np.isfinite(value).all():
                    raise StateDictError(f"{call}: {name} must be one finite number, got {value!r}")
                value = value.item()
                # the step counter stays an int; hyper-parameters become floats (lr=4 then 0.5 must not truncate)
                scalars[name] = int(value) if name == "t" else float(value)
        groups = {}
        for i in range(len(self.param_groups)):
            for name in self.defaults:
                key = f"param_groups.{i}.{name}"
                if key in state:
                    value = _numeric(call, key, state[key])
                    if value.size != 1 or not np.isfinite(value).all():
                        raise StateDictError(f"{call}: {key} must be one finite number, got {value!r}")
                    groups[i, name] = float(value.item())
        slots = {}
        for slot in self._slots:
            table = {}
            for i, p in enumerate(self.params):
                key = f"{slot}.{i}"
                if key not in state:
                    continue
                value = _numeric(call, key, state[key])
                if tuple(value.shape) != tuple(p.shape):
                    raise StateDictError(
                        f"{call}: {key} has shape {tuple(value.shape)}, "
                        f"parameter {i} has shape {tuple(p.shape)}"
                    )
                table[p] = value
            slots[slot] = table
        for name, value in scalars.items():
            setattr(self, name, value)
        for (i, name), value in groups.items():  # after the scalars: opt.lr sets every group
            self.param_groups[i][name] = value
        for slot, table in slots.items():
            setattr(self, slot, {p: nd.array(v, dtype=p.dtype, device=p.device) for p, v in table.items()})


class SGD(Optimizer):
    """SGD with momentum as an exponential average: u <- m*u + (1-m)*g; p <- p - lr*u.

    g = grad + weight_decay * p.
    """

    _slots = ("u",)
    _scalars = ("lr", "momentum", "weight_decay")
    lr = _GroupValue("lr")
    momentum = _GroupValue("momentum")
    weight_decay = _GroupValue("weight_decay")

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        check_float("SGD", "lr", lr, 0.0)
        check_float("SGD", "momentum", momentum, 0.0, 1.0, high_open=True)  # an average's weight
        check_float("SGD", "weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.u = {}

    def step(self):
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            if capture.capturing():
                # needle.jit: a replay reads the group's lr anew (schedules); a new
                # momentum or weight decay changes the kernels, so it captures again
                lr = capture.dynamic(lr, functools.partial(group.__getitem__, "lr"))
                capture.guard(functools.partial(_unchanged, group, {"momentum": m, "weight_decay": wd}))
            if self._fused_step(group, lr, m, wd):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                w = _array_of(p)
                g = _array_of(p.grad)
                if wd:
                    g = g + w * wd
                if m:
                    u = self.u.get(p)
                    u = g * (1 - m) if u is None else u * m + g * (1 - m)
                    _set_state(self.u, p, u)
                    g = u
                _assign(p, w - g * lr)

    def _fused_step(self, group, lr, m, wd) -> bool:
        """The group's step as one multi-tensor backend call (same values as
        the loop in ``step``); False when the backend does not offer it."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return True
        if not _listed_once(params):
            return False
        # before ``ws`` and ``moms`` below hold references of their own
        own_ws, own_us = _own_arrays(params), _own_states(self.u, params) if m else None
        ws = [_array_of(p) for p in params]
        moms = [_state_or_zeros(self.u, p, w) for p, w in zip(params, ws)] if m else None
        out = ops.multi_tensor_sgd_step(ws, [_array_of(p.grad) for p in params], moms, lr, m, wd,
                                        own_ws, own_us)
        if out is None:
            return False
        new_ws, new_us = out
        for i, p in enumerate(params):
            _assign(p, new_ws[i])
            if m:
                _set_state(self.u, p, new_us[i])
        return True


def _unchanged(group: dict, values: dict) -> bool:
    return all(group[k] == v for k, v in values.items())


def _own_arrays(params):
    """Per parameter, its array when the fused step may overwrite it in place:
    nothing but the parameter holds it (no ``p.data`` / ``detach()`` Tensor
    sharing it, no view, no NumPy export), so the course's out-of-place update
    cannot be told apart from it.  None elsewhere (a fresh array then).
    Under needle.jit every parameter is updated in place: a replay keeps
    each state in one buffer."""
    if capture.keeps_buffers():
        return [p.cached_data for p in params]
    out = []
    for p in params:
        arr = p.cached_data
        # known references: the parameter's slot and ``arr``
        out.append(arr if arr is not None and arr.unshared(2) else None)
    return out


def _own_states(table: dict, params):
    """The same for optimizer states (momentum, Adam's moments) in ``table``."""
    if capture.keeps_buffers():
        return [table.get(p) for p in params]
    out = []
    for p in params:
        arr = table.get(p)
        # known references: the table's slot and ``arr``
        out.append(arr if arr is not None and arr.unshared(2) else None)
    return out


def _listed_once(params) -> bool:
    """Every parameter of the group occurs once.  A parameter listed twice is
    updated twice, one update after the other (the per-parameter loop, as
    PyTorch's); the multi-tensor kernels read every input before writing, so
    such a group takes the loop."""
    return len({id(p) for p in params}) == len(params)


def _state_or_zeros(table: dict, p: Tensor, w):
    """The moment array of ``p``, or zeros shaped like ``w`` before the first
    step (``b*0 + c*g`` is exactly the composition's first ``c*g``)."""
    state = table.get(p)
    if state is None:
        state = nd.full(w.shape, 0.0, dtype=w.dtype, device=w.device)
    return state


class Adam(Optimizer):
    """Adam with bias correction and L2 (not decoupled) weight decay.

    g = grad + wd*p; m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    """

    _slots = ("m", "v")
    _scalars = ("lr", "beta1", "beta2", "eps", "weight_decay", "t")
    lr = _GroupValue("lr")
    beta1 = _GroupValue("beta1")
    beta2 = _GroupValue("beta2")
    eps = _GroupValue("eps")
    weight_decay = _GroupValue("weight_decay")

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, *, betas=None):
        if betas is not None:
            # PyTorch's spelling; the course's beta1/beta2 stay the primary names
            try:
                b1, b2 = betas
            except (TypeError, ValueError):
                raise HyperParameterError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}") from None
            if (beta1, beta2) != (0.9, 0.999) and (beta1, beta2) != (b1, b2):
                raise HyperParameterError(f"Adam: got both betas={betas!r} and beta1={beta1!r}, "
                                          f"beta2={beta2!r}; give one")
            beta1, beta2 = b1, b2
        check_float("Adam", "lr", lr, 0.0)
        check_float("Adam", "beta1", beta1, 0.0, 1.0, high_open=True)
        check_float("Adam", "beta2", beta2, 0.0, 1.0, high_open=True)
        check_float("Adam", "eps", eps, 0.0, low_open=True)
        check_float("Adam", "weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))
        self.t = 0
        self.m = {}
        self.v = {}

    @property
    def betas(self) -> tuple:
        return (self.beta1, self.beta2)

    def step(self):
        self.t += 1
        capture.on_replay(self._advance)  # needle.jit: each replay is one more step
        m_state, v_state = self.m, self.v
        for group in self.param_groups:
            self._step_group(group, m_state, v_state)

    def _advance(self) -> None:
        self.t += 1

    def _folded(self, group) -> tuple:
        """``(k, eps_s, frozen)`` of ``group`` at step ``self.t``.

        lr * m_hat / (sqrt(v_hat) + eps) == m / (sqrt(v * k) + eps / step_size)
        with k = 1 / ((1 - b2^t) * step_size^2): the bias corrections and lr
        fold into two scalars, so each parameter costs 5 array ops."""
        b1, b2 = group["beta1"], group["beta2"]
        step_size = group["lr"] / (1 - b1**self.t)
        frozen = step_size == 0  # lr 0 (a frozen group): moments advance, weights stay
        step_size = step_size or 1.0
        return 1.0 / ((1 - b2**self.t) * step_size * step_size), group["eps"] / step_size, frozen

    def _step_group(self, group, m_state, v_state):
        b1, b2, wd = group["beta1"], group["beta2"], group["weight_decay"]
        c1, c2 = 1 - b1, 1 - b2
        k, eps_s, frozen = self._folded(group)
        if capture.capturing():
            # needle.jit: k and eps_s follow t and lr on every replay; the betas,
            # the weight decay and whether the group is frozen decide the kernels
            k = capture.dynamic(k, lambda: self._folded(group)[0])
            eps_s = capture.dynamic(eps_s, lambda: self._folded(group)[1])
            capture.guard(functools.partial(_unchanged, group, {"beta1": b1, "beta2": b2, "weight_decay": wd}))
            capture.guard(lambda: (group["lr"] == 0) == frozen)
        if self._fused_step(group, m_state, v_state, b1, b2, wd, k, eps_s, frozen):
            return
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            w = _array_of(p)
            g = _array_of(grad)
            if wd:
                g = w * wd + g
            m = m_state.get(p)
            v = v_state.get(p)
            gc2 = g * c2
            m = g * c1 if m is None else m * b1 + g * c1
            v = gc2 * g if v is None else v * b2 + gc2 * g
            _set_state(m_state, p, m)
            _set_state(v_state, p, v)
            if not frozen:
                _assign(p, w - m / ((v * k).sqrt() + eps_s))

    def _fused_step(self, group, m_state, v_state, b1, b2, wd, k, eps_s, frozen) -> bool:
        """``_step_group``'s loop as one multi-tensor backend call (same
        values); False when the backend does not offer it."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return True
        if not _listed_once(params):
            return False
        own = (_own_arrays(params), _own_states(m_state, params), _own_states(v_state, params))
        ws = [_array_of(p) for p in params]
        out = ops.multi_tensor_adam_step(
            ws, [_array_of(p.grad) for p in params],
            [_state_or_zeros(m_state, p, w) for p, w in zip(params, ws)],
            [_state_or_zeros(v_state, p, w) for p, w in zip(params, ws)], b1, b2, wd, k, eps_s, frozen,
            *own)
        if out is None:
            return False
        new_ws, new_ms, new_vs = out
        for i, p in enumerate(params):
            _set_state(m_state, p, new_ms[i])
            _set_state(v_state, p, new_vs[i])
            if not frozen:
                _assign(p, new_ws[i])
        return True


def clip_grad_norm(params, max_norm=0.25):
    """Scale all gradients by max_norm / (total + 1e-6) when their global L2 norm exceeds max_norm.

    Gradients are replaced by new tensors, never edited in place.  Returns the
    total norm (a float) before clipping.
    """
    check_float("clip_grad_norm", "max_norm", max_norm, 0.0)
    params = [p for p in params if p.grad is not None]
    total_sq = 0.0
    for p in params:
        g = _array_of(p.grad)
        total_sq += float(np.asarray((g * g).sum().numpy()).sum())
    total = math.sqrt(total_sq)
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            g = _array_of(p.grad)
            p.grad = Tensor(g * scale, device=p.grad.device, dtype=p.grad.dtype, requires_grad=False)
    return total

