"""Lesson 07 apparatus: one training run of the MNIST-1D MLP in a precision (the live panel's run).

:func:`train_precision` trains in ``mode``

* "pure": weights, activations, gradients and optimizer state all in the dtype (round to nearest everywhere);
* "autocast": fp32 weights and optimizer, matmuls in 16 bits via ``torch.autocast`` (mixed precision), with
  dynamic loss scaling (:class:`LossScaling`, from :class:`~.reference.LossScaler`) for fp16 on CUDA;
* "stored": weights stored in a 16-bit dtype (:class:`StoredWeights`), arithmetic and optimizer state in fp32,
  ``rounding`` "nearest" or "stochastic";

and counts, per layer, the updates lost to rounding as they happen (:class:`LostUpdateMeter`). The comparisons
over several seeds are in :mod:`.lab` and :mod:`.replicates`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..data import Splits, load
from ..device import pick_device
from ..models import mlp
from ..seeds import get_seed, seed_everything
from ..timing import threads as threads_ctx
from ..training import History, fit
from ..validate import BadArgument, check_int
from . import reference
from .formats import (
    DTYPES,
    LOW,
    ROUNDINGS,
    UnsupportedDtypeError,
    check_callable,
    check_rounded,
    check_rounding,
    check_threads,
    dtype_name,
    require_dtype,
)
from .replicates import Rounder, run_label


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
            raise BadArgument(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        if stochastic is not None:
            check_callable(stochastic, "stochastic", "(float32 tensor, generator) -> tensor of the 16-bit dtype")
        self.name = dtype_name(dtype)
        if self.name not in LOW:
            raise UnsupportedDtypeError(f"stored weights are 16-bit: choose one of {', '.join(LOW)}, not {self.name}")
        self.rounding = rounding
        self.seed = get_seed() if seed is None else check_int(seed, "seed", low=0)
        dt = DTYPES[self.name]
        self.stochastic = stochastic or (lambda x, g: reference.stochastic_round(x, dt, g))
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def _round(self, model: nn.Module) -> None:
        for p in model.parameters():
            if self.rounding == "nearest":
                p.copy_(reference.round_nearest(p, DTYPES[self.name]).to(p.dtype))
            else:
                x = p.detach()
                p.copy_(check_rounded(self.stochastic(x, self.generator), x, DTYPES[self.name]).to(p.dtype))

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

    ``measure_lost=False`` leaves out the :class:`LostUpdateMeter` (it costs about a fifth of a step here).
    ``data`` defaults to MNIST-1D split by ``seed``.
    Unsupported combinations raise :class:`UnsupportedDtypeError` before any training.
    """
    dev = pick_device(device)
    name = require_dtype(dtype, dev, mode)
    check_rounding(rounding, mode)
    if data is not None and not isinstance(data, Splits):
        raise BadArgument(f"data: must be a Splits (lessons_lib.data.load('mnist1d')) or None, got "
                          f"{type(data).__name__}")
    width = check_int(width, "width", low=1, fix="units per hidden layer, e.g. 128")
    depth = check_int(depth, "depth", low=0, fix="hidden layers, e.g. 2")
    threads = check_threads(threads)
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed) if data is None else data
    net = mlp(data.n_features, [width] * depth, data.n_classes)
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
