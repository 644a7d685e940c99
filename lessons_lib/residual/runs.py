"""Lesson 06's training runs, repeated over seeds: plain vs residual nets of growing depth (with a He-initialized
plain net as the control), the degradation problem, a dead layer through training, and the small ResNet.

Every measurement that noise can move trains ``n_seeds`` runs (seeds from :func:`lessons_lib.seeds.
replicate_seeds`) on one data split (the course seed's); every treatment and depth sees the same run seeds, so run
i of each shares its initial random stream and its order of batches (a paired design, :func:`lessons_lib.stats.
paired_interval`). Plain nets train all seeds at once (:func:`lessons_lib.multiseed.fit_seeds`, on the net
flattened to ``Linear``/``ReLU`` layers: the same function and weights); residual blocks do not stack, so residual
nets train one seed after another (:func:`lessons_lib.training.fit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..data import Splits, load
from ..models import count_parameters, he_init
from ..multiseed import fit_seeds
from ..seeds import check_seed, get_seed, replicate_seeds
from ..training import History, check_fit_args, fit
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference
from .reference import MAX_BLOCKS, BlockForward, deep_mlp, small_resnet

GradientNorms = Callable[[nn.Module, torch.Tensor, torch.Tensor], Sequence[float]]
PROBE = 256  # training examples in the batch the gradient norms are measured on
TREATMENTS = ("plain", "plain_he", "residual")
LABELS = {"plain": "plain, PyTorch's default init", "plain_he": "plain, He init", "residual": "residual"}
STREAM = 6  # replicate_seeds stream of this lesson's runs


def flat_plain(model: nn.Sequential) -> nn.Sequential:
    """A plain :func:`.reference.deep_mlp` (``residual=False``) as one ``nn.Sequential`` of its own Linear and ReLU
    layers (the modules are shared, not copied): the same function, in the form ``fit_seeds`` stacks."""
    layers: list[nn.Module] = []
    for m in model:
        if isinstance(m, reference.Block):
            if m.skip or not isinstance(m.layer1, nn.Linear):
                raise ValueError("flat_plain takes a plain deep_mlp without batch norm (residual=False)")
            layers += [m.layer1, nn.ReLU(), m.layer2, nn.ReLU()]
        else:
            layers.append(m)
    return nn.Sequential(*layers)


def _seed(seed: object) -> int:
    return get_seed() if seed is None else check_seed(seed)


def check_functions(block_forward: object = None, gradient_norms: object = None) -> None:
    """Refuse a block_forward / gradient_norms that is not a function (None means the reference's)."""
    for name, fn in (("block_forward", block_forward), ("gradient_norms", gradient_norms)):
        if fn is not None and (not callable(fn) or isinstance(fn, type)):
            raise BadArgument(f"{name}={fn!r}: must be a function (yours once it passes its check) or None")


def dead_block_index(n_blocks: object, dead_block: object) -> tuple[int, int]:
    n_blocks = check_int(n_blocks, "n_blocks", low=1, high=MAX_BLOCKS, fix="a net needs a block to kill one")
    if dead_block is None:
        return n_blocks, n_blocks // 2
    return n_blocks, check_int(dead_block, "dead_block", low=0, high=n_blocks - 1,
                               fix=f"the index of one of the {n_blocks} blocks, 0 to {n_blocks - 1}")


def _depths(depths: object, name: str = "depths") -> list[int]:
    if isinstance(depths, (str, bytes)) or not hasattr(depths, "__iter__") or not list(depths):
        raise BadArgument(f"{name}={depths!r}: must be a non-empty list of block counts, e.g. (1, 4, 12)")
    out = [check_int(d, f"{name}[{i}]", low=0, high=MAX_BLOCKS) for i, d in enumerate(depths)]
    if len(set(out)) != len(out):
        raise BadArgument(f"{name}={list(depths)!r}: holds a depth twice; list each once")
    return out


def build(treatment: str, data: Splits, n_blocks: int, width: int,
          block_forward: BlockForward | None = None) -> nn.Sequential:
    """The net of one treatment: "plain" (:func:`.reference.deep_mlp` without skips, PyTorch's default init),
    "plain_he" (the same, :func:`he_init`), both flattened (:func:`flat_plain`), or "residual" (default init, its
    blocks running ``block_forward``)."""
    check_choice(treatment, "treatment", LABELS)
    if treatment == "residual":
        return deep_mlp(data.n_features, width, n_blocks, data.n_classes, block_forward=block_forward)
    model = flat_plain(deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=False))
    return he_init(model) if treatment == "plain_he" else model


def _runs(n_seeds: object) -> int:
    return check_int(n_seeds, "n_seeds", low=2, high=1000, fix="an interval needs at least 2 runs, e.g. 8")


