"""download() checks the whole file, however large: a payload of several
read chunks (2.5 MiB), corrupted only past the first MiB."""

import hashlib

import pytest

from needle.data import download
from needle.errors import ChecksumError

PAYLOAD = bytes(range(256)) * (10 * 1024)  # 2.5 MiB, three 1 MiB chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path, serve_folder):
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(PAYLOAD)
    with serve_folder(root) as base:
        yield base, root


def test_digest_covers_every_chunk(server, tmp_path):
    base, root = server
    first_mib = hashlib.sha256(PAYLOAD[:1 << 20]).hexdigest()
    with pytest.raises(ChecksumError):
        download(f"{base}/big.bin", first_mib, cache_dir=str(tmp_path / "c0"))
    path = download(f"{base}/big.bin", SHA, cache_dir=str(tmp_path / "c1"))
    assert path.read_bytes() == PAYLOAD


def test_cached_file_corrupted_past_the_first_mib_is_refetched(server, tmp_path):
    base, root = server
    cache = tmp_path / "cache"
    path = download(f"{base}/big.bin", SHA, cache_dir=str(cache))
    # an intact cached copy is recognised (digest of all of it) and served without the server
    (root / "big.bin").rename(root / "away.bin")
    assert download(f"{base}/big.bin", SHA, cache_dir=str(cache)) == path
    (root / "away.bin").rename(root / "big.bin")
    bad = bytearray(PAYLOAD)
    bad[(1 << 20) + 12345] ^= 0xFF
    path.write_bytes(bytes(bad))
    again = download(f"{base}/big.bin", SHA.upper(), cache_dir=str(cache))
    assert again == path and again.read_bytes() == PAYLOAD
    # and with the server copy corrupted the same way, the download itself is refused
    (root / "big.bin").write_bytes(bytes(bad))
    path.unlink()
    with pytest.raises(ChecksumError):
        download(f"{base}/big.bin", SHA, cache_dir=str(cache))
    assert not path.exists()
