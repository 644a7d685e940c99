"""Live panel overhead: the same training run through LivePanel.run() vs a bare call of the experiment.

Goal (COURSE.md): panel / bare <= 1.05. Runs alternate (bare, panel, bare, panel, ...) so drifting
machine load hits both; the ratio is of the medians of whole-run wall times measured in this one run.
"""

from __future__ import annotations

import statistics
import time

from lessons_lib.capacity.lab import experiment as capacity_experiment
from lessons_lib.panel import LivePanel

KNOBS = {"dataset": "mnist1d", "width": 256, "depth": 2, "epochs": 8}
REPEATS = 7


def main() -> None:
    panel = LivePanel(capacity_experiment, {})  # widgets without a browser: same code path, no display
    capacity_experiment(**KNOBS)  # warm-up of both paths (data cache, allocator, thread pools)
    panel.run(device="cpu", **KNOBS)
    bare, live = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        capacity_experiment(device="cpu", callbacks=[], **KNOBS)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        panel.run(device="cpu", **KNOBS)
        live.append(time.perf_counter() - t0)
    b, p = statistics.median(bare), statistics.median(live)
    steps = panel.runs[-1].history.steps
    print(f"bare loop : {b:.3f} s per run (median of {REPEATS}; {steps} steps)")
    print(f"live panel: {p:.3f} s per run (median of {REPEATS}; redraw every {panel.redraw_seconds} s)")
    print(f"live panel vs bare loop: {p / b:.3f}x (goal <= 1.05)")


if __name__ == "__main__":
    main()
