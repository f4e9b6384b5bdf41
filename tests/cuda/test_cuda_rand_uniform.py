"""The rand_uniform op override on the cuda backend: the launch (fake driver),
seed checking, the kernel source (NVRTC), and the generator itself -- the
device helpers compiled on the host with g++ and compared with a model written
from the protocol's text, since no GPU runs here."""

import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from needle.errors import ArgumentError, ArgumentTypeError, NeedleError
from needle.protocol import OP_OVERRIDE_SIGNATURES, ReplayScalar
from needle_cuda import CudaBackend, _kernels

MASK = (1 << 64) - 1


def model(seed: int, indices, dtype) -> np.ndarray:
    """OP_OVERRIDE_SIGNATURES["rand_uniform"] in plain Python integers."""
    out = []
    for i in indices:
        z = (seed * 0x9E3779B97F4A7C15 + i) & MASK
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & MASK
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out.append((z >> 40) * 2.0**-24 if np.dtype(dtype) == np.float32 else (z >> 11) * 2.0**-53)
    return np.array(out, dtype=dtype)


@pytest.fixture
def be(fake_driver):
    return CudaBackend()


# -- the launch ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype,suffix", [("float32", "f32"), ("float64", "f64")])
def test_one_launch_with_pointer_seed_and_64_bit_count(be, fake_driver, dtype, suffix):
    out = be.Array(1000, dtype)
    be.rand_uniform(out, 12345)
    (fn, grid, block, args), = fake_driver.launches
    assert fn == f"rand_uniform_{suffix}" and block == (256, 1, 1) and grid[0] * 256 >= 1000
    assert int(args[0]) == out.ptr()
    assert type(args[1]) is np.uint64 and args[1] == 12345
    assert type(args[2]) is np.int64 and args[2] == 1000
    assert fn in _kernels.EXPORTS["ewise"]


def test_float_and_replay_scalar_seeds_are_the_same_whole_number(be, fake_driver):
    out = be.Array(16)
    for seed in (7, 7.0, np.float32(7), np.int64(7), ReplayScalar(7.0, 3)):
        be.rand_uniform(out, seed)
    seeds = [a[1] for _, _, _, a in fake_driver.launches]
    assert all(type(s) is np.uint64 and s == 7 for s in seeds)
    be.rand_uniform(out, 2**32 - 1)
    be.rand_uniform(out, float(2**32 - 1))
    assert [a[1] for _, _, _, a in fake_driver.launches[-2:]] == [2**32 - 1] * 2


def test_empty_buffer_launches_nothing(be, fake_driver):
    be.rand_uniform(be.Array(0), 1)
    assert fake_driver.launches == []


@pytest.mark.parametrize("seed,error,text", [
    (-1, ArgumentError, "in \\[0, 2\\*\\*32\\), got -1"),
    (2**32, ArgumentError, "got 4294967296"),
    (-1.0, ArgumentError, "got -1"),
    (1.5, ArgumentError, "whole number, got 1.5"),
    (float("nan"), ArgumentError, "whole number, got nan"),
    (float("inf"), ArgumentError, "whole number, got inf"),
    (1e300, ArgumentError, "in \\[0, 2\\*\\*32\\)"),
    ("3", ArgumentTypeError, "got str"),
    (None, ArgumentTypeError, "got NoneType"),
    (True, ArgumentTypeError, "got bool"),
])
def test_bad_seeds_raise_typed_errors_before_any_launch(be, fake_driver, seed, error, text):
    with pytest.raises(error, match=text) as info:
        be.rand_uniform(be.Array(8), seed)
    assert isinstance(info.value, NeedleError)
    assert fake_driver.launches == []


def test_it_is_an_op_override(be):
    assert "rand_uniform" in OP_OVERRIDE_SIGNATURES
    assert be.op_overrides()["rand_uniform"] == be.rand_uniform


