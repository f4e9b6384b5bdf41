"""asv: peak memory (``peakmem_``: the process's maximum RSS) of training steps.

The steps are those of ``benchmarks/memory_probe.py`` (``compare.py memory``,
which also runs PyTorch beside them): SmallCNN with Adam and ResNet9 with
SGD, batch 128, on every available needle device.
"""

import os
import sys

from asv_runner.benchmarks.mark import SkipNotImplemented

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _device_names():
    try:
        from .cases import available_devices
        return [d.name for d in available_devices()]
    except Exception:  # needle not importable in this env
        return ["cpu_numpy"]


class TrainingStepMemory:
    params = (["smallcnn", "resnet9"], _device_names())
    param_names = ["workload", "device"]
    timeout = 600

    def setup(self, workload, device):
        import needle.backend_ndarray as nd
        if not nd.device(device).enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        import memory_probe  # benchmarks/memory_probe.py
        self.step = memory_probe.needle_step(workload, device)

    def peakmem_five_steps(self, workload, device):
        for _ in range(5):
            self.step()
