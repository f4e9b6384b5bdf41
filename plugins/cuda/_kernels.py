"""The kernel sources: which file each exported kernel lives in.

Every ``kernels/<file>.cu`` is compiled as one module, with ``common.cuh``
prepended (NVRTC has no include path to our folder, and a single translation
unit keeps the cache key honest: it covers every byte that is compiled).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
KERNEL_FILES = ("ewise", "strided", "reduce", "softmax", "matmul", "embedding")


@lru_cache(maxsize=None)
def source(file: str) -> str:
    """Full source of module ``file`` (common header + the file)."""
    if file not in KERNEL_FILES:
        raise KeyError(f"no kernel file {file!r}; have {KERNEL_FILES}")
    common = (KERNEL_DIR / "common.cuh").read_text(encoding="utf-8")
    body = (KERNEL_DIR / f"{file}.cu").read_text(encoding="utf-8")
    return f"{common}\n#line 1 \"{file}.cu\"\n{body}"


def _names(prefixes, suffixes):
    return [f"{p}_{s}" for p in prefixes for s in suffixes]


_DT = ("f32", "f64")
EWISE_BINARY = ("ewise_add", "ewise_sub", "ewise_mul", "ewise_div", "ewise_pow", "ewise_maximum",
                "ewise_eq", "ewise_ge", "ewise_relu_grad")
SCALAR = ("scalar_add", "scalar_sub", "scalar_mul", "scalar_div", "scalar_rdiv", "scalar_power",
          "scalar_maximum", "scalar_eq", "scalar_ge")
EWISE_UNARY = ("ewise_neg", "ewise_log", "ewise_exp", "ewise_tanh", "ewise_sqrt")
GEMM_FAMILIES = ("matmul_strided", "conv_fwd", "conv_grad_weight", "conv_grad_input")
GEMM_CONFIGS = ("big", "small")
#: values set_scalars writes per launch (NDL_SCALAR_BLOCK in ewise.cu)
SCALAR_BLOCK = 32
#: threads of embedding_check and embedding_grad_scan (NDL_EMB_BLOCK in embedding.cu)
EMB_BLOCK = 256
#: threads of embedding_grad_count / _fill, one per id of a tile (NDL_EMB_TILE)
EMB_TILE = 128
#: the codes embedding_check writes into a device's error record (word 0), by op
EMB_OPS = {"embedding": 1, "embedding_grad": 2}

#: file -> every extern "C" kernel it must export (checked by the compile test
#: against the cubin's symbol table).
EXPORTS: dict[str, list[str]] = {
    "ewise": _names(EWISE_BINARY + SCALAR + EWISE_UNARY + ("fill", "rand_uniform"), _DT)
    + _names(tuple(f"{k}_dev" for k in SCALAR + ("fill", "rand_uniform")), _DT) + ["set_scalars"],
    "strided": [f"{k}_{d}_{i}" for k in ("compact", "ewise_setitem", "scalar_setitem")
                for d in _DT for i in ("i32", "i64")],
    "reduce": [f"reduce_{op}_{how}_{d}" for op in ("sum", "max") for how in ("warp", "block") for d in _DT],
    "softmax": [f"{op}_{how}_{d}" for op in ("logsumexp", "softmax") for how in ("warp", "block")
                for d in _DT],
    "matmul": [f"{f}_{d}_{c}" for f in GEMM_FAMILIES for d in _DT for c in GEMM_CONFIGS]
    + _names(("matmul_tiled",), _DT),
    "embedding": _names(("embedding_check", "embedding", "embedding_grad_count", "embedding_grad_fill",
                         "embedding_grad_sum"), _DT) + ["embedding_grad_scan"],
}

#: kernel name -> file
FILE_OF: dict[str, str] = {k: f for f, ks in EXPORTS.items() for k in ks}
