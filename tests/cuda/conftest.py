"""Fixtures for the CUDA tests: a fake driver that records calls, so the
runtime, the launch path and every error path run without a GPU."""

import numpy as np
import pytest

from needle_cuda import _driver, _nvrtc, _runtime


class FakeGraph:
    """A captured graph: ``nodes`` holds ("kernel", name, grid, block, args) and
    ("memcpy", dst, src, nbytes) in capture order."""

    def __init__(self, n: int, nodes: list):
        self.n, self.nodes = n, nodes

    def __repr__(self):
        return f"FakeGraph#{self.n}({len(self.nodes)} nodes)"


class FakeGraphExec:
    def __init__(self, graph: FakeGraph):
        self.graph = graph

    def __repr__(self):
        return f"FakeGraphExec({self.graph!r})"


class FakeDriver:
    """Implements the driver calls the runtime makes.  ``fail[name] = "CUDA_ERROR_X"``
    makes that call return the error; ``launches`` records every kernel launch
    as (kernel name, grid, block, kernelParams address).

    Stream capture works as the real driver's: between cuStreamBeginCapture and
    cuStreamEndCapture, launches and device copies on the stream become nodes
    of the graph (``capturing``) instead of running, and a call that is unsafe
    during capture (cuMemAlloc, cuMemFree, cuStreamSynchronize) fails with
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture, so that
    cuStreamEndCapture then returns CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.
    ``graph_launches`` records each cuGraphLaunch's exec, ``stream_order`` the
    kernels and graphs queued outside capture in order, ``destroyed`` each
    ("exec" | "graph", handle) destroyed, ``during_capture`` the name of every
    driver call made while a capture was open."""

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
        self.device_copies: list = []
        self.ctx_switches = 0
        self.CUstreamCaptureMode = real.CUstreamCaptureMode
        self.capturing: list | None = None    # nodes of the graph being captured
        self.capture_mode = None
        self.capture_invalidated = False
        self.during_capture: list[str] = []
        self.graphs_made = 0
        self.instantiated: list = []
        self.graph_launches: list = []
        self.destroyed: list = []
        self.stream_order: list = []          # ("kernel", name) / ("graph", exec), as queued

    def _ok(self, name, *values):
        if self.capturing is not None:
            self.during_capture.append(name)
        if name in self.fail:
            return (getattr(self.CUresult, self.fail[name]),) + tuple(None for _ in values)
        return (self.CUresult.CUDA_SUCCESS,) + values

    def _unsafe_in_capture(self, name, *values):
        """The real driver's answer to a call stream capture forbids: the error,
        and the capture invalidated."""
        self.during_capture.append(name)
        self.capture_invalidated = True
        return (self.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,) + tuple(None for _ in values)

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
        if self.capturing is not None:
            return self._unsafe_in_capture("cuStreamSynchronize")
        return self._ok("cuStreamSynchronize")

    def cuMemAlloc(self, n):
        if self.capturing is not None:
            return self._unsafe_in_capture("cuMemAlloc", 0)
        res = self._ok("cuMemAlloc", self.next_ptr)
        if int(res[0]) == 0:
            self.allocs[self.next_ptr] = n
            self.next_ptr += n + 4096
        return res

    def cuMemFree(self, p):
        if self.capturing is not None:
            return self._unsafe_in_capture("cuMemFree")
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
        res = self._ok("cuMemcpyDtoDAsync")
        if int(res[0]) == 0:
            (self.capturing if self.capturing is not None else self.device_copies).append(
                ("memcpy", int(dst), int(src), int(n)))
        return res

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
        res = self._ok("cuLaunchKernel")
        if int(res[0]) != 0:
            return res
        if self.capturing is not None:
            if self.capture_invalidated:
                return (self.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,)
            self.capturing.append(("kernel", fn, (gx, gy, gz), (bx, by, bz), args))
            return res
        self.launches.append((fn, (gx, gy, gz), (bx, by, bz), args))
        self.stream_order.append(("kernel", fn))
        return res

    # -- stream capture and graphs ---------------------------------------------------
    def cuStreamBeginCapture(self, stream, mode):
        if self.capturing is not None:
            return (self.CUresult.CUDA_ERROR_ILLEGAL_STATE,)
        res = self._ok("cuStreamBeginCapture")
        if int(res[0]) == 0:
            self.capturing, self.capture_mode, self.capture_invalidated = [], mode, False
        return res

    def cuStreamEndCapture(self, stream):
        if self.capturing is None:
            return (self.CUresult.CUDA_ERROR_ILLEGAL_STATE, None)
        nodes, invalidated = self.capturing, self.capture_invalidated
        self.capturing, self.capture_invalidated = None, False
        if invalidated:
            return (self.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, None)
        self.graphs_made += 1
        return self._ok("cuStreamEndCapture", FakeGraph(self.graphs_made, nodes))

    def cuGraphInstantiate(self, graph, flags):
        assert isinstance(graph, FakeGraph) and flags == 0
        res = self._ok("cuGraphInstantiate", FakeGraphExec(graph))
        if int(res[0]) == 0:
            self.instantiated.append(res[1])
        return res

    def cuGraphLaunch(self, exec_, stream):
        assert isinstance(exec_, FakeGraphExec) and ("exec", exec_) not in self.destroyed
        res = self._ok("cuGraphLaunch")
        if int(res[0]) == 0:
            self.graph_launches.append(exec_)
            self.stream_order.append(("graph", exec_))
        return res

    def cuGraphExecDestroy(self, exec_):
        self.destroyed.append(("exec", exec_))
        return self._ok("cuGraphExecDestroy")

    def cuGraphDestroy(self, graph):
        self.destroyed.append(("graph", graph))
        return self._ok("cuGraphDestroy")


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
