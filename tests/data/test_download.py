"""needle.data.download against a local http.server: cache, checksum, HTTP and connection errors."""

import hashlib
import os
import socket

import pytest

from needle.data import download
from needle.data.download import default_cache_dir
from needle.errors import ChecksumError

PAYLOAD = b"needle test payload\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path, serve_folder):
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.bin").write_bytes(PAYLOAD)
    with serve_folder(root) as base:
        yield base, root


def test_download_verifies_and_caches(server, tmp_path):
    base, root = server
    cache = tmp_path / "cache"
    path = download(f"{base}/file.bin", SHA, cache_dir=str(cache))
    assert path == cache / "file.bin" and path.read_bytes() == PAYLOAD
    assert [p.name for p in cache.iterdir()] == ["file.bin"]  # no temp file left behind
    # second call is served from the cache: the server copy can vanish
    (root / "file.bin").unlink()
    assert download(f"{base}/file.bin", SHA.upper(), cache_dir=str(cache)) == path


def test_env_cache_dir_and_custom_filename(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    path = download(f"{base}/file.bin", SHA, filename="renamed.bin")
    assert path == tmp_path / "envcache" / "renamed.bin"


def test_default_cache_dir_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NEEDLE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and not os.uname().sysname == "Darwin":
        assert default_cache_dir() == tmp_path / "xdg" / "needle"
    assert default_cache_dir().name == "needle"


def test_checksum_mismatch_raises_and_keeps_nothing(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=f"{base}/file.bin: SHA-256 mismatch, expected {'0' * 64}, got {SHA}"):
        download(f"{base}/file.bin", "0" * 64, cache_dir=str(cache))
    assert list(cache.iterdir()) == []


def test_stale_cached_file_is_refetched(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "file.bin").write_bytes(b"old partial junk")
    path = download(f"{base}/file.bin", SHA, cache_dir=str(cache))
    assert path.read_bytes() == PAYLOAD


def test_http_404_names_url(server, tmp_path):
    base, _ = server
    with pytest.raises(OSError, match=f"download of {base}/missing.bin failed: HTTP 404"):
        download(f"{base}/missing.bin", SHA, cache_dir=str(tmp_path / "c"))
    assert list((tmp_path / "c").iterdir()) == []


def test_connection_refused_names_url(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/file.bin"
    with pytest.raises(ConnectionError, match=f"download of {url} failed: cannot reach the server"):
        download(url, SHA, cache_dir=str(tmp_path / "c"))
