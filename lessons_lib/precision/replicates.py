"""Lesson 07 apparatus: one precision recipe trained for several seeds at once, so that every accuracy, loss and
lost-update share comes with its spread over seeds.

:func:`train_replicates` is :func:`~.lab.train_precision` for M runs in one stacked model
(:class:`~lessons_lib.multiseed.StackedMLP`: every layer one batched product over the M models, each model on its
own batches). Run ``m`` starts from the weights ``torch.manual_seed(seeds[m])`` gives and sees the batches
:func:`~lessons_lib.training.fit` shows seed ``seeds[m]``, so in fp32 it is that single run up to float rounding.
What the precision lesson adds to :func:`~lessons_lib.multiseed.fit_seeds` (which has no hooks for it): the
dtype ("pure", "autocast", "stored" weights rounded to nearest or stochastically), the updates lost to rounding
counted per run and per layer as they happen, a one-bit change in one initial weight per run (``flips``, the
chaos experiment: a seed may then repeat), and, with ``track=True``, how far each run's weights and predictions
are from run 0's after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, RandomSampler

from ..data import Splits
from ..history import History
from ..models import mlp
from ..multiseed import StackedMLP
from ..seeds import torch_generator
from ..stats import Interval, mean_interval
from ..timing import Stopwatch
from ..timing import threads as threads_ctx
from ..training import make_optimizer
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference
from .formats import (
    DTYPES,
    MODES,
    ROUNDINGS,
    _device_str,
    check_callable,
    check_rounded,
    check_rounding,
    check_seeds,
    check_threads,
    dtype_name,
    require_dtype,
)

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")

Rounder = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A stochastic rounding function: ``(float32 tensor, generator) -> tensor of the 16-bit dtype``."""


def run_label(dtype: str, mode: str, rounding: str = "nearest") -> str:
    """The run's name in tables and legends ("bf16 pure", "autocast fp16", "bf16 weights, stochastic")."""
    dtype, mode = dtype_name(dtype), check_choice(mode, "mode", MODES)
    check_choice(rounding, "rounding", ROUNDINGS)
    if mode == "pure":
        return f"{dtype} pure"
    if mode == "autocast":
        return f"autocast {dtype}"
    return f"{dtype} weights, {rounding}"


@dataclass
class Replicates:
    """One recipe (``dtype``, ``mode``, ``rounding``) trained once per entry of ``seeds``.

    ``lost_share[m]``: share of run m's updates (non-zero gradient) that left the stored weight unchanged;
    ``lost_by_layer[m]``: the same per parameter tensor ("0.weight", ...); ``lost_per_step[m]``: per optimizer step
    counted (every ``lost_every``-th step).
    ``flips[m]``: the flat index of the initial parameter whose lowest bit was flipped in run m (None: unperturbed).
    With tracking, ``distance[m][e]`` is the relative distance ``|w_m - w_ref| / |w_ref|`` of run m's weights from
    the reference run's (seed ``ref_seed``, unperturbed) after epoch ``e - 1`` (``e = 0``: at the start), and
    ``disagreement[m][e]`` the share of validation examples on which their predictions differ.
    """

    label: str
    dtype: str
    mode: str
    rounding: str
    seeds: list[int]
    histories: list[History]
    lost_share: list[float]
    lost_by_layer: list[dict[str, float]]
    lost_per_step: list[list[float]]
    state_bytes: int  # one run's weights + gradients + optimizer state
    flips: list[int | None]
    models: list[nn.Module] = field(repr=False, default_factory=list)
    distance: list[list[float]] = field(repr=False, default_factory=list)
    disagreement: list[list[float]] = field(repr=False, default_factory=list)
    ref_seed: int | None = None
    lost_every: int = 1

    def __len__(self) -> int:
        return len(self.seeds)

    def final(self, metric: str = "val_acc") -> list[float]:
        """``metric`` at the last epoch, one value per run."""
        check_choice(metric, "metric", METRICS)
        return [getattr(h, metric)[-1] for h in self.histories]

    def curve(self, metric: str = "val_acc") -> torch.Tensor:
        """(runs, epochs) float64 tensor of ``metric``."""
        check_choice(metric, "metric", METRICS)
        return torch.tensor([getattr(h, metric) for h in self.histories], dtype=torch.float64)

    def interval(self, metric: str = "val_acc") -> Interval:
        """Mean and 95% interval of the final ``metric`` over the runs."""
        return mean_interval(self.final(metric))

    def lost_interval(self, layer: str | None = None) -> Interval:
        """Mean and 95% interval over the runs of the share of updates lost (in ``layer``, or all)."""
        if layer is not None:
            check_choice(layer, "layer", [k for k in (self.lost_by_layer[0] if self.lost_by_layer else {})])
        return mean_interval(self.lost_share if layer is None else [b[layer] for b in self.lost_by_layer])

    def select(self, runs: Sequence[int]) -> Replicates:
        """The same recipe with only the runs at indices ``runs`` (e.g. the unperturbed ones)."""
        def pick(xs: list) -> list:
            return [xs[i] for i in runs] if xs else []

        return replace(self, seeds=pick(self.seeds), histories=pick(self.histories), lost_share=pick(self.lost_share),
                       lost_by_layer=pick(self.lost_by_layer), lost_per_step=pick(self.lost_per_step),
                       flips=pick(self.flips), models=pick(self.models), distance=pick(self.distance),
                       disagreement=pick(self.disagreement))

    def split(self) -> tuple[Replicates, Replicates]:
        """(unperturbed runs, runs with a flipped bit)."""
        plain = [i for i, f in enumerate(self.flips) if f is None]
        return self.select(plain), self.select([i for i in range(len(self)) if i not in plain])


