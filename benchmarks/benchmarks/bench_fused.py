"""asv: the issue-14 fused softmax cross-entropy and multi-tensor optimizer
steps on every available backend (the numpy backend runs the compositions)."""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .cases import available_devices


def _device_names():
    try:
        return [d.name for d in available_devices()]
    except Exception:  # needle not importable in this env
        return ["cpu_numpy"]


class FusedLossAndSteps:
    params = (["softmax_loss fwd+bwd 400x10000", "adam step 4 params 110k", "sgd momentum step 4 params 110k"],
              _device_names())
    param_names = ["case", "device"]
    timeout = 300

    def setup(self, case, device):
        import needle as ndl
        import needle.backend_ndarray as nd
        dev = nd.device(device)
        if not dev.enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        rng = np.random.default_rng(0)
        if case.startswith("softmax_loss"):
            z = ndl.Tensor(rng.standard_normal((400, 10000), dtype=np.float32), device=dev, requires_grad=True)
            y = ndl.Tensor(rng.integers(0, 10000, 400).astype(np.float32), device=dev)
            loss_fn = ndl.nn.SoftmaxLoss()

            def run():
                loss_fn(z, y).backward()
        else:
            shapes = [(784, 100), (100,), (100, 100), (100, 10)]
            params = [ndl.nn.Parameter(ndl.Tensor(rng.standard_normal(s).astype(np.float32), device=dev))
                      for s in shapes]
            for p in params:
                p.grad = ndl.Tensor(rng.standard_normal(p.shape).astype(np.float32), device=dev)
            opt = (ndl.optim.Adam(params, lr=1e-3, weight_decay=1e-3) if case.startswith("adam")
                   else ndl.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3))
            run = opt.step
        self.run = run
        run()  # warm-up (allocator, first-step state)

    def time_case(self, case, device):
        self.run()
