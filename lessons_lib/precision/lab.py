"""Lesson 07 apparatus: the same MLP trained in fp64 / fp32 / bf16 / fp16, the live panel and the claims table.

Seed 001 (second half) wonders whether cheaper, less precise numbers would help deep learning, and lists three
reasons they might not: (1) linear-algebra libraries may be tuned for 64-bit floats, so 32 or 16 bits would not
be faster; (2) small gradient steps that round away may stall training; (3) training may depend chaotically on
tiny differences in the middle of the network. ``formats.py`` measures (1) on matrix products, this module on
training runs; ``hypotheses.py`` measures (2) and (3); ``plots.py`` draws them; ``reference.py`` is the idea
from scratch (stochastic rounding, lost updates, loss scaling).

:func:`train_precision` trains the MLP in ``mode``

* "pure": weights, activations, gradients and optimizer state all in the dtype (round to nearest everywhere);
* "autocast": fp32 weights and optimizer, matmuls in 16 bits via ``torch.autocast`` (mixed precision), with
  dynamic loss scaling (:class:`LossScaling`, from :class:`~.reference.LossScaler`) for fp16 on CUDA;
* "stored": weights stored in a 16-bit dtype (:class:`StoredWeights`), arithmetic and optimizer state in fp32,
  ``rounding`` "nearest" or "stochastic";

and counts, per layer, the updates lost to rounding as they happen (:class:`LostUpdateMeter`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import Splits, load
from ..device import pick_device
from ..models import mlp
from ..seeds import get_seed, seed_everything
from ..timing import threads as threads_ctx
from ..training import History, fit
from . import reference
from .formats import (
    DTYPES,
    FAST_RATIO,
    LOW,
    MODES,
    ROUNDINGS,
    DtypeTable,
    UnsupportedDtypeError,
    dtype_name,
    require_dtype,
)

if TYPE_CHECKING:
    from .hypotheses import ChaosResult, LostSurvey, SRResult, Unbiased, Underflow

Rounder = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A stochastic rounding function: ``(float32 tensor, generator) -> tensor of the 16-bit dtype``."""


# --- training helpers (callbacks and wrappers) ---------------------------------------------------
class LostUpdateMeter(Callback):
    """Counts, per parameter tensor and per step, the elements whose gradient was non-zero but whose stored
    value did not change (``w + delta == w`` in the storage format). Put it after any callback that rounds
    weights. ``shares()`` -> {layer: lost / attempted}; ``total_share()`` over all layers; ``per_step`` the
    overall share of each step."""

    def __init__(self):
        self.lost: dict[str, int] = {}
        self.tried: dict[str, int] = {}
        self.per_step: list[float] = []
        self._steps: list[torch.Tensor] = []

    @staticmethod
    def _name(n: str) -> str:
        return n.removeprefix("inner.")

    def on_train_begin(self, state: TrainState) -> None:
        named = list(state.model.named_parameters())
        self._names = [self._name(n) for n, _ in named]
        sizes = torch.tensor([p.numel() for _, p in named])
        dev = named[0][1].device
        self._segment = torch.repeat_interleave(torch.arange(len(named)), sizes).to(dev)  # element -> layer
        self._prev = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self.lost = {n: 0 for n in self._names}
        self.tried = {n: 0 for n in self._names}
        self.per_step = []
        self._steps = []

    @torch.no_grad()
    def on_batch_end(self, state: TrainState) -> None:
        params = list(state.model.parameters())
        w = torch.cat([p.detach().reshape(-1) for p in params])
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        moved = g != 0
        lost = (w == self._prev) & moved
        self._prev = w
        counts = torch.zeros(2, len(params), dtype=torch.int64, device=w.device)
        counts[0].index_add_(0, self._segment, lost.to(torch.int64))
        counts[1].index_add_(0, self._segment, moved.to(torch.int64))
        self._steps.append(counts)  # kept on the device; read once at the end (no synchronization per step)

    def on_train_end(self, state: TrainState) -> None:
        if not self._steps:
            return
        c = torch.stack(self._steps).cpu()  # (steps, 2, layers)
        for i, n in enumerate(self._names):
            self.lost[n] += int(c[:, 0, i].sum())
            self.tried[n] += int(c[:, 1, i].sum())
        per = c.sum(2)
        self.per_step = (per[:, 0] / per[:, 1].clamp_min(1)).tolist()
        self._steps = []

    def shares(self) -> dict[str, float]:
        return {n: self.lost[n] / self.tried[n] for n in self.lost if self.tried[n]}

    def total_share(self) -> float:
        t = sum(self.tried.values())
        return sum(self.lost.values()) / t if t else float("nan")



