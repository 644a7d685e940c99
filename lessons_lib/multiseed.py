"""Several seeds in one run: train M copies of an MLP, one per seed, as one stacked model.

A claim that noise can move is measured over several seeds (:mod:`lessons_lib.stats`). Training the seeds one
after another pays M times the per-step overhead of one small run; here the M models' layers are stacked into
(M, in, out) weights and every layer is one batched matrix product (``torch.baddbmm``) over all models, each on its
own batch. Model ``m`` is exactly what :func:`lessons_lib.training.fit` trains with ``seed = seeds[m]``: built
after ``torch.manual_seed(seeds[m])``, shown the same shuffled batches (``fit``'s generator and sampler), with its
own optimizer state (Adam, AdamW and SGD are element-wise, so one optimizer over the stacked weights is M
independent ones). Losses agree with ``fit`` up to float rounding; dropout masks are drawn differently, so runs
with dropout are equivalent in distribution, not equal.

Supported: ``nn.Sequential`` of ``nn.Linear``, element-wise activations (ReLU, Tanh, Sigmoid, GELU, Identity)
and ``nn.Dropout`` (what :func:`lessons_lib.models.mlp` builds). Anything else (batch norm, convolutions) raises:
train each seed with :func:`fit` instead. (``torch.func.vmap`` over ``functional_call`` does the same for any
module, but its per-call overhead made it slower than a plain loop of ``fit`` for these small nets.)

What it saves is per-step overhead, so small nets gain most: ``benchmarks/bench_multiseed.py`` prints the ratio
to a loop of ``fit`` (8 seeds on one CPU thread, measured here: about 4x at width 32, 1.5x at width 256).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .data import Splits
from .device import pick_device
from .history import History
from .seeds import check_seed, torch_generator
from .timing import Stopwatch
from .training import batches, check_fit_args, make_optimizer
from .validate import BadArgument


def _seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise BadArgument(f"seeds={seeds!r} must be a list of run seeds, e.g. replicate_seeds(5)")
    out = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    if len(out) < 1 or len(set(out)) != len(out):
        raise BadArgument(f"seeds must be one or more distinct whole numbers, got {list(seeds)!r}")
    return out


@dataclass
class SeedRun:
    """One seed's trained model and its history."""

    seed: int
    model: nn.Module
    history: History


ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity)


class StackedMLP(nn.Module):
    """M copies of one ``nn.Sequential`` MLP with their own weights: input (M, B, in) -> logits (M, B, out)."""

    def __init__(self, models: Sequence[nn.Sequential]):
        super().__init__()
        self.n_models = len(models)
        self.layers: list[tuple[str, object]] = []
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, layer in enumerate(models[0]):
            if isinstance(layer, nn.Linear):
                w = torch.stack([m[i].weight.detach().t() for m in models])  # (M, in, out)
                b = torch.stack([m[i].bias.detach() for m in models]).unsqueeze(1)  # (M, 1, out)
                self.weights.append(nn.Parameter(w.clone()))
                self.biases.append(nn.Parameter(b.clone()))
                self.layers.append(("linear", len(self.weights) - 1))
            elif isinstance(layer, nn.Dropout):
                self.layers.append(("dropout", layer.p))
            elif isinstance(layer, ELEMENTWISE):
                self.layers.append(("act", layer))
            else:
                raise ValueError(f"fit_seeds stacks only Linear, element-wise activations and Dropout, got "
                                 f"{type(layer).__name__}: train each seed with lessons_lib.training.fit instead")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, arg in self.layers:
            if kind == "linear":
                x = torch.baddbmm(self.biases[arg], x, self.weights[arg])
            elif kind == "dropout":
                x = F.dropout(x, arg, training=self.training)
            else:
                x = arg(x)
        return x

    def unstack_into(self, models: Sequence[nn.Sequential]) -> None:
        """Copy model m's trained weights back into ``models[m]``."""
        with torch.no_grad():
            for m, model in enumerate(models):
                linears = [layer for layer in model if isinstance(layer, nn.Linear)]
                for lin, w, b in zip(linears, self.weights, self.biases):
                    lin.weight.copy_(w[m].t())
                    lin.bias.copy_(b[m, 0])


@dataclass(frozen=True)
class StackedEpoch:
    """One epoch of M stacked models: mean training loss and accuracy per model, shape (M,); the steps taken and
    the examples each model saw."""

    loss: torch.Tensor
    acc: torch.Tensor
    steps: int
    seen: int


