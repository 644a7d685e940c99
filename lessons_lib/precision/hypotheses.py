"""Lesson 07 apparatus: hypotheses 2 and 3 of seed 001, measured.

Hypothesis 2, "lost small steps hurt":

* :func:`lost_update_survey`: one optimizer step of a trained network, and how many of its updates each format
  would lose (counted with a lost-update counter: the learner's, or :func:`~.reference.count_lost_updates`);
* :func:`measure_unbiased`: many stochastic roundings of the same values: is their mean the value?
* :func:`sr_recovery`: with weights stored in bf16 and small steps, round-to-nearest stalls; stochastic rounding
  (the learner's, or :func:`~.reference.stochastic_round`) rescues the runs (every seed, paired);
* :func:`gradient_underflow`: the backward signals fp16 flushes to zero, with and without loss scaling.

Hypothesis 3, "training is chaotic": :func:`chaos` reads the fp32 runs of :func:`~.lab.compare_precisions`: runs
whose initial weights differ in one bit of one weight, against runs with another seed (Summers & Dinneen 2021,
"Nondeterminism and instability in neural network optimization", compare the same two spreads).

Every measurement is made on several runs (seeds or trained networks) and reported as a mean with a 95% interval
(:mod:`lessons_lib.stats`).
"""

from __future__ import annotations

import copy
import math
import numbers
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Splits
from ..seeds import get_seed
from ..stats import Interval, mean_interval, paired_interval
from ..timing import threads as threads_ctx
from ..training import check_model_fits_data, make_optimizer
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference
from .formats import LOW, check_callable, check_rounded, check_seeds, check_threads, dtype_name, to_dtype
from .replicates import Replicates, Rounder, train_replicates
from .train import PrecisionModel

Counter = Callable[[torch.Tensor, torch.Tensor, torch.dtype], int]
"""A lost-update counter: ``(w stored in dtype, float32 updates u, dtype) -> number of lost updates``."""


def _networks(models: nn.Module | Sequence[nn.Module], data: Splits) -> list[nn.Module]:
    """One or several trained networks (a :class:`PrecisionModel` is unwrapped), each checked against ``data``."""
    if not isinstance(data, Splits):
        raise BadArgument(f"data: must be a Splits (lessons_lib.data.load('mnist1d')), got {type(data).__name__}")
    many = [models] if isinstance(models, nn.Module) else models
    if isinstance(many, (str, bytes)) or not hasattr(many, "__iter__"):
        raise BadArgument(f"models: must be a trained network or a list of them, got {type(models).__name__}")
    many = list(many)
    if not many or not all(isinstance(m, nn.Module) for m in many):
        raise BadArgument("models: must be a trained network or a non-empty list of them (e.g. "
                          "runs['fp32 pure'].models), got " + (", ".join(type(m).__name__ for m in many) or "none"))
    nets = [m.inner if isinstance(m, PrecisionModel) else m for m in many]
    for net in nets:
        check_model_fits_data(copy.deepcopy(net).float().cpu(), data)
    return nets


def _count(count: Counter, w: torch.Tensor, u: torch.Tensor, dt: torch.dtype) -> int:
    """``count(w, u, dt)`` as an int, refusing what is not a count of lost updates."""
    n = count(w, u, dt)
    if isinstance(n, torch.Tensor) and n.numel() == 1 and not n.dtype.is_floating_point:
        n = n.item()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= int(n) <= u.numel():
        raise BadArgument(f"count: the counter must return the number of lost updates, an int from 0 to "
                          f"{u.numel()}, got {n!r:.60}")
    return int(n)


# --- one step, counted: which updates would each format lose? -----------------------------------
@dataclass
class SurveyRow:
    """One parameter tensor, one optimizer setting, one format: how many of one step's updates are lost."""

    setting: str  # e.g. "sgd lr 0.05"
    layer: str  # parameter name, e.g. "0.weight" (layer index in the MLP)
    dtype: str
    lost: int
    tried: int  # non-zero updates
    median_w: float  # median |w| of the tensor
    median_u: float  # median |u| of its non-zero updates
    run: int = 0  # which trained network

    @property
    def share(self) -> float:
        return self.lost / self.tried if self.tried else float("nan")