def _layer_names(model: nn.Sequential) -> list[tuple[str, str]]:
    """(weight name, bias name) of each Linear layer, as ``named_parameters`` spells them ("0.weight", "0.bias")."""
    return [(f"{i}.weight", f"{i}.bias") for i, layer in enumerate(model) if isinstance(layer, nn.Linear)]


@torch.no_grad()
def flip_bit_(model: nn.Module, index: int) -> nn.Module:
    """Flip the lowest mantissa bit of the float32 parameter at flat ``index`` (over ``model.parameters()`` in
    order): the smallest change a float32 weight can take, about 1e-7 of its value."""
    if not isinstance(model, nn.Module):
        raise BadArgument(f"model: must be a torch nn.Module, got {type(model).__name__}")
    total = sum(p.numel() for p in model.parameters())
    index = check_int(index, "index", low=0, high=total - 1, fix=f"a flat parameter index, 0 to {total - 1}")
    for p in model.parameters():
        if p.dtype != torch.float32:
            raise BadArgument(f"flip_bit_ works on float32 parameters, got {p.dtype}: call it before .to(dtype)")
        if index < p.numel():
            p.view(-1)[index:index + 1].view(torch.int32).bitwise_xor_(1)
            return model
        index -= p.numel()
    raise AssertionError("unreachable: index was checked against the parameter count")


def _flat(net: StackedMLP) -> torch.Tensor:
    """(M, parameters) float64: each run's weights and biases in one row."""
    return torch.cat([t.detach().reshape(net.n_models, -1) for pair in zip(net.weights, net.biases) for t in pair],
                     1).double()