class StoredWeights(Callback):
    """Keep every weight on the grid of a 16-bit ``dtype`` while computing in fp32: round the weights at the
    start and after every optimizer step, to nearest or stochastically. The optimizer's state stays fp32.
    ``stochastic``: the stochastic rounding function (default :func:`~.reference.stochastic_round` to ``dtype``),
    called with the float32 weights and a generator seeded from ``seed``."""

    def __init__(self, dtype: str = "bf16", rounding: str = "nearest", seed: int | None = None,
                 stochastic: Rounder | None = None):
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        self.name = dtype_name(dtype)
        if self.name not in LOW:
            raise UnsupportedDtypeError(f"stored weights are 16-bit: choose one of {', '.join(LOW)}, not {self.name}")
        self.rounding = rounding
        self.seed = get_seed() if seed is None else seed
        dt = DTYPES[self.name]
        self.stochastic = stochastic or (lambda x, g: reference.stochastic_round(x, dt, g))
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def _round(self, model: nn.Module) -> None:
        for p in model.parameters():
            if self.rounding == "nearest":
                p.copy_(reference.round_nearest(p, DTYPES[self.name]).to(p.dtype))
            else:
                p.copy_(self.stochastic(p.detach(), self.generator).to(p.dtype))

    def on_train_begin(self, state: TrainState) -> None:
        dev = torch.device(state.device)
        self.generator = torch.Generator(device=dev) if dev.type in ("cpu", "cuda") else torch.Generator()
        self.generator.manual_seed(self.seed * 7919 + 5)
        self._round(state.model)

    def on_batch_end(self, state: TrainState) -> None:
        self._round(state.model)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by the scaler's current scale (= scaling the loss)."""

    @staticmethod
    def forward(ctx, x, scaler):  # noqa: ANN001
        ctx.scaler = scaler
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001
        return g * ctx.scaler.scale, None


