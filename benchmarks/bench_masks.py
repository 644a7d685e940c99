"""Benchmark of lessons 03/04: dropout masks, FastDropout, and the numpy MLP epoch before/after the fix.

Prints ratios measured in this run (all timings round-robin, so load changes hit every contender alike).
Goals (COURSE.md): auto mask >= 50x RandomState.binomial at p=0.5 and >= 10x at p in {0.1, 0.2, 0.8};
FastDropout >= 5x F.dropout forward+backward on the CPU; numpy MLP epoch >= 3x faster, mask share of the
profile > 50% before and < 10% after. Run: `.venv/bin/python benchmarks/bench_masks.py` (or `make bench`).
"""

from __future__ import annotations

import time

import torch

from lessons_lib.binomial_bottleneck import lab as B
from lessons_lib.device import hardware_report
from lessons_lib.dropout.lab import cost_lines

SHAPE = (128, 1024)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # small tensors: one thread, no OpenMP contention on a shared machine
    print(hardware_report())
    print(f"torch threads: {torch.get_num_threads()}; numpy BLAS pinned to {B.BLAS_THREADS} thread in the MLP")

    print(f"\n== mask generators, {SHAPE[0]}x{SHAPE[1]}, vs RandomState.binomial at the same p")
    results = {}
    for p in (0.5, 0.1, 0.2, 0.8):
        rows = B.compare_generators(SHAPE, p=p, repeats=15)
        print(f"\n-- p = {p}")
        print(B.generators_table(rows))
        results[p] = {r.method: r for r in rows}
    print()
    for p, goal in ((0.5, 50), (0.1, 10), (0.2, 10), (0.8, 10)):
        s = results[p]["auto"].speedup
        print(f"auto vs binomial at p={p}: {s:.1f}x (goal >= {goal}x) {verdict(s >= goal)}")
    r = results[0.5]
    print(f"floors at p=0.5: random bits {r['floor: random bits'].speedup:.0f}x, "
          f"memory {r['floor: memory'].speedup:.0f}x binomial; "
          f"auto takes {r['auto'].seconds / r['floor: random bits'].seconds:.1f}x the random-bits floor")

    print("\n== torch dropout, forward+backward, CPU")
    for p in (0.5, 0.1):
        cost = B.torch_dropout_cost(SHAPE, p=p, repeats=25)
        print(f"-- p = {p}\n" + cost_lines(cost))
        sp = cost["F.dropout fwd+bwd"] / cost["FastDropout fwd+bwd"]
        print(f"  F.dropout forward = {cost['F.dropout fwd'] / cost['clone']:.0f}x a clone "
              f"(its bernoulli_ mask alone: {cost['bernoulli_ mask'] / cost['clone']:.0f}x; "
              f"torch.rand: {cost['torch.rand'] / cost['clone']:.0f}x)")
        print(f"  FastDropout vs F.dropout, forward+backward: {sp:.1f}x (goal >= 5x) {verdict(sp >= 5)}")

    print("\n== numpy MLP (40 -> 1024 -> 10, dropout 0.5, batch 128), one mnist1d epoch")
    t = B.epoch_seconds(("binomial", "auto"), repeats=5)
    sp = t["binomial"] / t["auto"]
    print(f"epoch: binomial {t['binomial'] * 1e3:.0f} ms, auto {t['auto'] * 1e3:.0f} ms -> {sp:.1f}x (goal >= 3x) "
          f"{verdict(sp >= 3)}")
    before = B.profile_training("binomial", epochs=3)
    after = B.profile_training("auto", epochs=3)
    print(f"mask share of the profile: {100 * before.mask_share:.0f}% before (goal > 50%) "
          f"{verdict(before.mask_share > 0.5)}, {100 * after.mask_share:.1f}% after (goal < 10%) "
          f"{verdict(after.mask_share < 0.1)}")
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
