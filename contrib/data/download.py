"""Cached, checksum-verified downloads (standard library only).

Files land in the needle cache dir: ``$NEEDLE_CACHE_DIR`` when set, else the
platform's user cache dir + ``needle``.  They are written to a temporary file
beside the target and moved into place with ``os.replace`` only once their
SHA-256 matches, so a crash or a bad download never leaves a half file under
the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from needle.errors import ArgumentError, ChecksumError, DownloadError

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


def _digest_of(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_of(path: Path) -> str:
    return _digest_of(path, "sha256")


def _check_hex(call: str, name: str, value, length: int):
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) != length or \
            any(c not in "0123456789abcdef" for c in value.strip().lower()):
        raise ArgumentError(f"{call}: {name} must be a {length}-digit hex digest or None, got {value!r}")
    return value.strip().lower()


def _sidecar(target: Path) -> Path:
    """Where the digest of an unverified download is kept: with no expected
    SHA-256 the next call can still tell a complete cached file from one that
    was changed or cut short after the download."""
    return target.with_name(f".{target.name}.sha256")


def _cached_ok(target: Path, expected: Optional[str]) -> bool:
    if not target.is_file():
        return False
    got = _sha256_of(target)
    if expected is not None:
        return got == expected
    try:
        return _sidecar(target).read_text().strip() == got
    except OSError:
        return False


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(url: str, sha256: Optional[str], filename: Optional[str] = None,
             cache_dir: Optional[str] = None, timeout: float = 60.0, md5: Optional[str] = None) -> Path:
    """Fetch ``url`` into the cache (if not already there) and return its path.

    The one download path of needle (MNIST, CIFAR-10, PTB...).  ``sha256``:
    expected hex digest; a cached file with another digest is fetched again,
    a fetched file with another digest raises
    :class:`needle.errors.ChecksumError` and is not kept.  ``sha256=None``
    downloads unverified: the digest of the complete file is recorded beside
    it so a later call re-fetches a cached file that no longer matches.
    ``md5``: an extra expected MD5 (CIFAR-10 publishes one).  A transfer
    shorter than the server's Content-Length, or cut off mid-stream, raises
    :class:`needle.errors.DownloadError`.  In every failure nothing is left
    under the final name.  ``filename`` defaults to the last component of the
    URL's path.  Network and HTTP failures raise ``DownloadError`` (a
    ``ConnectionError``) naming the URL.
    """
    expected = _check_hex("download", "sha256", sha256, 64)
    expected_md5 = _check_hex("download", "md5", md5, 32)
    if not isinstance(url, str) or not url:
        raise ArgumentError(f"download: url must be a non-empty string, got {url!r}")
    if filename is None:
        filename = os.path.basename(urllib.parse.urlparse(url).path)
        if not filename:
            raise ArgumentError(f"download: cannot derive a file name from {url!r}; pass filename=")
    if os.path.basename(filename) != filename or filename in (".", ".."):
        raise ArgumentError(f"download: filename must be a plain file name, got {filename!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / filename
    if _cached_ok(target, expected) and (expected_md5 is None or _digest_of(target, "md5") == expected_md5):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists():  # stale or unverifiable: it must not survive a failed re-fetch either
        target.unlink()

    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    try:
        digest, digest_md5, received = hashlib.sha256(), hashlib.md5(), 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                declared = response.headers.get("Content-Length")
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    digest_md5.update(chunk)
                    received += len(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(
                f"download of {url} failed: cannot reach the server ({exc.reason}); "
                f"are you offline? Place the file at {target} by hand to skip the download"
            ) from None
        except http.client.IncompleteRead as exc:
            raise DownloadError(f"download of {url} failed: transfer cut short after "
                                f"{received + len(exc.partial)} bytes; nothing kept, retry") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}") from None
        if declared is not None and declared.isdigit() and int(declared) != received:
            raise DownloadError(f"download of {url} failed: received {received} bytes, the server "
                                f"declared {declared}; nothing kept, retry")
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise ChecksumError(
                f"download of {url}: SHA-256 mismatch, expected {expected}, got {got}; file discarded"
            )
        if expected_md5 is not None and digest_md5.hexdigest() != expected_md5:
            raise ChecksumError(f"download of {url}: MD5 mismatch, expected {expected_md5}, got "
                                f"{digest_md5.hexdigest()}; file discarded")
        if expected is None:
            _atomic_write_text(_sidecar(target), got + "\n")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
