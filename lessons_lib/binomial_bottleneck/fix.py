"""Lesson 04: the fix, measured over seeds: epoch time before (``RandomState.binomial``) and after (fast masks),
the masks' share of the epoch timed without the profiler, Amdahl's bound, and what is learned.

For each run seed, three copies of :class:`lab.NumpyMLP` (same seed: same initial weights, batch order and mask
stream) train one epoch each in turn: "before" draws its masks with seed 000's binomial, "after" with the fast
generators, and the control "free" reuses one mask drawn in advance (the cost of the masks taken out altogether:
Amdahl's limit measured, not computed). Each epoch is timed in CPU time (``time.process_time``; the run order
rotates every round), and the time spent inside the mask function is added up by a plain timer around it (no
profiler: cProfile's own cost falls on the many small calls, not on the one big ``binomial`` call). After the
epochs, "before" and "after" are scored on the validation set: the same seed, so the accuracies come in pairs.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data import Splits
from ..seeds import replicate_seeds
from ..stats import Interval, paired_interval
from . import reference
from .lab import Mask, NumpyMLP, blas_threads, interval_or_value, numpy_data, pm

N_SEEDS = 8  # paired runs: the size knob of the fix's claims (raise it for tighter intervals)
EPOCHS = 4  # epochs per run: every epoch is one timing round
VERSIONS = ("before", "after", "free")


class TimedMask:
    """Wraps a mask function and adds up the CPU seconds spent inside it (``seconds``)."""

    def __init__(self, mask: Mask):
        self.mask, self.seconds = mask, 0.0
        self.__name__ = f"timed_{getattr(mask, '__name__', 'mask')}"  # not a profile row of lab.MASK_NAMES

    def __call__(self, shape: tuple, p: float, rng: np.random.Generator) -> np.ndarray:
        start = time.process_time()
        out = self.mask(shape, p, rng)
        self.seconds += time.process_time() - start
        return out


class FreeMask:
    """The control: one mask drawn in advance (by ``mask``) per shape and p, then reused at every step for free."""

    def __init__(self, mask: Mask, rng: np.random.Generator):
        self.mask, self.rng, self.cache = mask, rng, {}

    def __call__(self, shape: tuple, p: float, rng: np.random.Generator) -> np.ndarray:
        if (shape, p) not in self.cache:
            self.cache[(shape, p)] = self.mask(shape, p, self.rng)
        return self.cache[(shape, p)]


@dataclass
class EpochRound:
    """One timing round: one epoch of each version (CPU and wall seconds, CPU seconds inside the mask function)."""

    seed: int
    epoch: int
    cpu: dict[str, float]
    wall: dict[str, float]
    mask: dict[str, float]


@dataclass
class ProfiledPair:
    """One seed's first "before" epoch timed plainly, and the same epoch of a twin net (same seed) under cProfile:
    the masks' share by the plain timer (unprofiled, and in the profiled epoch) and as the profile reads it."""

    timer: float
    timer_profiled: float
    profile: float


@dataclass
class FixRuns:
    """The fix over ``seeds`` × ``epochs`` rounds, and each seed's val accuracy before and after the fix."""

    seeds: list[int]
    epochs: int
    rounds: list[EpochRound]
    val_before: list[float]
    val_after: list[float]
    profiled: list[ProfiledPair] = field(default_factory=list)

    def shares(self, version: str = "before") -> list[float]:
        """Per round: the share of the epoch's CPU time spent inside the mask function."""
        return [r.mask[version] / r.cpu[version] for r in self.rounds]

    def speedups(self, version: str = "after", clock: str = "cpu") -> list[float]:
        """Per round: the "before" epoch's time over ``version``'s (``clock``: "cpu" or "wall")."""
        return [getattr(r, clock)["before"] / getattr(r, clock)[version] for r in self.rounds]

    def bounds(self) -> list[float]:
        """Per round: Amdahl's bound 1 / (1 − s) from the "before" epoch's mask share s."""
        return [1 / (1 - s) for s in self.shares("before")]

    def rest(self, version: str) -> list[float]:
        """Per round: CPU seconds of ``version``'s epoch outside the mask function."""
        return [r.cpu[version] - r.mask[version] for r in self.rounds]

    def wall_estimates(self, k: int = 3) -> list[float]:
        """A speedup estimated as a ratio of medians of ``k`` wall-clock epochs each, per group of ``k`` rounds:
        how far one short wall-clock measurement can land from the truth on this machine."""
        out = []
        for i in range(0, len(self.rounds) - k + 1, k):
            group = self.rounds[i:i + k]
            out.append(statistics.median(r.wall["before"] for r in group) /
                       statistics.median(r.wall["after"] for r in group))
        return out

    def accuracy_diff(self) -> Interval:
        """Val accuracy after − before the fix, paired by seed (mean and 95% interval)."""
        return paired_interval(self.val_after, self.val_before) if len(self.seeds) >= 2 else interval_or_value(
            [self.val_after[0] - self.val_before[0]])

    def profiler_effect(self) -> tuple[Interval, Interval]:
        """Paired over seeds, in share points: (the timer's share in the profiled epoch − without the profiler,
        the profile's reading − the timer's in the same profiled epoch)."""
        p = self.profiled
        return (interval_or_value([q.timer_profiled - q.timer for q in p]),
                interval_or_value([q.profile - q.timer_profiled for q in p]))

    def amdahl(self) -> str:
        """Where the measured speedup stands against Amdahl's bound, every line from the same rounds."""
        def iv(xs: Sequence[float], fmt: str = ".2f", unit: str = "x") -> str:
            return pm(interval_or_value(xs), fmt, unit)

        prof = [q.profile for q in self.profiled]
        rows = []
        if prof:
            rows.append((f"bound from cProfile's share, {iv([100 * q for q in prof], '.1f', '%')} "
                         f"({len(prof)} profiled epochs)", iv([1 / (1 - q) for q in prof])))
        rows += [(f"bound from a plain timer's share, {iv([100 * q for q in self.shares()], '.1f', '%')} "
                  "(no profiler)", iv(self.bounds())),
                 ("speedup with a free mask (the masks' whole cost gone)", iv(self.speedups("free"))),
                 ("speedup of the fix", iv(self.speedups()))]
        walls = self.wall_estimates()
        lines = [f"Amdahl's bound and the measured speedup, all from the same {len(self.rounds)} rounds "
                 "(mean ± 95% interval):"] + [f"  {k:<62} {v:>14}" for k, v in rows]
        lines.append(f"  rest of the epoch (outside the mask function): "
                     f"{iv([1e3 * r for r in self.rest('before')], '.1f', ' ms')} with binomial, "
                     f"{iv([1e3 * r for r in self.rest('free')], '.1f', ' ms')} with the free mask")
        lines.append("  the rest with binomial over the rest with the free mask, per round: "
                     f"{iv([b / f for b, f in zip(self.rest('before'), self.rest('free'))], '.3f')} "
                     "(above 1: binomial also slowed the rest, and a bound from the masks' own time is too low)")
        if walls:
            lines.append(f"  the fix's speedup as a ratio of wall-clock medians of 3 epochs, {len(walls)} tries: "
                         f"{min(walls):.2f}x to {max(walls):.2f}x")
        return "\n".join(lines)

    def table(self) -> str:
        n = len(self.rounds)
        lines = [f"{len(self.seeds)} seeds × {self.epochs} epochs = {n} rounds; CPU time per epoch, mean ± 95% "
                 "interval over the rounds",
                 f"{'':<22} {'epoch ms':>14} {'in masks ms':>14} {'rest ms':>14} {'masks share':>14}"]
        names = {"before": "binomial (before)", "after": "fast masks (after)", "free": "free masks (control)"}
        for v in VERSIONS:
            cells = [pm(interval_or_value([x * 1e3 for x in xs]), ".1f") for xs in
                     ([r.cpu[v] for r in self.rounds], [r.mask[v] for r in self.rounds], self.rest(v))]
            share = pm(interval_or_value([100 * s for s in self.shares(v)]), ".1f", "%")
            lines.append(f"{names[v]:<22} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {share:>14}")
        return "\n".join(lines)


