"""``needle.save`` / ``needle.load``: state dicts as ``.npz`` files.

A state dict maps dotted names (``"modules.0.weight"``) to arrays.  ``save``
takes such a dict (values may be Tensors, NDArrays or NumPy arrays) or
anything with a ``state_dict()`` method (a Module), writes it atomically (a
temporary file in the same folder, then ``os.replace``) and never pickles.
``load`` returns ``{name: numpy.ndarray}``, ready for
``Module.load_state_dict``.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
import zlib

import numpy as np
from numpy.lib import format as fmt

from .errors import ArgumentTypeError, DataFormatError

__all__ = ["save", "load"]


#: element kinds a checkpoint may hold: bool, signed/unsigned ints, floats,
#: and text (``needle train`` stores its config as JSON); objects and
#: records -- which would need pickle -- are never written or read
_KINDS = "biufUS"


def _as_numpy(name: str, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "numpy"):
        arr = np.asarray(value.numpy())
    elif isinstance(value, (int, float, bool, np.generic, list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as exc:
            raise ArgumentTypeError(f"needle.save: value for {name!r} is not a rectangular array ({exc})") from None
    else:
        raise ArgumentTypeError(
            f"needle.save: value for {name!r} is a {type(value).__name__}; expected a Tensor, NDArray, "
            f"NumPy array or number"
        )
    if arr.dtype.kind not in _KINDS or arr.dtype.fields is not None:
        raise ArgumentTypeError(f"needle.save: value for {name!r} has dtype {arr.dtype}; only bool, "
                                f"integer, float and text arrays can be saved (no objects or records)")
    return arr


def _umask() -> int:
    """The process umask (read by setting it and putting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(state_dict_or_module, path) -> None:
    """Write a state dict (or ``module.state_dict()``) to ``path`` as an uncompressed ``.npz``.

    ``path`` is used exactly as given (no ``.npz`` is appended).
    """
    state = state_dict_or_module
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not hasattr(state, "items"):
        raise ArgumentTypeError(f"needle.save: expected a state dict or a Module, got "
                                f"{type(state_dict_or_module).__name__}")
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise ArgumentTypeError(f"needle.save: state dict keys must be strings, got {name!r}")
        arrays[name] = _as_numpy(name, value)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".needle-save.", suffix=".npz.part", dir=folder)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would
        # (0666 less the umask), as users expect of a saved model
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path) -> dict:
    """Read a ``.npz`` written by :func:`save`: ``{name: numpy.ndarray}`` in file order.

    Anything else -- a plain ``.npy``, a truncated or corrupt archive, a
    member that is not a ``.npy`` array, a malformed header, a declared shape
    the member's size does not match, an object/record array -- raises
    :class:`needle.errors.DataFormatError` naming the file and the member.
    Never unpickles, and never allocates more than a member's real size.
    """
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"needle.load: {path} is not a readable .npz checkpoint "
                              f"({_what_it_is(path, exc)})") from None
    with archive:
        out = {}
        try:
            members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:  # pragma: no cover - ZipFile reads it eagerly
            raise DataFormatError(f"needle.load: {path}: unreadable zip directory ({exc})") from None
        for info in members:
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise DataFormatError(f"needle.load: {path}: member {name!r} is not a .npy array "
                                      f"(a needle checkpoint holds only .npy members)")
            key = name[:-4]
            if key in out:
                raise DataFormatError(f"needle.load: {path}: member {name!r} appears twice")
            out[key] = _read_member(archive, info, path, key)
        return out


def _what_it_is(path: str, exc: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return str(exc)
    if head == b"\x93NUMPY":
        return "it holds a single .npy array, not a state dict; save a dict with needle.save"
    return f"{type(exc).__name__}: {exc}"


def _read_header(f, where: str):
    """(shape, fortran, dtype) of a .npy stream; any failure of NumPy's header
    parser (ValueError, SyntaxError, tokenize errors...) is malformed input."""
    try:
        version = fmt.read_magic(f)
    except Exception as exc:  # noqa: BLE001 -- every parser failure means "not a .npy"
        raise DataFormatError(f"{where} is not a .npy array ({type(exc).__name__}: {exc})") from None
    if version not in ((1, 0), (2, 0)):
        raise DataFormatError(f"{where}: unsupported .npy format version {version}")
    try:
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return read(f)
    except Exception as exc:  # noqa: BLE001
        raise DataFormatError(f"{where}: malformed .npy header ({type(exc).__name__}: {exc})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, key: str) -> np.ndarray:
    """One ``.npy`` member, header checked before any allocation."""
    where = f"needle.load: {path}: array {key!r}"
    try:
        with archive.open(info) as f:
            shape, fortran, dtype = _read_header(f, where)
            if dtype.hasobject or dtype.kind not in _KINDS or dtype.fields is not None:
                raise DataFormatError(f"{where} has dtype {dtype}; a checkpoint holds bool, integer, "
                                      f"float and text arrays only (no objects or records: never unpickled)")
            if not isinstance(shape, tuple) or any(not isinstance(d, int) or d < 0 for d in shape):
                raise DataFormatError(f"{where}: malformed shape {shape!r} in its header")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            available = info.file_size - f.tell()
            if nbytes != available:
                raise DataFormatError(f"{where}: header declares shape {shape} of {dtype} ({nbytes} bytes) "
                                      f"but the member holds {available} bytes of data")
            data = f.read(nbytes)
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, SyntaxError,
            NotImplementedError, RuntimeError) as exc:
        raise DataFormatError(f"{where} is corrupt ({type(exc).__name__}: {exc})") from None
    if len(data) != nbytes:
        raise DataFormatError(f"{where} is truncated: {len(data)} of {nbytes} bytes")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C").copy()