class LossScaling(Callback):
    """Dynamic loss scaling inside :func:`~lessons_lib.training.fit`: the rules are :class:`~.reference.LossScaler`
    (``self.scaler``); this callback attaches it to the :class:`PrecisionModel` (whose backward pass is then
    scaled) and unscales the gradients in an optimizer pre-step hook, where an overflow skips the step."""

    def __init__(self, scaler: reference.LossScaler | None = None):
        self.scaler = scaler or reference.LossScaler()
        self._handle = None

    def pre_step(self, optimizer, args, kwargs):  # noqa: ANN001
        """Optimizer pre-step hook: unscale the gradients; on overflow drop them, so the step changes nothing."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.scaler.unscale_and_check([p.grad for p in params if p.grad is not None]):
            for p in params:
                p.grad = None  # optimizers skip parameters without a gradient: the step is skipped
        return None

    def on_train_begin(self, state: TrainState) -> None:
        self._handle = state.optimizer.register_step_pre_hook(self.pre_step)
        if isinstance(state.model, PrecisionModel):
            state.model.scaler = self.scaler

    def on_train_end(self, state: TrainState) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if isinstance(state.model, PrecisionModel):
            state.model.scaler = None


class PrecisionModel(nn.Module):
    """Wraps a model: ``autocast`` runs its forward under ``torch.autocast(dtype)`` and returns fp32 logits;
    with a :class:`~.reference.LossScaler` attached (``scaler``), the backward pass is scaled."""

    def __init__(self, inner: nn.Module, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.inner = inner
        self.autocast_dtype = autocast_dtype
        self.scaler: reference.LossScaler | None = None
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.inner(x)
            out = out.float()
        else:
            out = self.inner(x)
        if self.scaler is not None and self.training and torch.is_grad_enabled():
            out = _ScaleGrad.apply(out, self.scaler)
        return out


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held by the parameters, their gradients and the optimizer state (the training state)."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
    if optimizer is not None:
        for st in optimizer.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
    return total


class _MemoryMeter(Callback):
    def __init__(self):
        self.state_bytes = 0
        self.peak_bytes: int | None = None

    def on_train_begin(self, state: TrainState) -> None:
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)

    def on_epoch_end(self, state: TrainState) -> None:
        self.state_bytes = state_bytes(state.model, state.optimizer)

    def on_train_end(self, state: TrainState) -> None:
        self.state_bytes = max(self.state_bytes, state_bytes(state.model, state.optimizer))
        if state.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(state.device))
        elif state.device.type == "mps":
            self.peak_bytes = int(torch.mps.driver_allocated_memory())


def splits_as(data: Splits, dtype: torch.dtype) -> Splits:
    """The same splits with the inputs in ``dtype`` (labels stay int64)."""
    return Splits(data.name, data.x_train.to(dtype), data.y_train, data.x_val.to(dtype), data.y_val,
                  data.x_test.to(dtype), data.y_test, data.n_classes)


# --- training in each precision ---------------------------------------------------------------
@dataclass
class PrecisionRun:
    """One training run: its History plus what the precision lesson measures."""

    label: str
    dtype: str
    mode: str
    rounding: str
    history: History
    lost_share: float
    lost_by_layer: dict[str, float]
    lost_per_step: list[float]
    state_bytes: int
    peak_bytes: int | None
    loss_scale_skipped: int | None
    model: nn.Module = field(repr=False, default=None)

    @property
    def val_acc(self) -> float:
        return self.history.val_acc[-1]

    @property
    def epoch_seconds(self) -> float:
        """Median training seconds per epoch (the first epoch, with its warm-up, left out when there are more)."""
        s = self.history.seconds[1:] or self.history.seconds
        return statistics.median(s)


@torch.no_grad()
def flip_lowest_bit_(model: nn.Module) -> nn.Module:
    """Flip the lowest mantissa bit of every float32 parameter in place (a relative change of ~1e-7)."""
    for p in model.parameters():
        if p.dtype != torch.float32:
            raise ValueError(f"flip_lowest_bit_ works on float32 parameters, got {p.dtype}")
        p.view(torch.int32).bitwise_xor_(1)
    return model


def run_label(dtype: str, mode: str, rounding: str = "nearest") -> str:
    """The run's name in tables and legends ("bf16 pure", "autocast fp16", "bf16 weights, stochastic")."""
    if mode == "pure":
        return f"{dtype} pure"
    if mode == "autocast":
        return f"autocast {dtype}"
    return f"{dtype} weights, {rounding}"


