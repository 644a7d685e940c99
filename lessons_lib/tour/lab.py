"""Lesson 00 — the tour: what hardware you have, how to time code honestly, and the live panel.

Three timing pitfalls, each measured rather than asserted:

1. **warm-up**: the first calls pay one-off costs (memory allocation, thread pools, caches);
2. **asynchrony**: a GPU returns from a launch before the work is done, so the clock must wait for the
   device (:func:`lessons_lib.device.synchronize`) — on a CPU the two readings agree;
3. **noise**: other programs steal time in bursts; the median shrugs them off, the mean does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..callbacks import Callback
from ..claims import Claims
from ..data import load
from ..device import synchronize
from ..models import mlp
from ..seeds import seed_everything
from ..timing import Timing, threads, time_it
from ..training import History, fit


@dataclass
class WarmupResult:
    first_calls: list[float]  # seconds of the first few calls, in order
    steady: Timing  # the same call after warm-up

    @property
    def first_over_median(self) -> float:
        return self.first_calls[0] / self.steady.median


def warmup_demo(device: str = "cpu", size: int = 256, n_first: int = 3, n_threads: int | None = 1) -> WarmupResult:
    """Time the very first calls of a fresh model's forward+backward, then the steady state. ``n_threads``: torch
    threads for the demo (one by default: on a busy machine two threads of a small model stall each other, and the
    stalls, not the warm-up, would dominate the steady-state times)."""
    seed_everything()
    with threads(n_threads):
        model = mlp(size, [size, size], 10).to(device)
        x = torch.randn(512, size, device=device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        firsts = time_it(step, device=device, warmup=0, repeats=n_first).times  # no warm-up: the first calls
        return WarmupResult(firsts, time_it(step, device=device, warmup=3, repeats=30))


@dataclass
class SyncResult:
    device: str
    without_sync: float  # median seconds when the clock is read right after the launch
    with_sync: float  # median seconds when the device is synchronized first

    @property
    def ratio(self) -> float:
        return self.with_sync / self.without_sync


def sync_demo(device: str = "cpu", size: int = 1024, repeats: int = 15) -> SyncResult:
    """Time a matrix product with and without synchronizing the device before reading the clock."""
    a = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ a
    synchronize(device)
    unsynced, synced = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        unsynced.append(time.perf_counter() - t0)  # deliberately wrong on a GPU: no synchronize
        synchronize(device)
        t0 = time.perf_counter()
        a @ a
        synchronize(device)
        synced.append(time.perf_counter() - t0)
    return SyncResult(str(device), statistics.median(unsynced), statistics.median(synced))


def noise_demo(repeats: int = 200, size: int = 200_000, burst_every: int = 25, burst_seconds: float = 0.004) -> Timing:
    """Time a small single-threaded job (summing ``size`` float64 numbers) ``repeats`` times while a simulated
    neighbour steals ``burst_seconds`` every ``burst_every`` calls (a sleep inside the timed region,
    standing in for another program)."""
    a = np.random.default_rng(0).random(size)
    count = [0]

    def op() -> None:
        count[0] += 1
        a.sum()
        if count[0] % burst_every == 0:
            time.sleep(burst_seconds)

    return time_it(op, warmup=5, repeats=repeats)


def experiment(
    *, device: str = "cpu", callbacks: Sequence[Callback] = (), width: int = 128, lr: float = 1e-3, epochs: int = 15,
    batch_size: int = 64, optimizer: str = "adam", seed: int | None = None,
) -> History:
    """A one-hidden-layer MLP on the 8x8 digits: the panel's demo experiment."""
    seed = seed_everything(seed)
    data = load("digits", seed=seed)
    model = mlp(data.n_features, [width], data.n_classes)
    return fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
               callbacks=callbacks, seed=seed, config={"width": width, "lr": lr, "batch_size": batch_size})


def make_panel():
    """The tour's panel: optimizer, width, learning rate, batch size, epochs."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "90px"}
    knobs = {
        "optimizer": w.ToggleButtons(options=["adam", "sgd"], value="adam", description="optimizer", style=style),
        "width": w.SelectionSlider(options=[16, 64, 128, 512, 2048], value=128, description="width", style=style),
        "lr": w.SelectionSlider(options=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, description="learning rate",
                                style=style),
        "batch_size": w.SelectionSlider(options=[16, 64, 256, 1024], value=64, description="batch size", style=style),
        "epochs": w.IntSlider(value=15, min=1, max=100, description="epochs", style=style),
    }
    return LivePanel(experiment, knobs, title="Tour: an MLP on the 8x8 digits")


def claims(warm: WarmupResult, sync: SyncResult, noise: Timing, gpu_sync: SyncResult | None) -> Claims:
    """The tour's claims table, each verdict computed from this run's demos (``gpu_sync``: None without a GPU)."""
    c = Claims("00 tour")
    c.add("The first call is slower than the steady state (warm-up; by more than 10%)", "lesson",
          f"first call {warm.first_over_median:.1f}x the steady median", warm.first_over_median > 1.1)
    c.add("The mean is pulled up by outliers; the median is not", "lesson",
          f"mean {noise.mean * 1e3:.3f} ms vs median {noise.median * 1e3:.3f} ms "
          f"({noise.mean / noise.median:.2f}x)", noise.mean > 1.05 * noise.median)
    c.add("On a CPU, synchronizing changes nothing (work is done when the call returns)", "lesson",
          f"with/without sync: {sync.ratio:.2f}x", 0.7 < sync.ratio < 1.4)
    if gpu_sync is None:
        c.add("On a GPU, timing without synchronize measures only the launch", "lesson",
              "no GPU here: not measured", None)
    else:
        c.add("On a GPU, timing without synchronize measures only the launch", "lesson",
              f"{gpu_sync.device}: with sync {gpu_sync.with_sync * 1e3:.3f} ms vs without "
              f"{gpu_sync.without_sync * 1e3:.3f} ms ({gpu_sync.ratio:.1f}x)", gpu_sync.ratio > 2)
    return c


def plot_noise(noise: Timing):
    """Histogram of the repeats with the mean and the median marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ms = [t * 1e3 for t in noise.times]
    ax.hist(ms, bins=60, color="C0")
    ax.axvline(noise.median * 1e3, color="C2", lw=2, label=f"median {noise.median * 1e3:.3f} ms")
    ax.axvline(noise.mean * 1e3, color="C3", lw=2, ls="--", label=f"mean {noise.mean * 1e3:.3f} ms")
    ax.set(xlabel="time per call (ms)", ylabel="calls (log scale)", yscale="log",
           title=f"{len(ms)} timed calls with a noisy neighbour")
    ax.legend()
    fig.tight_layout()
    return fig
