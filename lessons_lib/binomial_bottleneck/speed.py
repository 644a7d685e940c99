"""Lesson 04: FastDropout against PyTorch's ``F.dropout`` on the CPU, forward + backward, at several drop rates and
torch thread counts: the one measurement both the lesson's claim and ``benchmarks/bench_masks.py`` use.

Each (p, threads) pair is timed in interleaved rounds (the two layers take turns, the order alternating), so a
change of load hits both alike; each round gives one ratio, F.dropout's time over FastDropout's, and a claim is
judged on the median and range of those ratios (:func:`lessons_lib.stats.median_range`). With one torch thread
the clock is the process's CPU time; with more, the wall clock (CPU time would add up every thread's work,
including OpenMP threads waiting for each other).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..stats import Spread, median_range, verdict
from ..validate import check_int, check_p, check_shape
from .reference import FastDropout

PS = (0.1, 0.2, 0.5, 0.8)
THREADS = (1, 2)
GOAL = 5.0  # the course's speed goal: FastDropout >= 5x F.dropout, forward + backward, every p and thread count


@dataclass
class FastVsTorch:
    """``ratios[(p, threads)]``: per interleaved round, F.dropout's forward + backward time over FastDropout's."""

    shape: tuple[int, ...]
    ratios: dict[tuple[float, int], list[float]]

    def spread(self, p: float, threads: int) -> Spread:
        return median_range(self.ratios[(p, threads)])

    def verdicts(self, goal: float = GOAL) -> dict[tuple[float, int], str]:
        """Per (p, threads): "holds" if the whole range is >= goal, "does not hold" if all of it is below."""
        return {k: verdict(self.spread(*k), goal) for k in self.ratios}

    def table(self, goal: float = GOAL) -> str:
        n = len(next(iter(self.ratios.values())))
        lines = [f"FastDropout vs F.dropout, forward + backward of {'x'.join(map(str, self.shape))} on the CPU: "
                 f"F.dropout time / FastDropout time, median [range] of {n} interleaved rounds",
                 f"{'p':>5} {'threads':>8} {'ratio':>24}   goal >= {goal:g}x"]
        for (p, th), v in self.verdicts(goal).items():
            s = self.spread(p, th)
            lines.append(f"{p:>5g} {th:>8} {s.median:>9.1f}x [{s.low:.1f}, {s.high:.1f}]   {v}")
        return "\n".join(lines)


def fast_vs_f_dropout(ps=PS, threads=THREADS, shape=(128, 1024), rounds: int = 15,
                      number: int = 3) -> FastVsTorch:
    """Time FastDropout and F.dropout (forward + backward with a gradient of ones, ``number`` calls per
    measurement) in ``rounds`` interleaved rounds for every p in ``ps`` and torch thread count in ``threads``.
    torch's thread count is restored afterwards."""
    ps = [check_p(p) for p in ps]
    threads = [check_int(t, "threads", low=1, high=256) for t in threads]
    shape, rounds, number = check_shape(shape), check_int(rounds, "rounds", low=1), check_int(number, "number", low=1)
    if 0.0 in ps:
        raise ValueError("ps: p = 0 is the identity for both layers, there is nothing to time; drop it")
    x = torch.randn(*shape).requires_grad_(True)
    g = torch.ones(*shape)
    before = torch.get_num_threads()
    out: dict[tuple[float, int], list[float]] = {}
    try:
        for th in threads:
            torch.set_num_threads(th)
            clock = time.process_time if th == 1 else time.perf_counter
            for p in ps:
                fast = FastDropout(p).train()
                layers = {"F": lambda t, p=p: F.dropout(t, p, training=True), "fast": fast}

                def run(name: str, clock=clock, layers=layers) -> float:
                    start = clock()
                    for _ in range(number):
                        layers[name](x).backward(g)
                        x.grad = None
                    return clock() - start

                run("F"), run("fast")  # warm-up
                ratios = []
                for r in range(rounds):
                    t = dict((n, run(n)) for n in (("F", "fast") if r % 2 == 0 else ("fast", "F")))
                    ratios.append(t["F"] / t["fast"])
                out[(p, th)] = ratios
    finally:
        torch.set_num_threads(before)
    return FastVsTorch(shape, out)