@dataclass
class LostSurvey:
    """Rows of :func:`lost_update_survey`; ``share(setting, dtype, layer=None)`` pools the runs (and the layers when
    None); ``interval(setting, dtype)`` is the mean and 95% interval of the runs' shares."""

    rows: list[SurveyRow]

    @property
    def settings(self) -> list[str]:
        return list(dict.fromkeys(r.setting for r in self.rows))

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(r.layer for r in self.rows))

    @property
    def dtypes(self) -> list[str]:
        return list(dict.fromkeys(r.dtype for r in self.rows))

    def _pick(self, setting: str, dtype: str, layer: str | None = None) -> list[SurveyRow]:
        rows = [r for r in self.rows if r.setting == setting and r.dtype == dtype and layer in (None, r.layer)]
        if not rows:
            raise BadArgument(f"no survey row for {setting!r}, {dtype!r}, {layer!r}: settings {self.settings}, "
                           f"dtypes {self.dtypes}, layers {self.layers}")
        return rows

    @property
    def runs(self) -> int:
        return len({r.run for r in self.rows})

    def share(self, setting: str, dtype: str, layer: str | None = None) -> float:
        rows = self._pick(setting, dtype, layer)
        tried = sum(r.tried for r in rows)
        return sum(r.lost for r in rows) / tried if tried else float("nan")

    def run_shares(self, setting: str, dtype: str, layer: str | None = None) -> list[float]:
        """The share lost in each run (network) separately."""
        rows = self._pick(setting, dtype, layer)
        out = []
        for run in sorted({r.run for r in rows}):
            mine = [r for r in rows if r.run == run]
            tried = sum(r.tried for r in mine)
            out.append(sum(r.lost for r in mine) / tried if tried else float("nan"))
        return out

    def interval(self, setting: str, dtype: str, layer: str | None = None) -> Interval:
        return mean_interval(self.run_shares(setting, dtype, layer))

    def row(self, setting: str, dtype: str, layer: str) -> SurveyRow:
        """One layer's row, pooled over the runs (counts summed, medians: the median of the runs' medians)."""
        rows = self._pick(setting, dtype, layer)
        return SurveyRow(setting, layer, dtype, sum(r.lost for r in rows), sum(r.tried for r in rows),
                         statistics.median(r.median_w for r in rows), statistics.median(r.median_u for r in rows))

    def __str__(self) -> str:
        """Per layer: median |w|, then per setting the median |u| and the share lost in each format (pooled over
        the runs), then per setting and format the mean and 95% interval of the runs' shares."""
        cols = "".join(f"{d:>7}" for d in self.dtypes)
        block = 12 + 7 * len(self.dtypes) + 3
        top = " " * 20 + "".join(f"{s:<{block}}" for s in self.settings)
        head = f"{'layer':<10}{'median|w|':>10}" + "".join(f"{'median|u|':>12}{cols}   " for _ in self.settings)
        lines = [top.rstrip(), head.rstrip()]
        for layer in self.layers + ["all"]:
            one = None if layer == "all" else layer
            w = "" if one is None else f"{self.row(self.settings[0], self.dtypes[0], layer).median_w:.3g}"
            line = f"{layer:<10}{w:>10}"
            for s in self.settings:
                u = "" if one is None else f"{self.row(s, self.dtypes[0], layer).median_u:.3g}"
                line += f"{u:>12}" + "".join(f"{100 * self.share(s, d, one):>6.1f}%" for d in self.dtypes) + "   "
            lines.append(line.rstrip())
        if self.runs > 1:
            lines.append(f"over the {self.runs} networks (mean ± 95% interval of each network's share, all layers):")
            for st in self.settings:
                each = (self.interval(st, d).format(".1f", 100, "%").split(" (")[0] for d in self.dtypes)
                lines.append(f"  {st}: " + ", ".join(f"{d} {v}" for d, v in zip(self.dtypes, each)))
        return "\n".join(lines)

    __repr__ = __str__