def run_seeds(n: int = N_SEEDS, seed: int | None = None) -> list[int]:
    """The fix's run seeds, derived from the course seed (another ``LESSONS_SEED``: unrelated runs)."""
    return replicate_seeds(n, stream=40, seed=seed)


def _profiled_epoch(net: NumpyMLP, mask: TimedMask, x: np.ndarray, y: np.ndarray,
                    share: Callable[[pstats.Stats, Sequence[str]], float], names: Sequence[str]) -> tuple[float, float]:
    """One epoch under cProfile: (the plain timer's share, the profile's share read by ``share``)."""
    mask.seconds = 0.0
    prof = cProfile.Profile()
    start = time.process_time()
    prof.enable()
    net.train_epoch(x, y)
    prof.disable()
    return mask.seconds / (time.process_time() - start), share(pstats.Stats(prof), names)


def compare_fix(after: Mask, before: Mask = reference.binomial_mask, *, seeds: Sequence[int] | None = None,
                n_seeds: int = N_SEEDS, epochs: int = EPOCHS, splits: Splits | None = None,
                share: Callable[[pstats.Stats, Sequence[str]], float] = reference.mask_share) -> FixRuns:
    """Train "before", "after" and "free" (see the module) for ``epochs`` epochs per seed, an epoch each in turn.
    Per seed, a twin of the "before" net (same seed) trains its first epoch under cProfile right after the first
    round: the profiler's reading of the share (by ``share``, the learner's ``mask_share`` or the reference)
    against the plain timer's, paired (that epoch is not a timing round)."""
    x, y, xv, yv = numpy_data(splits)
    seeds = list(seeds) if seeds is not None else run_seeds(n_seeds)
    names = (getattr(before, "__name__", "mask"),)
    rounds, val_before, val_after, profiled = [], [], [], []
    with blas_threads():
        for s in seeds:
            masks = {"before": TimedMask(before), "after": TimedMask(after),
                     "free": TimedMask(FreeMask(after, np.random.default_rng(s)))}
            nets = {v: NumpyMLP(n_in=x.shape[1], mask=masks[v], seed=s) for v in VERSIONS}
            for e in range(epochs):
                cpu, wall, mask = {}, {}, {}
                k = len(rounds) % len(VERSIONS)
                for v in VERSIONS[k:] + VERSIONS[:k]:  # the order rotates: no version always follows another
                    masks[v].seconds = 0.0
                    w0, c0 = time.perf_counter(), time.process_time()
                    nets[v].train_epoch(x, y)
                    cpu[v], wall[v] = time.process_time() - c0, time.perf_counter() - w0
                    mask[v] = masks[v].seconds
                rounds.append(EpochRound(s, e, cpu, wall, mask))
                if e == 0:  # a twin of "before" (same seed) trains its first epoch under the profiler
                    twin = TimedMask(before)
                    timer_p, read = _profiled_epoch(NumpyMLP(n_in=x.shape[1], mask=twin, seed=s), twin, x, y, share,
                                                    names)
                    profiled.append(ProfiledPair(mask["before"] / cpu["before"], timer_p, read))
            val_before.append(nets["before"].accuracy(xv, yv))
            val_after.append(nets["after"].accuracy(xv, yv))
    return FixRuns(seeds, epochs, rounds, val_before, val_after, profiled)
