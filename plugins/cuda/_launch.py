"""CPU-side launch logic: argument packing, launch shapes, tile choice.

Nothing here touches the driver, so all of it is tested without a GPU.
"""

from __future__ import annotations

import ctypes
import math
import struct
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from needle.errors import ShapeError

MAX_DIMS = 8          # NDL_MAX_DIMS in kernels/common.cuh
BLOCK = 256           # threads per block for every 1-D kernel
INT32_LIMIT = 2**31 - 1
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535

class DevicePtr(int):
    """A device address; packed as a 64-bit pointer argument."""


#: struct codes of the fixed-width argument types (each slot padded to 8 bytes)
_CODES = {DevicePtr: "Q", np.int32: "i4x", np.int64: "q", np.uint64: "Q",
          np.float32: "f4x", np.float64: "d"}
#: argument signature -> (Struct of the arguments, Struct of the pointer table, offsets)
_LAYOUTS: dict = {}


def _signature(args: Sequence) -> tuple:
    # a by-value struct is keyed by dtype, rank and length so that a wrong one
    # never shares the layout of a right one
    return tuple((a.dtype.char, a.ndim, a.size) if type(a) is np.ndarray else type(a) for a in args)


def _layout(args: Sequence, sig: tuple) -> tuple:
    # the storage holds the pointer table (one uint64 per argument) and then
    # the arguments, each in an 8-byte aligned slot
    fmt, offsets, pos = ["<"], [], 8 * len(args)
    for i, (a, key) in enumerate(zip(args, sig)):
        if type(a) is np.ndarray:
            if a.dtype != np.int64 or a.ndim != 1:
                raise TypeError(f"kernel argument {i}: struct arrays must be 1-D int64, got {a.dtype} {a.shape}")
            code, size = f"{a.size}q", 8 * a.size
        elif key in _CODES:
            code, size = _CODES[key], 8
        else:
            raise TypeError(
                f"kernel argument {i}: {type(a).__name__} {a!r} has no fixed width; pass a "
                "DevicePtr or a NumPy scalar (np.int32, np.int64, np.float32, ...)")
        offsets.append(pos)
        fmt.append(code)
        pos += size
    return struct.Struct("".join(fmt)), struct.Struct(f"<{len(args)}Q"), tuple(offsets)


class PackedArgs(NamedTuple):
    """Arguments laid out for ``cuLaunchKernel``: ``params`` is the address of
    the pointer table (``kernelParams``), ``pointers`` its entries; both point
    into ``storage``, which must stay alive until the launch call returns."""

    storage: ctypes.Array
    pointers: list
    params: int


def pack_args(args: Sequence) -> PackedArgs:
    """Pack kernel arguments for ``cuLaunchKernel``.

    Each argument must say its width: a :class:`DevicePtr`, a NumPy scalar of
    int32/int64/uint64/float32/float64, or a 1-D int64 NumPy array (a
    by-value struct such as StridedView).  Bare Python ints and floats are
    refused -- cuda-python would silently treat an int as a pointer.  The
    layout is built once per signature: launching is on every op's path."""
    sig = _signature(args)
    layout = _LAYOUTS.get(sig)
    if layout is None:
        layout = _LAYOUTS[sig] = _layout(args, sig)
    values_struct, table_struct, offsets = layout
    values = []
    for a in args:
        if type(a) is np.ndarray:
            values.extend(a.tolist())
        else:
            values.append(a)
    storage = ctypes.create_string_buffer(table_struct.size + values_struct.size)
    base = ctypes.addressof(storage)
    values_struct.pack_into(storage, table_struct.size, *values)
    pointers = [base + off for off in offsets]
    table_struct.pack_into(storage, 0, *pointers)
    return PackedArgs(storage, pointers, base)


def arg_bytes(a) -> bytes:
    """The bytes a kernel receives for argument ``a`` (for tests and diagnostics)."""
    if isinstance(a, DevicePtr):
        return int(a).to_bytes(8, "little")
    return np.asarray(a).tobytes()


