"""Lesson 05's eval-mode pitfalls (a trained BN model predicted the right way and the wrong ways, over several
runs) and the cost of batch norm per training step. Re-exported by :mod:`.lab`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Splits
from ..device import pick_device
from ..seeds import check_seed, get_seed, seed_everything
from ..stats import Spread, median_range
from ..timing import time_it
from ..training import evaluate
from ..validate import BadArgument, check_int
from .reference import bn_mlp
from .runs import Sweep


@dataclass
class Pitfalls:
    """A trained BN model's validation accuracy predicted the right way and the wrong ways.

    ``eval_acc``: model.eval() (right). ``train_mode_acc[bs]``: forgot model.eval(), batches of ``bs``.
    ``flip_fraction_bs8``: share of train-mode predictions that change when the same samples sit in other
    batches of 8. ``buffer_drift``: how far running_mean moves under one forgotten-eval forward pass of shifted
    inputs. ``batch1_error``: PyTorch's message for a batch of 1 in train mode (None if it ran).
    ``batch1_eval_acc``: one example at a time in eval mode (fine)."""

    eval_acc: float
    train_mode_acc: dict[int, float]
    flip_fraction_bs8: float
    buffer_drift: float
    batch1_error: str | None
    batch1_eval_acc: float


@torch.no_grad()
def _accuracy_in_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                         generator: torch.Generator) -> float:
    """Train-mode accuracy when predicting ``x`` in shuffled batches of ``batch_size``."""
    model.train()
    idx = torch.randperm(len(x), generator=generator).to(x.device)
    correct = 0
    for i in range(0, len(x), batch_size):
        j = idx[i : i + batch_size]
        if len(j) < 2:  # a lone last sample cannot be batch-normalized in train mode: borrow a neighbour
            j = idx[i - 1 : i + batch_size]
            correct += int((model(x[j]).argmax(1)[1:] == y[j][1:]).sum())
        else:
            correct += int((model(x[j]).argmax(1) == y[j]).sum())
    return correct / len(x)


def eval_pitfalls(model: nn.Module, data: Splits, batch_sizes: Sequence[int] = (256, 32, 8, 2),
                  seed: int | None = None) -> Pitfalls:
    """Measure the eval-mode pitfalls of a trained BN model on the validation set; the model (weights, running
    statistics, mode) is restored afterwards."""
    seed = get_seed() if seed is None else check_seed(seed)
    if not isinstance(model, nn.Module) or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                   for m in model.modules()):
        raise BadArgument(f"model must be a trained network with BatchNorm layers, got {type(model).__name__}: "
                          "e.g. sweep.model('bn', 0.03)")
    if not isinstance(data, Splits):
        raise BadArgument(f"data must be the Splits the model trained on (lessons_lib.data.load), got "
                          f"{type(data).__name__}")
    if isinstance(batch_sizes, (str, bytes)) or not hasattr(batch_sizes, "__iter__") or not list(batch_sizes):
        raise BadArgument(f"batch_sizes={batch_sizes!r}: must be a non-empty list of batch sizes >= 2, e.g. (32, 8)")
    batch_sizes = [check_int(b, f"batch_sizes[{i}]", low=2, fix="train mode cannot normalize a batch of 1")
                   for i, b in enumerate(batch_sizes)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was = model.training

    def restore() -> None:
        model.load_state_dict(saved)

    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            x, y = data.x_val.to(dev), data.y_val.to(dev)
            eval_acc = evaluate(model, x, y)[1]
            train_acc = {}
            for bs in batch_sizes:
                train_acc[int(bs)] = _accuracy_in_batches(model, x, y, int(bs),
                                                          torch.Generator().manual_seed(seed * 7919 + bs))
                restore()
            model.train()
            preds = []  # the same samples in two different batchings of 8, train mode
            for s in (1, 2):
                idx = torch.randperm(len(x) - len(x) % 8, generator=torch.Generator().manual_seed(seed * 104729 + s))
                p = torch.empty(len(idx), dtype=torch.int64, device=dev)
                for i in range(0, len(idx), 8):
                    j = idx[i : i + 8].to(dev)
                    p[j] = model(x[j]).argmax(1)
                preds.append(p)
            restore()
            bn0 = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
            before = bn0.running_mean.clone()
            model(x + 1.0)  # a forgotten model.eval() on shifted inputs: the running statistics are overwritten
            drift = float((bn0.running_mean - before).abs().max())
            restore()
            try:
                model(x[:1])
                batch1_error = None
            except ValueError as e:
                batch1_error = str(e)
            restore()
            model.eval()
            batch1 = sum(int(model(x[i : i + 1]).argmax(1).item() == int(y[i])) for i in range(len(x))) / len(x)
        return Pitfalls(eval_acc, train_acc, float((preds[0] != preds[1]).float().mean()), drift, batch1_error, batch1)
    finally:
        restore()
        model.train(was)


def pitfalls_over_runs(sweep: Sweep, data: Splits, lr: float = 0.03, seed: int | None = None) -> list[Pitfalls]:
    """:func:`eval_pitfalls` of every BN run of ``sweep`` at ``lr`` (one per run seed, each model restored)."""
    if not isinstance(sweep, Sweep):
        raise BadArgument(f"sweep must be the Sweep of lr_sweep, got {type(sweep).__name__}")
    return [eval_pitfalls(h.config["model"], data, seed=seed) for h in sweep.runs("bn", lr)]


@dataclass
class StepCost:
    """Median seconds per training step of the MLP without and with BN on ``device``, and the ratio with / without
    of each interleaved round (``round_ratios``: its spread says how much the machine's load moved the ratio)."""

    without_bn: float
    with_bn: float
    device: str
    round_ratios: list[float]

    @property
    def ratio(self) -> float:
        return self.with_bn / self.without_bn

    def ratio_spread(self) -> Spread:
        return median_range(self.round_ratios)


def bn_step_cost(device: str = "cpu", *, depth: int = 4, width: int = 256, batch_size: int = 128, rounds: int = 5,
                 repeats: int = 6, seed: int | None = None) -> StepCost:
    """Median seconds per training step (forward, backward, SGD step) of the MLP without and with BN, timed
    with :func:`lessons_lib.timing.time_it` (device synchronized); the two models alternate over ``rounds`` so
    that a machine busy with other work slows both alike."""
    dev = pick_device(device)
    seed = get_seed() if seed is None else check_seed(seed)
    depth, width, rounds, repeats = (check_int(v, k, low=1, high=2**16) for k, v in
                                     (("depth", depth), ("width", width), ("rounds", rounds), ("repeats", repeats)))
    batch_size = check_int(batch_size, "batch_size", low=2, high=2**16, fix="BN needs a batch of 2 or more")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 40, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    steps = {}
    for bn in (False, True):
        seed_everything(seed)
        model = bn_mlp(40, [width] * depth, 10, batchnorm=bn).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        steps[bn] = step
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    for r in range(rounds):
        now = {}
        for bn in (False, True) if r % 2 == 0 else (True, False):
            now[bn] = time_it(steps[bn], device=dev, warmup=2, repeats=repeats).times
            times[bn] += now[bn]
        ratios.append(statistics.median(now[True]) / statistics.median(now[False]))
    return StepCost(statistics.median(times[False]), statistics.median(times[True]), str(dev), ratios)
