"""Device buffers and a caching allocator.

``cuMemAlloc``/``cuMemFree`` are slow (``cuMemFree`` synchronises the
device), and a training step frees and re-allocates the same sizes every
iteration.  Freed blocks therefore go to free lists keyed by *size class*
and are handed out again; :meth:`CachingAllocator.empty_cache` gives them
back to the driver.  All work runs on one stream per device, so a block
freed by Python and reused by the next kernel is ordered correctly without
events.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable

import numpy as np

from ._errors import CaptureAllocationError

SMALL_LIMIT = 1 << 20       # blocks up to 1 MiB round up to 512 B
SMALL_ROUND = 512
LARGE_ROUND = 2 << 20       # larger ones round up to 2 MiB


def size_class(nbytes: int) -> int:
    """Bytes actually allocated for a request of ``nbytes`` (0 stays 0)."""
    if nbytes <= 0:
        return 0
    step = SMALL_ROUND if nbytes <= SMALL_LIMIT else LARGE_ROUND
    return -(-nbytes // step) * step


class CachingAllocator:
    """Free lists by size class over raw ``alloc(nbytes) -> ptr`` and
    ``free(ptr)`` functions (the runtime passes driver calls; tests pass fakes)."""

    def __init__(self, alloc: Callable[[int], int], free: Callable[[int], None],
                 synchronize: Callable[[], None] = lambda: None):
        self._alloc, self._free, self._sync = alloc, free, synchronize
        self._cache: dict[int, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        self.cached_bytes = 0
        self.in_use_bytes = 0
        #: the ScratchPool serving this thread's allocations while a CUDA graph is
        #: captured (see ScratchPool), and the thread it serves
        self._pool: "ScratchPool | None" = None
        #: ptr -> the pool owning that block: a block a graph uses goes back to its
        #: pool when released, never to the shared cache
        self._owned: dict[int, ScratchPool] = {}

    def allocate(self, nbytes: int) -> tuple[int, int]:
        """``(ptr, class_bytes)``; reuses a cached block of the same class."""
        cls = size_class(nbytes)
        if cls == 0:
            return 0, 0
        pool = self._pool
        if pool is not None and pool.thread == threading.get_ident():
            return self._allocate_for_pool(pool, cls)
        return self._allocate_shared(cls)

    def _allocate_shared(self, cls: int) -> tuple[int, int]:
        with self._lock:
            free = self._cache.get(cls)
            if free:
                ptr = free.pop()
                self.cached_bytes -= cls
                self.in_use_bytes += cls
                return ptr, cls
        try:
            ptr = self._alloc(cls)
        except MemoryError:
            # the cache may hold enough memory in other classes: return it, retry once
            self.empty_cache()
            ptr = self._alloc(cls)
        with self._lock:
            self.in_use_bytes += cls
        return ptr, cls

    def release(self, ptr: int, cls: int) -> None:
        if cls == 0:
            return
        if self._owned:
            pool = self._owned.get(ptr)
            if pool is not None:
                pool.free[cls].append(ptr)
                return
        with self._lock:
            self._cache[cls].append(ptr)
            self.cached_bytes += cls
            self.in_use_bytes -= cls

    def empty_cache(self) -> int:
        """Free every cached block; returns the bytes given back."""
        self._sync()  # no queued kernel may still use a block we free
        with self._lock:
            blocks = [(p, c) for c, ps in self._cache.items() for p in ps]
            self._cache.clear()
            self.cached_bytes = 0
        for ptr, _ in blocks:
            self._free(ptr)
        return sum(c for _, c in blocks)

    # -- scratch pools (CUDA graph capture) ---------------------------------------
    def use_pool(self, pool: "ScratchPool | None") -> None:
        """Serve the calling thread's allocations from ``pool`` (None: stop)."""
        if pool is not None:
            pool.thread = threading.get_ident()
        self._pool = pool

    def _allocate_for_pool(self, pool: "ScratchPool", cls: int) -> tuple[int, int]:
        free = pool.free.get(cls)
        if free:
            return free.pop(), cls
        if not pool.may_grow:
            # a new block now would be cuMemAlloc inside stream capture, which the
            # driver refuses and which the graph could not replay anyway
            raise CaptureAllocationError(
                f"cuda: a kernel asked for a new {cls}-byte scratch block while a CUDA graph "
                "was being captured; scratch memory must be reserved before capture")
        ptr, cls = self._allocate_shared(cls)
        with self._lock:
            self._owned[ptr] = pool
        pool.blocks.append((ptr, cls))
        return ptr, cls

    def release_pool(self, pool: "ScratchPool") -> None:
        """Give ``pool``'s blocks back to the shared cache.  Idle ones go at once
        (later kernels on the stream are ordered after any graph launch that
        used them); one still held by a buffer goes when that buffer dies."""
        if self._pool is pool:
            self._pool = None
        with self._lock:
            idle = {p for ps in pool.free.values() for p in ps}
            for ptr, cls in pool.blocks:
                if self._owned.get(ptr) is pool:
                    del self._owned[ptr]
                if ptr in idle:
                    self._cache[cls].append(ptr)
                    self.cached_bytes += cls
                    self.in_use_bytes -= cls
            pool.blocks.clear()
            pool.free.clear()


class ScratchPool:
    """The scratch blocks of one captured CUDA graph.

    Kernels that need temporary buffers (a two-pass reduction, a gathered
    operand) allocate and free them inside the calls needle captures.  A graph
    bakes in their addresses, so those blocks must (a) exist before capture --
    ``cuMemAlloc`` is not allowed while a stream is captured -- and (b) never
    return to the shared cache while the graph lives, or another array would
    take a block that every replay still writes.  A dry run of the calls
    (``may_grow`` True) takes the blocks they use into the pool; the capture
    (``may_grow`` False) then finds every one of them in ``free``, and the pool
    keeps them until the graph is closed."""

    def __init__(self):
        self.free: dict[int, list[int]] = defaultdict(list)   # class -> idle blocks
        self.blocks: list[tuple[int, int]] = []                # every (ptr, class) owned
        self.may_grow = True
        self.thread = 0

    @property
    def nbytes(self) -> int:
        return sum(c for _, c in self.blocks)


class CudaArray:
    """A flat device buffer of ``size`` elements of ``dtype`` (protocol buffer).

    Returns its block to the allocator when garbage-collected."""

    __slots__ = ("size", "dtype", "_ptr", "_cls", "_runtime", "__weakref__")

    def __init__(self, runtime, size: int, dtype: np.dtype):
        self.size = int(size)
        self.dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        self._runtime = runtime
        self._ptr, self._cls = runtime.allocator.allocate(self.size * self.dtype.itemsize)

    def __del__(self):
        # cheaper than a weakref.finalize per buffer (one is made per op);
        # quiet when __init__ failed before allocating or at interpreter exit
        try:
            _release(self._runtime.allocator, self._ptr, self._cls)
        except Exception:  # noqa: BLE001 -- never raise from garbage collection
            pass

    def ptr(self) -> int:
        return self._ptr

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def device_index(self) -> int:
        return self._runtime.index

    def __repr__(self):
        return f"CudaArray(size={self.size}, dtype={self.dtype.name}, device=cuda:{self._runtime.index})"


def _release(allocator: CachingAllocator, ptr: int, cls: int) -> None:
    try:
        allocator.release(ptr, cls)
    except Exception:  # noqa: BLE001 -- never raise from garbage collection
        pass


