"""Lesson 07 apparatus: the same MLP trained in fp64 / fp32 / bf16 / fp16, the live panel and the claims table.

Seed 001 (second half) wonders whether cheaper, less precise numbers would help deep learning, and lists three
reasons they might not: (1) linear-algebra libraries may be tuned for 64-bit floats, so 32 or 16 bits would not
be faster; (2) small gradient steps that round away may stall training; (3) training may depend chaotically on
tiny differences in the middle of the network. ``formats.py`` measures (1) on matrix products, this module on
training runs; ``hypotheses.py`` measures (2) and (3); ``plots.py`` draws them; ``reference.py`` is the idea
from scratch (stochastic rounding, lost updates, loss scaling).

:func:`train_precision` (in :mod:`.train`, re-exported here) trains the MLP once in a dtype and mode, counting the
updates lost to rounding; that single run is the live panel's. The lesson's comparisons are over several seeds,
with intervals (:mod:`lessons_lib.stats`):

* :func:`epoch_timing`: one training epoch per recipe, the recipes timed in turns; speed ratios as median and
  range over the rounds;
* :func:`compare_precisions`: every recipe trained once per seed, the same seeds (paired), all seeds of a recipe
  at once (:mod:`.replicates`), to convergence; :func:`convergence` is the control that checks it;
* :func:`claims`: the claims table, with three-valued verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits
from ..device import pick_device
from ..models import mlp
from ..seeds import get_seed, numpy_rng
from ..stats import DOES_NOT_HOLD, HOLDS, Interval, Spread, median_range, paired_interval, verdict
from ..timing import Timing
from ..timing import threads as threads_ctx
from ..training import History, fit
from ..validate import BadArgument, check_float, check_int
from .formats import (
    DTYPES,
    FAST_RATIO,
    LOW,
    MODES,
    ROUNDINGS,
    DtypeTable,
    UnsupportedDtypeError,
    check_seeds,
    check_threads,
    dtype_name,
    require_dtype,
    speed_ratios,
)
from .replicates import Replicates, run_label, train_replicates
from .train import (  # noqa: F401 (one training run: re-exported, the notebook and the panel use them from here)
    LossScaling,
    LostUpdateMeter,
    PrecisionModel,
    PrecisionRun,
    StoredWeights,
    splits_as,
    state_bytes,
    train_precision,
)

if TYPE_CHECKING:
    from .hypotheses import ChaosResult, LostSurvey, SRResult, Unbiased, Underflow



def experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), dtype: str = "bf16", mode: str = "pure",
               rounding: str = "nearest", optimizer: str = "sgd", lr: float = 0.05, epochs: int = 6, width: int = 128,
               threads: int | None = 1) -> History:
    """The live panel's experiment (see :class:`~lessons_lib.panel.LivePanel`): :func:`train_precision`'s History."""
    return train_precision(dtype=dtype, mode=mode, rounding=rounding if mode == "stored" else "nearest",
                           optimizer=optimizer, lr=lr, epochs=epochs, width=width, device=device,
                           callbacks=callbacks, threads=threads).history


DEFAULT_RECIPES: tuple[tuple[str, str], ...] = (
    ("fp64", "pure"), ("fp32", "pure"), ("bf16", "pure"), ("fp16", "pure"), ("bf16", "autocast"),
    ("fp16", "autocast"),
)
BASELINE = "fp32 pure"


# --- speed of a training epoch, timed round-robin ------------------------------------------------
@dataclass
class EpochTiming:
    """Seconds per training epoch of one run of each recipe (label -> :class:`~lessons_lib.timing.Timing`, one time
    per round): the recipes take turns, so a change of load on a shared machine hits all of them alike."""

    timings: dict[str, Timing]
    width: int
    threads: int | None

    def ratio(self, fast: str, slow: str = BASELINE) -> Spread:
        """How many times faster an epoch of ``fast`` ran than one of ``slow``: median and range over rounds."""
        return speed_ratios(self.timings, fast, slow)

    def seconds(self, label: str) -> Spread:
        return median_range(self.timings[label].times)

    @property
    def rounds(self) -> int:
        return len(next(iter(self.timings.values())).times)


def epoch_timing(data: Splits, recipes: Sequence[tuple[str, str]] = DEFAULT_RECIPES, *, rounds: int = 7,
                 width: int = 128, optimizer: str = "sgd", lr: float = 0.05, device: str = "cpu",
                 threads: int | None = 1, seed: int | None = None) -> EpochTiming:
    """Time one training epoch (:func:`~lessons_lib.training.fit`'s own clock: training only, device synchronized)
    of the MLP in each supported recipe, ``rounds`` times round-robin after one warm-up epoch each."""
    dev = pick_device(device)
    seed = get_seed() if seed is None else check_int(seed, "seed", low=0)
    rounds = check_int(rounds, "rounds", low=2, fix="timing rounds (a range needs 2), e.g. 7")
    width = check_int(width, "width", low=1, fix="units per hidden layer, e.g. 128")
    threads = check_threads(threads)
    setups = {}
    for name, mode in recipes:
        try:
            name = require_dtype(name, dev, mode)
        except UnsupportedDtypeError:
            continue
        torch.manual_seed(seed)
        net = mlp(data.n_features, [width, width], data.n_classes)
        if mode == "pure":
            setups[run_label(name, mode)] = (net.to(DTYPES[name]), splits_as(data, DTYPES[name]))
        else:
            setups[run_label(name, mode)] = (PrecisionModel(net, DTYPES[name]), data)
    times: dict[str, list[float]] = {k: [] for k in setups}
    warm: dict[str, list[float]] = {k: [] for k in setups}
    with threads_ctx(threads if dev.type == "cpu" else None):
        for r in range(rounds + 1):  # round 0 warms up
            for label, (model, d) in setups.items():
                h = fit(model, d, epochs=1, lr=lr, optimizer=optimizer, device=dev, seed=seed + r)
                (warm if r == 0 else times)[label].append(h.seconds[0])
    return EpochTiming({k: Timing(times=v, warmup_times=warm[k], device=str(dev)) for k, v in times.items()}, width,
                       threads)


# --- every recipe over the same seeds, trained to convergence ------------------------------------
@dataclass
class PrecisionRuns:
    """:func:`compare_precisions`: each recipe trained once per seed (``by_label``), the same seeds for every
    recipe (paired runs); ``bit_flipped``: fp32 runs of the first seed with the lowest bit of one initial weight
    flipped (the chaos experiment), with ``by_label[BASELINE]`` tracked against the first seed's run."""

    by_label: dict[str, Replicates]
    bit_flipped: Replicates | None
    epochs: int

    def __getitem__(self, label: str) -> Replicates:
        return self.by_label[label]

    def __contains__(self, label: str) -> bool:
        return label in self.by_label

    @property
    def labels(self) -> list[str]:
        return list(self.by_label)

    @property
    def runs(self) -> int:
        return len(self.by_label[BASELINE])

    def paired(self, label: str, baseline: str = BASELINE, metric: str = "val_acc") -> Interval:
        """Mean and 95% interval of ``label`` minus ``baseline`` in the final ``metric``, seed by seed."""
        return paired_interval(self[label].final(metric), self[baseline].final(metric))


def compare_precisions(data: Splits, seeds: Sequence[int], recipes: Sequence[tuple[str, str]] | None = None,
                       *, epochs: int = 48, bit_flips: int = 0, optimizer: str = "sgd", lr: float = 0.05,
                       width: int = 128, device: str = "cpu", threads: int | None = 1, lost_every: int = 5,
                       skip_unsupported: bool = True) -> PrecisionRuns:
    """Train the MLP in each (dtype, mode) of ``recipes`` once per seed (:func:`~.replicates.train_replicates`, all
    seeds of a recipe at once). ``recipes`` defaults to :data:`DEFAULT_RECIPES` on a CUDA GPU and to them without
    fp16 autocast elsewhere (a GPU recipe: on a CPU it is only timed, by :func:`epoch_timing`). ``bit_flips`` > 0
    adds that many fp32 runs of ``seeds[0]``, each with the lowest bit of one initial weight (chosen at random,
    from the course seed) flipped, trained alongside the fp32 seeds and tracked against the ``seeds[0]`` run. Lost
    updates are counted on every ``lost_every``-th step. Unsupported recipes are skipped (or raise)."""
    seeds = check_seeds(seeds)
    bit_flips = check_int(bit_flips, "bit_flips", low=0, fix="0 for none, or the number of bit-flipped runs, e.g. 8")
    if recipes is not None and any(isinstance(r, str) or len(r) != 2 for r in recipes):
        raise BadArgument(f"recipes={recipes!r}: must be a list of (dtype, mode) pairs, e.g. [('fp32', 'pure')]")
    if recipes is None:
        cuda = pick_device(device).type == "cuda"
        recipes = [r for r in DEFAULT_RECIPES if cuda or r != ("fp16", "autocast")]
    kw = dict(epochs=epochs, optimizer=optimizer, lr=lr, width=width, device=device, threads=threads,
              lost_every=lost_every)
    by_label: dict[str, Replicates] = {}
    flipped = None
    for name, mode in recipes:
        try:
            require_dtype(name, device, mode)
        except UnsupportedDtypeError:
            if not skip_unsupported:
                raise
            continue
        if run_label(dtype_name(name), mode) == BASELINE and bit_flips:
            n_params = sum(p.numel() for p in mlp(data.n_features, [width, width], data.n_classes).parameters())
            where = numpy_rng(stream=71).choice(n_params, size=bit_flips, replace=False).tolist()
            both = train_replicates(data, seeds + [seeds[0]] * bit_flips, dtype=name, mode=mode, track=True,
                                    flips=[None] * len(seeds) + where, **kw)
            by_label[both.label], flipped = both.split()
        else:
            rep = train_replicates(data, seeds, dtype=name, mode=mode, **kw)
            by_label[rep.label] = rep
    if BASELINE not in by_label:
        raise BadArgument(f"compare_precisions needs the {BASELINE} baseline among the recipes")
    return PrecisionRuns(by_label, flipped, epochs)


@dataclass
class Convergence:
    """Has a set of runs converged? ``gain``: validation accuracy over the last ``window`` epochs minus that over
    the ``window`` epochs ending a quarter of the budget earlier, seed by seed (mean and 95% interval); ``train_acc``:
    final training accuracy. Converged: the gain is below ``tolerance`` and the training set is fit."""

    gain: Interval
    train_acc: Interval
    window: int
    lag: int
    tolerance: float = 0.02

    @property
    def verdict(self) -> str:
        fits = self.train_acc.mean >= 0.99
        v = verdict(self.gain, self.tolerance, holds_if="below")
        return v if fits or v == DOES_NOT_HOLD else DOES_NOT_HOLD

    def __str__(self) -> str:
        return (f"validation accuracy gained {_signed(self.gain)} over the last {self.lag} epochs (means of "
                f"{self.window} epochs); final training accuracy {self.train_acc.format('.3f')}: "
                f"{ {HOLDS: 'converged', DOES_NOT_HOLD: 'not converged'}.get(self.verdict, 'unclear')}")


def convergence(rep: Replicates, tolerance: float = 0.02) -> Convergence:
    """:class:`Convergence` of ``rep``'s runs (a quarter of the epochs as the lag, a twelfth as the window)."""
    if not isinstance(rep, Replicates):
        raise BadArgument(f"rep: must be the Replicates of one recipe (e.g. runs['fp32 pure']), got "
                          f"{type(rep).__name__}")
    tolerance = check_float(tolerance, "tolerance", low=0, low_open=True, fix="an accuracy gain such as 0.02")
    if len(rep) < 2:
        raise BadArgument(f"rep has {len(rep)} run: convergence is judged on an interval over at least 2 seeds")
    acc = rep.curve("val_acc")
    epochs = acc.shape[1]
    lag, window = max(1, epochs // 4), max(1, epochs // 12)
    if lag + window > epochs:
        raise BadArgument(f"convergence needs at least 2 epochs to compare, got {epochs}")
    late = acc[:, -window:].mean(1)
    early = acc[:, epochs - lag - window:epochs - lag].mean(1)
    return Convergence(paired_interval(late.tolist(), early.tolist()), rep.interval("train_acc"), window, lag,
                       tolerance)


def _signed(iv: Interval) -> str:
    """A difference with its sign: ``+0.012 ± 0.006 (95% CI, 8 runs)``."""
    return f"{iv.mean:+.3f} ± {iv.half_width:.3f} ({iv.level:.0%} CI, {iv.n} runs)"


def _pct(share: float) -> str:
    """A share as a percentage with two significant digits (0.004% stays visible, 0 is 0%)."""
    return "0%" if share == 0 else f"{100 * share:.2g}%"


def runs_table(runs: PrecisionRuns, timing: EpochTiming | None = None) -> str:
    """A text table: final validation accuracy (mean ± 95% interval over the seeds), its paired difference from
    fp32, the speed of an epoch relative to fp32 (median and range over timing rounds), the training state's
    memory, and the share of updates lost (mean ± interval)."""
    n = runs.runs
    lines = [f"{n} seeds per recipe, {runs.epochs} epochs; ± = 95% interval over the seeds"
             + (f"; speed: median (range) of {timing.rounds} timing rounds" if timing else ""),
             f"{'run':<16}{'val acc':>16}{'− fp32 (paired)':>18}{'epoch speed × fp32':>22}{'state KB':>10}"
             f"{'lost updates':>20}"]
    for label, r in runs.by_label.items():
        acc = r.interval()
        d = runs.paired(label)
        diff = "" if label == BASELINE else f"{d.mean:+.3f} ± {d.half_width:.3f}"
        speed = "—"
        if timing and label in timing.timings and BASELINE in timing.timings:
            s = timing.ratio(label)
            speed = f"{s.median:.2f} ({s.low:.2f}–{s.high:.2f})"
        lost = r.lost_interval()
        lost_s = f"{_pct(lost.mean)} ± {_pct(lost.half_width)}"
        lines.append(f"{label:<16}{acc.format('.3f').split(' (')[0]:>16}{diff:>18}{speed:>22}"
                     f"{r.state_bytes / 1024:>10.0f}{lost_s:>20}")
    return "\n".join(lines)

# --- the live panel ------------------------------------------------------------------------------
def make_panel():
    """The live panel: device × dtype × mode (and rounding for stored weights), optimizer, learning rate."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "dtype": w.ToggleButtons(options=list(DTYPES), value="bf16", description="dtype", style=style),
        "mode": w.ToggleButtons(options=list(MODES), value="pure", description="mode", style=style),
        "rounding": w.ToggleButtons(options=list(ROUNDINGS), value="nearest", description="rounding",
                                    style=style, tooltips=["used when mode = stored"] * 2),
        "optimizer": w.ToggleButtons(options=["sgd", "adam"], value="sgd", description="optimizer", style=style),
        "lr": w.FloatLogSlider(value=0.05, base=10, min=-4, max=0, step=0.25, description="lr", style=style),
        "epochs": w.IntSlider(value=6, min=1, max=60, description="epochs", style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024, 2048], value=128, description="width",
                                   style=style),
    }
    return LivePanel(experiment, knobs, title="Precision: an MLP on MNIST-1D in fp64 / fp32 / bf16 / fp16")


# --- claims --------------------------------------------------------------------------------------
def claims(table: DtypeTable, timing: EpochTiming, runs: PrecisionRuns, conv: Convergence, survey: LostSurvey,
           unbiased: Unbiased, sr: SRResult, under: Underflow, chaos: ChaosResult, device: str = "cpu") -> Claims:
    """The claims table of lesson 07, every verdict computed from this run's measurements: speed ratios as median
    and range over interleaved timing rounds, everything else as mean and 95% interval over seeds."""
    c = Claims("07 precision")
    n = runs.runs

    def fmt(s: Spread) -> str:
        return f"{s.median:.2f}× (range {s.low:.2f}–{s.high:.2f}, {s.n} rounds)"

    mm = table.ratio(device, "fp32", "fp64")
    ep = timing.ratio(BASELINE, "fp64 pure") if "fp64 pure" in timing.timings else None
    c.add("Linear-algebra libraries favour 64-bit floats: 32-bit matrix products are not faster "
          "(hypothesis 1; holds if fp32 is < 1.1× fp64 in every round)", "seed 001",
          f"fp32 / fp64 matmul speed {fmt(mm)} ({device}, threads={table.threads})"
          + (f"; a training epoch of the lesson's MLP: {fmt(ep)}" if ep else ""), verdict(mm, 1.1, "below"))
    for name in LOW:
        row = table.get(device, name)
        claim = f"{name} does not speed up matrix products either (hypothesis 1; holds if < {FAST_RATIO}× fp32)"
        if row.vs_fp32 is None:
            c.add(claim, "seed 001", f"{name} unsupported on {device}", None)
            continue
        label = f"{name} pure"
        extra = f"; a training epoch in pure {name}: {fmt(timing.ratio(label))}" if label in timing.timings else ""
        c.add(claim, "seed 001", f"{name} / fp32 matmul speed {fmt(row.vs_fp32)} (units: {row.units}){extra}",
              verdict(row.vs_fp32, FAST_RATIO, "below"))
    c.add("Control: the fp32 baseline has converged within the budget (holds if validation accuracy gains < "
          f"{conv.tolerance:.0%} over the last quarter and the training set is fit)", "lesson",
          f"{runs.epochs} epochs: gain {_signed(conv.gain)}; train acc {conv.train_acc.format('.3f')}",
          conv.verdict)
    normal, small = survey.settings[0], survey.settings[-1]
    if "bf16 pure" in runs:
        b = runs["bf16 pure"]
        loss = runs.paired(BASELINE, "bf16 pure")  # fp32 minus bf16: positive when bf16 is worse
        extra = ""
        if "fp16 pure" in runs:
            extra = f"; fp16 − fp32 {_signed(runs.paired('fp16 pure'))}"
        c.add("Losing small updates hurts training at a normal learning rate (hypothesis 2; holds if pure bf16 ends "
              "> 2 points below fp32, trained to convergence)", "seed 001",
              f"pure bf16 lost {b.lost_interval().format('.1f', 100, '%')} of updates (one {normal} step, counted: "
              f"{survey.interval(normal, 'bf16').format('.1f', 100, '%')}); val acc fp32 − bf16 "
              f"{_signed(loss)}{extra}", verdict(loss, 0.02, "above"))
    lost = sr.lost_interval("nearest")
    stall = sr.interval("nearest")
    v_stall = verdict(stall, 0.5, "below") if lost.low > 0.5 else verdict(lost, 0.5, "above")
    c.add("…at a small learning rate, round-to-nearest loses most updates and stalls (hypothesis 2; holds if > 50% "
          "are lost and the loss falls < 50% as far as fp32's in the same steps)", "seed 001",
          f"one {small} step, counted: {survey.interval(small, 'bf16').format('.0f', 100, '%')} lost in bf16; in "
          f"training {lost.format('.0f', 100, '%')} lost; loss decrease {stall.format('.0%')} of fp32's",
          v_stall)
    rescue = sr.interval("stochastic")
    c.add("Stochastic rounding is unbiased and rescues that training (holds if the loss falls > 80% as far as "
          "fp32's)", "lesson",
          f"mean of {unbiased.draws} roundings within {unbiased.z:.1f} standard errors; loss decrease "
          f"{rescue.format('.0%')} of fp32's", verdict(rescue, 0.8, "above") if unbiased.z < 4.5 else DOES_NOT_HOLD)
    top = max(under.scales)
    c.add(f"fp16 gradients underflow to zero without loss scaling (holds if loss scale {top:g} flushes fewer)",
          "lesson",
          f"zero in fp16 but not in fp32, in the {n} trained fp32 nets: {under.interval(1.0).format('.2f', 100, '%')} "
          f"unscaled, {under.interval(top).format('.2f', 100, '%')} with scale {top:g}",
          verdict(under.reduction(top), 0.0, "above"))
    if chaos is not None:
        kept = len(chaos.bits) - chaos.absorbed
        c.add("Training amplifies a one-bit change (hypothesis 3: chaos; holds if it grows > 100×)", "seed 001",
              f"relative weight difference from {chaos.initial_distance.format('.1e')} at the start to "
              f"{chaos.final_distance.format('.1e')} (log10 growth {chaos.growth.format('.1f')}) in the {kept} runs "
              f"that kept it; {chaos.absorbed} of {len(chaos.bits)} rounded it away",
              verdict(chaos.growth, 2.0, "above") if kept >= 2 else None)
        c.add("A one-bit change varies the trained network as much as a new seed (hypothesis 3; Summers & Dinneen "
              "2021; holds if the prediction disagreement is > half a new seed's)", "Summers & Dinneen 2021",
              f"disagreement: one bit {chaos.bit_disagreement.format('.3f')}, new seed "
              f"{chaos.seed_disagreement.format('.3f')}, ratio {chaos.disagreement_ratio.format('.2f')}; one-bit "
              f"disagreement over the last quarter of the {runs.epochs} epochs {_signed(chaos.late_change)}; spread of "
              f"final accuracy (SD): one bit {chaos.bit_sd:.4f}, new seed {chaos.seed_sd:.4f}, ratio "
              f"{chaos.sd_ratio.mean:.2f} (95% CI {chaos.sd_ratio.low:.2f}–{chaos.sd_ratio.high:.2f})",
              verdict(chaos.disagreement_ratio, 0.5, "above"))
    return c
