"""Every kernel source compiles with NVRTC, cleanly, for real GPU architectures.

Needs only the NVRTC library (PyPI nvidia-cuda-nvrtc), no driver or GPU.
A warning fails the test as surely as an error: the program log must be empty.
"""

import re

import pytest

nvrtc_mod = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")

from needle_cuda import _kernels, _nvrtc  # noqa: E402
from needle_cuda._errors import KernelCompileError  # noqa: E402

ARCHS = ("sm_80", "sm_90")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", _kernels.KERNEL_FILES)
def test_kernel_file_compiles_without_warnings(file, arch):
    code, log = _nvrtc.compile_source(_kernels.source(file), f"{file}.cu", arch,
                                      warnings_are_errors=True)
    assert log == ""
    assert code[:4] == b"\x7fELF", "NVRTC should return an ELF cubin"
    # every kernel the Python side launches is exported under its extern "C" name
    missing = [k for k in _kernels.EXPORTS[file] if k.encode() + b"\0" not in code]
    assert not missing, f"{file}.cu lacks kernels {missing}"


def test_every_cu_file_is_listed():
    on_disk = sorted(p.stem for p in _kernels.KERNEL_DIR.glob("*.cu"))
    assert on_disk == sorted(_kernels.KERNEL_FILES)


def test_sources_are_header_free():
    for f in _kernels.KERNEL_FILES:
        assert not re.search(r"^\s*#\s*include", _kernels.source(f), re.M), f


def test_compile_error_carries_nvrtc_name_and_log():
    with pytest.raises(KernelCompileError) as info:
        _nvrtc.compile_source('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }',
                              "bad.cu", "sm_80")
    err = info.value
    assert err.error_name == "NVRTC_ERROR_COMPILATION"
    assert "compiling bad.cu for sm_80" in str(err)
    assert "undefined_name" in err.detail


def test_warning_fails_in_strict_mode():
    src = 'extern "C" __global__ void k(float* x) { int unused_thing; x[0] = 1.f; }'
    _nvrtc.compile_source(src, "warn.cu", "sm_80")  # non-strict: compiles
    with pytest.raises(KernelCompileError) as info:
        _nvrtc.compile_source(src, "warn.cu", "sm_80", warnings_are_errors=True)
    assert info.value.error_name == "NVRTC_WARNING"
    assert "unused_thing" in info.value.detail


def test_choose_target():
    assert _nvrtc.choose_target(90, [75, 80, 90]) == ("cubin", "sm_90")
    # a GPU newer than NVRTC knows: PTX for the newest known arch, JIT-ed by the driver
    assert _nvrtc.choose_target(120, [75, 80, 90]) == ("ptx", "compute_90")
    with pytest.raises(Exception, match="cannot compile for compute capability 5.0"):
        _nvrtc.choose_target(50, [75, 80, 90])


def test_real_nvrtc_supports_the_test_archs():
    archs = _nvrtc.supported_archs()
    assert 80 in archs and 90 in archs
    assert _nvrtc.version() >= (12, 0)


def test_nvrtc_library_is_located():
    path = _nvrtc.library_path()
    assert path and "nvrtc" in path