# -- strided views ------------------------------------------------------------
def coalesce(shape: Sequence[int], strides: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Drop size-1 axes and merge neighbours that are contiguous with each
    other, without changing which elements the view visits or their order.
    E.g. shape (2, 3, 4), strides (12, 4, 1) -> (24,), (1,)."""
    dims = [(int(n), int(s)) for n, s in zip(shape, strides) if int(n) != 1]
    out: list[list[int]] = []
    for n, s in dims:
        if out and out[-1][1] == s * n:
            out[-1][0] *= n
            out[-1][1] = s
        else:
            out.append([n, s])
    if not out:
        return (1,), (1,)
    return tuple(d[0] for d in out), tuple(d[1] for d in out)


def strided_view(shape: Sequence[int], strides: Sequence[int], offset: int, op: str) -> np.ndarray:
    """The StridedView struct (18 int64: ndim, offset, shape[8], strides[8])."""
    cshape, cstrides = coalesce(shape, strides)
    if len(cshape) > MAX_DIMS:
        raise ShapeError(
            f"{op}: the cuda backend handles strided views of at most {MAX_DIMS} dimensions "
            f"(after merging contiguous axes); got shape {tuple(shape)} strides {tuple(strides)}")
    v = np.zeros(2 + 2 * MAX_DIMS, dtype=np.int64)
    v[0], v[1] = len(cshape), int(offset)
    v[2:2 + len(cshape)] = cshape
    v[2 + MAX_DIMS:2 + MAX_DIMS + len(cstrides)] = cstrides
    return v


def max_index(shape: Sequence[int], strides: Sequence[int], offset: int) -> int:
    """Largest buffer index the view reaches (offset - 1 for an empty view)."""
    if any(int(n) == 0 for n in shape):
        return int(offset) - 1
    return int(offset) + sum((int(n) - 1) * int(s) for n, s in zip(shape, strides))


def index_bits(n: int, shape: Sequence[int], strides: Sequence[int], offset: int) -> int:
    """32 when every linear and buffer index of the view fits in int32 (the
    kernel then divides in 32 bits, much cheaper on a GPU), else 64."""
    worst = max(int(n), max_index(shape, strides, offset) + 1,
                max([int(s) for s in strides] + [0]), int(offset))
    return 32 if worst <= INT32_LIMIT else 64


# -- 1-D launches ---------------------------------------------------------------
def grid_1d(n: int, sm_count: int, per_thread: int = 1, block: int = BLOCK) -> tuple[int, int]:
    """``(grid, block)`` for a grid-stride kernel over ``n`` items: enough
    blocks to cover the work, capped at 32 per SM (the loop does the rest)."""
    work = max(1, math.ceil(int(n) / per_thread))
    blocks = math.ceil(work / block)
    return max(1, min(blocks, 32 * max(1, sm_count), MAX_GRID_X)), block


@dataclass(frozen=True)
class RowPlan:
    """How a row-wise kernel (reduce, softmax) walks a (rows, R) array."""

    variant: str  # "warp": a warp per row; "block": a block per row
    grid: int
    block: int


def row_plan(rows: int, R: int, sm_count: int) -> RowPlan:
    """Short rows get a warp each (8 rows per block); long rows, or too few
    rows to fill the GPU with warps, get a 256-thread block each."""
    if R >= 1024 or (R > 32 and rows < 4 * sm_count):
        return RowPlan("block", max(1, min(rows, 64 * max(1, sm_count), MAX_GRID_X)), BLOCK)
    warps_per_block = BLOCK // 32
    blocks = math.ceil(rows / warps_per_block)
    return RowPlan("warp", max(1, min(blocks, 64 * max(1, sm_count), MAX_GRID_X)), BLOCK)


def split_rows(rows: int, R: int, sm_count: int, min_piece: int = 4096) -> int:
    """Into how many equal pieces to cut each row of a long reduction.

    A row-wise kernel gives a row at most one block, so summing one row of
    millions of elements (a whole-tensor ``sum()``) would run on one SM.
    Cutting each row into ``c`` pieces (``c`` divides ``R``, each piece at
    least ``min_piece`` long) gives ``rows * c`` partial results, reduced by a
    second launch.  Returns 1 when the rows already fill the GPU or are short."""
    rows, R = int(rows), int(R)
    if rows >= 2 * sm_count or R < 4 * min_piece:
        return 1
    target = min(R // min_piece, max(2, (4 * sm_count) // max(rows, 1)))
    for c in range(target, 1, -1):
        if R % c == 0:
            return c
    return 1


# -- GEMM ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GemmConfig:
    name: str   # suffix of the kernel name
    bm: int
    bn: int


GEMM_BIG = GemmConfig("big", 128, 128)
GEMM_SMALL = GemmConfig("small", 64, 64)


def gemm_config(M: int, N: int, batch: int, sm_count: int) -> GemmConfig:
    """128x128 tiles when the problem is large enough for them to fill every
    SM at least once; else 64x64 tiles (4x the blocks, less padding waste on
    small or skinny matrices)."""
    if M >= 128 and N >= 128:
        big_blocks = math.ceil(M / 128) * math.ceil(N / 128) * batch
        if big_blocks >= sm_count:
            return GEMM_BIG
    return GEMM_SMALL


def split_k(batch: int, M: int, K: int, N: int, sm_count: int, min_piece: int = 1024) -> int:
    """Into how many equal pieces to cut the inner dimension of a GEMM.

    A tiled GEMM gives each output tile one block that walks all of K, so a
    thin product with a long K -- ``(1, B) @ (B, C)``, the column sums batch
    norm takes over ``B = N*H*W`` -- runs on a handful of SMs for
    milliseconds.  Cutting K into ``s`` pieces (``s`` divides K) computes
    ``s`` partial products side by side, summed by a reduction afterwards.
    Only for a single matrix product (``batch == 1``)."""
    if batch != 1 or K < 4 * min_piece:
        return 1
    blocks = math.ceil(M / GEMM_SMALL.bm) * math.ceil(N / GEMM_SMALL.bn)
    if blocks >= sm_count:
        return 1
    target = min(K // min_piece, math.ceil(2 * sm_count / blocks))
    for s in range(target, 1, -1):
        if K % s == 0:
            return s
    return 1


def gemm_grid(M: int, N: int, batch: int, cfg: GemmConfig) -> tuple[int, int, int]:
    """Grid for the tiled kernel; each axis is capped at its hardware limit and
    the kernel loops over the remainder."""
    gx = max(1, min(math.ceil(M / cfg.bm), MAX_GRID_X))
    gy = max(1, min(math.ceil(N / cfg.bn), MAX_GRID_YZ))
    gz = max(1, min(int(batch), MAX_GRID_YZ))
    return gx, gy, gz


def strided_operand(offset: int, s_batch: int, s_row: int, s_col: int) -> np.ndarray:
    """StridedOperand struct: 4 int64."""
    return np.array([offset, s_batch, s_row, s_col], dtype=np.int64)


def conv_geom(N, H, W, C, K, Cout, stride, pad) -> np.ndarray:
    """ConvGeom struct: N, H, W, C, K, Cout, stride, pad, Ho, Wo as int64."""
    Ho, Wo = conv_out_size(H, K, stride, pad), conv_out_size(W, K, stride, pad)
    return np.array([N, H, W, C, K, Cout, stride, pad, Ho, Wo], dtype=np.int64)


def conv_out_size(n: int, k: int, stride: int, pad: int) -> int:
    return (int(n) + 2 * int(pad) - int(k)) // int(stride) + 1
