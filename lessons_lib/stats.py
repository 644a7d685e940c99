"""Evidence that survives another seed: intervals over repeated runs, and three-valued verdicts.

A number that noise can move (an accuracy, a loss, epochs to a target, a speed ratio) is measured over several
seeds or repeats and reported with its spread:

* :func:`mean_interval`: mean and a Student-t confidence interval (default 95%) of independent runs (seeds);
* :func:`paired_interval`: the same for differences of paired runs (same seed, two treatments), which cancels
  the part of the noise both runs share;
* :func:`median_range`: median, minimum and maximum of timing repeats (timings are skewed: no t-interval).

:func:`verdict` turns an interval and a threshold into "holds", "does not hold" or "inconclusive" (the interval
straddles the threshold). A verdict from a 95% interval flips from "holds" to "does not hold" under another seed
only if both intervals miss the threshold on opposite sides, which the interval makes rare; "inconclusive" is the
honest answer in between.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE = "holds", "does not hold", "inconclusive", "not measurable"
Verdict = Literal["holds", "does not hold", "inconclusive", "not measurable"]


def _values(values: Sequence[float], what: str) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise ValueError(f"{what} needs at least 2 runs to give an interval, got {len(vals)}: run more seeds")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"{what} got a NaN among {vals}: a run diverged; report it instead of averaging it away")
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


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of independent runs (``len(values) >= 2``)."""
    vals = _values(values, "mean_interval")
    n, m = len(vals), statistics.fmean(vals)
    sd = statistics.stdev(vals)
    from scipy.special import stdtrit  # Student-t quantile; imported here: scipy costs ~0.5 s per process

    h = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n, level)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Interval of the mean difference ``a - b`` over paired runs (run i of both used seed i)."""
    if len(a) != len(b):
        raise ValueError(f"paired_interval needs runs in pairs, got {len(a)} and {len(b)} values")
    return mean_interval([x - y for x, y in zip(a, b)], level)


def median_range(values: Sequence[float]) -> Spread:
    """Median and range of timing repeats (``len(values) >= 1``)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("median_range got no values: time at least one repeat")
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def verdict(interval: Interval | Spread, threshold: float, holds_if: Literal["above", "below"] = "above") -> Verdict:
    """"holds" when the whole interval is on the ``holds_if`` side of ``threshold``, "does not hold" when it is
    wholly on the other side, else "inconclusive". For a :class:`Spread` the range plays the interval's part."""
    if holds_if not in ("above", "below"):
        raise ValueError(f"holds_if must be 'above' or 'below', got {holds_if!r}")
    low, high = interval.low, interval.high
    if holds_if == "above":
        return HOLDS if low > threshold else DOES_NOT_HOLD if high < threshold else INCONCLUSIVE
    return HOLDS if high < threshold else DOES_NOT_HOLD if low > threshold else INCONCLUSIVE
