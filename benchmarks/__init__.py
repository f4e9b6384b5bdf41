"""needle's speed reports, beside NumPy and PyTorch (not shipped in the wheel).

Run from the repository root as modules (``python -m benchmarks.compare``,
``python -m benchmarks.models_probe --device cuda`` ...); ``compare.py`` and
``overhead.py`` also run as scripts (``python benchmarks/compare.py``).
``timing`` is the one timing helper; ``benchmarks/benchmarks/`` is the asv
suite (``asv.conf.json``).
"""
