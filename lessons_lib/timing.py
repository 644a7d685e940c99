"""Honest timing: synchronize the device before reading the clock, warm up, repeat, report the median.

Every time shown in the course goes through :func:`time_it` or :class:`Stopwatch`.

* GPUs run asynchronously: a kernel launch returns before the work is done, so a clock read without
  :func:`lessons_lib.device.synchronize` measures the launch, not the work.
* The first calls pay one-off costs (allocations, caches, lazy initialisation): they are run as
  warm-up and not counted.
* A busy machine adds rare long outliers; the median ignores them, the mean does not. The spread
  reported is the inter-quartile range (IQR).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .device import synchronize


def format_seconds(s: float) -> str:
    """1.5e-6 -> '1.50 µs', 0.0123 -> '12.3 ms', 4.2 -> '4.20 s'."""
    if s != s:  # NaN
        return "nan"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            v = s / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s} s"


@dataclass
class Timing:
    """Seconds per call for each repeat (warm-up calls excluded)."""

    times: list[float]
    warmup_times: list[float]
    device: str = "cpu"

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        """Inter-quartile range of the repeats, in seconds (0 with fewer than 2 repeats)."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return q[2] - q[0]

    def __str__(self) -> str:
        return (
            f"{format_seconds(self.median)} ± {format_seconds(self.iqr / 2)} "
            f"(median ± IQR/2 of {len(self.times)} runs after {len(self.warmup_times)} warm-up, {self.device})"
        )


def time_it(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 20,
    number: int = 1,
) -> Timing:
    """Time ``fn()``: ``warmup`` uncounted calls, then ``repeats`` measurements of ``number`` calls each.

    The device is synchronized before each clock read. Returns seconds per single call.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError("time_it needs repeats >= 1, number >= 1 and warmup >= 0")
    dev = str(torch.device(device))
    warm = []
    for _ in range(warmup):
        synchronize(dev)
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        warm.append(time.perf_counter() - t0)
    times = []
    for _ in range(repeats):
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        synchronize(dev)
        times.append((time.perf_counter() - t0) / number)
    return Timing(times=times, warmup_times=warm, device=dev)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``; synchronizes on entry and exit."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds = float("nan")
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
