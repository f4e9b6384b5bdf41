"""Timing helpers for compare.py and the probe modules.

They live in ``benchmarks/benchmarks/timing.py``, which the wheel ships (as
``needle_benchmarks``) so that ``needle bench kernels`` works from an install.
"""

from benchmarks.timing import fmt_time, median_time  # noqa: F401
