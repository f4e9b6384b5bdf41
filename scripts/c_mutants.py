"""Hand-made mutants of the CPU backend's C kernels: each must be killed.

    .venv/bin/python scripts/c_mutants.py            # every mutant
    .venv/bin/python scripts/c_mutants.py M3 M7      # some of them
    .venv/bin/python scripts/c_mutants.py --list

For each mutant the script copies the tree (git's view: tracked and new,
not ignored files) into a scratch folder, replaces one exact snippet of
plugins/cpu/csrc, recompiles the C objects there and relinks (the commands
of one full verbose build, replayed), and runs the tests named for
that mutant with ``needle_cpu`` imported from the copy.  A mutant is KILLED
when those tests fail.  The working tree and its build are never touched.

A snippet that no longer occurs exactly once (the kernel was rewritten) is
reported as STALE -- update the mutant -- and makes the run fail, as does a
mutant that SURVIVED or a copy that does not build.  Exit status 0 only when
every selected mutant was killed.

The mutants target the scalar and SIMD paths where wrong answers hide:
NaN propagation, the scalar tails after vector blocks, and accumulation.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = "plugins/cpu/csrc"

SPECIAL = ["tests/core/test_conformance.py", "-k",
           "propagates or follow or unary_math_on_special"]
REDUCE = ["tests/cpu/test_reduce.py", "tests/core/test_conformance.py", "-k",
          "reduce or follow or sum"]


@dataclass
class Mutant:
    key: str
    file: str
    old: str
    new: str
    what: str
    tests: list


MUTANTS = [
    Mutant("M1", "ewise_tmpl.h", "ND_SCAL(nd_smaximum_, (x >= y || x != x) ? x : y)",
           "ND_SCAL(nd_smaximum_, (x >= y) ? x : y)",
           "scalar maximum drops a NaN input (relu(nan) = 0)", SPECIAL),
    Mutant("M2", "ewise_tmpl.h", "ND_BIN(nd_maximum_, (x >= y || x != x) ? x : y)",
           "ND_BIN(nd_maximum_, (x >= y) ? x : y)",
           "element-wise maximum drops a NaN in its first operand", SPECIAL),
    Mutant("M3", "vmath.c", "    nan = _mm256_movemask_ps(bad) != 0;\n",
           "    nan = 0;\n",
           "AVX2 row max forgets NaNs seen in the vector blocks", SPECIAL),
    Mutant("M4", "vmath.c",
           "  for (; i < r; i++) { float x = a[i]; m = x > m ? x : m; nan |= (x != x); }\n  return nan ? NAN : m;\n}",
           "  for (; i < r; i++) { float x = a[i]; m = x > m ? x : m; }\n  return nan ? NAN : m;\n}",
           "AVX2 row max forgets a NaN in the scalar tail", SPECIAL),
    Mutant("M5", "vmath.c",
           "__m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));",
           "__m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s2));",
           "AVX2 row sum drops its fourth accumulator", REDUCE),
    Mutant("M6", "vmath.c", "    for (; i < e; i++) t += a[i];\n",
           "    for (; i + 1 < e; i++) t += a[i];\n",
           "AVX2 row sum skips the last element of the tail", REDUCE),
    Mutant("M7", "ewise_tmpl.h",
           "if (m != m || m == (T)INFINITY || m == -(T)INFINITY) { o[i] = m; continue; }",
           "if (m != m || m == -(T)INFINITY) { o[i] = m; continue; }",
           "logsumexp shifts a +inf row by +inf (inf - inf = nan)", SPECIAL),
    Mutant("M8", "vmath.c", "  return _mm256_blendv_ps(y, x, isnan);  /* nan in, nan out */",
           "  return y;",
           "vector exp turns NaN into a number (the clamp eats it)",
           # every vmath path the CPU has: on an AVX-512 CPU the default path is vexp16
           ["tests/cpu/test_vmath.py", "-k", "special_values"]),
    Mutant("M9", "ewise_tmpl.h", "ND_BIN(nd_maximum_, (x >= y || x != x) ? x : y)",
           "ND_BIN(nd_maximum_, (x >= y || x != x) ? y : x)",
           "element-wise maximum returns the minimum", SPECIAL),
    # the sixth session's kernels: conv's live-tap window, the row sums' tails, the
    # small products' row split
    Mutant("M10", "conv_tmpl.h", "    int inside = iw0 >= 0 && iw0 + t.Kw <= W;",
           "    int inside = iw0 >= 0;",
           "im2col copies a tap row at once even where it runs past the image's right edge",
           ["tests/cpu/test_conv.py"]),
    Mutant("M11", "fused_rows.c", "      for (; j < b1_; j++) acc_[0] += (EXPR(j));",
           "      for (; j < b1_ - 1; j++) acc_[0] += (EXPR(j));",
           "the row sums drop the last element after the 16-lane blocks",
           ["tests/cpu/test_simd.py", "-k", "row_kernels"]),
    Mutant("M12", "gemm.c", "small_rows_f32(col_a, r1 - r0, k, p, A + r0 * rsa, rsa, csa,",
           "small_rows_f32(col_a, r1 - r0, k, p, A, rsa, csa,",
           "every thread of a small product's row split reads the first rows of A",
           ["tests/cpu/test_matmul.py", "-k", "small_product_row_split or small_rows_split"]),
    Mutant("M13", "gemm.c", "r[6] = _mm256_permute2f128_ps(v2, v6, 0x31); r[7] = _mm256_permute2f128_ps(v3, v7, 0x31);",
           "r[6] = _mm256_permute2f128_ps(v2, v6, 0x31); r[7] = _mm256_permute2f128_ps(v3, v7, 0x20);",
           "the 8x8 register transpose (a transposed B's copy, six-row A packing) builds its last "
           "column from the wrong lanes",
           ["tests/cpu/test_matmul.py", "-k", "small_product_row_split or packed_a_every_k_tail"]),
    # seventh session (issue 15): the native replay loop, device random numbers, embedding rows
    Mutant("M14", "replay.c", "  for (nd_i64 k = 0; k < n; k++) {",
           "  for (nd_i64 k = 0; k + 1 < n; k++) {",
           "the native replay loop drops the last recorded call of a step",
           ["tests/cpu/test_native_replay.py", "tests/core/test_jit.py", "-k", "cpu"]),
    Mutant("M15", "rand.c", "    o[i] = (float)(nd_mix64(base + (uint64_t)i) >> 40) * 0x1p-24f;",
           "    o[i] = (float)(nd_mix64(base + (uint64_t)i) >> 41) * 0x1p-24f;",
           "float32 uniform numbers lose their top bit (all below 0.5): not the protocol's stream",
           ["tests/cpu/test_rand_uniform.py"]),
    Mutant("M16", "embedding.c", "    if (!(v >= 0 && v < (T)num) || v != (T)(nd_i64)v) return i;               \\",
           "    if (!(v >= 0 && v <= (T)num) || v != (T)(nd_i64)v) return i;              \\",
           "an embedding index equal to the table's row count is accepted: a read and a write one row "
           "past the table",
           ["tests/cpu/test_embedding_kernels.py"]),
    Mutant("M17", "embedding.c", "      for (nd_i64 j = lo; j < hi; j++) dst[j] += src[j];                      \\",
           "      for (nd_i64 j = lo; j < hi; j++) dst[j] = src[j];                       \\",
           "the embedding's adjoint keeps the last row of a repeated id instead of the sum",
           ["tests/cpu/test_embedding_kernels.py"]),
]


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        rel = f.decode()
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _import_dir(tree: Path) -> Path:
    """Import names -> the copy's folders, as setup.py's package_dir maps them."""
    imp = tree / ".imp"
    (imp / "needle").mkdir(parents=True)
    for entry in (tree / "core").iterdir():
        (imp / "needle" / entry.name).symlink_to(entry)
    for sub in ("nn", "optim", "data", "models"):
        (imp / "needle" / sub).symlink_to(tree / "contrib" / sub)
    for name, folder in (("needle_numpy", "numpy"), ("needle_cpu", "cpu"), ("needle_cuda", "cuda")):
        (imp / name).symlink_to(tree / "plugins" / folder)
    return imp


def _build(tree: Path, log: Path) -> list:
    """Full build of the copy; returns the compiler commands setuptools ran
    (verbose output), or None when it failed."""
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, "setup.py", "-v", "build_ext", "--inplace", "--force"], cwd=tree,
                           stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        return None
    return [line.strip() for line in open(log) if line.lstrip().startswith(("gcc", "cc ", "x86_64", "clang"))
            and " -o " in line]


def _rebuild_c(tree: Path, commands: list, log: Path) -> bool:
    """Recompile only the csrc/*.c objects (seconds; _ext.c from Cython takes
    minutes and never changes here), relink, and put the module in place."""
    with open(log, "w") as out:
        for cmd in commands:
            argv = shlex.split(cmd)
            is_link = "-shared" in argv
            src = argv[argv.index("-c") + 1] if "-c" in argv else ""
            if not is_link and "/csrc/" not in src:
                continue
            r = subprocess.run(argv, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                return False
            if is_link:
                built = tree / argv[argv.index("-o") + 1]
                shutil.copy2(built, tree / "plugins" / "cpu" / built.name)
    return True


def _tests(tree: Path, imp: Path, args) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(imp), PYTHONDONTWRITEBYTECODE="1",
               NEEDLE_DISABLE_PLUGINS="cuda", HYPOTHESIS_PROFILE="ci")
    env.pop("CI", None)  # this is a mutant run, not a CI run of the suite
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                       cwd=tree, env=env, capture_output=True, text=True)
    tail = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode, tail[-1] if tail else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("keys", nargs="*", help="mutant keys (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.keys or m.key in args.keys]
    if args.list:
        for m in chosen:
            print(f"{m.key}  {m.file:14s} {m.what}")
        return 0
    # every snippet must occur exactly once in the working tree's source
    stale = []
    for m in chosen:
        n = (ROOT / CSRC / m.file).read_text().count(m.old)
        if n != 1:
            stale.append(m)
            print(f"{m.key} STALE   {m.file}: the snippet occurs {n} times (expected once); "
                  f"update the mutant:\n    {m.old!r}")
    work = Path(tempfile.mkdtemp(prefix="needle_c_mutants_"))
    results = {m.key: "STALE" for m in stale}
    try:
        tree = work / "tree"
        tree.mkdir()
        _copy_tree(tree)
        imp = _import_dir(tree)
        t0 = time.time()
        commands = _build(tree, work / "build-base.log")
        if not commands or not any("-shared" in c for c in commands):
            print(f"the unmutated copy does not build (or no compiler commands were seen); "
                  f"see {work / 'build-base.log'}")
            args.keep = True
            return 2
        base = {}
        for m in chosen:
            if m in stale:
                continue
            key = tuple(m.tests)
            if key not in base:
                base[key] = _tests(tree, imp, m.tests)
                if base[key][0] != 0:
                    print(f"the tests of {m.key} fail WITHOUT the mutant: {base[key][1]}")
                    args.keep = True
                    return 2
        print(f"baseline built and tested in {time.time() - t0:.0f} s")
        for m in chosen:
            if m in stale:
                continue
            path = tree / CSRC / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                t0 = time.time()
                if not _rebuild_c(tree, commands, work / f"build-{m.key}.log"):
                    results[m.key] = "NO-BUILD"
                    print(f"{m.key} NO-BUILD {m.what} (see {work / f'build-{m.key}.log'})")
                    args.keep = True
                    continue
                rc, tail = _tests(tree, imp, m.tests)
                results[m.key] = "KILLED" if rc != 0 else "SURVIVED"
                print(f"{m.key} {results[m.key]:8s} {m.what}  [{tail}] ({time.time() - t0:.0f} s)")
            finally:
                path.write_text(original)
    finally:
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    killed = sum(v == "KILLED" for v in results.values())
    print(f"C mutants: {killed}/{len(chosen)} killed"
          + "".join(f"; {k} {v}" for k, v in results.items() if v != "KILLED"))
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