def train_runs(treatment: str, data: Splits, seeds: Sequence[int], *, n_blocks: int, width: int = 64,
               lr: float = 0.05, epochs: int = 6, batch_size: int = 64, device: str = "cpu",
               block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None,
               callbacks: Sequence[Callback] = ()) -> list[History]:
    """One History per seed (SGD, momentum 0.9; training loss and accuracy measured in eval mode at the end of
    every epoch). ``config``: the trained ``model``, and ``norms_init`` / ``norms_final``, the per-layer gradient
    norms (``gradient_norms``, input side first) on a fixed batch of training examples before and after training.
    """
    norms_fn = reference.gradient_norms if gradient_norms is None else gradient_norms
    x, y = data.x_train[:PROBE], data.y_train[:PROBE]

    def make() -> nn.Sequential:
        return build(treatment, data, n_blocks, width, block_forward)

    def norms(model: nn.Module) -> np.ndarray:
        dev = next(model.parameters()).device
        return np.array([float(v) for v in norms_fn(model, x.to(dev), y.to(dev))])

    cfg = {"treatment": treatment, "n_blocks": n_blocks, "lr": lr}
    if treatment != "residual" and not callbacks:
        at_init = []
        for s in seeds:
            torch.manual_seed(s)  # fit_seeds builds each run the same way
            at_init.append(norms(make()))
        runs = fit_seeds(make, data, seeds, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="sgd",
                         device=device, eval_train=True)
        for run, n0 in zip(runs, at_init):
            run.history.config.update(cfg, seed=run.seed, model=run.model, norms_init=n0, norms_final=norms(run.model))
        return [r.history for r in runs]
    out = []
    for s in seeds:
        torch.manual_seed(s)
        model = make()
        n0 = norms(model)
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="sgd", device=device, seed=s,
                eval_train=True, callbacks=list(callbacks), config=dict(cfg, seed=s))
        h.config.update(model=model, norms_init=n0, norms_final=norms(model))
        out.append(h)
    return out


def _log_ratio(norms: np.ndarray) -> float:
    """log10 of the first layer's gradient norm over the last layer's (-inf when the first is 0)."""
    return math.log10(norms[0] / norms[-1]) if norms[0] > 0 else -math.inf


@dataclass
class DepthSweep:
    """Plain, He-initialized plain and residual nets of each depth (``n_blocks``), the same run seeds, budget and
    optimizer. ``histories[(treatment, n_blocks)]``: one History per seed."""

    depths: list[int]
    seeds: list[int]
    epochs: int
    lr: float
    treatments: tuple[str, ...] = TREATMENTS
    setup: dict = field(default_factory=dict)  # what depth_sweep was given: to add runs with the same set-up
    histories: dict[tuple[str, int], list[History]] = field(default_factory=dict)

    @property
    def deepest(self) -> int:
        return max(self.depths)

    def runs(self, treatment: str, n_blocks: int) -> list[History]:
        """The Histories of ``treatment`` at depth ``n_blocks``, one per run seed (a clear error if not trained)."""
        check_choice(treatment, "treatment", self.treatments)
        d = check_int(n_blocks, "n_blocks", low=0)
        if d not in self.depths:
            raise BadArgument(f"n_blocks={n_blocks!r}: not one of the sweep's depths {self.depths}")
        return self.histories[(treatment, d)]

    def final(self, metric: str, treatment: str, n_blocks: int) -> list[float]:
        """Each run's ``metric`` ("train_loss", "train_acc", "val_acc", "val_loss") after the last epoch."""
        check_choice(metric, "metric", ("train_loss", "train_acc", "val_acc", "val_loss"))
        return [getattr(h, metric)[-1] for h in self.runs(treatment, n_blocks)]

    def norms(self, treatment: str, n_blocks: int, when: str = "init") -> np.ndarray:
        """(runs, layers) gradient norms, ``when`` "init" or "final"."""
        if when not in ("init", "final"):
            raise ValueError(f"when must be 'init' or 'final', got {when!r}")
        return np.array([h.config[f"norms_{when}"] for h in self.runs(treatment, n_blocks)])

    def log_ratio(self, treatment: str, n_blocks: int, when: str = "init") -> list[float]:
        """Per run: log10(first layer's gradient norm / last layer's)."""
        return [_log_ratio(n) for n in self.norms(treatment, n_blocks, when)]


