"""SGD and Adam (course API §5, docs/design.md) plus global-norm gradient clipping.

Updates run on the parameters' raw NDArrays, never on Tensors: no graph node
is created, gradients are only read (tests compare them before and after
``step``), and each new value is cast back to the parameter's dtype.
"""

from __future__ import annotations

import math

import numpy as np

import needle.backend_ndarray as nd
from needle.autograd import Tensor
from needle.errors import ShapeError

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm"]


def _array_of(t: Tensor):
    return t.realize_cached_data()


def _assign(p: Tensor, value) -> None:
    """Replace p's array with ``value`` (an NDArray), keeping p's dtype."""
    # the data setter swaps the array in (casting to p's dtype) without a graph node
    p.data = value


class Optimizer:
    """Base class: holds ``params`` (a list) and clears their gradients."""

    def __init__(self, params):
        self.params = list(params)

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError()

    def reset_grad(self):
        for p in self.params:
            p.grad = None

    zero_grad = reset_grad

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
        index = {id(p): i for i, p in enumerate(self.params)}
        for slot in self._slots:
            for p, value in getattr(self, slot).items():
                state[f"{slot}.{index[id(p)]}"] = value.numpy()
        return state

    def load_state_dict(self, state) -> None:
        for name in self._scalars:
            if name in state:
                value = np.asarray(state[name]).item()
                # the step counter stays an int; hyper-parameters become floats (lr=4 then 0.5 must not truncate)
                setattr(self, name, int(value) if name == "t" else float(value))
        for slot in self._slots:
            table = {}
            for i, p in enumerate(self.params):
                key = f"{slot}.{i}"
                if key not in state:
                    continue
                value = np.asarray(state[key])
                if tuple(value.shape) != tuple(p.shape):
                    raise ShapeError(
                        f"{type(self).__name__}.load_state_dict: {key} has shape {tuple(value.shape)}, "
                        f"parameter {i} has shape {tuple(p.shape)}"
                    )
                table[p] = nd.array(value, dtype=p.dtype, device=p.device)
            setattr(self, slot, table)


class SGD(Optimizer):
    """SGD with momentum as an exponential average: u <- m*u + (1-m)*g; p <- p - lr*u.

    g = grad + weight_decay * p.
    """

    _slots = ("u",)
    _scalars = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.momentum = momentum
        self.u = {}
        self.weight_decay = weight_decay

    def step(self):
        lr, m, wd = self.lr, self.momentum, self.weight_decay
        for p in self.params:
            if p.grad is None:
                continue
            w = _array_of(p)
            g = _array_of(p.grad)
            if wd:
                g = g + w * wd
            if m:
                u = self.u.get(p)
                u = g * (1 - m) if u is None else u * m + g * (1 - m)
                self.u[p] = u
                g = u
            _assign(p, w - g * lr)


class Adam(Optimizer):
    """Adam with bias correction and L2 (not decoupled) weight decay.

    g = grad + wd*p; m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    """

    _slots = ("m", "v")
    _scalars = ("lr", "beta1", "beta2", "eps", "weight_decay", "t")

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self):
        self.t += 1
        b1, b2, wd = self.beta1, self.beta2, self.weight_decay
        c1, c2 = 1 - b1, 1 - b2
        step_size = self.lr / (1 - b1**self.t)
        # lr * m_hat / (sqrt(v_hat) + eps) == m / (sqrt(v * k) + eps / step_size)
        # with k = 1 / ((1 - b2^t) * step_size^2): the bias corrections and lr
        # fold into two scalars, so each parameter costs 5 array ops here
        k = 1.0 / ((1 - b2**self.t) * step_size * step_size)
        eps_s = self.eps / step_size
        m_state, v_state = self.m, self.v
        for p in self.params:
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
            m_state[p] = m
            v_state[p] = v
            _assign(p, w - m / ((v * k).sqrt() + eps_s))


def clip_grad_norm(params, max_norm=0.25):
    """Scale all gradients by max_norm / (total + 1e-6) when their global L2 norm exceeds max_norm.

    Gradients are replaced by new tensors, never edited in place.  Returns the
    total norm (a float) before clipping.
    """
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

