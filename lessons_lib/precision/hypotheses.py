"""Lesson 07 apparatus: hypotheses 2 and 3 of seed 001, measured.

Hypothesis 2, "lost small steps hurt":

* :func:`lost_update_survey`: one optimizer step of a trained network, and how many of its updates each format
  would lose (counted with a lost-update counter: the learner's, or :func:`~.reference.count_lost_updates`);
* :func:`measure_unbiased`: many stochastic roundings of the same values: is their mean the value?
* :func:`sr_recovery`: with weights stored in bf16 and small steps, round-to-nearest stalls; stochastic rounding
  (the learner's, or :func:`~.reference.stochastic_round`) rescues the run;
* :func:`gradient_underflow`: the backward signals fp16 flushes to zero, with and without loss scaling.

Hypothesis 3, "training is chaotic": :func:`perturbation_spread` flips the lowest bit of every weight, trains
again, and compares the final-accuracy difference with the seed-to-seed spread.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Splits, load
from ..models import mlp
from ..seeds import get_seed, seed_everything
from ..timing import threads as threads_ctx
from ..training import make_optimizer
from . import reference
from .formats import to_dtype
from .lab import PrecisionModel, PrecisionRun, Rounder, flip_lowest_bit_, train_precision

Counter = Callable[[torch.Tensor, torch.Tensor, torch.dtype], int]
"""A lost-update counter: ``(w stored in dtype, float32 updates u, dtype) -> number of lost updates``."""


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

    @property
    def share(self) -> float:
        return self.lost / self.tried if self.tried else float("nan")


@dataclass
class LostSurvey:
    """Rows of :func:`lost_update_survey`; ``share(setting, dtype, layer=None)`` pools the layers when None."""

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
            raise KeyError(f"no survey row for {setting!r}, {dtype!r}, {layer!r}: settings {self.settings}, "
                           f"dtypes {self.dtypes}, layers {self.layers}")
        return rows

    def share(self, setting: str, dtype: str, layer: str | None = None) -> float:
        rows = self._pick(setting, dtype, layer)
        tried = sum(r.tried for r in rows)
        return sum(r.lost for r in rows) / tried if tried else float("nan")

    def row(self, setting: str, dtype: str, layer: str) -> SurveyRow:
        return self._pick(setting, dtype, layer)[0]

    def __str__(self) -> str:
        """Per layer: median |w|, then per setting the median |u| and the share lost in each format."""
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


def lost_update_survey(model: nn.Module, data: Splits, count: Counter = reference.count_lost_updates,
                       settings: Sequence[tuple[str, float]] = (("sgd", 0.05), ("adam", 1e-4)),
                       dtypes: Sequence[str] = ("fp32", "bf16", "fp16"), n: int = 128,
                       threads: int | None = 1) -> LostSurvey:
    """For each (optimizer, lr) in ``settings``: the update one step on the first ``n`` training examples makes
    to the trained fp32 ``model``; then, per parameter tensor and format, ``count(w, u, dtype)`` with ``w`` the
    weights stored in that format. Adam's first step moves every weight by about ``lr``; SGD's by lr x gradient."""
    base = (model.inner if isinstance(model, PrecisionModel) else model).cpu().float()
    x, y = data.x_train[:n].float(), data.y_train[:n]
    rows = []
    with threads_ctx(threads):
        for opt, lr in settings:
            setting = f"{opt} lr {lr:g}"
            for name, w, u in _one_step(base, x, y, opt, lr):
                moved = u != 0
                mw = float(w.abs().median())
                mu = float(u[moved].abs().median()) if moved.any() else 0.0
                for d in dtypes:
                    dt = to_dtype(d)
                    rows.append(SurveyRow(setting, name, d, int(count(w.to(dt), u, dt)), int(moved.sum()), mw, mu))
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
    dt = to_dtype(dtype)
    fn = stochastic or (lambda t, g: reference.stochastic_round(t, dt, g))
    g = torch.Generator().manual_seed(get_seed() if seed is None else seed)
    x = torch.tensor(values, dtype=torch.float32)
    mean = fn(x.repeat(draws, 1), g).to(torch.float64).mean(0)
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
    """Three runs at a small learning rate: fp32 weights, weights stored rounded to nearest, stored rounded
    stochastically."""

    fp32: PrecisionRun
    nearest: PrecisionRun
    stochastic: PrecisionRun

    @property
    def runs(self) -> list[PrecisionRun]:
        return [self.fp32, self.nearest, self.stochastic]

    @property
    def start_loss(self) -> float:
        return math.log(10)  # the untrained network's loss is about log(classes)

    def loss_drop(self, run: PrecisionRun) -> float:
        return self.start_loss - run.history.train_loss[-1]

    def recovered(self) -> float:
        """Share of the fp32 run's loss decrease that stochastic rounding achieves (1 = all of it)."""
        return self.loss_drop(self.stochastic) / max(self.loss_drop(self.fp32), 1e-9)

    def nearest_share(self) -> float:
        """Share of the fp32 run's loss decrease that round-to-nearest achieves."""
        return self.loss_drop(self.nearest) / max(self.loss_drop(self.fp32), 1e-9)