def _one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: str,
              lr: float) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, w, u) per parameter: the float32 weights and the float32 update that one step of ``optimizer``
    (computed in float64 on a copy, so the update itself is not rounded to a narrow format) makes."""
    m = copy.deepcopy(model).double()
    opt = make_optimizer(optimizer, m.parameters(), lr)
    before = [p.detach().clone() for p in m.parameters()]
    nn.functional.cross_entropy(m(x.double()), y).backward()
    opt.step()
    return [(name, b.float(), (p.detach() - b).float()) for (name, p), b in zip(m.named_parameters(), before)]


def lost_update_survey(models: nn.Module | Sequence[nn.Module], data: Splits,
                       count: Counter = reference.count_lost_updates,
                       settings: Sequence[tuple[str, float]] = (("sgd", 0.05), ("adam", 1e-4)),
                       dtypes: Sequence[str] = ("fp32", "bf16", "fp16"), n: int = 128,
                       threads: int | None = 1) -> LostSurvey:
    """For each trained fp32 network in ``models`` (one or several) and each (optimizer, lr) in ``settings``: the
    update one step on the first ``n`` training examples makes; then, per parameter tensor and format,
    ``count(w, u, dtype)`` with ``w`` the weights stored in that format. Adam's first step moves every weight by
    about ``lr``; SGD's by lr x gradient."""
    nets = _networks(models, data)
    check_callable(count, "count", "(w, u, dtype) -> int")
    n = check_int(n, "n", low=1, fix="training examples in the batch, e.g. 128")
    threads = check_threads(threads)
    dtypes = [dtype_name(d) for d in dtypes]
    if isinstance(settings, str) or any(isinstance(st_, str) or len(st_) != 2 for st_ in settings):
        raise BadArgument(f"settings={settings!r}: must be a list of (optimizer, lr) pairs, e.g. [('sgd', 0.05)]")
    settings = [(o, check_float(lr, "lr", low=0, low_open=True, fix="a learning rate such as 0.05"))
                for o, lr in settings]
    x, y = data.x_train[:n].float(), data.y_train[:n]
    rows = []
    with threads_ctx(threads):
        for run, model in enumerate(nets):
            base = model.cpu().float()
            for opt, lr in settings:
                setting = f"{opt} lr {lr:g}"
                for name, w, u in _one_step(base, x, y, opt, lr):
                    moved = u != 0
                    mw = float(w.abs().median())
                    mu = float(u[moved].abs().median()) if moved.any() else 0.0
                    for d in dtypes:
                        dt = to_dtype(d)
                        rows.append(SurveyRow(setting, name, d, _count(count, w.to(dt), u, dt), int(moved.sum()), mw,
                                              mu, run))
    return LostSurvey(rows)


# --- stochastic rounding: unbiased? ---------------------------------------------------------------
@dataclass
class Unbiased:
    """Mean of ``draws`` stochastic roundings of each value: ``z`` is the largest |mean - value| in standard errors
    (unbiased: below ~4.5); ``nearest_error`` the largest error of round-to-nearest, for comparison."""

    values: list[float]  # the float32 values rounded
    p_up: list[float]  # (x - lo) / (hi - lo)
    mean: list[float]
    z: float
    nearest_error: float
    draws: int


def measure_unbiased(values: Sequence[float] = (1.001, 1.003, 0.1 + 1e-4, -2.7182818), dtype: str = "bf16",
                     draws: int = 20000, seed: int | None = None, stochastic: Rounder | None = None) -> Unbiased:
    """Round each (float32) value ``draws`` times with ``stochastic(x, generator)`` (default
    :func:`~.reference.stochastic_round` to ``dtype``) and compare the means with the values."""
    dt = to_dtype(check_choice(dtype_name(dtype), "dtype", LOW))
    draws = check_int(draws, "draws", low=2, fix="roundings per value, e.g. 20000")
    seed = get_seed() if seed is None else check_int(seed, "seed", low=0)
    fn = stochastic or (lambda t, g: reference.stochastic_round(t, dt, g))
    check_callable(fn, "stochastic", "(float32 tensor, generator) -> bfloat16 tensor")
    vals = [check_float(v, f"values[{i}]", fix="a finite float32 value to round") for i, v in enumerate(values)]
    if not vals:
        raise BadArgument("values: give at least one value to round, e.g. (1.001, 1.003)")
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(vals, dtype=torch.float32)
    xs = x.repeat(draws, 1)
    mean = check_rounded(fn(xs, g), xs, dt).to(torch.float64).mean(0)
    x64 = x.to(torch.float64)
    lo, hi = reference.neighbours(x64, dt)
    p = (x64 - lo) / (hi - lo)
    se = (hi - lo) * torch.sqrt(p * (1 - p) / draws)
    err = (mean - x64).abs()
    z = torch.where(se > 0, err / se.clamp_min(1e-300), torch.where(err > 0, torch.inf, 0.0))
    nearest = (reference.round_nearest(x64, dt).to(torch.float64) - x64).abs().max()
    return Unbiased(x64.tolist(), p.tolist(), mean.tolist(), float(z.max()), float(nearest), draws)