def depth_sweep(depths: Sequence[int] = (1, 2, 4, 12), *, n_seeds: int = 5, epochs: int = 6, width: int = 64,
                lr: float = 0.05, treatments: Sequence[str] = TREATMENTS, device: str = "cpu",
                dataset: str = "digits", seed: int | None = None, block_forward: BlockForward | None = None,
                gradient_norms: GradientNorms | None = None) -> DepthSweep:
    """Train every treatment at every depth, ``n_seeds`` runs each (the same run seeds throughout)."""
    seed, depths = _seed(seed), _depths(depths)
    check_fit_args(epochs, 64, lr, 0.0)
    width = check_int(width, "width", low=1, high=2**16, fix="units per layer, e.g. 64")
    if isinstance(treatments, str) or not list(treatments):
        raise BadArgument(f"treatments={treatments!r}: must be a non-empty list of {', '.join(map(repr, LABELS))}")
    for t in treatments:
        check_choice(t, "treatments[...]", LABELS)
    check_functions(block_forward, gradient_norms)
    data = load(dataset, seed=seed)
    sw = DepthSweep(depths=depths, seeds=replicate_seeds(_runs(n_seeds), stream=STREAM, seed=seed),
                    epochs=epochs, lr=lr, treatments=tuple(treatments),
                    setup={"width": width, "device": device, "dataset": dataset, "seed": seed,
                           "block_forward": block_forward, "gradient_norms": gradient_norms})
    for d in sw.depths:
        for t in sw.treatments:
            sw.histories[(t, d)] = train_runs(t, data, sw.seeds, n_blocks=d, width=width, lr=lr, epochs=epochs,
                                              device=device, block_forward=block_forward,
                                              gradient_norms=gradient_norms)
    return sw


@dataclass
class Degradation:
    """He-initialized plain nets, shallow and deep, each trained at several learning rates (the sweep's run seeds);
    ``histories[(n_blocks, lr)]``. The degradation problem (He et al. 2016): the deeper net, though it could copy
    the shallow one and add layers that pass their input through, reaches a *higher training* loss."""

    shallow: int
    deep: int
    lrs: list[float]
    histories: dict[tuple[int, float], list[History]]

    def train_loss(self, n_blocks: int, lr: float) -> list[float]:
        d = check_int(n_blocks, "n_blocks", low=0)
        v = check_float(lr, "lr", low=0.0, low_open=True)
        lr = next((x for x in self.lrs if math.isclose(x, v, rel_tol=1e-6)), v)
        if (d, lr) not in self.histories:
            raise BadArgument(f"no runs at n_blocks={n_blocks!r}, lr={v:g}: depths are {self.shallow} and "
                              f"{self.deep}, learning rates {self.lrs}")
        return [h.train_loss[-1] for h in self.histories[(d, lr)]]

    def best_lr(self, n_blocks: int) -> float:
        """The learning rate with the lowest mean final training loss at this depth (a diverged run: +inf)."""
        return min(self.lrs, key=lambda lr: float(np.mean([v if math.isfinite(v) else math.inf
                                                           for v in self.train_loss(n_blocks, lr)])))

    def best(self, n_blocks: int) -> list[float]:
        """Each run's final training loss at the depth's best learning rate."""
        return self.train_loss(n_blocks, self.best_lr(n_blocks))


def degradation(sweep: DepthSweep, lrs: Sequence[float] = (0.01, 0.02), shallow: int | None = None,
                deep: int | None = None) -> Degradation:
    """Give the He-initialized plain net of the sweep's shallowest and deepest depth a fair chance: train it also
    at ``lrs`` (the sweep's learning rate is reused), so each depth can be compared at its own best."""
    if not isinstance(sweep, DepthSweep):
        raise BadArgument(f"sweep must be the DepthSweep of depth_sweep, got {type(sweep).__name__}")
    shallow = min(sweep.depths) if shallow is None else check_int(shallow, "shallow", low=0, high=MAX_BLOCKS)
    deep = sweep.deepest if deep is None else check_int(deep, "deep", low=0, high=MAX_BLOCKS)
    if not shallow < deep:
        raise BadArgument(f"shallow={shallow}, deep={deep}: the deep net needs more blocks than the shallow one")
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
        raise BadArgument(f"lrs={lrs!r}: must be a list of learning rates, e.g. (0.01, 0.02)")
    lrs = [check_float(v, f"lrs[{i}]", low=0.0, low_open=True) for i, v in enumerate(lrs)]
    st = sweep.setup
    data = load(st["dataset"], seed=st["seed"])
    all_lrs = sorted({float(v) for v in lrs} | {sweep.lr})
    hist: dict[tuple[int, float], list[History]] = {}
    for d in (shallow, deep):
        for lr in all_lrs:
            if lr == sweep.lr and ("plain_he", d) in sweep.histories:
                hist[(d, lr)] = sweep.histories[("plain_he", d)]
            else:
                hist[(d, lr)] = train_runs("plain_he", data, sweep.seeds, n_blocks=d, width=st["width"], lr=lr,
                                           epochs=sweep.epochs, device=st["device"],
                                           gradient_norms=st["gradient_norms"])
    return Degradation(shallow, deep, all_lrs, hist)


