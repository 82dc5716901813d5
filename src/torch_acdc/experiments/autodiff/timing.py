"""Interleaved wall-clock timing: several callables measured side by side, round-robin, medians.

On a shared machine absolute times drift; timing the candidates in alternation and comparing medians keeps
their *ratios* meaningful. Nothing here asserts a time.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["interleaved_medians"]


def _calibrate(fn: Callable[[], object], min_sample: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample`` seconds (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(min_sample / once + 0.5))


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 5,
                        min_sample: float = 0.01) -> dict[str, float]:
    """Median seconds per call of each callable. Each round times every callable once (order rotated per
    round); a sample repeats a callable enough times to last >= ``min_sample`` s. Cost ~ rounds * len(fns) *
    max(min_sample, one call) plus two warm-up calls each."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(fns)
    loops = {name: _calibrate(fns[name], min_sample) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, k = fns[name], loops[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
    return {name: statistics.median(s) for name, s in samples.items()}
