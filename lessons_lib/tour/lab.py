"""Lesson 00 — the tour: what hardware you have, how to time code honestly, and the live panel.

Three timing pitfalls, each measured rather than asserted, each over several repeats (a timing is reported as the
median and range of its repeats, :func:`lessons_lib.stats.median_range`, and a verdict holds only when every
repeat agrees, see :func:`lessons_lib.stats.verdict`):

1. **warm-up**: the first calls in a fresh process pay one-off costs (thread pools, caches, memory the allocator
   has not seen yet) — measured in fresh Python processes, with a new model in this warm process as the control;
2. **asynchrony**: a GPU returns from a launch before the work is done, so the clock must wait for the
   device (:func:`lessons_lib.device.synchronize`) — on a CPU the two readings agree;
3. **noise**: other programs steal time in bursts; the median shrugs them off, the mean does not — measured with
   a simulated noisy neighbour, against the same job timed without it (interleaved, call by call).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..callbacks import Callback
from ..claims import Claims
from ..data import load
from ..device import pick_device, synchronize
from ..models import mlp
from ..seeds import seed_everything
from ..stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Spread, median_range, verdict
from ..timing import Timing, threads, time_interleaved, time_it
from ..training import History, fit
from ..validate import check_float, check_int

PRELOAD = ("lessons_lib.tour.lab",)  # the fork server imports it once (processes.warm_up): fresh processes start fast


def within(spread: Spread, low: float, high: float) -> str:
    """"holds" when every repeat lies in (low, high), "does not hold" when all lie on one side outside, else
    "inconclusive" (the two one-sided verdicts of :func:`lessons_lib.stats.verdict`, both needed)."""
    sides = (verdict(spread, low, "above"), verdict(spread, high, "below"))
    return DOES_NOT_HOLD if DOES_NOT_HOLD in sides else HOLDS if sides == (HOLDS, HOLDS) else INCONCLUSIVE


# --- 1. warm-up ---------------------------------------------------------------------------------------
def first_calls(device: str = "cpu", size: int = 128, n_first: int = 3, repeats: int = 30) -> tuple[list[float], float]:
    """Build a fresh MLP and time its forward+backward: (seconds of the first ``n_first`` calls, in order; median
    seconds of ``repeats`` calls after 3 uncounted warm-up calls). One torch thread: on a busy machine two threads
    of a small model stall each other, and the stalls, not the warm-up, would dominate."""
    device = str(pick_device(device))
    size, n_first = check_int(size, "size", low=1), check_int(n_first, "n_first", low=1)
    repeats = check_int(repeats, "repeats", low=1)
    seed_everything()
    with threads(1):
        model = mlp(size, [size, size], 10).to(device)
        x = torch.randn(512, size, device=device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        firsts = time_it(step, device=device, warmup=0, repeats=n_first).times  # no warm-up: the first calls
        return firsts, time_it(step, device=device, warmup=3, repeats=repeats).median


def first_calls_worker(link, device: str, size: int, n_first: int) -> tuple[list[float], float]:
    """:func:`first_calls` in a process started for it (:func:`lessons_lib.processes.launch`: forked from a server
    that has imported torch but never run anything, so every one-off cost of the first call is still ahead)."""
    return first_calls(device, size, n_first)


def _in_fresh_process(device: str, size: int, n_first: int) -> tuple[list[float], float]:
    from ..processes import launch

    return launch(first_calls_worker, (device, size, n_first), processes=1, timeout_s=120, preload=PRELOAD)[0]


@dataclass
class WarmupResult:
    """First calls vs the steady state, per fresh process; the same for a new model in this (warm) process."""

    fresh_first: list[list[float]]  # per fresh process: seconds of its first calls, in order
    fresh_steady: list[float]  # per fresh process: median seconds per call once warm
    warm_first: list[float]  # control, per repeat: the first call of a new model in this already warm process
    warm_steady: list[float]  # control, per repeat: that model's steady median

    @property
    def ratios(self) -> Spread:
        """First call / steady median over the fresh processes (median and range)."""
        return median_range([f[0] / s for f, s in zip(self.fresh_first, self.fresh_steady)])

    @property
    def control(self) -> Spread:
        """The same ratio for a new model in a process that has already run one."""
        return median_range([f / s for f, s in zip(self.warm_first, self.warm_steady)])


def warmup_demo(device: str = "cpu", size: int = 128, n_first: int = 3, repeats: int = 5) -> WarmupResult:
    """``repeats`` fresh processes, each timing its first calls and its steady state; then, as the control,
    ``repeats`` new models in this process (warm by then)."""
    device = str(pick_device(device))  # a missing GPU: DeviceUnavailableError here, not a worker's torch error
    size = check_int(size, "size", low=1, fix="the MLP's width and input size, e.g. 128")
    n_first = check_int(n_first, "n_first", low=1, fix="how many first calls to time, e.g. 3")
    repeats = check_int(repeats, "repeats", low=1, fix="how many fresh processes, e.g. 5")
    fresh = [_in_fresh_process(device, size, n_first) for _ in range(repeats)]
    warm = [first_calls(device, size, 1) for _ in range(repeats + 1)][1:]  # the first one warms this process up
    return WarmupResult([f for f, _ in fresh], [s for _, s in fresh], [f[0] for f, _ in warm], [s for _, s in warm])


# --- 2. synchronize ------------------------------------------------------------------------------------
@dataclass
class SyncResult:
    device: str
    without_sync: list[float]  # per repeat: median seconds when the clock is read right after the launch
    with_sync: list[float]  # per repeat: median seconds when the device is synchronized first
    calls: int = 15  # timed calls of each kind per repeat

    @property
    def ratios(self) -> Spread:
        """with / without synchronize, over the repeats (median and range)."""
        return median_range([w / wo for w, wo in zip(self.with_sync, self.without_sync)])


def sync_demo(device: str = "cpu", size: int | None = None, calls: int = 31, repeats: int = 5) -> SyncResult:
    """Time a ``size`` x ``size`` matrix product with and without synchronizing the device before reading the clock:
    ``repeats`` times the median of ``calls`` pairs (one of each, alternating, on one thread). ``size`` None: 256 on
    a CPU (a short call: a busy machine's time slices rarely land inside it), 4096 on a GPU (work far longer than a
    launch)."""
    device = str(pick_device(device))
    size = (256 if device == "cpu" else 4096) if size is None else check_int(size, "size", low=1)
    calls = check_int(calls, "calls", low=1, fix="timed calls of each kind per repeat, e.g. 31")
    repeats = check_int(repeats, "repeats", low=1, fix="how many repeats, e.g. 5")
    a = torch.randn(size, size, device=device)
    unsynced, synced = [], []
    with threads(1):
        for _ in range(3):
            a @ a
        synchronize(device)
        for _ in range(repeats):
            wo, w = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                a @ a
                wo.append(time.perf_counter() - t0)  # deliberately wrong on a GPU: no synchronize
                synchronize(device)
                t0 = time.perf_counter()
                a @ a
                synchronize(device)
                w.append(time.perf_counter() - t0)
            unsynced.append(float(np.median(wo)))
            synced.append(float(np.median(w)))
    return SyncResult(str(device), unsynced, synced, calls)


# --- 3. noise --------------------------------------------------------------------------------------------
@dataclass
class NoiseResult:
    """Per repeat, the same small job timed with a noisy neighbour and without it (interleaved call by call)."""

    noisy: list[Timing]
    quiet: list[Timing]
    burst_every: int
    burst_seconds: float

    @property
    def pooled(self) -> Timing:
        """All calls with the neighbour, every repeat together."""
        return Timing([t for r in self.noisy for t in r.times], [], self.noisy[0].device)

    @property
    def mean_over_median(self) -> Spread:
        """mean / median of the calls with the neighbour, over the repeats."""
        return median_range([t.mean / t.median for t in self.noisy])

    @property
    def median_shift(self) -> Spread:
        """median with the neighbour / median without it, over the repeats."""
        return median_range([n.median / q.median for n, q in zip(self.noisy, self.quiet)])

    @property
    def mean_shift(self) -> Spread:
        """mean with the neighbour / mean without it, over the repeats."""
        return median_range([n.mean / q.mean for n, q in zip(self.noisy, self.quiet)])


def noise_demo(calls: int = 200, repeats: int = 5, size: int = 200_000, burst_every: int = 25,
               burst_seconds: float = 0.004) -> NoiseResult:
    """Time a small single-threaded job (summing ``size`` float64 numbers) ``calls`` times per repeat, twice,
    call by call in turn: once while a simulated neighbour steals ``burst_seconds`` every ``burst_every`` calls
    (a sleep inside the timed region, standing in for another program), once without it (the control)."""
    calls = check_int(calls, "calls", low=1, fix="timed calls per repeat, e.g. 200")
    repeats = check_int(repeats, "repeats", low=1, fix="how many repeats, e.g. 5")
    size = check_int(size, "size", low=1, fix="how many numbers the job sums, e.g. 200_000")
    burst_every = check_int(burst_every, "burst_every", low=1, fix="the neighbour strikes every N-th call, e.g. 25")
    burst_seconds = check_float(burst_seconds, "burst_seconds", low=0.0, high=1.0,
                                fix="seconds the neighbour steals per burst, e.g. 0.004")
    a = np.random.default_rng(0).random(size)
    count = [0]

    def noisy() -> None:
        count[0] += 1
        a.sum()
        if count[0] % burst_every == 0:
            time.sleep(burst_seconds)

    def quiet() -> None:
        a.sum()

    runs = [time_interleaved({"noisy": noisy, "quiet": quiet}, rounds=calls, warmup=5, number=1)
            for _ in range(repeats)]
    return NoiseResult([r["noisy"] for r in runs], [r["quiet"] for r in runs], burst_every, burst_seconds)


# --- the panel -------------------------------------------------------------------------------------------
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


# --- claims and figure ---------------------------------------------------------------------------------
WARMUP_RATIO = 1.1  # the first call counts as slower when it takes more than 10% over the steady median
MEAN_PULL = 1.2  # the mean counts as pulled up when it is more than 20% over the median
MEDIAN_STAYS = 1.1  # the median counts as unmoved when the neighbour moves it by less than 10%
SYNC_BAND = (0.8, 1.25)  # on a CPU, with/without synchronize within 25% of each other
GPU_LAUNCH = 2.0  # on a GPU, the unsynchronized reading counts as "only the launch" when it is under half


def claims(warm: WarmupResult, sync: SyncResult, noise: NoiseResult, gpu_sync: SyncResult | None) -> Claims:
    """The tour's claims table, each verdict from the range of this run's repeats (``gpu_sync``: None without a
    GPU). A verdict holds only when every repeat is on the claim's side of its threshold."""
    c = Claims("00 tour")
    x = {"fmt": ".2f", "unit": "x"}
    c.add(f"The first call in a fresh process is slower than the steady state (warm-up), by more than "
          f"{WARMUP_RATIO - 1:.0%}", "lesson",
          f"first call / steady median, in fresh processes: {warm.ratios.format(**x)}; control, a new model in "
          f"this warm process: {warm.control.format(**x)}", verdict(warm.ratios, WARMUP_RATIO, "above"))
    calls = len(noise.noisy[0].times)
    c.add(f"A few slow calls pull the mean up, by more than {MEAN_PULL - 1:.0%} over the median", "lesson",
          f"mean / median of {calls} calls with the neighbour: {noise.mean_over_median.format(**x)}",
          verdict(noise.mean_over_median, MEAN_PULL, "above"))
    c.add(f"…while the median stays with the bulk: the neighbour moves it by less than {MEDIAN_STAYS - 1:.0%}",
          "lesson", f"median with / without the neighbour (calls interleaved): {noise.median_shift.format(**x)}; "
          f"the mean: {noise.mean_shift.format(**x)}", verdict(noise.median_shift, MEDIAN_STAYS, "below"))
    lo, hi = SYNC_BAND
    c.add(f"On a CPU, synchronizing changes nothing: with/without sync within {lo:.2f}x–{hi:.2f}x (the work is "
          "done when the call returns)", "lesson",
          f"with / without sync (each repeat: medians of {sync.calls} alternating calls): {sync.ratios.format(**x)}",
          within(sync.ratios, lo, hi))
    claim = (f"On a GPU, timing without synchronize measures only the launch: with sync more than {GPU_LAUNCH:g}x "
             "the reading without it")
    if gpu_sync is None:
        c.add(claim, "lesson", "no GPU here: not measured", None)
    else:
        c.add(claim, "lesson", f"{gpu_sync.device}, with / without sync: {gpu_sync.ratios.format(**x)}",
              verdict(gpu_sync.ratios, GPU_LAUNCH, "above"))
    return c


