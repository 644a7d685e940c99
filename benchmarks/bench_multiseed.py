"""Several seeds at once (lessons_lib.multiseed.fit_seeds) vs a loop of fit, one CPU thread, same work.

Prints the ratio loop time / stacked time (best of 3, interleaved) for 8 seeds at three MLP widths.
"""

from __future__ import annotations

import time

import torch

from lessons_lib.data import load
from lessons_lib.models import mlp
from lessons_lib.multiseed import fit_seeds
from lessons_lib.training import fit


def main() -> None:
    torch.set_num_threads(1)
    data = load("mnist1d")
    seeds = list(range(8))
    print(f"{'widths':>12} {'batch':>5} {'stacked s':>9} {'loop s':>7} {'loop/stacked':>12}")
    for widths, batch in (([32, 32], 32), ([128, 128], 64), ([256, 256], 128)):
        def build(widths=widths):
            return mlp(40, widths, 10)

        fit_seeds(build, data.subset_train(256), seeds, epochs=1, batch_size=batch)  # warm-up
        stacked = loop = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fit_seeds(build, data, seeds, epochs=3, batch_size=batch)
            stacked = min(stacked, time.perf_counter() - t)
            t = time.perf_counter()
            for s in seeds:
                torch.manual_seed(s)
                fit(build(), data, epochs=3, batch_size=batch, seed=s)
            loop = min(loop, time.perf_counter() - t)
        print(f"{str(widths):>12} {batch:5d} {stacked:9.2f} {loop:7.2f} {loop / stacked:11.2f}x")


if __name__ == "__main__":
    main()
