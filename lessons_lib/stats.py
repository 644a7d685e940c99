"""Evidence that survives another seed: intervals over repeated runs, and three-valued verdicts.

A number that noise can move (an accuracy, a loss, epochs to a target, a speed ratio) is measured over several
seeds or repeats and reported with its spread:

* :func:`mean_interval`: mean and a Student-t confidence interval (default 95%) of independent runs (seeds);
* :func:`paired_interval`: the same for differences of paired runs (same seed, two treatments), which cancels
  the part of the noise both runs share;
* :func:`median_range`: median, minimum and maximum of timing repeats (timings are skewed: no t-interval);
* :func:`median_interval`: the median with a distribution-free confidence interval (order statistics), for a
  claim about the typical repeat that one outlier round (a busy machine's hiccup) should not decide.

:func:`verdict` turns an interval and a threshold into "holds", "does not hold" or "inconclusive" (the interval
straddles the threshold). A verdict from a 95% interval flips from "holds" to "does not hold" under another seed
only if both intervals miss the threshold on opposite sides, which the interval makes rare; "inconclusive" is the
honest answer in between.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .validate import BadArgument, check_choice, check_float

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE = "holds", "does not hold", "inconclusive", "not measurable"
Verdict = Literal["holds", "does not hold", "inconclusive", "not measurable"]


def _scalar(v: object) -> object:
    """A one-element tensor or array (a run's metric still on its device) as a Python number; else unchanged."""
    if not isinstance(v, numbers.Real) and hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        return v.item()
    return v


def _numbers(values: Sequence[float], what: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise BadArgument(f"{what}: values={values!r} must be a sequence of numbers, one per run")
    vals = [_scalar(v) for v in values]
    if any(isinstance(v, numbers.Real) and math.isnan(v) for v in vals):
        raise BadArgument(f"{what} got a NaN among {vals}: a run diverged; report it instead of averaging it away")
    return [check_float(v, f"{what}: values[{i}]", finite=False, fix="one number per run")
            for i, v in enumerate(vals)]


def _values(values: Sequence[float], what: str) -> list[float]:
    vals = _numbers(values, what)
    if len(vals) < 2:
        raise BadArgument(f"{what} needs at least 2 runs to give an interval, got {len(vals)}: run more seeds")
    return vals


@dataclass(frozen=True)
class Interval:
    """``mean`` with a two-sided ``level`` confidence interval [``low``, ``high``] from ``n`` runs."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, fmt: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
        """e.g. ``0.912 ± 0.011 (95% CI, 5 seeds)``; ``scale`` multiplies (100 for points), ``unit`` follows."""
        m, h = self.mean * scale, self.half_width * scale
        return f"{m:{fmt}}{unit} ± {h:{fmt}}{unit} ({self.level:.0%} CI, {self.n} runs)"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of ``n`` repeats (for timings)."""

    median: float
    low: float
    high: float
    n: int

    def format(self, fmt: str = ".3g", scale: float = 1.0, unit: str = "") -> str:
        return (f"{self.median * scale:{fmt}}{unit} (range {self.low * scale:{fmt}}–{self.high * scale:{fmt}}{unit}, "
                f"{self.n} repeats)")

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class MedianInterval(Spread):
    """Median of ``n`` repeats with a distribution-free confidence interval [``low``, ``high``] in place of the
    range: two order statistics, covering the true median with probability ``level`` (at least the level asked
    for; with few repeats the whole range, and ``level`` says what that covers)."""

    level: float = 0.95

    def format(self, fmt: str = ".3g", scale: float = 1.0, unit: str = "") -> str:
        return (f"{self.median * scale:{fmt}}{unit} [{self.low * scale:{fmt}}, {self.high * scale:{fmt}}] "
                f"({self.level:.0%} CI of the median, {self.n} repeats)")


def median_interval(values: Sequence[float], level: float = 0.95) -> MedianInterval:
    """The median and the order statistics x_(k) <= median <= x_(n+1-k) with the largest k for which
    P(Binomial(n, 1/2) < k) <= (1 - level) / 2: no assumption on the distribution (``len(values) >= 1``)."""
    vals = sorted(_numbers(values, "median_interval"))
    level = check_float(level, "level", low=0, high=1, low_open=True, high_open=True, fix="e.g. 0.95 for 95%")
    if not vals:
        raise BadArgument("median_interval got no values: time at least one repeat")
    n, tail, k = len(vals), 0.0, 0  # tail = P(B <= k - 1) for B ~ Binomial(n, 1/2)
    while k < n // 2 and tail + math.comb(n, k) / 2**n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2**n
        k += 1
    if k == 0:  # too few repeats for the level: the range
        k, tail = 1, 1 / 2**n
    return MedianInterval(statistics.median(vals), vals[k - 1], vals[n - k], n, 1 - 2 * tail)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of independent runs (``len(values) >= 2``)."""
    vals = _values(values, "mean_interval")
    level = check_float(level, "level", low=0, high=1, low_open=True, high_open=True, fix="e.g. 0.95 for 95%")
    n, m = len(vals), statistics.fmean(vals)
    sd = statistics.stdev(vals)
    from scipy.special import stdtrit  # Student-t quantile; imported here: scipy costs ~0.5 s per process

    h = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n, level)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Interval of the mean difference ``a - b`` over paired runs (run i of both used seed i)."""
    a, b = _numbers(a, "paired_interval (a)"), _numbers(b, "paired_interval (b)")
    if len(a) != len(b):
        raise BadArgument(f"paired_interval needs runs in pairs, got {len(a)} and {len(b)} values")
    return mean_interval([x - y for x, y in zip(a, b)], level)


def median_range(values: Sequence[float]) -> Spread:
    """Median and range of timing repeats (``len(values) >= 1``)."""
    vals = _numbers(values, "median_range")
    if not vals:
        raise BadArgument("median_range got no values: time at least one repeat")
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def verdict(interval: Interval | Spread, threshold: float, holds_if: Literal["above", "below"] = "above") -> Verdict:
    """"holds" when the whole interval is on the ``holds_if`` side of ``threshold``, "does not hold" when it is
    wholly on the other side, else "inconclusive". For a :class:`Spread` the range (for a :class:`MedianInterval`
    the median's interval) plays the interval's part."""
    if not isinstance(interval, (Interval, Spread)):
        raise BadArgument(f"interval={interval!r} must be an Interval or Spread: build it with mean_interval, "
                          "paired_interval, median_range or median_interval")
    holds_if = check_choice(holds_if, "holds_if", ("above", "below"))
    threshold = check_float(threshold, "threshold", fix="the value the claim is measured against")
    low, high = interval.low, interval.high
    if holds_if == "above":
        return HOLDS if low > threshold else DOES_NOT_HOLD if high < threshold else INCONCLUSIVE
    return HOLDS if high < threshold else DOES_NOT_HOLD if low > threshold else INCONCLUSIVE


def all_of(*verdicts: Verdict) -> Verdict:
    """Several conditions of one claim together: holds if all hold, does not hold if any does not, else
    inconclusive (e.g. an equivalence claim: the difference is above -margin AND below +margin)."""
    for v in verdicts:
        if v not in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE):
            raise BadArgument(f"all_of got {v!r}: pass verdicts from stats.verdict")
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else INCONCLUSIVE


def column_intervals(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% interval per column of a (runs, points) array, for a band or error bars in a plot. A column
    with fewer than 2 runs or a non-finite value gives NaN there (a diverged run is not averaged away)."""
    rows = np.asarray(rows, dtype=float)
    if rows.ndim != 2:
        raise BadArgument(f"rows has shape {rows.shape}: column_intervals needs a (runs, points) array")
    mean, low, high = (np.full(rows.shape[1], np.nan) for _ in range(3))
    for j in range(rows.shape[1]):
        col = rows[:, j]
        if len(col) >= 2 and np.all(np.isfinite(col)):
            iv = mean_interval(col)
            mean[j], low[j], high[j] = iv.mean, iv.low, iv.high
    return mean, low, high
