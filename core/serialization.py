"""``needle.save`` / ``needle.load``: state dicts as ``.npz`` files.

A state dict maps dotted names (``"modules.0.weight"``) to arrays.  ``save``
takes such a dict (values may be Tensors, NDArrays or NumPy arrays) or
anything with a ``state_dict()`` method (a Module), writes it atomically (a
temporary file in the same folder, then ``os.replace``) and never pickles.
``load`` returns ``{name: numpy.ndarray}``, ready for
``Module.load_state_dict``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from .errors import DataFormatError

__all__ = ["save", "load"]


def _as_numpy(name: str, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    if isinstance(value, (int, float, bool, np.generic, list, tuple)):
        return np.asarray(value)
    raise TypeError(
        f"needle.save: value for {name!r} is a {type(value).__name__}; expected a Tensor, NDArray, "
        f"NumPy array or number"
    )


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
        raise TypeError(f"needle.save: expected a state dict or a Module, got {type(state_dict_or_module).__name__}")
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"needle.save: state dict keys must be strings, got {name!r}")
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

    A file that is not a readable ``.npz`` raises
    :class:`needle.errors.DataFormatError` naming it.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataFormatError(f"needle.load: {path} holds a single array, not a state dict (.npz)")
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, DataFormatError)):
            raise
        raise DataFormatError(f"needle.load: {path} is not a readable .npz checkpoint ({exc})") from None