# --- stochastic rounding rescues a stalled run ------------------------------------------------
@dataclass
class SRResult:
    """Three recipes at a small learning rate, each over the same seeds: fp32 weights, weights stored rounded to
    nearest, stored rounded stochastically. Their progress is compared seed by seed (paired runs)."""

    fp32: Replicates
    nearest: Replicates
    stochastic: Replicates

    @property
    def runs(self) -> list[Replicates]:
        return [self.fp32, self.nearest, self.stochastic]

    @property
    def start_loss(self) -> float:
        return math.log(10)  # the untrained network's loss is about log(classes)

    def loss_drops(self, which: str) -> list[float]:
        """Per seed: how far the training loss fell in the run ``which`` ("fp32", "nearest", "stochastic")."""
        return [self.start_loss - v for v in getattr(self, which).final("train_loss")]

    def shares(self, which: str) -> list[float]:
        """Per seed: the loss decrease of ``which`` as a share of the fp32 run's with the same seed (1 = all of it)."""
        return [a / max(b, 1e-9) for a, b in zip(self.loss_drops(which), self.loss_drops("fp32"))]

    def interval(self, which: str) -> Interval:
        """Mean and 95% interval over the seeds of :meth:`shares`."""
        return mean_interval(self.shares(which))

    def lost_interval(self, which: str) -> Interval:
        return getattr(self, which).lost_interval()


def sr_recovery(data: Splits, seeds: Sequence[int], *, dtype: str = "bf16", lr: float = 1e-4, epochs: int = 6,
                optimizer: str = "adam", width: int = 128, device: str = "cpu", threads: int | None = 1,
                stochastic: Rounder | None = None) -> SRResult:
    """Three recipes at a small learning rate, each over ``seeds`` (Adam's steps are about ``lr`` per weight, so with
    bf16's gap of 2^-8 relative, every weight larger than about ``lr * 2^8`` cannot move by rounding to nearest):
    fp32 weights, weights stored in ``dtype`` rounded to nearest, and stored with stochastic rounding
    (``stochastic``, e.g. the learner's function; default :func:`~.reference.stochastic_round`)."""
    seeds = check_seeds(seeds, at_least=2)
    dtype = check_choice(dtype_name(dtype), "dtype", LOW)
    kw = dict(optimizer=optimizer, lr=lr, epochs=epochs, width=width, device=device, threads=threads)
    return SRResult(
        fp32=train_replicates(data, seeds, dtype="fp32", **kw),
        nearest=train_replicates(data, seeds, dtype=dtype, mode="stored", rounding="nearest", **kw),
        stochastic=train_replicates(data, seeds, dtype=dtype, mode="stored", rounding="stochastic",
                                    stochastic=stochastic, **kw),
    )


# --- gradients that underflow in fp16 ---------------------------------------------------------
@dataclass
class Underflow:
    """Backward signals (the gradient w.r.t. each Linear layer's output) that are non-zero in fp32 but exactly
    zero in fp16 under autocast, in each trained network: ``by_scale[scale][i]`` the share in network i (all
    layers), ``by_layer[scale][layer]`` pooled over the networks; ``overflow[scale][i]`` the share that became
    inf/NaN (the reason the scale must also come down)."""

    by_scale: dict[float, list[float]]
    by_layer: dict[float, dict[str, float]]
    overflow: dict[float, list[float]]
    tiny_fp32_share: float  # share of the fp32 signals below fp16's smallest subnormal (2^-24), all networks

    @property
    def scales(self) -> list[float]:
        return list(self.by_scale)

    def interval(self, scale: float) -> Interval:
        """Mean and 95% interval over the networks of the share flushed to zero at ``scale``."""
        return mean_interval(self.by_scale[scale])

    def reduction(self, scale: float) -> Interval:
        """How much less is flushed with ``scale`` than unscaled, network by network (paired)."""
        return paired_interval(self.by_scale[1.0], self.by_scale[scale])


def _output_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None,
                  scale: float) -> dict[str, torch.Tensor]:
    grads: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            def fwd(_m, _inp, out, name=name):
                out.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
            handles.append(mod.register_forward_hook(fwd))
    try:
        wrapped = PrecisionModel(model, autocast)
        (nn.functional.cross_entropy(wrapped(x), y) * scale).backward()
    finally:
        for h in handles:
            h.remove()
    return grads