def sr_recovery(*, dtype: str = "bf16", lr: float = 1e-4, epochs: int = 6, optimizer: str = "adam", width: int = 128,
                device: str = "cpu", seed: int | None = None, threads: int | None = 1,
                data: Splits | None = None, stochastic: Rounder | None = None) -> SRResult:
    """Three runs at a small learning rate (Adam's steps are about ``lr`` per weight, so with bf16's gap of
    2^-8 relative, every weight larger than about ``lr * 2^8`` cannot move by rounding to nearest): fp32
    weights, weights stored in ``dtype`` rounded to nearest, and stored with stochastic rounding (``stochastic``,
    e.g. the learner's function; default :func:`~.reference.stochastic_round`)."""
    kw = dict(optimizer=optimizer, lr=lr, epochs=epochs, width=width, device=device, seed=seed, threads=threads,
              data=data)
    return SRResult(
        fp32=train_precision(dtype="fp32", mode="pure", **kw),
        nearest=train_precision(dtype=dtype, mode="stored", rounding="nearest", **kw),
        stochastic=train_precision(dtype=dtype, mode="stored", rounding="stochastic", stochastic=stochastic, **kw),
    )


# --- gradients that underflow in fp16 ---------------------------------------------------------
@dataclass
class Underflow:
    """Backward signals (the gradient w.r.t. each Linear layer's output) that are non-zero in fp32 but exactly
    zero in fp16 under autocast: share per loss scale (``by_scale``, all layers) and per layer; ``overflow``
    is the share that became inf/NaN at each scale (the reason the scale must also come down)."""

    by_scale: dict[float, float]
    by_layer: dict[float, dict[str, float]]
    overflow: dict[float, float]
    tiny_fp32_share: float  # share of the fp32 signals below fp16's smallest subnormal (2^-24)


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


def gradient_underflow(model: nn.Module, data: Splits, scales: Sequence[float] = (1.0, 2.0**10, 2.0**16),
                       n: int = 128, threads: int | None = 1) -> Underflow:
    """One training batch (the first ``n`` examples) through ``model`` in fp32 and under fp16 autocast with
    the loss multiplied by each ``scale`` (loss scaling). Counts the backward signals (gradients w.r.t. each
    Linear layer's output) that fp16 flushes to zero although they are non-zero in fp32."""
    base = model.inner if isinstance(model, PrecisionModel) else model
    dev = next(base.parameters()).device
    x, y = data.x_train[:n].float().to(dev), data.y_train[:n].to(dev)
    with threads_ctx(threads if dev.type == "cpu" else None):
        ref = _output_grads(copy.deepcopy(base).float(), x, y, None, 1.0)
        by_scale, by_layer, overflow = {}, {}, {}
        for s in scales:
            g16 = _output_grads(copy.deepcopy(base).float(), x, y, torch.float16, float(s))
            lost = tried = bad = 0
            layer = {}
            for k, g in ref.items():
                nz = g != 0
                z = (g16[k] == 0) & nz
                layer[k] = float(z.sum()) / max(int(nz.sum()), 1)
                lost, tried = lost + int(z.sum()), tried + int(nz.sum())
                bad += int((~torch.isfinite(g16[k])).sum())
            by_scale[float(s)] = lost / max(tried, 1)
            by_layer[float(s)] = layer
            overflow[float(s)] = bad / max(sum(g.numel() for g in ref.values()), 1)
    allg = torch.cat([g.flatten() for g in ref.values()])
    nz = allg != 0
    tiny = float(((allg.abs() < 2.0**-24) & nz).sum()) / max(int(nz.sum()), 1)
    return Underflow(by_scale, by_layer, overflow, tiny)


# --- chaos: tiny perturbations vs a new seed --------------------------------------------------
def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


@dataclass
class ChaosResult:
    seeds: list[int]
    acc: list[float]  # final val acc per seed
    acc_perturbed: list[float]  # same seed, lowest bits flipped
    weight_distance: list[float]  # relative distance between the pair's final weights
    initial_distance: float  # relative distance right after the bit flip
    seed_weight_distance: float  # relative distance between the final weights of two different seeds

    @property
    def perturbation_gap(self) -> float:
        """Mean |acc - acc_perturbed| over seeds."""
        return statistics.fmean(abs(a - b) for a, b in zip(self.acc, self.acc_perturbed))

    @property
    def seed_gap(self) -> float:
        """Mean |acc_i - acc_j| over pairs of different seeds."""
        a = self.acc
        pairs = [abs(a[i] - a[j]) for i in range(len(a)) for j in range(i + 1, len(a))]
        return statistics.fmean(pairs)


def perturbation_spread(seeds: Sequence[int] | None = None, *, epochs: int = 4, lr: float = 0.05,
                        width: int = 128, device: str = "cpu", threads: int | None = 1,
                        optimizer: str = "sgd") -> ChaosResult:
    """For each seed: train fp32; train again from the same initial weights with their lowest bit flipped
    (same data order). Compare the accuracy differences with those between seeds (same data split, other
    initial weights and data order)."""
    base = get_seed()
    seeds = list(seeds) if seeds is not None else [base, base + 1, base + 2]
    data = load("mnist1d", seed=base)  # one split: the seeds change the initial weights and the data order
    acc, acc_p, dist, finals = [], [], [], []
    init_d = 0.0
    kw = dict(epochs=epochs, lr=lr, width=width, device=device, threads=threads, optimizer=optimizer, data=data,
              measure_lost=False)
    for s in seeds:
        a = train_precision(seed=s, **kw)
        b = train_precision(seed=s, perturb_bits=True, **kw)
        wa, wb = _flat(a.model), _flat(b.model)
        acc.append(a.val_acc)
        acc_p.append(b.val_acc)
        dist.append(float((wa - wb).norm() / wa.norm()))
        finals.append(wa)
        if not init_d:
            seed_everything(s)
            m0 = mlp(40, [width, width], 10)
            w0 = _flat(m0)
            init_d = float((w0 - _flat(flip_lowest_bit_(m0))).norm() / w0.norm())
    seed_d = float((finals[0] - finals[1]).norm() / finals[0].norm()) if len(finals) > 1 else float("nan")
    return ChaosResult(seeds, acc, acc_p, dist, init_d, seed_d)
