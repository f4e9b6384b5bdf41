"""Cached, checksum-verified downloads (standard library only).

Files land in the needle cache dir: ``$NEEDLE_CACHE_DIR`` when set, else the
platform's user cache dir + ``needle``.  They are written to a temporary file
beside the target and moved into place with ``os.replace`` only once their
SHA-256 matches, so a crash or a bad download never leaves a half file under
the final name.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from needle.errors import ChecksumError

__all__ = ["download", "default_cache_dir"]

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """The needle cache directory (not created here)."""
    env = os.environ.get("NEEDLE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "needle"


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, sha256: str, filename: Optional[str] = None, cache_dir: Optional[str] = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` into the cache (if not already there) and return its path.

    ``sha256``: expected hex digest; a cached file with another digest is
    fetched again, a fetched file with another digest raises
    :class:`needle.errors.ChecksumError` and is not kept.  ``filename``
    defaults to the last component of the URL's path.  Network and HTTP
    failures raise ``OSError`` (``ConnectionError`` when unreachable) naming
    the URL.
    """
    expected = sha256.strip().lower()
    if filename is None:
        filename = os.path.basename(urllib.parse.urlparse(url).path)
        if not filename:
            raise ValueError(f"download: cannot derive a file name from {url!r}; pass filename=")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / filename
    if target.is_file() and _sha256_of(target) == expected:
        return target
    folder.mkdir(parents=True, exist_ok=True)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise OSError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ConnectionError(
                f"download of {url} failed: cannot reach the server ({exc.reason}); "
                f"are you offline? Place the file at {target} by hand to skip the download"
            ) from None
        except (TimeoutError, ConnectionError) as exc:
            raise ConnectionError(f"download of {url} failed: {exc}") from None
        got = digest.hexdigest()
        if got != expected:
            raise ChecksumError(
                f"download of {url}: SHA-256 mismatch, expected {expected}, got {got}; file discarded"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
