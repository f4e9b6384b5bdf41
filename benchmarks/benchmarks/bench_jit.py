"""asv: needle.jit training steps beside the same steps run eagerly (issue
15), on every available backend: the tiny MLP of ``compare.py jit``
(784-100-10, batch 16, SGD) and a small LSTM language-model step."""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .cases import available_devices


def _device_names():
    try:
        return [d.name for d in available_devices()]
    except Exception:  # needle not importable in this env
        return ["cpu_numpy"]


def _mlp_step(ndl, dev):
    rng = np.random.default_rng(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(784, 100, device=dev), ndl.nn.ReLU(),
                              ndl.nn.Linear(100, 10, device=dev))
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = ndl.nn.SoftmaxLoss()
    x = ndl.Tensor(rng.standard_normal((16, 784)).astype(np.float32), device=dev, requires_grad=False)
    y = ndl.Tensor(rng.integers(0, 10, 16).astype(np.float32), device=dev, requires_grad=False)

    def step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step, (x, y)


def _lstm_step(ndl, dev):
    rng = np.random.default_rng(0)
    vocab, seq, batch, hidden = 1000, 16, 8, 64
    model = ndl.models.LanguageModel(hidden, vocab, hidden, num_layers=1, seq_model="lstm", device=dev)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = ndl.nn.SoftmaxLoss()
    x = ndl.Tensor(rng.integers(0, vocab, (seq, batch)).astype(np.float32), device=dev, requires_grad=False)
    y = ndl.Tensor(rng.integers(0, vocab, seq * batch).astype(np.float32), device=dev, requires_grad=False)

    def step(x, y):
        opt.reset_grad()
        out, _ = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        return loss
    return step, (x, y)


class JitSteps:
    params = (["mlp 784-100-10 b16", "lstm lm v1000 h64"], ["eager", "jit"], _device_names())
    param_names = ["model", "mode", "device"]
    timeout = 300

    def setup(self, model, mode, device):
        import needle as ndl
        import needle.backend_ndarray as nd
        dev = nd.device(device)
        if not dev.enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        self.saved = ndl.autograd.KEEP_INTERIOR_GRADS
        ndl.autograd.KEEP_INTERIOR_GRADS = False   # as needle train runs
        step, self.args = (_mlp_step if model.startswith("mlp") else _lstm_step)(ndl, dev)
        self.step = ndl.jit(step) if mode == "jit" else step
        for _ in range(3):   # eager, capture, first replay
            self.step(*self.args)

    def teardown(self, model, mode, device):
        import needle as ndl
        ndl.autograd.KEEP_INTERIOR_GRADS = self.saved

    def time_step(self, model, mode, device):
        self.step(*self.args)
