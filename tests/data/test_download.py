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


# -- one verified, atomic path (issue 17) ------------------------------------
import contextlib  # noqa: E402
import http.server  # noqa: E402
import threading  # noqa: E402

from needle.errors import DownloadError  # noqa: E402


@contextlib.contextmanager
def _cutting_server(payload: bytes, send: int):
    """Declares len(payload) bytes, sends only ``send`` of them, then hangs up."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[:send])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("sha", [SHA, None], ids=["verified", "unverified"])
def test_truncated_transfer_keeps_nothing_and_next_call_downloads_again(tmp_path, server, sha):
    cache = tmp_path / "cache"
    with _cutting_server(PAYLOAD, len(PAYLOAD) // 3) as cut:
        with pytest.raises(DownloadError, match=f"download of {cut}/file.bin failed") as info:
            download(f"{cut}/file.bin", sha, cache_dir=str(cache))
        assert isinstance(info.value, ConnectionError)
    assert not (cache / "file.bin").exists() and not list(cache.glob("*.part"))
    base, _ = server
    path = download(f"{base}/file.bin", sha, cache_dir=str(cache))
    assert path.read_bytes() == PAYLOAD


def test_unverified_cached_file_changed_after_download_is_fetched_again(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    path = download(f"{base}/file.bin", None, cache_dir=str(cache))
    path.write_bytes(PAYLOAD[:10])  # cut short later (disk full, a killed copy)
    assert download(f"{base}/file.bin", None, cache_dir=str(cache)).read_bytes() == PAYLOAD


def test_a_file_placed_without_a_record_is_not_trusted_unverified(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "file.bin").write_bytes(b"half")
    assert download(f"{base}/file.bin", None, cache_dir=str(cache)).read_bytes() == PAYLOAD


def test_md5_mismatch_keeps_nothing_under_the_final_name(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="MD5 mismatch"):
        download(f"{base}/file.bin", SHA, cache_dir=str(cache), md5="0" * 32)
    assert not (cache / "file.bin").exists()


@pytest.mark.parametrize("kw", [dict(sha256="xyz"), dict(sha256=123), dict(md5="0" * 31),
                                dict(filename="../evil"), dict(url="")])
def test_download_arguments_are_checked(kw, tmp_path):
    from needle.errors import ArgumentError
    args = dict(url="http://127.0.0.1:9/file.bin", sha256=SHA, cache_dir=str(tmp_path))
    args.update(kw)
    with pytest.raises(ArgumentError, match="download: "):
        download(**args)


def test_every_dataset_download_goes_through_download_py():
    """No other module opens URLs: one verified, atomic path."""
    import pathlib
    root = pathlib.Path(__file__).parents[2] / "contrib"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "urlopen" in p.read_text())
    assert users == ["data/download.py"]
