"""Benchmark for lesson 07: is fp32 faster than fp64 here (matmul and a training epoch), and bf16 / fp16? And what
does stochastic rounding cost next to a plain cast?

Prints ratios measured in this one run, with one intra-op thread and with torch's default thread count
(on a shared machine two threads that wait for each other can hide the arithmetic: compare the two).
Run by hand: ``make bench`` or ``.venv/bin/python benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

from lessons_lib.device import available_devices, hardware_report
from lessons_lib.precision import formats, lab, reference
from lessons_lib.timing import threads as threads_ctx
from lessons_lib.timing import time_interleaved


def epoch_seconds(dtype: str, threads: int | None, mode: str = "pure") -> float:
    run = lab.train_precision(dtype=dtype, mode=mode, epochs=5, width=256, threads=threads, measure_lost=False, seed=0)
    return statistics.median(run.history.seconds[1:])


def rounding_cost(threads: int | None, n: int = 1 << 20) -> str:
    """Milliseconds to round n float32 numbers to bf16: a cast (to nearest) and stochastic rounding (reference)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g)
    ops = {"cast": lambda: x.to(torch.bfloat16),
           "stochastic": lambda: reference.stochastic_round(x, torch.bfloat16, g)}
    with threads_ctx(threads):
        t = time_interleaved(ops, rounds=9, warmup=2)
    ms = {k: 1e3 * v.min for k, v in t.items()}
    return (f"rounding {n:,} float32 to bf16: cast {ms['cast']:.2f} ms, stochastic (reference.py: two neighbours, "
            f"written for clarity) {ms['stochastic']:.2f} ms = {ms['stochastic'] / ms['cast']:.0f}x the cast")


def main() -> None:
    t0 = time.perf_counter()
    print(hardware_report())
    flags = sorted(formats.cpu_flags())
    print("CPU float flags:", ", ".join(flags) or "none found")
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads) if default_threads > 1 else (1,):
        print(f"\n-- intra-op threads: {threads}")
        for n in (256, 512, 1024):
            g = formats.matmul_gflops_interleaved(list(formats.DTYPES), "cpu", n=n, rounds=9, threads=threads)
            print(f"matmul {n:4d}: " + ", ".join(f"{d} {v:7.1f} GFLOP/s" for d, v in g.items())
                  + f" | fp32/fp64 {g['fp32'] / g['fp64']:.2f}x, bf16/fp32 {g['bf16'] / g['fp32']:.2f}x, "
                  f"fp16/fp32 {g['fp16'] / g['fp32']:.2f}x")
        e = {d: epoch_seconds(d, threads) for d in formats.DTYPES}
        e["autocast bf16"] = epoch_seconds("bf16", threads, "autocast")
        print("training epoch (MLP 40-256-256-10, batch 128, 3200 examples, SGD): "
              + ", ".join(f"{d} {1e3 * v:.0f} ms" for d, v in e.items()))
        print(f"epoch ratio fp32/fp64 speed {e['fp64'] / e['fp32']:.2f}x, bf16/fp32 {e['fp32'] / e['bf16']:.2f}x, "
              f"fp16/fp32 {e['fp32'] / e['fp16']:.2f}x, autocast bf16/fp32 {e['fp32'] / e['autocast bf16']:.2f}x")
        print(rounding_cost(threads))
    for dev in available_devices():
        if dev != "cpu":
            print(formats.dtype_table([dev], n=2048))
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
