"""Per-device runtime: primary context, one stream, modules, launches, copies.

Built lazily on first use of a device; every step goes through
:func:`needle_cuda._driver.call`, so failures surface as CudaError naming the
CUDA error and the action.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import numpy as np

from needle.errors import OutOfBoundsError

from . import _driver, _kernels, _nvrtc
from ._errors import CaptureUnsupportedError, CudaError
from ._launch import DevicePtr, pack_args
from ._memory import CachingAllocator

_OOM = "CUDA_ERROR_OUT_OF_MEMORY"

#: int64 words of a device's kernel error record: the code of the op that found
#: the error (0: none), the position, the bad value as float64 bits, num, and
#: the itemsize of the dtype the value was stored in
ERROR_RECORD_WORDS = 5


class DeviceRuntime:
    """Everything needle keeps for one GPU."""

    def __init__(self, index: int):
        self.index = index
        self._lock = threading.RLock()
        call = _driver.call
        self.device = call("cuDeviceGet", index, action=f"getting CUDA device {index}")
        self.context = call("cuDevicePrimaryCtxRetain", self.device,
                            action=f"retaining the primary context of cuda:{index}")
        self.activate()
        drv = _driver.driver()
        attr = drv.CUdevice_attribute
        major = call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                     self.device, action="reading the compute capability")
        minor = call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                     self.device, action="reading the compute capability")
        self.compute_capability = int(major) * 10 + int(minor)
        self.sm_count = int(call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                                 self.device, action="reading the SM count"))
        raw = call("cuDeviceGetName", 256, self.device, action="reading the device name")
        self.name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        self.stream = call("cuStreamCreate", int(drv.CUstream_flags.CU_STREAM_NON_BLOCKING),
                           action=f"creating a stream on cuda:{index}")
        self.target_kind, self.arch = _nvrtc.choose_target(self.compute_capability, _nvrtc.supported_archs())
        self.allocator = CachingAllocator(self._raw_alloc, self._raw_free, self.synchronize)
        self._modules: dict[str, object] = {}
        self._functions: dict[str, object] = {}
        self.last_launch: tuple = ("", ())
        self._error_record: "int | None" = None  # see error_record()
        self._cuLaunchKernel = drv.cuLaunchKernel  # looked up once: it is on every op's path

    # -- context / stream ------------------------------------------------------
    def activate(self) -> None:
        _driver.call("cuCtxSetCurrent", self.context, action=f"making cuda:{self.index} current")
        _current.context = self.context

    def synchronize(self) -> None:
        self.activate()
        _driver.call("cuStreamSynchronize", self.stream, action=f"synchronising cuda:{self.index}")

    # -- memory -------------------------------------------------------------------
    def _raw_alloc(self, nbytes: int) -> int:
        self.activate()
        try:
            return int(_driver.call("cuMemAlloc", nbytes, action=f"allocating {nbytes} bytes on cuda:{self.index}"))
        except CudaError as exc:
            if exc.error_name == _OOM:
                raise MemoryError(f"cuda: out of memory allocating {nbytes} bytes on cuda:{self.index} "
                                  f"({self.allocator.in_use_bytes} bytes in use by needle); "
                                  f"{exc}") from exc
            raise

    def _raw_free(self, ptr: int) -> None:
        self.activate()
        _driver.call("cuMemFree", ptr, action=f"freeing device memory on cuda:{self.index}")

    def copy_to_device(self, dst: int, host: np.ndarray) -> None:
        if host.nbytes == 0:
            return
        self.activate()
        _driver.call("cuMemcpyHtoDAsync", dst, host.ctypes.data, host.nbytes, self.stream,
                     action=f"copying {host.nbytes} bytes to cuda:{self.index}")
        # the host array may be freed right after we return: wait for the copy
        self.synchronize()

    def copy_to_host(self, host: np.ndarray, src: int) -> None:
        if host.nbytes == 0:
            return
        self.activate()
        _driver.call("cuMemcpyDtoHAsync", host.ctypes.data, src, host.nbytes, self.stream,
                     action=f"copying {host.nbytes} bytes from cuda:{self.index}")
        self.synchronize()

    def copy_device(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes == 0:
            return
        self.activate()
        _driver.call("cuMemcpyDtoDAsync", dst, src, nbytes, self.stream,
                     action=f"copying {nbytes} bytes within cuda:{self.index}")

    # -- errors found by kernels ------------------------------------------------
    def error_record(self) -> DevicePtr:
        """The device address of this device's kernel error record, where a
        kernel that meets bad input it must not raise on (an embedding index:
        the call may be inside a CUDA graph, far from the host) notes the first
        error; :meth:`raise_kernel_errors` reports it.

        Made on first use: its own block straight from the driver, never from
        the allocator -- the first use may be the dry run before a capture,
        whose allocations go to the graph's scratch pool and would be freed
        with it -- and zeroed with a real copy even inside that dry run (which
        refuses host copies for the calls it rehearses; this one is needle's
        own set-up, done once, not part of the step).  A capture always follows
        its dry run, so no capture ever allocates it."""
        ptr = self._error_record
        if ptr is None:
            with self._lock:
                ptr = self._error_record
                if ptr is None:
                    ptr = self._raw_alloc(8 * ERROR_RECORD_WORDS)
                    DeviceRuntime.copy_to_device(self, ptr, np.zeros(ERROR_RECORD_WORDS, np.int64))
                    self._error_record = ptr
        return DevicePtr(ptr)

    def raise_kernel_errors(self) -> None:
        """Raise the error a kernel noted in the record (and clear it), if any.

        Called where results come back to the host (``to_numpy``,
        ``synchronize``): the stream has drained there, so the record is final.
        Costs nothing until a kernel that can note errors has been launched."""
        ptr = self._error_record
        if ptr is None:
            return
        rec = np.zeros(ERROR_RECORD_WORDS, np.int64)
        self.copy_to_host(rec, ptr)
        if rec[0] == 0:
            return
        # cleared before raising: the error is reported once, and later calls can note theirs
        self.copy_to_device(ptr, np.zeros(ERROR_RECORD_WORDS, np.int64))
        op = {code: name for name, code in _kernels.EMB_OPS.items()}.get(int(rec[0]), f"kernel #{int(rec[0])}")
        value = rec[2:3].view(np.float64)[0]
        value = value.astype(np.float32) if rec[4] == 4 else value  # str(): as short as its dtype allows
        raise OutOfBoundsError(
            f"{op}: index {str(value)} at position {int(rec[1])} is not a whole number in [0, {int(rec[3])}) "
            f"(found on cuda:{self.index} by a kernel queued before these results were read back; "
            "that call skipped its bad indices: none was read or written through)")

    # -- kernels -------------------------------------------------------------------
    def function(self, kernel: str):
        """The CUfunction for ``kernel``, compiling/loading its module once."""
        fn = self._functions.get(kernel)
        if fn is not None:
            return fn
        with self._lock:
            file = _kernels.FILE_OF[kernel]
            mod = self._modules.get(file)
            if mod is None:
                code = _nvrtc.compile_cached(_kernels.source(file), f"{file}.cu", self.arch,
                                             kind=self.target_kind)
                self.activate()
                mod = _driver.call("cuModuleLoadData", code,
                                   action=f"loading kernel module {file}.cu ({self.arch}) on cuda:{self.index}")
                self._modules[file] = mod
            fn = _driver.call("cuModuleGetFunction", mod, kernel.encode(),
                              action=f"looking up kernel {kernel}")
            self._functions[kernel] = fn
            return fn

    def launch(self, kernel: str, grid: Sequence[int], block: Sequence[int], args: Sequence,
               shared_bytes: int = 0) -> None:
        """Queue ``kernel`` on this device's stream (asynchronous)."""
        fn = self._functions.get(kernel) or self.function(kernel)
        packed = pack_args(args)  # holds the bytes the launch reads: alive to the end
        g = tuple(grid) + (1,) * (3 - len(grid))
        b = tuple(block) + (1,) * (3 - len(block))
        # kept for diagnostics and tests: the arguments this launch passed
        self.last_launch = (kernel, args)
        trusted = _current.context is self.context
        if not trusted:
            self.activate()
        err = self._launch_raw(fn, g, b, shared_bytes, packed.params)
        if int(err) != 0 and trusted:
            # another library may have switched this thread's context since
            # needle last set it: make ours current for real and try once more
            self.activate()
            err = self._launch_raw(fn, g, b, shared_bytes, packed.params)
        if int(err) != 0:
            _current.context = None
            raise CudaError(f"launching {kernel} grid={g} block={b}", _driver.error_name(err), int(err))

    @contextlib.contextmanager
    def dry_run(self) -> Iterator[list]:
        """Run backend calls without touching the device, to prepare a CUDA graph
        capture: each launch loads its kernel and packs its arguments (so errors,
        module loads and NVRTC compiles happen now, not inside capture) and is
        recorded by name instead of queued; a device-to-device copy is recorded
        as "memcpy"; a host copy, which a graph cannot replay and which would
        move data for real, raises CaptureUnsupportedError.  Yields the record.

        The replacements are instance attributes, so the launch path of every
        other moment pays nothing for this; they act for the calling thread only
        (another thread's work on this device -- a loader uploading a batch --
        runs for real meanwhile)."""
        log: list = []
        owner = threading.get_ident()
        cls = type(self)

        def launch(kernel, grid, block, args, shared_bytes=0):
            if threading.get_ident() != owner:
                return cls.launch(self, kernel, grid, block, args, shared_bytes)
            self.function(kernel)
            pack_args(args)
            log.append(kernel)

        def copy_device(dst, src, nbytes):
            if threading.get_ident() != owner:
                return cls.copy_device(self, dst, src, nbytes)
            if nbytes:
                log.append("memcpy")

        def refuse(name):
            def host_copy(*args):
                if threading.get_ident() != owner:
                    return getattr(cls, name)(self, *args)
                raise CaptureUnsupportedError(
                    "cuda: a host<->device copy inside a captured step cannot be replayed by a CUDA graph")
            return host_copy

        patched = {"launch": launch, "copy_device": copy_device,
                   "copy_to_device": refuse("copy_to_device"), "copy_to_host": refuse("copy_to_host")}
        self.__dict__.update(patched)
        try:
            yield log
        finally:
            for name in patched:
                self.__dict__.pop(name, None)

    def _launch_raw(self, fn, g, b, shared_bytes, params: int):
        """cuLaunchKernel's CUresult."""
        res = self._cuLaunchKernel(fn, g[0], g[1], g[2], b[0], b[1], b[2], shared_bytes,
                                   self.stream, params, 0)
        return res[0] if isinstance(res, tuple) else res


class _CurrentContext(threading.local):
    """The context needle last made current on this thread: launches skip
    ``cuCtxSetCurrent`` (a driver call per op) while it is still ours."""

    context = None


_current = _CurrentContext()


_runtimes: dict[int, DeviceRuntime] = {}
_rt_lock = threading.Lock()


def runtime(index: int = 0) -> DeviceRuntime:
    rt = _runtimes.get(index)
    if rt is None:
        with _rt_lock:
            rt = _runtimes.get(index)
            if rt is None:
                rt = _runtimes[index] = DeviceRuntime(index)
    return rt


def existing_runtimes() -> list[DeviceRuntime]:
    return list(_runtimes.values())


def reset_for_testing() -> None:
    _runtimes.clear()
    _current.context = None


def ptr(x) -> DevicePtr:
    return DevicePtr(x.ptr())


