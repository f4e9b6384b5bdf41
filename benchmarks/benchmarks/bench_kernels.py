"""asv: every protocol kernel (through NDArray) on every available backend."""

from asv_runner.benchmarks.mark import SkipNotImplemented

from .cases import KERNEL_CASES, available_devices, make_inputs, to_device


def _device_names():
    try:
        return [d.name for d in available_devices()]
    except Exception:  # needle not importable in this env
        return ["cpu_numpy"]


class Kernels:
    params = ([c.name for c in KERNEL_CASES], _device_names())
    param_names = ["kernel", "device"]
    timeout = 300

    def setup(self, kernel, device):
        import needle.backend_ndarray as nd
        dev = nd.device(device)
        if not dev.enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        self.case = next(c for c in KERNEL_CASES if c.name == kernel)
        self.inputs = to_device(make_inputs(self.case), dev)
        # warm-up: `asv run --quick` times one call, which would otherwise include
        # first-call costs (allocator growth, kernel compilation on cuda, page faults)
        self.case.needle(*self.inputs)

    def time_kernel(self, kernel, device):
        self.case.needle(*self.inputs)


class NumpyReference:
    params = [c.name for c in KERNEL_CASES]
    param_names = ["kernel"]

    def setup(self, kernel):
        self.case = next(c for c in KERNEL_CASES if c.name == kernel)
        self.inputs = make_inputs(self.case)
        self.case.numpy(*self.inputs)  # warm-up, as in Kernels.setup

    def time_numpy(self, kernel):
        self.case.numpy(*self.inputs)
