"""Timing helpers shared by compare.py and the probe modules."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeat: int = 7, number: int | None = None, min_time: float = 0.05) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` rounds.

    ``number`` calls per round; chosen so a round lasts ~``min_time`` when None.
    One warm-up call first (allocator caches, kernel compilation)."""
    fn()
    if number is None:
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        number = max(1, int(min_time / one))
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return statistics.median(rounds)


def fmt_time(sec: float) -> str:
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} us"
    if sec < 1:
        return f"{sec * 1e3:8.2f} ms"
    return f"{sec:8.3f} s "