def gradient_underflow(models: nn.Module | Sequence[nn.Module], data: Splits,
                       scales: Sequence[float] = (1.0, 2.0**10, 2.0**16), n: int = 128,
                       threads: int | None = 1) -> Underflow:
    """One training batch (the first ``n`` examples) through each trained network in ``models`` (one or several),
    in fp32 and under fp16 autocast with the loss multiplied by each ``scale`` (loss scaling). Counts the backward
    signals (gradients w.r.t. each Linear layer's output) that fp16 flushes to zero although they are non-zero in
    fp32. ``scales`` must start with 1.0 (no scaling)."""
    nets = _networks(models, data)
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__len__") or not len(scales):
        raise BadArgument(f"scales={scales!r}: must be a list of loss scales starting with 1.0, e.g. (1.0, 2.0**16)")
    scales = [check_float(s, f"scales[{i}]", low=0, low_open=True, fix="a loss scale such as 2.0**16")
              for i, s in enumerate(scales)]
    n = check_int(n, "n", low=1, fix="training examples in the batch, e.g. 128")
    threads = check_threads(threads)
    if scales[0] != 1.0:
        raise BadArgument(f"scales must start with 1.0 (the unscaled pass), got {list(scales)}")
    by_scale: dict[float, list[float]] = {float(s): [] for s in scales}
    overflow: dict[float, list[float]] = {float(s): [] for s in scales}
    counts: dict[float, dict[str, list[int]]] = {float(s): {} for s in scales}
    tiny = nonzero = 0
    for base in nets:
        dev = next(base.parameters()).device
        x, y = data.x_train[:n].float().to(dev), data.y_train[:n].to(dev)
        with threads_ctx(threads if dev.type == "cpu" else None):
            ref = _output_grads(copy.deepcopy(base).float(), x, y, None, 1.0)
            for s in scales:
                g16 = _output_grads(copy.deepcopy(base).float(), x, y, torch.float16, float(s))
                lost = tried = bad = 0
                for k, g in ref.items():
                    nz = g != 0
                    z = int(((g16[k] == 0) & nz).sum())
                    c = counts[float(s)].setdefault(k, [0, 0])
                    c[0], c[1] = c[0] + z, c[1] + int(nz.sum())
                    lost, tried = lost + z, tried + int(nz.sum())
                    bad += int((~torch.isfinite(g16[k])).sum())
                by_scale[float(s)].append(lost / max(tried, 1))
                overflow[float(s)].append(bad / max(sum(g.numel() for g in ref.values()), 1))
        allg = torch.cat([g.flatten() for g in ref.values()])
        nz = allg != 0
        tiny += int(((allg.abs() < 2.0**-24) & nz).sum())
        nonzero += int(nz.sum())
    by_layer = {s: {k: c[0] / max(c[1], 1) for k, c in layers.items()} for s, layers in counts.items()}
    return Underflow(by_scale, by_layer, overflow, tiny / max(nonzero, 1))