# -- the source: NVRTC, and the generator on the host ---------------------------------
def test_kernel_compiles_cleanly_with_nvrtc():
    pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")
    from needle_cuda import _nvrtc
    code, log = _nvrtc.compile_source(_kernels.source("ewise"), "ewise.cu", "sm_80",
                                      warnings_are_errors=True)
    assert log == ""
    for name in ("rand_uniform_f32", "rand_uniform_f64"):
        assert name.encode() + b"\0" in code


_HOST_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
typedef long long i64;
typedef unsigned long long u64;
#define __device__
#define __forceinline__ inline
%s
int main(int argc, char** argv) {
    // argv: seed, then indices; prints the float32 and float64 draws as raw bits
    const u64 seed = strtoull(argv[1], 0, 10);
    for (int k = 2; k < argc; ++k) {
        const u64 i = strtoull(argv[k], 0, 10);
        const u64 z = ndl_splitmix64_mix(ndl_rng_base(seed) + i);
        float f = ndl_u01_f32(z);
        double d = ndl_u01_f64(z);
        unsigned int fb; unsigned long long db;
        memcpy(&fb, &f, 4); memcpy(&db, &d, 8);
        printf("%%u %%llu\n", fb, db);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def host_rng(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler to run the generator without a GPU")
    body = (_kernels.KERNEL_DIR / "ewise.cu").read_text(encoding="utf-8")
    block = re.search(r"// \[ndl-rng\]\n(.*?)// \[/ndl-rng\]", body, re.S).group(1)
    d = tmp_path_factory.mktemp("rng")
    (d / "rng.cpp").write_text(_HOST_MAIN % block)
    subprocess.run([cxx, "-O1", "-o", str(d / "rng"), str(d / "rng.cpp")], check=True)

    def draw(seed, indices):
        r = subprocess.run([str(d / "rng"), str(seed)] + [str(i) for i in indices],
                           capture_output=True, text=True, check=True)
        rows = [line.split() for line in r.stdout.splitlines()]
        f32 = np.array([int(a) for a, _ in rows], dtype=np.uint32).view(np.float32)
        f64 = np.array([int(b) for _, b in rows], dtype=np.uint64).view(np.float64)
        return f32, f64
    return draw


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31, 2**32 - 1])
def test_device_generator_matches_the_protocol_bit_for_bit(host_rng, seed):
    # small indices, and ones past 2**31 and 2**32 (the kernel's index is 64-bit)
    indices = list(range(64)) + [2**31 - 1, 2**31, 2**32 + 7, 2**40 + 3, 2**63 + 11]
    f32, f64 = host_rng(seed, indices)
    np.testing.assert_array_equal(f32, model(seed, indices, "float32"))
    np.testing.assert_array_equal(f64, model(seed, indices, "float64"))
    assert f32.min() >= 0 and f32.max() < 1 and f64.min() >= 0 and f64.max() < 1


def test_model_draws_are_uniform_and_seed_dependent():
    a, b = model(1, range(4000), "float64"), model(2, range(4000), "float64")
    assert not np.array_equal(a, b)
    assert abs(a.mean() - 0.5) < 0.02 and abs(a.var() - 1 / 12) < 0.01
    assert math.isclose(model(0, [0], "float64")[0], 0.0)  # splitmix of 0 is 0


# -- on a real GPU ------------------------------------------------------------------
def _gpu():
    be = CudaBackend()
    ok, reason = be.is_available()
    if not ok:
        pytest.skip(reason or "cuda unavailable")
    return be


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_draws_equal_the_model(dtype):
    be = _gpu()
    n = 100_003
    out = be.Array(n, dtype)
    be.rand_uniform(out, 2**32 - 5)
    got = be.to_numpy(out, (n,), (1,), 0)
    picks = [0, 1, 2, 3, 4097, n - 1]
    np.testing.assert_array_equal(got[picks], model(2**32 - 5, picks, dtype))
    assert got.min() >= 0 and got.max() < 1 and abs(float(got.mean()) - 0.5) < 0.01
