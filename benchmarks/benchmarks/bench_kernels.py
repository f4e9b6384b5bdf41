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


class CpuSimdPaths:
    """The cpu backend's GEMM / element-wise kernels on each SIMD path
    (NEEDLE_CPU_SIMD's choices); paths this CPU cannot run are skipped."""
    params = (["matmul 512x512@512x512", "MLP fwd 128x784@784x100", "MLP fwd 128x100@100x10",
               "MLP bwd X^T@G 784x128@128x100", "MLP bwd H^T@G 100x128@128x10",
               "MLP bwd G@W2^T 128x10@10x100",
               "attention q@k^T 32x4x(32x16@16x32) permuted", "add 2^16",
               "add broadcast row 256x256 + 1x256", "sum leading axis 400x10000"], ["avx512", "avx2", "none"])
    param_names = ["kernel", "simd"]

    def setup(self, kernel, simd):
        import needle.backend_ndarray as nd
        try:
            import needle_cpu._ext as ext
            ext.set_simd(simd)
        except Exception as exc:  # not built, or a path this CPU lacks
            raise SkipNotImplemented(f"cpu simd {simd}: {exc}")
        self.ext = ext
        self.case = next(c for c in KERNEL_CASES if c.name == kernel)
        self.inputs = to_device(make_inputs(self.case), nd.cpu())

    def teardown(self, kernel, simd):
        self.ext.set_simd("auto")

    def time_kernel(self, kernel, simd):
        self.case.needle(*self.inputs)