# --- chaos: a one-bit change vs a new seed ------------------------------------------------
@dataclass
class ChaosResult:
    """fp32 runs of :func:`~.lab.compare_precisions`: ``seeds`` (different seeds) and ``bits`` (the first seed with
    the lowest bit of one initial weight flipped, a different weight in each run), trained alike.

    ``distance_bits`` / ``distance_seeds``: per run and epoch (0 = the start), the relative distance of its weights
    from the first seed's unperturbed run; ``disagreement_*`` likewise for validation predictions. The final
    spreads are compared on independent pairs of runs (0-1, 2-3, ...): ``bit_pairs`` / ``seed_pairs`` hold the share
    of validation examples the two runs of each pair classify differently."""

    seeds: Replicates
    bits: Replicates
    bit_pairs: list[float]
    seed_pairs: list[float]

    @property
    def distance_bits(self) -> torch.Tensor:
        return torch.tensor(self.bits.distance, dtype=torch.float64)

    @property
    def distance_seeds(self) -> torch.Tensor:
        return torch.tensor(self.seeds.distance[1:], dtype=torch.float64)  # run 0 is the reference itself

    @property
    def disagreement_bits(self) -> torch.Tensor:
        return torch.tensor(self.bits.disagreement, dtype=torch.float64)

    @property
    def disagreement_seeds(self) -> torch.Tensor:
        return torch.tensor(self.seeds.disagreement[1:], dtype=torch.float64)

    @property
    def initial_distance(self) -> Interval:
        return mean_interval(self.distance_bits[:, 0].tolist())

    @property
    def absorbed(self) -> int:
        """Bit-flipped runs that became bit-for-bit equal to the reference run again (the flipped bit was rounded
        away by an update: from then on the two runs compute the same numbers)."""
        return int((self.distance_bits[:, -1] == 0).sum())

    @property
    def final_distance(self) -> Interval:
        """Final relative distance of the bit-flipped runs that kept their difference."""
        d = self.distance_bits[:, -1]
        return mean_interval(d[d > 0].tolist())

    @property
    def growth(self) -> Interval:
        """log10 of (final distance / initial distance) of the bit-flipped runs that kept their difference: how many
        powers of ten training amplified the one-bit change (runs that absorbed it are counted in ``absorbed``)."""
        d = self.distance_bits
        kept = d[:, -1] > 0
        return mean_interval(torch.log10(d[kept, -1] / d[kept, 0]).tolist())

    @property
    def bit_disagreement(self) -> Interval:
        return mean_interval(self.bit_pairs)

    @property
    def seed_disagreement(self) -> Interval:
        return mean_interval(self.seed_pairs)

    @property
    def disagreement_ratio(self) -> Interval:
        """Pair k of bit-flipped runs against pair k of seeds: how much of a new seed's disagreement one bit gives."""
        return mean_interval([b / max(s, 1e-9) for b, s in zip(self.bit_pairs, self.seed_pairs)])

    @property
    def late_change(self) -> Interval:
        """Has the one-bit disagreement stopped growing? Per bit-flipped run, its disagreement with the first seed's
        run over the last twelfth of the epochs minus that a quarter of the epochs earlier (mean and 95% interval):
        near 0 means that training longer at this learning rate would not bring it closer to a new seed's."""
        d = self.disagreement_bits
        epochs = d.shape[1] - 1
        lag, window = max(1, epochs // 4), max(1, epochs // 12)
        late = d[:, -window:].mean(1)
        early = d[:, d.shape[1] - lag - window:d.shape[1] - lag].mean(1)
        return paired_interval(late.tolist(), early.tolist())

    @property
    def bit_sd(self) -> float:
        return statistics.stdev(self.bits.final())

    @property
    def seed_sd(self) -> float:
        return statistics.stdev(self.seeds.final())

    @property
    def sd_ratio(self) -> Interval:
        """SD of the bit-flipped runs' final accuracy over that of the seeds', with its F interval."""
        return sd_ratio_interval(self.bits.final(), self.seeds.final())


def sd_ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Ratio of the standard deviations of two independent samples, ``SD(a) / SD(b)``, with its F-distribution
    interval (for normal data); the interval's ``n`` counts both samples."""
    from scipy.stats import f

    if len(a) < 2 or len(b) < 2:
        raise BadArgument("sd_ratio_interval needs at least 2 values in each sample")
    a = [check_float(v, f"a[{i}]", fix="a run diverged: report it instead of averaging it") for i, v in enumerate(a)]
    b = [check_float(v, f"b[{i}]", fix="a run diverged: report it instead of averaging it") for i, v in enumerate(b)]
    if statistics.variance(b) == 0:
        raise BadArgument(f"b={b}: all values are equal, so there is no spread to compare with")
    r2 = statistics.variance(a) / statistics.variance(b)
    lo_q, hi_q = f.ppf([(1 - level) / 2, (1 + level) / 2], len(a) - 1, len(b) - 1)
    return Interval(math.sqrt(r2), math.sqrt(r2 / hi_q), math.sqrt(r2 / lo_q), len(a) + len(b), level)


@torch.no_grad()
def _pair_disagreement(runs: Replicates, data: Splits) -> list[float]:
    preds = [m.cpu().float()(data.x_val.float()).argmax(1) for m in runs.models]
    return [float((preds[i] != preds[i + 1]).double().mean()) for i in range(0, len(preds) - 1, 2)]


def chaos(seeds: Replicates, bits: Replicates, data: Splits) -> ChaosResult:
    """The chaos comparison of hypothesis 3 from :func:`~.lab.compare_precisions`' fp32 runs (``runs[BASELINE]``
    and ``runs.bit_flipped``), measured on ``data``'s validation set."""
    if not isinstance(seeds, Replicates) or not isinstance(bits, Replicates):
        raise BadArgument("chaos needs the fp32 runs of compare_precisions: chaos(runs['fp32 pure'], "
                          f"runs.bit_flipped, data), got {type(seeds).__name__} and {type(bits).__name__}")
    if not seeds.distance or not bits.distance:
        raise BadArgument("chaos needs tracked runs: compare_precisions(..., bit_flips=N) with N >= 4")
    if min(len(seeds), len(bits)) < 4:
        raise BadArgument("chaos needs at least 4 seeds and 4 bit-flipped runs (2 independent pairs of each)")
    return ChaosResult(seeds, bits, _pair_disagreement(bits, data), _pair_disagreement(seeds, data))
