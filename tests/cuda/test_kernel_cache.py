"""The on-disk kernel cache: a second process compiles nothing; damage -> recompile."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")

from needle_cuda import _cache  # noqa: E402

SCRIPT = textwrap.dedent("""
    from needle_cuda import _kernels, _nvrtc
    for f in ("reduce", "strided"):
        code = _nvrtc.compile_cached(_kernels.source(f), f + ".cu", "sm_80")
        assert code[:4] == b"\\x7fELF"
    print(_nvrtc.COMPILE_COUNT)
""")


def run(cache_dir, log):
    env = dict(os.environ, NEEDLE_CACHE_DIR=str(cache_dir), NEEDLE_CUDA_COMPILE_LOG=str(log))
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def test_second_process_compiles_nothing_and_damage_recompiles(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "compiles.log"
    assert run(cache, log) == 2
    files = sorted((cache / "cuda-kernels").glob("*.cubin"))
    assert len(files) == 2
    assert run(cache, log) == 0                       # warm: no NVRTC call at all
    assert len(log.read_text().splitlines()) == 2     # the log agrees, across processes
    # corrupt one entry (flip a payload byte), truncate the other
    blob = bytearray(files[0].read_bytes())
    blob[-1] ^= 0xFF
    files[0].write_bytes(bytes(blob))
    files[1].write_bytes(files[1].read_bytes()[:20])
    assert run(cache, log) == 2
    assert run(cache, log) == 0                       # and the rewritten entries are good
    assert not list((cache / "cuda-kernels").glob(".tmp-*")), "no temporary files left behind"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert _cache.kernel_cache_dir() == tmp_path / "a" / "cuda-kernels"
    monkeypatch.delenv("NEEDLE_CACHE_DIR")
    assert _cache.kernel_cache_dir() == tmp_path / "x" / "needle" / "cuda-kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.kernel_cache_dir() == tmp_path / "home" / ".cache" / "needle" / "cuda-kernels"


def test_key_covers_source_arch_version_and_options():
    base = _cache.cache_key("src", "sm_80", (13, 5), ("-std=c++17",))
    assert len(base) == 64
    others = [
        _cache.cache_key("src2", "sm_80", (13, 5), ("-std=c++17",)),
        _cache.cache_key("src", "sm_90", (13, 5), ("-std=c++17",)),
        _cache.cache_key("src", "sm_80", (13, 6), ("-std=c++17",)),
        _cache.cache_key("src", "sm_80", (13, 5), ("-std=c++14",)),
        _cache.cache_key("sr", "csm_80", (13, 5), ("-std=c++17",)),
    ]
    assert len({base, *others}) == 6


def test_store_load_roundtrip_and_rejects(monkeypatch, tmp_path):
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path))
    assert _cache.load("k") is None
    path = _cache.store("k", b"payload")
    assert _cache.load("k") == b"payload"
    path.write_bytes(b"XXXXXXXX" + path.read_bytes()[8:])       # wrong magic
    assert _cache.load("k") is None


def test_unwritable_cache_is_not_an_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(blocker))
    assert _cache.store("k", b"x") is None
