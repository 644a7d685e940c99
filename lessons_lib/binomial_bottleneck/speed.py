"""Lesson 04: FastDropout against PyTorch's ``F.dropout`` on the CPU, forward + backward, at several drop rates and
torch thread counts: the one measurement both the lesson's claim and ``benchmarks/bench_masks.py`` use.

Each (p, threads) pair is timed in interleaved rounds (the two layers take turns, the order alternating), so a
change of load hits both alike; each round gives one ratio, F.dropout's time over FastDropout's. A claim is
judged on the range of those ratios (every round meets it: :func:`lessons_lib.stats.median_range`) or on the
median's interval of at least 95% (the typical round meets it, whatever a busy machine's hiccup did to a single
round: :func:`lessons_lib.stats.median_interval`); the table shows both. With one torch thread the clock is the
process's CPU time; with more, the wall clock (CPU time would add up every thread's work, including OpenMP
threads waiting for each other). As ``timeit`` does, the garbage collector is off while the rounds
run: a collection of everything the course has imported would land in whichever layer happens to be running.
FastDropout runs its compiled kernel where it is built (``kernel=False``: its numpy path); the table says which.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from ..stats import MedianInterval, Spread, median_interval, median_range, verdict
from ..validate import check_choice, check_int, check_p, check_shape
from .fast_dropout import FastDropout, compiled

PS = (0.1, 0.2, 0.5, 0.8)
THREADS = (1, 2)
GOAL = 5.0  # the course's speed goal: FastDropout >= 5x F.dropout, forward + backward, every p and thread count


@dataclass
class FastVsTorch:
    """``ratios[(p, threads)]``: per interleaved round, F.dropout's forward + backward time over FastDropout's.
    ``ceilings[(p, threads)]``: the same over a *free* mask's (``x * m`` with a mask made once, in advance): the
    ratio no mask generator can beat, since every dropout layer still multiplies forward and backward."""

    shape: tuple[int, ...]
    ratios: dict[tuple[float, int], list[float]]
    ceilings: dict[tuple[float, int], list[float]] = field(default_factory=dict)
    path: str = "compiled kernel"  # which FastDropout ran: "compiled kernel" or "numpy path (<why>)"

    def spread(self, p: float, threads: int) -> Spread:
        return median_range(self.ratios[(p, threads)])

    def median_ci(self, p: float, threads: int) -> MedianInterval:
        return median_interval(self.ratios[(p, threads)])

    def ceiling(self, p: float, threads: int) -> Spread | None:
        return median_range(self.ceilings[(p, threads)]) if (p, threads) in self.ceilings else None

    def verdicts(self, goal: float = GOAL, on: str = "range") -> dict[tuple[float, int], str]:
        """Per (p, threads): "holds" if the whole range (``on="range"``: every round) or the median's 95% interval
        (``on="median"``) is >= goal, "does not hold" if all of it is below, else "inconclusive"."""
        on = check_choice(on, "on", ("range", "median"))
        return {k: verdict(self.spread(*k) if on == "range" else self.median_ci(*k), goal) for k in self.ratios}

    def table(self, goal: float = GOAL) -> str:
        n = len(next(iter(self.ratios.values())))
        level = self.median_ci(*next(iter(self.ratios))).level
        lines = [f"FastDropout ({self.path}) vs F.dropout, forward + backward of {'x'.join(map(str, self.shape))} "
                 f"on the CPU, {n} interleaved rounds: F.dropout time / FastDropout time",
                 f"(median [range], the median's {level:.0%} interval, the free mask's ratio, and whether every "
                 f"round and the median reach the goal of {goal:g}x)",
                 f"{'p':>5} {'threads':>8} {'ratio [range]':>20} {'median CI':>13} {'a free mask':>20}"
                 f"   {'every round':<14} median"]
        on_median = self.verdicts(goal, on="median")
        for (p, th), v in self.verdicts(goal).items():
            s, m, c = self.spread(p, th), self.median_ci(p, th), self.ceiling(p, th)
            free = f"{c.median:.1f}x [{c.low:.1f}, {c.high:.1f}]" if c else "—"
            lines.append(f"{p:>5g} {th:>8} {f'{s.median:.1f}x [{s.low:.1f}, {s.high:.1f}]':>20} "
                         f"{f'[{m.low:.1f}, {m.high:.1f}]':>13} {free:>20}   {v:<14} {on_median[(p, th)]}")
        return "\n".join(lines) + ("\n(a free mask: x * m with m made in advance — what any dropout layer still "
                                   "pays; F.dropout's time over it is the most a faster mask could reach)"
                                   if self.ceilings else "")


def fast_vs_f_dropout(ps=PS, threads=THREADS, shape=(128, 1024), rounds: int = 15,
                      number: int = 3, kernel: bool = True) -> FastVsTorch:
    """Time FastDropout, F.dropout and a free mask (forward + backward with a gradient of ones, ``number`` calls
    per measurement) in ``rounds`` interleaved rounds for every p in ``ps`` and torch thread count in ``threads``.
    ``kernel=False``: FastDropout's numpy path. torch's thread count and the garbage collector are restored
    afterwards."""
    ps = [check_p(p) for p in ps]
    threads = [check_int(t, "threads", low=1, high=256) for t in threads]
    shape, rounds, number = check_shape(shape), check_int(rounds, "rounds", low=1), check_int(number, "number", low=1)
    if 0.0 in ps:
        raise ValueError("ps: p = 0 is the identity for both layers, there is nothing to time; drop it")
    x = torch.randn(*shape).requires_grad_(True)
    g = torch.ones(*shape)
    before, collecting = torch.get_num_threads(), gc.isenabled()
    out: dict[tuple[float, int], list[float]] = {}
    free: dict[tuple[float, int], list[float]] = {}
    gc.collect()
    gc.disable()
    try:
        for th in threads:
            torch.set_num_threads(th)
            clock = time.process_time if th == 1 else time.perf_counter
            for p in ps:
                fast = FastDropout(p, kernel=kernel).train()
                with torch.no_grad():
                    m = fast(torch.ones(shape)).clone()  # one of FastDropout's masks, kept: the free mask
                layers = {"F": lambda t, p=p: F.dropout(t, p, training=True), "fast": fast,
                          "free": lambda t, m=m: t * m}

                def run(name: str, clock=clock, layers=layers) -> float:
                    start = clock()
                    for _ in range(number):
                        layers[name](x).backward(g)
                        x.grad = None
                    return clock() - start

                names = list(layers)
                for _ in range(3):  # warm-up
                    [run(n) for n in names]
                ratios, ceilings = [], []
                for r in range(rounds):  # the order rotates: each layer follows each other one equally often
                    t = {n: run(n) for n in names[r % len(names):] + names[:r % len(names)]}
                    ratios.append(t["F"] / t["fast"])
                    ceilings.append(t["F"] / t["free"])
                out[(p, th)], free[(p, th)] = ratios, ceilings
    finally:
        torch.set_num_threads(before)
        if collecting:
            gc.enable()
    why = compiled() if kernel else "kernel=False"
    return FastVsTorch(shape, out, free, "compiled kernel" if why is None else f"numpy path: {why}")