# ----------------------------------------------------------------------------------------------
# A dead layer through training
# ----------------------------------------------------------------------------------------------
class DeadLayerWatch(Callback):
    """Kills ``model[index].layer2`` (weight and bias set to 0) before training and records its weight's norm
    before the first step and after every epoch."""

    def __init__(self, index: int):
        self.index = index
        self.norms: list[float] = []

    def _layer(self, model: nn.Module) -> nn.Module:
        return model[self.index].layer2

    def on_train_begin(self, state: TrainState) -> None:
        with torch.no_grad():
            self._layer(state.model).weight.zero_()
            self._layer(state.model).bias.zero_()
        self.norms = [float(self._layer(state.model).weight.detach().norm())]

    def on_epoch_end(self, state: TrainState) -> None:
        self.norms.append(float(self._layer(state.model).weight.detach().norm()))


@dataclass
class DeadTraining:
    """Plain and residual nets trained with one dead layer: ``weight_norm[kind]`` is (runs, epochs + 1), the dead
    layer's weight norm before training and after each epoch; ``histories[kind]`` one History per run."""

    n_blocks: int
    dead_block: int
    seeds: list[int]
    weight_norm: dict[str, np.ndarray]
    histories: dict[str, list[History]]

    def val_acc(self, kind: str) -> list[float]:
        return [h.val_acc[-1] for h in self.histories[check_choice(kind, "kind", ("plain", "residual"))]]


def dead_layer_training(n_blocks: int = 4, dead_block: int | None = None, *, n_seeds: int = 5, epochs: int = 4,
                        width: int = 64, lr: float = 0.05, device: str = "cpu", dataset: str = "digits",
                        seed: int | None = None, block_forward: BlockForward | None = None) -> DeadTraining:
    """Train a plain and a residual net (default init, the same run seeds) whose block ``dead_block`` (default:
    the middle one) starts with ``layer2`` all zero, and watch that layer: does it ever come back?"""
    seed, (n_blocks, dead_block) = _seed(seed), dead_block_index(n_blocks, dead_block)
    check_fit_args(epochs, 64, lr, 0.0)
    check_functions(block_forward)
    data = load(dataset, seed=seed)
    seeds = replicate_seeds(_runs(n_seeds), stream=STREAM, seed=seed)
    norms, hists = {}, {}
    for kind, residual in (("plain", False), ("residual", True)):
        rows, hs = [], []
        for s in seeds:
            torch.manual_seed(s)
            model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual,
                             block_forward=block_forward)
            watch = DeadLayerWatch(2 + dead_block)
            hs.append(fit(model, data, epochs=epochs, lr=lr, batch_size=64, optimizer="sgd", device=device, seed=s,
                          callbacks=[watch], config={"residual": residual, "seed": s}))
            rows.append(watch.norms)
        norms[kind], hists[kind] = np.array(rows), hs
    return DeadTraining(n_blocks, dead_block, seeds, norms, hists)


# ----------------------------------------------------------------------------------------------
# The small ResNet
# ----------------------------------------------------------------------------------------------
@dataclass
class BlockRuns:
    """The small ResNet trained with and without its shortcuts, ``n_seeds`` runs each (run i of both built after
    the same seed)."""

    residual: list[History]
    plain: list[History]

    @property
    def seeds(self) -> list[int]:
        return [h.config["seed"] for h in self.residual]


def basicblock_experiment(*, n_seeds: int = 5, epochs: int = 4, lr: float = 3e-3, channels: Sequence[int] = (16, 32),
                          blocks_per_stage: int = 1, device: str = "cpu", seed: int | None = None,
                          callbacks: Sequence = (), block_forward: BlockForward | None = None) -> BlockRuns:
    """Train :func:`.reference.small_resnet` with and without shortcuts on the 8x8 digits (Adam), ``n_seeds`` runs
    each; the config of each History records its ``params`` and its trained ``model``."""
    seed = _seed(seed)
    check_fit_args(epochs, 64, lr, 0.0)
    check_functions(block_forward)
    small_resnet((1, 8, 8), 10, channels=channels, blocks_per_stage=blocks_per_stage)  # refuses bad sizes up front
    data = load("digits", seed=seed)
    runs: dict[bool, list[History]] = {True: [], False: []}
    for s in replicate_seeds(_runs(n_seeds), stream=STREAM, seed=seed):
        for residual in (True, False):
            torch.manual_seed(s)
            model = small_resnet((1, 8, 8), data.n_classes, channels=channels, blocks_per_stage=blocks_per_stage,
                                 residual=residual, block_forward=block_forward)
            h = fit(model, data, epochs=epochs, lr=lr, batch_size=64, optimizer="adam", device=device, seed=s,
                    callbacks=list(callbacks),
                    config={"residual": residual, "params": count_parameters(model), "seed": s})
            h.config["model"] = model
            runs[residual].append(h)
    return BlockRuns(residual=runs[True], plain=runs[False])