def plot_noise(noise: NoiseResult):
    """Histograms of all calls with the neighbour and without it; the median and the mean of each repeat marked
    (their spread over the repeats shaded)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    noisy, quiet = noise.pooled, Timing([t for r in noise.quiet for t in r.times], [])
    ms = np.array(noisy.times + quiet.times) * 1e3
    bins = np.geomspace(ms.min() * 0.95, ms.max() * 1.05, 70)
    ax.hist(np.array(quiet.times) * 1e3, bins=bins, histtype="step", color="gray", lw=1.5, label="without neighbour")
    ax.hist(np.array(noisy.times) * 1e3, bins=bins, color="C0", alpha=0.6, label="with neighbour")
    for what, values, color, ls in (("median", [t.median for t in noise.noisy], "C2", "-"),
                                    ("mean", [t.mean for t in noise.noisy], "C3", "--")):
        v = np.array(values) * 1e3
        ax.axvspan(v.min(), v.max(), color=color, alpha=0.25)
        ax.axvline(np.median(v), color=color, lw=2, ls=ls,
                   label=f"{what} with neighbour: median of the {len(v)} repeats (band: their range)")
    ax.set(xscale="log", yscale="log", xlabel="time per call (ms, log scale)", ylabel="calls (log scale)",
           title=f"{len(noise.noisy)} repeats x {len(noise.noisy[0].times)} calls, with and without a noisy neighbour")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    return fig
