"""Benchmark of lessons 03/04: dropout masks, FastDropout, and the numpy MLP epoch before/after the fix.

Prints ratios measured in this run, each with its 95% interval over repeated rounds (CPU time, interleaved, so a
change of load hits every contender alike) and a three-valued verdict: PASS (the whole interval meets the goal),
FAIL (the whole interval misses it), INCONCLUSIVE (it straddles the goal).
Goals (COURSE.md): auto mask >= 50x RandomState.binomial at p=0.5 and >= 10x at p in {0.1, 0.2, 0.8};
FastDropout >= 5x F.dropout forward+backward on the CPU at every p in {0.1, 0.2, 0.5, 0.8} with 1 and 2 torch
threads (one ratio per interleaved round; judged on every round, the range, and on the median's interval of at
least 95%; its compiled kernel, then its numpy path for comparison); numpy MLP epoch >= 3x faster, mask share
> 50% before and < 10% after. The speed goals are for a quiet machine: memory-bound work slows down when other processes
compete for caches and memory, which CPU time does not exclude. Run: `.venv/bin/python benchmarks/bench_masks.py`.
"""

from __future__ import annotations

import os
import time

import torch

from lessons_lib.binomial_bottleneck import fix as F
from lessons_lib.binomial_bottleneck import lab as B
from lessons_lib.binomial_bottleneck import speed as S
from lessons_lib.device import hardware_report
from lessons_lib.stats import all_of, verdict

SHAPE = (128, 1024)
WORD = {"holds": "PASS", "does not hold": "FAIL", "inconclusive": "INCONCLUSIVE"}


def judged(values, goal: float, holds_if: str = "above", fmt: str = ".1f", scale: float = 1.0, unit: str = "x") -> str:
    i = B.interval_or_value(values)
    return f"{i.format(fmt, scale=scale, unit=unit)} (goal {'>=' if holds_if == 'above' else '<'} " \
           f"{goal * scale:g}{unit}) {WORD[verdict(i, goal, holds_if)]}"


def main() -> None:
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # small tensors: one thread, no OpenMP contention on a shared machine
    print(hardware_report())
    print(f"torch threads: {torch.get_num_threads()}; numpy BLAS pinned to {B.BLAS_THREADS} thread in the MLP; "
          f"load average at start: {os.getloadavg()[0]:.1f}")

    print(f"\n== mask generators, {SHAPE[0]}x{SHAPE[1]}, vs RandomState.binomial at the same p")
    results = {}
    for p in (0.5, 0.1, 0.2, 0.8):
        rows = B.compare_generators(SHAPE, p=p, repeats=10)
        print(f"\n-- p = {p}")
        print(B.generators_table(rows))
        results[p] = {r.method: r for r in rows}
    print()
    for p, goal in ((0.5, 50), (0.1, 10), (0.2, 10), (0.8, 10)):
        print(f"auto vs binomial at p={p}: {judged(results[p]['auto'].ratios, goal)}")

    print("\n== torch dropout on the CPU: F.dropout's cost (p = 0.5)")
    cost = B.dropout_layer_cost(SHAPE, p=0.5, repeats=10)
    print(cost.lines())
    print(f"  F.dropout forward / clone: {B.interval_or_value(cost.ratios('fwd', 'clone')).format('.0f', unit='x')}")
    print(f"\n== FastDropout vs F.dropout, forward+backward, every p x 1 and 2 torch threads (goal >= {S.GOAL:g}x)")
    fast = S.fast_vs_f_dropout(S.PS, S.THREADS, SHAPE, rounds=21)
    print(fast.table())
    print(f"all eight, every round >= {S.GOAL:g}x: {WORD[all_of(*fast.verdicts().values())]}; all eight, the "
          f"median >= {S.GOAL:g}x (its interval, at least 95%): {WORD[all_of(*fast.verdicts(on='median').values())]}")
    print("\n-- the same race with FastDropout's numpy path (kernel=False), for comparison")
    print(S.fast_vs_f_dropout(S.PS, S.THREADS, SHAPE, rounds=21, kernel=False).table())
    torch.set_num_threads(1)

    print("\n== numpy MLP (40 -> 1024 -> 10, dropout 0.5, batch 128), mnist1d epochs, before/after the fix")
    fx = F.compare_fix(B.dropout_mask())  # the reference's bits at p = 0.5, byte threshold elsewhere
    print(fx.table())
    print(fx.amdahl())
    print(f"epoch speedup: {judged(fx.speedups(), 3)}")
    print(f"mask share before: {judged(fx.shares('before'), 0.5, fmt='.1f', scale=100, unit='%')}")
    print(f"mask share after:  {judged(fx.shares('after'), 0.1, 'below', fmt='.1f', scale=100, unit='%')}")
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s; load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
