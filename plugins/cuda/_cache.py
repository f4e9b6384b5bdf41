"""On-disk cache of compiled kernels (cubin/PTX bytes).

Location: ``$NEEDLE_CACHE_DIR/cuda-kernels``, else
``$XDG_CACHE_HOME/needle/cuda-kernels``, else ``~/.cache/needle/cuda-kernels``.
A file is ``MAGIC + sha256(payload) + payload``; one that is short, has the
wrong magic or a wrong digest counts as absent (the caller recompiles and
overwrites it).  Writes go to a temporary file in the same folder and are
moved into place with ``os.replace``, so concurrent processes never see half
a file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

MAGIC = b"NDLCUDA1"
_DIGEST = 32


def needle_cache_dir() -> Path:
    """needle's cache root (shared with downloads)."""
    env = os.environ.get("NEEDLE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "needle"
    return Path.home() / ".cache" / "needle"


def kernel_cache_dir() -> Path:
    return needle_cache_dir() / "cuda-kernels"


def cache_key(source: str, arch: str, nvrtc_version: Sequence[int], options: Sequence[str]) -> str:
    """sha256 over everything that changes the compiled bytes."""
    h = hashlib.sha256()
    for part in (source, arch, ".".join(map(str, nvrtc_version)), "\0".join(options)):
        h.update(part.encode())
        h.update(b"\x1f")  # separator: ("ab","c") and ("a","bc") must differ
    return h.hexdigest()


def _path(key: str, suffix: str) -> Path:
    return kernel_cache_dir() / f"{key}.{suffix}"


def load(key: str, suffix: str = "cubin") -> Optional[bytes]:
    """The cached payload, or None when missing or damaged."""
    try:
        blob = _path(key, suffix).read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + _DIGEST
    if len(blob) <= head or not blob.startswith(MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC):head]:
        return None
    return payload


def store(key: str, payload: bytes, suffix: str = "cubin") -> Optional[Path]:
    """Write atomically; a cache that cannot be written is not an error (the
    kernel still works, it is just compiled again next time)."""
    folder = kernel_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
            final = _path(key, suffix)
            os.replace(tmp, final)
            return final
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return None
