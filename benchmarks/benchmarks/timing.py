"""The one timing helper of the benchmarks: medians of timed calls.

Every figure in ``benchmarks/`` comes from here, so a ratio always compares
like with like.  ``sync`` (a GPU's synchronize) is called after each timed
call when the work is asynchronous.  It lives in the asv package, which
the wheel ships as ``needle_benchmarks``, so ``needle bench kernels`` works
from an install.
"""

import statistics
import time

__all__ = ["time_once", "median_time", "alternating_medians", "fmt_time"]


def time_once(fn, sync=None) -> float:
    """Seconds one call of ``fn`` takes (``sync()`` included when given)."""
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def median_time(fn, repeat: int = 7, number: int | None = None, min_time: float = 0.05, sync=None) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` rounds.

    ``number`` calls per round; chosen so a round lasts ~``min_time`` when None.
    One warm-up call first (allocator caches, kernel compilation)."""
    time_once(fn, sync)
    if number is None:
        number = max(1, int(min_time / max(time_once(fn, sync), 1e-7)))
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if sync is not None:
            sync()
        rounds.append((time.perf_counter() - t0) / number)
    return statistics.median(rounds)


def alternating_medians(fns, repeat: int = 7, min_time: float = 0.0, max_reps: int | None = None,
                        sync=None, block: float = 0.0, settle: float = 0.0) -> list:
    """Median seconds per call of each of ``fns`` (None entries are skipped:
    their median is None), timed in turn, so load from other processes hits
    them alike.  ``block`` > 0: each turn is a block of calls lasting about
    that long (for microsecond kernels), else one call.  At least ``repeat``
    rounds, more until ``min_time`` seconds have passed, at most ``max_reps``.
    Put needle's functions first, and give ``settle`` (~0.15 s) where NumPy
    BLAS calls take part: after one, OpenBLAS's idle threads spin for ~0.1 s
    and slow a 2-thread kernel that runs next; each block waits ``settle``
    seconds (untimed) first."""
    live = [fn for fn in fns if fn is not None]
    number = {}
    for fn in live:
        time_once(fn, sync)  # warm-up
        one = max(time_once(fn, sync), 1e-7)
        number[id(fn)] = max(1, int(block / one)) if block > 0 else 1
    times = {id(fn): [] for fn in live}
    start, reps = time.perf_counter(), 0
    while (reps < repeat or time.perf_counter() - start < min_time) and (max_reps is None or reps < max_reps):
        for fn in live:
            n = number[id(fn)]
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if sync is not None:
                sync()
            times[id(fn)].append((time.perf_counter() - t0) / n)
        reps += 1
    return [statistics.median(times[id(fn)]) if fn is not None else None for fn in fns]


def fmt_time(sec: float) -> str:
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} us"
    if sec < 1:
        return f"{sec * 1e3:8.2f} ms"
    return f"{sec:8.3f} s "