def train_stacked_epoch(net: StackedMLP, opt: torch.optim.Optimizer, loaders: Sequence[Iterable]) -> StackedEpoch:
    """One epoch of ``net``'s M models, loader m feeding model m (each yields ``(x, y)`` batches of equal size
    across the loaders): each model steps on the gradient of its own mean loss, as M separate runs would."""
    if len(loaders) != net.n_models:
        raise BadArgument(f"loaders: got {len(loaders)} for {net.n_models} stacked models: give one per model")
    net.train()
    dev = next(net.parameters()).device
    loss_sum = torch.zeros(net.n_models, device=dev)
    hits = torch.zeros(net.n_models, device=dev)
    seen = steps = 0
    for batch in zip(*loaders):
        xb = torch.stack([b[0] for b in batch]).to(dev)  # (M, B, in): each model its own batch
        yb = torch.stack([b[1] for b in batch]).to(dev)
        out = net(xb)
        per_model = F.cross_entropy(out.transpose(1, 2), yb, reduction="none").mean(1)
        opt.zero_grad(set_to_none=True)
        per_model.sum().backward()  # each model's gradient is its own mean loss's
        opt.step()
        loss_sum += per_model.detach() * yb.shape[1]
        hits += (out.detach().argmax(-1) == yb).sum(1)
        seen += yb.shape[1]
        steps += 1
    if steps == 0:
        raise BadArgument("train_stacked_epoch got empty loaders: there is no batch to train on")
    return StackedEpoch(loss_sum / seen, hits / seen, steps, seen)


def fit_seeds(
    build: Callable[[], nn.Module],
    data: Splits,
    seeds: Sequence[int],
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    eval_train: bool = False,
) -> list[SeedRun]:
    """Train ``build()`` once per seed, all seeds at once; returns one :class:`SeedRun` per seed (in order).

    ``build`` makes a fresh ``nn.Sequential`` MLP from torch's global generator (it is called after
    ``torch.manual_seed(s)``). ``seconds`` in each History is the epoch's time for all M models, divided by M.
    """
    seeds = _seeds(seeds)
    if not callable(build):
        raise BadArgument(f"build={build!r} must be a function that returns a fresh model, e.g. "
                          "lambda: mlp(data.n_features, [64], data.n_classes)")
    epochs, batch_size, lr, weight_decay = check_fit_args(epochs, batch_size, lr, weight_decay)
    dev = pick_device(device)  # a torch.device too: a missing GPU gets the course's message
    models = []
    for s in seeds:
        torch.manual_seed(s)
        model = build()
        if not isinstance(model, nn.Sequential):
            raise ValueError(f"fit_seeds needs an nn.Sequential MLP (lessons_lib.models.mlp), "
                             f"got {type(model).__name__}")
        models.append(model.to(dev))
    net = StackedMLP(models).to(dev)
    d = data.to(dev)
    n_models = len(seeds)
    opt = make_optimizer(optimizer, net.parameters(), lr, weight_decay)
    loaders = [batches(d.x_train, d.y_train, batch_size, shuffle=True, generator=torch_generator(s, stream=2))
               for s in seeds]
    histories = [History(config={"seed": s, "epochs": epochs, "lr": lr, "batch_size": batch_size}, device=str(dev))
                 for s in seeds]
    torch.manual_seed(seeds[0] + 17)  # dropout masks: reproducible per seed list

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was = net.training
        net.eval()
        losses, correct = torch.zeros(n_models, device=dev), torch.zeros(n_models, device=dev)
        for i in range(0, len(x), 4096):
            xb, yb = x[i:i + 4096], y[i:i + 4096]
            out = net(xb.expand(n_models, -1, -1))  # (M, n, classes)
            losses += F.cross_entropy(out.transpose(1, 2), yb.expand(n_models, -1), reduction="none").sum(1)
            correct += (out.argmax(-1) == yb).sum(1)
        net.train(was)
        return losses / len(x), correct / len(x)

    for epoch in range(epochs):
        net.train()
        with Stopwatch(dev) as sw:
            ep = train_stacked_epoch(net, opt, loaders)
        steps, seen = ep.steps, ep.seen
        if eval_train:
            tr_loss, tr_acc = evaluate(d.x_train, d.y_train)
        else:
            tr_loss, tr_acc = ep.loss, ep.acc
        va_loss, va_acc = evaluate(d.x_val, d.y_val)
        seconds = sw.seconds / n_models
        for m, h in enumerate(histories):
            h.append({"epoch": epoch, "train_loss": tr_loss[m].item(), "train_acc": tr_acc[m].item(),
                      "val_loss": va_loss[m].item(), "val_acc": va_acc[m].item(), "seconds": seconds,
                      "samples_per_s": seen / max(seconds, 1e-12), "step_seconds": seconds / max(steps, 1)})
            h.steps = steps * (epoch + 1)
    net.unstack_into(models)
    return [SeedRun(s, model, h) for s, model, h in zip(seeds, models, histories)]
