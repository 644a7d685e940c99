"""Benchmark for lesson 07: is fp32 faster than fp64 here (matmul and a training epoch), and bf16 / fp16? What does
stochastic rounding cost next to a plain cast? And what does training the seeds in one stacked model save?

Prints ratios measured in this one run, each as the median and range over interleaved timing rounds (the
contenders take turns, so a change of load on a shared machine hits all of them alike), with one intra-op thread
and with torch's default thread count (on a shared machine two threads that wait for each other can hide the
arithmetic: compare the two). Run by hand: ``make bench`` or ``.venv/bin/python benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import time

import torch

from lessons_lib.data import load
from lessons_lib.device import available_devices, hardware_report
from lessons_lib.precision import formats, lab, reference, replicates
from lessons_lib.stats import median_range
from lessons_lib.timing import threads as threads_ctx
from lessons_lib.timing import time_interleaved


def rounding_cost(threads: int | None, n: int = 1 << 20) -> str:
    """Milliseconds to round n float32 numbers to bf16: a cast (to nearest) and stochastic rounding (reference)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g)
    ops = {"cast": lambda: x.to(torch.bfloat16),
           "stochastic": lambda: reference.stochastic_round(x, torch.bfloat16, g)}
    with threads_ctx(threads):
        t = time_interleaved(ops, rounds=9, warmup=2)
    ratio = formats.speed_ratios(t, "cast", "stochastic")
    return (f"rounding {n:,} float32 to bf16: cast {1e3 * t['cast'].median:.2f} ms, stochastic (reference.py: two "
            f"neighbours, written for clarity) {1e3 * t['stochastic'].median:.2f} ms: {ratio.format('.1f')} the cast")


def stacked_vs_loop(threads: int | None, seeds: int = 8, epochs: int = 4) -> str:
    """Seconds to train ``seeds`` fp32 runs: one stacked model (replicates.py) vs one train_precision per seed,
    three rounds each, taking turns."""
    data = load("mnist1d", seed=0)
    ss = list(range(seeds))
    stacked, loop = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        replicates.train_replicates(data, ss, epochs=epochs, threads=threads, lost_every=5)
        stacked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in ss:
            lab.train_precision(data, seed=s, epochs=epochs, threads=threads)
        loop.append(time.perf_counter() - t0)
    ratio = median_range([b / a for a, b in zip(stacked, loop)])
    return (f"{seeds} seeds × {epochs} epochs (fp32, lost updates counted): stacked "
            f"{median_range(stacked).format('.2f', unit=' s')}, loop of single runs "
            f"{median_range(loop).format('.2f', unit=' s')}: stacked {ratio.format('.2f')} faster")


def main() -> None:
    t0 = time.perf_counter()
    print(hardware_report())
    flags = sorted(formats.cpu_flags())
    print("CPU float flags:", ", ".join(flags) or "none found")
    data = load("mnist1d", seed=0)
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads) if default_threads > 1 else (1,):
        print(f"\n-- intra-op threads: {threads}")
        for n in (256, 512, 1024):
            t = formats.matmul_timings(list(formats.DTYPES), "cpu", n=n, rounds=9, threads=threads)
            gf = {d: 2 * n**3 / v.min / 1e9 for d, v in t.items()}
            print(f"matmul {n:4d}: " + ", ".join(f"{d} {v:6.1f} GFLOP/s" for d, v in gf.items()))
            for fast, slow in (("fp32", "fp64"), ("bf16", "fp32"), ("fp16", "fp32")):
                print(f"    {fast}/{slow} speed {formats.speed_ratios(t, fast, slow).format('.2f')}")
        timing = lab.epoch_timing(data, rounds=7, width=256, threads=threads)
        print("training epoch (MLP 40-256-256-10, batch 128, 3200 examples, SGD), seconds per epoch:")
        for label in timing.timings:
            print(f"    {label:<14} {timing.seconds(label).format('.3f', unit=' s')}; speed × fp32 pure "
                  f"{timing.ratio(label).format('.2f')}")
        print(rounding_cost(threads))
        print(stacked_vs_loop(threads))
    for dev in available_devices():
        if dev != "cpu":
            print(formats.dtype_table([dev], n=2048))
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
