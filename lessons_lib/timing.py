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

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .device import pick_device, synchronize
from .validate import BadArgument, check_int


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
    repeats = check_int(repeats, "repeats", low=1, fix="time at least one repeat")
    number = check_int(number, "number", low=1, fix="each repeat calls fn at least once")
    warmup = check_int(warmup, "warmup", low=0)
    if not callable(fn):
        raise BadArgument(f"fn={fn!r}: must be a function to call, e.g. lambda: model(x)")
    dev = str(pick_device(device))  # a missing GPU: the course's message, not torch's assertion
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
        self.device = pick_device(device)
        self.seconds = float("nan")
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device | str = "cpu",
    rounds: int = 15,
    warmup: int = 2,
    number: int | None = None,
) -> dict[str, Timing]:
    """Time several functions round-robin: each round measures each function once, so a change of load
    on a shared machine hits all of them alike and their *ratios* stay honest.

    ``number`` calls per measurement; ``None`` picks, per function, enough calls to last about 2 ms (timer
    resolution for tiny functions). Returns a :class:`Timing` per name (seconds per single call): use
    ``.median``, or ``.min`` when only interference can add time (e.g. a pure compute kernel).
    """
    if not fns or not all(callable(f) for f in fns.values()):
        raise BadArgument(f"fns={fns!r}: give at least one function to time, as {{name: function}}")
    if rounds < 1:
        raise ValueError(f"time_interleaved needs rounds >= 1, got {rounds}")
    calls, warm = {}, {}
    for k, f in fns.items():
        w = time_it(f, device=device, warmup=0, repeats=max(warmup, 1))
        warm[k] = w.times
        calls[k] = number or max(1, min(1000, int(2e-3 / max(w.min, 1e-7))))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k].append(time_it(f, device=device, warmup=0, repeats=1, number=calls[k]).times[0])
    dev = str(torch.device(device))
    return {k: Timing(times=v, warmup_times=warm[k], device=dev) for k, v in times.items()}


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 15, warmup: int = 2,
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin with :func:`time_interleaved`."""
    return {k: t.median for k, t in time_interleaved(fns, device=device, rounds=repeats, warmup=warmup).items()}


def cpu_rounds(fns: dict[str, Callable[[], object]], rounds: int = 30, warmup: int = 2,
               target_s: float = 2e-3) -> dict[str, list[float]]:
    """CPU seconds per call (``time.process_time``) of each CPU function in ``rounds`` round-robin rounds.

    CPU time leaves out the time this process waits while others run, so ratios stay honest on a busy shared
    machine (on a quiet one it equals the wall time; for GPU work use :func:`time_interleaved`). A measurement
    repeats a function for about ``target_s``; each round starts one function later, so that no function always
    follows the same one (caches, allocator)."""
    if not fns or not all(callable(f) for f in fns.values()):
        raise BadArgument(f"fns={fns!r}: give at least one function to time, as {{name: function}}")
    rounds = check_int(rounds, "rounds", low=1, fix="e.g. 30")
    warmup = check_int(warmup, "warmup", low=1, fix="calls before timing, e.g. 2")
    calls = {}
    for name, fn in fns.items():
        start = time.process_time()
        for _ in range(warmup):
            fn()
        calls[name] = max(1, round(target_s * warmup / max(time.process_time() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            start = time.process_time()
            for _ in range(calls[name]):
                fns[name]()
            times[name].append((time.process_time() - start) / calls[name])
    return times


def min_ratios(a: Sequence[float], b: Sequence[float], group: int = 3) -> list[float]:
    """Ratios a/b of interleaved timings, one per group of ``group`` consecutive rounds: the group's fastest a
    over its fastest b (interference only ever adds time, so a group's fastest round is its clean one). The
    groups are the independent repeats an interval or range is taken over; a last partial group is dropped."""
    group = check_int(group, "group", low=1)
    if len(a) != len(b):
        raise BadArgument(f"min_ratios needs timings of the same rounds, got {len(a)} and {len(b)} values")
    n = len(a) // group * group
    return [min(a[i:i + group]) / min(b[i:i + group]) for i in range(0, n, group)]


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: leave as is); restores the old value.

    Small models on a busy machine: one thread avoids OpenMP threads waiting on each other."""
    if n is None:
        yield
        return
    n = check_int(n, "threads", low=1, fix="a thread count such as 1, or None to leave it as is")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
