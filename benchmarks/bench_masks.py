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
from lessons_lib.binomial_bottleneck.reference import binomial_mask, mask_share
from lessons_lib.device import hardware_report

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
        cost = B.dropout_layer_cost(SHAPE, p=p, repeats=25)
        print(f"-- p = {p}\n" + cost.lines())
        sp = cost.fast_speedup
        print(f"  F.dropout forward = {cost.clones:.0f}x a clone (its bernoulli_ mask alone: "
              f"{cost.bernoulli / cost.clone:.0f}x; torch.rand: {cost.rand / cost.clone:.0f}x)")
        print(f"  FastDropout vs F.dropout, forward+backward: {sp:.1f}x (goal >= 5x) {verdict(sp >= 5)}")

    print("\n== numpy MLP (40 -> 1024 -> 10, dropout 0.5, batch 128), one mnist1d epoch")
    fast = B.dropout_mask()  # the reference's bits at p = 0.5, byte threshold elsewhere
    t = B.epoch_seconds(fast, repeats=5)
    print(f"epoch: binomial {t.before * 1e3:.0f} ms, fast masks {t.after * 1e3:.0f} ms -> {t.speedup:.1f}x "
          f"(goal >= 3x) {verdict(t.speedup >= 3)}")
    before = mask_share(B.profile_training(binomial_mask, epochs=3).stats, B.MASK_NAMES)
    after = mask_share(B.profile_training(fast, epochs=3).stats, B.MASK_NAMES)
    print(f"mask share of the profile: {100 * before:.0f}% before (goal > 50%) {verdict(before > 0.5)}, "
          f"{100 * after:.1f}% after (goal < 10%) {verdict(after < 0.1)}")
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
