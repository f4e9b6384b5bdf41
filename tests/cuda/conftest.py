"""Fixtures for the CUDA tests: a fake driver that records calls, so the
runtime, the launch path and every error path run without a GPU."""

import numpy as np
import pytest

from needle_cuda import _driver, _nvrtc, _runtime


class FakeDriver:
    """Implements the driver calls the runtime makes.  ``fail[name] = "CUDA_ERROR_X"``
    makes that call return the error; ``launches`` records every kernel launch
    as (kernel name, grid, block, kernelParams address)."""

    def __init__(self, cc=(8, 0), sm_count=108):
        from cuda.bindings import driver as real
        self.CUresult = real.CUresult
        self.CUdevice_attribute = real.CUdevice_attribute
        self.CUstream_flags = real.CUstream_flags
        self.cc, self.sm_count = cc, sm_count
        self.fail: dict[str, str] = {}
        self.launches: list = []
        self.allocs: dict[int, int] = {}
        self.freed: list[int] = []
        self.next_ptr = 1 << 20
        self.host_copies: list = []
        self.ctx_switches = 0

    def _ok(self, name, *values):
        if name in self.fail:
            return (getattr(self.CUresult, self.fail[name]),) + tuple(None for _ in values)
        return (self.CUresult.CUDA_SUCCESS,) + values

    def cuGetErrorName(self, err):
        return self.CUresult.CUDA_SUCCESS, err.name.encode()

    def cuInit(self, flags):
        return self._ok("cuInit")

    def cuDeviceGetCount(self):
        return self._ok("cuDeviceGetCount", 1)

    def cuDeviceGet(self, i):
        return self._ok("cuDeviceGet", f"dev{i}")

    def cuDevicePrimaryCtxRetain(self, dev):
        return self._ok("cuDevicePrimaryCtxRetain", f"ctx-{dev}")

    def cuCtxSetCurrent(self, ctx):
        self.ctx_switches += 1
        return self._ok("cuCtxSetCurrent")

    def cuDeviceGetAttribute(self, attr, dev):
        a = self.CUdevice_attribute
        value = {a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: self.cc[0],
                 a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: self.cc[1],
                 a.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: self.sm_count}[attr]
        return self._ok("cuDeviceGetAttribute", value)

    def cuDeviceGetName(self, n, dev):
        return self._ok("cuDeviceGetName", b"Fake GPU\0\0")

    def cuDriverGetVersion(self):
        return self._ok("cuDriverGetVersion", 13000)

    def cuStreamCreate(self, flags):
        return self._ok("cuStreamCreate", "stream")

    def cuStreamSynchronize(self, s):
        return self._ok("cuStreamSynchronize")

    def cuMemAlloc(self, n):
        res = self._ok("cuMemAlloc", self.next_ptr)
        if int(res[0]) == 0:
            self.allocs[self.next_ptr] = n
            self.next_ptr += n + 4096
        return res

    def cuMemFree(self, p):
        self.freed.append(p)
        self.allocs.pop(p, None)
        return self._ok("cuMemFree")

    def cuMemcpyHtoDAsync(self, dst, src, n, s):
        self.host_copies.append(("htod", dst, n))
        return self._ok("cuMemcpyHtoDAsync")

    def cuMemcpyDtoHAsync(self, dst, src, n, s):
        self.host_copies.append(("dtoh", src, n))
        return self._ok("cuMemcpyDtoHAsync")

    def cuMemcpyDtoDAsync(self, dst, src, n, s):
        return self._ok("cuMemcpyDtoDAsync")

    def cuModuleLoadData(self, code):
        return self._ok("cuModuleLoadData", ("module", bytes(code[:8])))

    def cuModuleGetFunction(self, mod, name):
        return self._ok("cuModuleGetFunction", name.decode())

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shmem, stream, params, extra):
        # decode kernelParams now, while the runtime still holds the values:
        # each pointer must lead to exactly the bytes of the matching argument
        import ctypes
        from needle_cuda._launch import arg_bytes
        kernel, passed = _runtime.existing_runtimes()[0].last_launch
        assert kernel == fn
        ptrs = (ctypes.c_uint64 * len(passed)).from_address(params)
        args = []
        for p, a in zip(ptrs, passed):
            want = arg_bytes(a)
            assert ctypes.string_at(int(p), len(want)) == want
            args.append(np.array(a) if isinstance(a, np.ndarray) else a)
        self.launches.append((fn, (gx, gy, gz), (bx, by, bz), args))
        return self._ok("cuLaunchKernel")


@pytest.fixture
def fake_driver(monkeypatch):
    """A FakeDriver installed as the driver; compilation is stubbed out (the
    compile tests cover NVRTC), and runtimes are rebuilt per test."""
    pytest.importorskip("cuda.bindings.driver")
    fake = FakeDriver()
    compiled = []

    def fake_compile(source, name, arch, options=_nvrtc.BASE_OPTIONS, kind="cubin"):
        compiled.append((name, arch, kind))
        return b"\x7fELFfake"

    monkeypatch.setattr(_nvrtc, "compile_cached", fake_compile)
    monkeypatch.setattr(_nvrtc, "supported_archs", lambda: [75, 80, 86, 89, 90, 100, 120])
    fake.compiled = compiled
    _runtime.reset_for_testing()
    _driver.set_driver_for_testing(fake)
    yield fake
    _runtime.reset_for_testing()
    _driver.set_driver_for_testing(None)