def train_precision(
    data: Splits | None = None,
    *,
    dtype: str = "fp32",
    mode: str = "pure",
    rounding: str = "nearest",
    optimizer: str = "sgd",
    lr: float = 0.05,
    epochs: int = 6,
    width: int = 128,
    depth: int = 2,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    threads: int | None = 1,
    loss_scaling: bool | None = None,
    perturb_bits: bool = False,
    measure_lost: bool = True,
    stochastic: Rounder | None = None,
) -> PrecisionRun:
    """Train an MNIST-1D MLP (``depth`` hidden layers of ``width``) in ``dtype`` and ``mode``:

    * "pure": weights, activations, gradients, optimizer state in ``dtype`` (round to nearest everywhere);
    * "autocast": fp32 weights and optimizer, matmuls in ``dtype`` (``torch.autocast``); ``loss_scaling``
      (default: on for fp16 on CUDA, as ``GradScaler`` is used there) adds :class:`LossScaling`;
    * "stored": weights stored in ``dtype`` (16-bit) with ``rounding`` "nearest" or "stochastic", arithmetic
      and optimizer state in fp32; ``stochastic`` is the stochastic rounding function (``(float32 weights,
      generator) -> dtype``, e.g. the learner's; default :func:`~.reference.stochastic_round`).

    ``perturb_bits`` flips the lowest stored bit of every initial fp32 weight (the chaos experiment);
    ``measure_lost=False`` leaves out the :class:`LostUpdateMeter` (it costs about a fifth of a step here).
    ``data`` defaults to MNIST-1D split by ``seed``.
    Unsupported combinations raise :class:`UnsupportedDtypeError` before any training.
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    name = require_dtype(dtype, dev, mode)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if rounding == "stochastic" and mode != "stored":
        raise ValueError("stochastic rounding is applied to stored weights: use mode='stored'")
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed) if data is None else data
    net = mlp(data.n_features, [width] * depth, data.n_classes)
    if perturb_bits:
        flip_lowest_bit_(net)
    cbs: list[Callback] = []
    scaler = None
    if mode == "pure":
        net = net.to(DTYPES[name])
        model: nn.Module = net
        data = splits_as(data, DTYPES[name])
    elif mode == "autocast":
        model = PrecisionModel(net, DTYPES[name])
        if loss_scaling is None:
            loss_scaling = name == "fp16" and dev.type == "cuda"
        if loss_scaling:
            scaler = LossScaling()
            cbs.append(scaler)
    else:
        model = net
        cbs.append(StoredWeights(name, rounding, seed=seed, stochastic=stochastic))
    meter = LostUpdateMeter()
    mem = _MemoryMeter()
    cbs += [meter, mem, *callbacks] if measure_lost else [mem, *callbacks]
    config = {"dtype": name, "mode": mode, "rounding": rounding, "optimizer": optimizer, "lr": lr, "width": width}
    with threads_ctx(threads if dev.type == "cpu" else None):
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=dev,
                callbacks=cbs, seed=seed, config=config)
    return PrecisionRun(run_label(name, mode, rounding), name, mode, rounding, h, meter.total_share(),
                        meter.shares(), meter.per_step, mem.state_bytes, mem.peak_bytes,
                        None if scaler is None else scaler.scaler.skipped, model)


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


def compare_dtypes(recipes: Sequence[tuple[str, str]] = DEFAULT_RECIPES, *, device: str = "cpu",
                   skip_unsupported: bool = True, **kw) -> list[PrecisionRun]:
    """:func:`train_precision` for each (dtype, mode); unsupported ones are skipped (or raise)."""
    runs = []
    for name, mode in recipes:
        try:
            runs.append(train_precision(dtype=name, mode=mode, device=device, **kw))
        except UnsupportedDtypeError:
            if not skip_unsupported:
                raise
    return runs


def _pct(share: float) -> str:
    """A share as a percentage with two significant digits (0.004% stays visible, 0 is 0%)."""
    return "0%" if share == 0 else f"{100 * share:.2g}%"


def runs_table(runs: Sequence[PrecisionRun], baseline: str = "fp32 pure") -> str:
    """A text table: final val acc, median epoch time (and speed relative to ``baseline``), training-state memory,
    share of the updates lost (observed by :class:`LostUpdateMeter`)."""
    ref = next((r for r in runs if r.label == baseline), runs[0])
    peak = any(r.peak_bytes is not None for r in runs)  # device peak memory: CUDA / MPS only
    lines = [f"{'run':<26}{'val acc':>8}{'s/epoch':>9}{'× ' + baseline:>13}{'state KB':>10}{'lost updates':>14}"
             + (f"{'peak MB':>9}" if peak else "")]
    for r in runs:
        speed = ref.epoch_seconds / r.epoch_seconds
        extra = (f"{r.peak_bytes / 2**20:>9.1f}" if r.peak_bytes is not None else f"{'—':>9}") if peak else ""
        lines.append(f"{r.label:<26}{r.val_acc:>8.3f}{r.epoch_seconds:>9.3f}{speed:>12.2f}×"
                     f"{r.state_bytes / 1024:>10.0f}{_pct(r.lost_share):>14}{extra}")
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
def claims(table: DtypeTable, runs: Sequence[PrecisionRun], survey: LostSurvey, unbiased: Unbiased, sr: SRResult,
           under: Underflow, chaos: ChaosResult, device: str = "cpu") -> Claims:
    """The claims table of lesson 07, every verdict computed from this run's measurements."""
    c = Claims("07 precision")
    by = {r.label: r for r in runs}
    r64, r32 = table.get(device, "fp64"), table.get(device, "fp32")
    mm = r32.gflops / r64.gflops if r64.gflops and r32.gflops else float("nan")
    ep = by["fp64 pure"].epoch_seconds / by["fp32 pure"].epoch_seconds
    c.add("Linear-algebra libraries favour 64-bit floats: 32-bit is not faster (hypothesis 1)", "seed 001",
          f"fp32 / fp64 speed: matmul {mm:.2f}×, training epoch {ep:.2f}× ({device}, threads={table.threads})",
          mm < 1.1 and ep < 1.1)
    for name in LOW:
        row = table.get(device, name)
        if row.vs_fp32 is None:
            c.add(f"{name} does not speed up matrix products either (hypothesis 1)", "seed 001",
                  f"{name} unsupported on {device}", None)
            continue
        pure = by.get(f"{name} pure")
        extra = f"; pure-{name} training epoch {by['fp32 pure'].epoch_seconds / pure.epoch_seconds:.2f}× fp32" \
            if pure else ""
        c.add(f"{name} does not speed up matrix products either (hypothesis 1)", "seed 001",
              f"{name} matmul {row.vs_fp32:.2f}× fp32 (units: {row.units}){extra}", row.vs_fp32 < FAST_RATIO)
    normal, small = survey.settings[0], survey.settings[-1]
    if "bf16 pure" in by:
        b, f = by["bf16 pure"], by["fp32 pure"]
        c.add("A less precise type needs less memory per parameter", "seed 001",
              f"training state (weights, grads, momentum): bf16 {b.state_bytes / 1024:.0f} KB vs fp32 "
              f"{f.state_bytes / 1024:.0f} KB", b.state_bytes <= 0.55 * f.state_bytes)
        gap = f.val_acc - b.val_acc
        c.add("Losing small updates hurts training at a normal learning rate (hypothesis 2)", "seed 001",
              f"pure bf16 lost {100 * b.lost_share:.1f}% of updates (one {normal} step, counted: "
              f"{100 * survey.share(normal, 'bf16'):.1f}%); val acc bf16 {b.val_acc:.3f} vs fp32 {f.val_acc:.3f} "
              f"(seed-to-seed gap {chaos.seed_gap:.3f})", gap > max(chaos.seed_gap, 0.02))
    n, f = sr.nearest, sr.fp32
    c.add("…at a small learning rate, round-to-nearest loses most updates and stalls (hypothesis 2)", "seed 001",
          f"one {small} step, counted: {100 * survey.share(small, 'bf16'):.0f}% lost in bf16; in training "
          f"{100 * n.lost_share:.0f}% lost, loss decrease {100 * sr.nearest_share():.0f}% of fp32's; val acc "
          f"{n.val_acc:.3f} vs fp32 {f.val_acc:.3f}", n.lost_share > 0.5 and sr.nearest_share() < 0.5)
    c.add("Stochastic rounding is unbiased and rescues that training", "lesson",
          f"mean of {unbiased.draws} roundings within {unbiased.z:.1f} standard errors; loss decrease "
          f"{100 * sr.recovered():.0f}% of fp32's, val acc {sr.stochastic.val_acc:.3f}",
          unbiased.z < 4.5 and sr.recovered() > 0.7)
    top = max(under.by_scale)
    c.add("fp16 gradients underflow to zero without loss scaling", "lesson",
          f"zero in fp16 but not in fp32: {100 * under.by_scale[1.0]:.2f}% unscaled, "
          f"{100 * under.by_scale[top]:.2f}% with scale {top:g}",
          under.by_scale[1.0] > 0 and under.by_scale[top] < under.by_scale[1.0])
    c.add("Training depends chaotically on tiny changes (hypothesis 3): final accuracy", "seed 001",
          f"flipping the lowest bit changes val acc by {chaos.perturbation_gap:.3f} on average; a new seed by "
          f"{chaos.seed_gap:.3f}", chaos.perturbation_gap >= 0.5 * chaos.seed_gap)
    d = statistics.fmean(chaos.weight_distance)
    c.add("…and the trained weights themselves", "seed 001",
          f"relative weight difference grows from {chaos.initial_distance:.1e} to {d:.1e} (different seeds: "
          f"{chaos.seed_weight_distance:.2f})", d > 0.1 * chaos.seed_weight_distance)
    return c
