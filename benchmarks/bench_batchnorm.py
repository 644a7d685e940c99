"""Batch norm's cost per training step, measured in one run (lesson 05).

Prints, for each device this machine has and a few MLP widths: the median time per training step
(forward + backward + SGD) of a 4-hidden-layer MLP without and with BatchNorm1d, and the ratio
with / without: the median over interleaved rounds and its range (how much the machine's load moved it).
Then the from-scratch numpy layer (forward + backward) against torch.nn.BatchNorm1d on
the CPU. Run by hand: ``make bench`` or ``.venv/bin/python benchmarks/bench_batchnorm.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lessons_lib.batchnorm.lab import bn_step_cost
from lessons_lib.batchnorm.reference import batchnorm_backward, batchnorm_forward, new_state
from lessons_lib.device import available_devices, hardware_report
from lessons_lib.timing import format_seconds, time_it


def numpy_vs_torch(n: int = 256, c: int = 512, repeats: int = 30) -> tuple[float, float]:
    """Median seconds of one forward + backward of our numpy layer and of torch's BatchNorm1d (float32, CPU)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, c)).astype(np.float32)
    dout = rng.normal(size=(n, c)).astype(np.float32)
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    state = new_state(c)

    def ours():
        _, cache = batchnorm_forward(x, gamma, beta, state)
        batchnorm_backward(dout, cache)

    layer = torch.nn.BatchNorm1d(c)
    xt = torch.tensor(x, requires_grad=True)
    dt = torch.tensor(dout)

    def theirs():
        xt.grad = None
        layer(xt).backward(dt)

    return (time_it(ours, warmup=3, repeats=repeats).median, time_it(theirs, warmup=3, repeats=repeats).median)


def main() -> None:
    t0 = time.perf_counter()
    print(hardware_report())
    print()
    print(f"{'device':7s} {'width':>6s} {'without BN':>12s} {'with BN':>12s}  with/without (median, range over rounds)")
    for dev in available_devices():
        for width in (64, 256, 1024):
            r = bn_step_cost(dev, depth=4, width=width, batch_size=128, rounds=6, repeats=8)
            print(f"{dev:7s} {width:6d} {format_seconds(r.without_bn):>12s} {format_seconds(r.with_bn):>12s}  "
                  f"{r.ratio_spread().format('.2f')}")
    ours, theirs = numpy_vs_torch()
    print()
    print(f"BN layer forward+backward, 256 x 512 float32, CPU: numpy {format_seconds(ours)}, "
          f"torch.nn.BatchNorm1d {format_seconds(theirs)} -> numpy / torch = {ours / theirs:.2f}")
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