def train_replicates(
    data: Splits,
    seeds: Sequence[int],
    *,
    dtype: str = "fp32",
    mode: str = "pure",
    rounding: str = "nearest",
    optimizer: str = "sgd",
    lr: float = 0.05,
    epochs: int = 48,
    width: int = 128,
    depth: int = 2,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    stochastic: Rounder | None = None,
    flips: Sequence[int | None] | None = None,
    measure_lost: bool = True,
    lost_every: int = 1,
    loss_scaling: bool | None = None,
    track: bool = False,
) -> Replicates:
    """Train the MNIST-1D MLP (``depth`` hidden layers of ``width``) once per seed, all runs at once, in ``dtype``
    and ``mode`` as :func:`~.lab.train_precision` does; returns a :class:`Replicates`.

    ``flips[m]`` (optional): flip the lowest bit of run m's initial parameter at that flat index (None: none).
    Runs must differ: a seed may repeat only with different flips. ``stochastic``: the stochastic rounding
    function for ``mode="stored"`` (default :func:`~.reference.stochastic_round`). ``lost_every``: count the lost
    updates on every k-th optimizer step only (a sample of the steps; counting costs more than a step of these
    small nets). ``loss_scaling`` (default: fp16
    autocast on CUDA) uses ``torch.amp.GradScaler`` with one scale for all runs. ``track``: record each run's
    distance and disagreement from run 0 (which must be unperturbed) after every epoch.
    """
    dev = torch.device(_device_str(device))
    name = require_dtype(dtype, dev, mode)
    check_rounding(rounding, mode)
    if not isinstance(data, Splits):
        raise BadArgument(f"data: must be a Splits (lessons_lib.data.load('mnist1d')), got {type(data).__name__}")
    seeds = check_seeds(seeds)
    epochs = check_int(epochs, "epochs", low=1, fix="e.g. 48")
    width = check_int(width, "width", low=1, fix="units per hidden layer, e.g. 128")
    depth = check_int(depth, "depth", low=0, fix="hidden layers, e.g. 2")
    batch_size = check_int(batch_size, "batch_size", low=1, fix="e.g. 128")
    lr = check_float(lr, "lr", low=0, low_open=True, fix="a learning rate such as 0.05")
    lost_every = check_int(lost_every, "lost_every", low=1, fix="count on every k-th step, e.g. 5")
    threads = check_threads(threads)
    if stochastic is not None:
        check_callable(stochastic, "stochastic", "(float32 tensor, generator) -> tensor of the 16-bit dtype")
    if flips is not None and (isinstance(flips, (str, bytes)) or not hasattr(flips, "__len__")):
        raise BadArgument(f"flips={flips!r}: must be a list with one entry per seed (None or a parameter index)")
    flips = [None if f is None else check_int(f, f"flips[{i}]", low=0) for i, f in enumerate(flips)] \
        if flips is not None else [None] * len(seeds)
    if not seeds or len(flips) != len(seeds):
        raise BadArgument(f"train_replicates needs one or more seeds and one flip entry per seed, got {len(seeds)} "
                         f"seeds and {len(flips)} flips")
    if len(set(zip(seeds, flips))) != len(seeds):
        raise BadArgument("two runs would be identical (same seed, same flip): give each run its own seed or flip")
    if track and flips[0] is not None:
        raise BadArgument("track=True measures distances from run 0, which must be unperturbed (flips[0] = None)")
    dt = DTYPES[name]
    models = []
    for s, f in zip(seeds, flips):
        torch.manual_seed(s)
        m = mlp(data.n_features, [width] * depth, data.n_classes)
        if f is not None:
            flip_bit_(m, f)
        models.append(m)
    names = _layer_names(models[0])
    compute = dt if mode == "pure" else torch.float32
    net = StackedMLP([m.to(compute) for m in models]).to(dev)
    params = [(pn, p) for (wn, bn), w, b in zip(names, net.weights, net.biases) for pn, p in ((wn, w), (bn, b))]
    d = data.to(dev)
    x_train, x_val = d.x_train.to(compute), d.x_val.to(compute)
    n = len(seeds)
    opt = make_optimizer(optimizer, net.parameters(), lr)
    # the index batches fit's DataLoader draws for each seed (the loader itself only adds per-batch overhead)
    samplers = [BatchSampler(RandomSampler(range(len(x_train)), generator=torch_generator(s, stream=2)), batch_size,
                             drop_last=False) for s in seeds]
    histories = [History(config={"seed": s, "dtype": name, "mode": mode, "rounding": rounding, "optimizer": optimizer,
                                 "lr": lr, "width": width, "flip": f}, device=str(dev)) for s, f in zip(seeds, flips)]
    autocast = dt if mode == "autocast" else None
    if loss_scaling is None:
        loss_scaling = mode == "autocast" and name == "fp16" and dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type) if loss_scaling else None
    if mode == "stored":
        round_gen = torch.Generator(device=dev if dev.type in ("cpu", "cuda") else "cpu")
        round_gen.manual_seed(seeds[0] * 7919 + 5)
        rounder = stochastic or (lambda x, g: reference.stochastic_round(x, dt, g))

        def sr(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return check_rounded(rounder(x, g), x, dt)

    @torch.no_grad()
    def store() -> None:  # weights kept on the 16-bit grid, arithmetic in fp32
        for _, p in params:
            q = reference.round_nearest(p, dt) if rounding == "nearest" else sr(p.detach(), round_gen)
            p.copy_(q.to(p.dtype))

    def forward(x: torch.Tensor) -> torch.Tensor:
        if autocast is None:
            return net(x)
        with torch.autocast(device_type=dev.type, dtype=autocast):
            out = net(x)
        return out.float()

    @torch.no_grad()
    def evaluate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net.eval()
        out = forward(x_val.expand(n, -1, -1)).float()  # (M, n_val, classes)
        net.train()
        losses = F.cross_entropy(out.transpose(1, 2), d.y_val.expand(n, -1), reduction="none").mean(1)
        pred = out.argmax(-1)
        return losses, (pred == d.y_val).double().mean(1), pred

    distance: list[list[float]] = [[] for _ in range(n)]
    disagreement: list[list[float]] = [[] for _ in range(n)]

    @torch.no_grad()
    def record(pred: torch.Tensor) -> None:
        w = _flat(net)
        dist = (w - w[0]).norm(dim=1) / w[0].norm()
        dis = (pred != pred[0]).double().mean(1)
        for m in range(n):
            distance[m].append(dist[m].item())
            disagreement[m].append(dis[m].item())

    if mode == "stored":
        store()
    steps_lost: list[torch.Tensor] = []
    steps_per_epoch = len(samplers[0])
    with threads_ctx(threads if dev.type == "cpu" else None):
        if track:
            record(evaluate()[2])
        for epoch in range(epochs):
            net.train()
            loss_sum = torch.zeros(n, device=dev)
            hits = torch.zeros(n, device=dev)
            seen = steps = 0
            with Stopwatch(dev) as sw:
                for batch in zip(*samplers, strict=True):  # strict: every sampler runs to its end, as in fit
                    idx = torch.tensor(batch, device=dev)  # (M, B): each run its own batch
                    xb, yb = x_train[idx], d.y_train[idx]
                    out = forward(xb)
                    per_run = F.cross_entropy(out.float().transpose(1, 2), yb, reduction="none").mean(1)
                    opt.zero_grad(set_to_none=True)
                    count = measure_lost and (epoch * steps_per_epoch + steps) % lost_every == 0
                    before = [p.detach().clone() for _, p in params] if count else []
                    if scaler is None:
                        per_run.sum().backward()  # each run's gradient is that of its own mean loss
                        opt.step()
                    else:
                        scaler.scale(per_run.sum()).backward()
                        scaler.step(opt)
                        scaler.update()
                    if mode == "stored":
                        store()
                    if count:
                        with torch.no_grad():
                            counts = torch.zeros(2, len(params), n, dtype=torch.int64, device=dev)
                            for i, ((_, p), b) in enumerate(zip(params, before)):
                                moved = (p.grad != 0).reshape(n, -1) if p.grad is not None else \
                                    torch.zeros(n, 1, dtype=torch.bool, device=dev)
                                counts[0, i] = ((p.detach() == b).reshape(n, -1) & moved).sum(1)
                                counts[1, i] = moved.sum(1)
                            steps_lost.append(counts)  # kept on the device: no synchronization per step
                    loss_sum += per_run.detach() * yb.shape[1]
                    hits += (out.detach().argmax(-1) == yb).sum(1)
                    seen += yb.shape[1]
                    steps += 1
            va_loss, va_acc, pred = evaluate()
            if track:
                record(pred)
            tr_loss, tr_acc = (loss_sum / seen).tolist(), (hits / seen).tolist()
            seconds = sw.seconds / n
            for m, h in enumerate(histories):
                h.append({"epoch": epoch, "train_loss": tr_loss[m], "train_acc": tr_acc[m],
                          "val_loss": va_loss[m].item(), "val_acc": va_acc[m].item(), "seconds": seconds,
                          "samples_per_s": seen / max(seconds, 1e-12), "step_seconds": seconds / max(steps, 1)})
                h.steps = steps * (epoch + 1)
    lost_share, by_layer, per_step = [float("nan")] * n, [{} for _ in range(n)], [[] for _ in range(n)]
    if steps_lost:
        c = torch.stack(steps_lost).cpu()  # (steps, 2, layers, M)
        tot = c.sum(0)
        for m in range(n):
            lost_share[m] = float(tot[0, :, m].sum() / tot[1, :, m].sum().clamp_min(1))
            by_layer[m] = {pn: float(tot[0, i, m] / tot[1, i, m]) for i, (pn, _) in enumerate(params)
                           if tot[1, i, m] > 0}
            per_step[m] = (c[:, 0, :, m].sum(1) / c[:, 1, :, m].sum(1).clamp_min(1)).tolist()
    net.unstack_into(models)
    opt_bytes = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                    if torch.is_tensor(v) and v.dim() > 0)
    param_bytes = sum(p.numel() * p.element_size() for _, p in params)
    return Replicates(run_label(name, mode, rounding), name, mode, rounding, seeds, histories, lost_share, by_layer,
                      per_step, (2 * param_bytes + opt_bytes) // n, flips, models, distance if track else [],
                      disagreement if track else [], seeds[0] if track else None, lost_every)
