"""Lesson 05's PyTorch runs, repeated over seeds: the panel's experiment, the learning-rate sweep of a BN network
against two plain controls (PyTorch's default initialization, and He initialization), and what gamma and beta
learn over a longer training.

A claim that noise can move is measured over several runs (``n_seeds``, seeds from
:func:`lessons_lib.seeds.replicate_seeds`) on one data split (the course seed's); every treatment sees the same run
seeds, so run i of each treatment shares its shuffling order (a paired design, :func:`lessons_lib.stats.
paired_interval`). The plain nets train all seeds at once (:func:`lessons_lib.multiseed.fit_seeds`); batch norm
does not stack, so the BN nets train one seed after another (:func:`lessons_lib.training.fit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..data import load
from ..models import he_init
from ..multiseed import fit_seeds
from ..seeds import check_seed, get_seed, replicate_seeds, seed_everything
from ..stats import Interval, mean_interval
from ..training import History, check_fit_args, fit
from ..validate import BadArgument, check_choice, check_float, check_int
from .reference import bn_mlp

TREATMENTS = ("bn", "plain", "plain_he")
LABELS = {"bn": "with BN", "plain": "no BN, PyTorch's default init", "plain_he": "no BN, He init",
          "bn_he": "with BN, He init"}
DEFAULT_LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _seed(seed: object) -> int:
    return get_seed() if seed is None else check_seed(seed)


def _net(depth: object, width: object) -> tuple[int, int]:
    """(depth, width) of the sweep's MLP, checked: depth hidden layers of width units."""
    return (check_int(depth, "depth", low=1, high=1000, fix="the number of hidden layers, e.g. 4"),
            check_int(width, "width", low=1, high=2**16, fix="units per hidden layer, e.g. 64"))


def _lrs(lrs: object) -> list[float]:
    """A non-empty list of distinct positive learning rates, as floats."""
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__") or not list(lrs):
        raise BadArgument(f"lrs={lrs!r}: must be a non-empty list of learning rates, e.g. (0.01, 0.1)")
    out = [check_float(v, f"lrs[{i}]", low=0.0, low_open=True, fix="a learning rate such as 0.03")
           for i, v in enumerate(lrs)]
    if len(set(out)) != len(out):
        raise BadArgument(f"lrs={list(lrs)!r}: holds a learning rate twice; list each once")
    return out


def match_lr(lrs: Sequence[float], lr: object) -> float:
    """The learning rate of ``lrs`` equal to ``lr`` up to float rounding (``np.float32(0.03)`` finds 0.03)."""
    v = check_float(lr, "lr", low=0.0, low_open=True)
    for cand in lrs:
        if math.isclose(cand, v, rel_tol=1e-6):
            return cand
    raise BadArgument(f"lr={lr!r}: not one of the sweep's learning rates {list(lrs)}; pick one of them")


def build(treatment: str, n_in: int, widths: Sequence[int], n_out: int, activation: str = "relu",
          affine: bool = True) -> nn.Sequential:
    """The MLP of one treatment: "bn" (Linear -> BatchNorm1d -> ReLU, default init), "plain" (Linear -> ReLU,
    PyTorch's default init), "plain_he" (Linear -> ReLU, :func:`he_init`) or "bn_he" (BN, :func:`he_init`)."""
    check_choice(treatment, "treatment", LABELS)
    model = bn_mlp(n_in, widths, n_out, batchnorm=treatment.startswith("bn"), affine=affine, activation=activation)
    return he_init(model) if treatment.endswith("_he") else model


def experiment(*, device: str = "cpu", callbacks: Sequence = (), batchnorm: bool = True, lr: float = 0.03,
               epochs: int = 8, depth: int = 4, width: int = 64, batch_size: int = 64, affine: bool = True,
               init: str = "default", activation: str = "relu", optimizer: str = "sgd", dataset: str = "digits",
               seed: int | None = None) -> History:
    """The panel's experiment: an MLP of ``depth`` hidden layers of ``width`` with or without BN
    (:func:`.reference.bn_mlp`), ``init`` "default" (PyTorch's) or "he" (:func:`he_init`), trained with
    ``optimizer`` at ``lr`` on ``dataset``. ``history.config`` records the knobs and the trained ``model``."""
    check_choice(init, "init", ("default", "he"))
    depth, width = _net(depth, width)
    check_fit_args(epochs, batch_size, lr, 0.0)
    seed = _seed(seed)
    data = load(dataset, seed=seed)
    seed_everything(seed)
    model = bn_mlp(data.n_features, [width] * depth, data.n_classes, batchnorm=batchnorm, affine=affine,
                   activation=activation)
    if init == "he":
        he_init(model)
    cfg = {"batchnorm": batchnorm, "lr": lr, "depth": depth, "width": width, "batch_size": batch_size,
           "affine": affine, "init": init, "optimizer": optimizer}
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
            callbacks=list(callbacks), seed=seed, config=cfg)
    h.config["model"] = model
    return h


def _runs(n_seeds: object) -> int:
    return check_int(n_seeds, "n_seeds", low=2, high=1000, fix="an interval needs at least 2 runs, e.g. 8")


def train_runs(treatment: str, data, seeds: Sequence[int], *, widths: Sequence[int], lr: float, epochs: int,
               batch_size: int, device: str = "cpu", callbacks: Sequence[Callback] = ()) -> list[History]:
    """One History per seed of ``treatment`` trained with SGD (momentum 0.9); ``config["model"]`` is the trained
    model. Plain nets train all seeds at once (fit_seeds, no callbacks); BN nets one after another."""
    def make() -> nn.Sequential:
        return build(treatment, data.n_features, widths, data.n_classes)

    cfg = {"treatment": treatment, "lr": lr}
    if not treatment.startswith("bn") and not callbacks:
        out = []
        for run in fit_seeds(make, data, seeds, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="sgd",
                             device=device):
            run.history.config.update(cfg, model=run.model)
            out.append(run.history)
        return out
    out = []
    for s in seeds:
        torch.manual_seed(s)  # as fit_seeds builds: run s starts from the same weights either way
        model = make()
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="sgd", device=device, seed=s,
                callbacks=list(callbacks), config=dict(cfg, seed=s))
        h.config["model"] = model
        out.append(h)
    return out


@dataclass
class SweepRow:
    """One learning rate and treatment of the sweep: best val accuracy over the runs (mean and interval), how many
    runs reached the target, and the median epochs they took."""

    lr: float
    treatment: str
    best_val_acc: Interval
    reached: int
    runs: int
    median_epochs: float | None


def _trains(h: History, target: float) -> bool:
    """Reached ``target`` val accuracy and never produced a non-finite loss."""
    return h.first_epoch_reaching("val_acc", target) is not None and all(math.isfinite(v) for v in h.val_loss)


@dataclass
class Sweep:
    """A learning-rate sweep of every treatment over the same run seeds. ``histories[(treatment, lr)]`` holds one
    History per seed (in ``seeds`` order)."""

    lrs: list[float]
    target: float
    seeds: list[int]
    epochs: int
    treatments: tuple[str, ...] = TREATMENTS
    setup: dict = field(default_factory=dict)  # what lr_sweep was given (dataset, depth, width, ...): to add runs
    histories: dict[tuple[str, float], list[History]] = field(default_factory=dict)

    def runs(self, treatment: str, lr: float) -> list[History]:
        """The Histories of ``treatment`` at ``lr`` (one per run seed); a clear error for what was not trained."""
        check_choice(treatment, "treatment", dict.fromkeys(t for t, _ in self.histories))
        key = (treatment, match_lr(self.lrs, lr))
        if key not in self.histories:
            raise BadArgument(f"{treatment!r} was not trained at lr {lr!r} in this sweep")
        return self.histories[key]

    def best_acc(self, treatment: str, lr: float) -> list[float]:
        """Each run's best val accuracy (a diverged run counts with its best before diverging)."""
        return [max(h.val_acc) for h in self.runs(treatment, lr)]

    def epochs_to_target(self, treatment: str, lr: float) -> list[int | None]:
        """Each run's 1-based epoch of first reaching ``target`` val accuracy (None: never)."""
        out = []
        for h in self.runs(treatment, lr):
            i = h.first_epoch_reaching("val_acc", self.target)
            out.append(None if i is None else i + 1)
        return out

    def n_training_lrs(self, treatment: str) -> list[int]:
        """Per run seed: at how many of the learning rates the run reached the target."""
        per_lr = [self.epochs_to_target(treatment, lr) for lr in self.lrs]
        return [sum(e[i] is not None for e in per_lr) for i in range(len(self.seeds))]

    def fastest(self, treatment: str) -> list[int]:
        """Per run seed: the fewest epochs to the target over the learning rates (the treatment at its best
        learning rate). A seed that never reaches it counts as ``epochs + 1``: "not within the budget", which
        flatters that treatment, never the other."""
        per_lr = [self.epochs_to_target(treatment, lr) for lr in self.lrs]
        return [min((e[i] if e[i] is not None else self.epochs + 1) for e in per_lr) for i in range(len(self.seeds))]

    def common_lrs(self, a: str, b: str) -> list[float]:
        """The learning rates at which every run of both treatments reached the target without diverging."""
        return [lr for lr in self.lrs
                if all(_trains(h, self.target) for t in (a, b) for h in self.histories[(t, lr)])]

    def val_loss_rises(self, treatment: str, lrs: Sequence[float]) -> list[float]:
        """Per run seed: how much the validation loss goes *up* from epoch to epoch (the sum of its rises, nats),
        averaged over ``lrs``: 0 for a loss that only falls. A measure of how unsteady training is."""
        if not lrs:
            raise ValueError("val_loss_rises needs at least one learning rate (see common_lrs)")
        per_lr = [[float(np.clip(np.diff(h.val_loss), 0, None).sum()) for h in self.histories[(treatment, lr)]]
                  for lr in lrs]
        return [float(np.mean([v[i] for v in per_lr])) for i in range(len(self.seeds))]

    def best_lr(self, treatment: str) -> float:
        """The learning rate at which ``treatment`` reaches the target in the fewest epochs on average (a run that
        never does counts ``epochs + 1``); ties go to the higher mean best accuracy."""
        def key(lr: float) -> tuple[float, float]:
            e = [v if v is not None else self.epochs + 1 for v in self.epochs_to_target(treatment, lr)]
            return float(np.mean(e)), -float(np.mean(self.best_acc(treatment, lr)))

        return min(self.lrs, key=key)

    def model(self, treatment: str, lr: float, run: int = 0) -> nn.Module:
        """The trained model of one run."""
        runs = self.runs(treatment, lr)
        return runs[check_int(run, "run", low=0, high=len(runs) - 1, fix=f"one of the {len(runs)} runs")
                    ].config["model"]

    def rows(self) -> list[SweepRow]:
        rows = []
        for lr in self.lrs:
            for t in self.treatments:
                e = [v for v in self.epochs_to_target(t, lr) if v is not None]
                rows.append(SweepRow(lr, t, mean_interval(self.best_acc(t, lr)), len(e), len(self.seeds),
                                     float(np.median(e)) if e else None))
        return rows


def lr_sweep(lrs: Sequence[float] = DEFAULT_LRS, *, n_seeds: int = 5, epochs: int = 8, depth: int = 4,
             width: int = 64, target: float = 0.9, batch_size: int = 64, dataset: str = "digits",
             treatments: Sequence[str] = TREATMENTS, device: str = "cpu", seed: int | None = None) -> Sweep:
    """Train every treatment at every learning rate (SGD, momentum 0.9), ``n_seeds`` runs each, the same run seeds
    for every treatment and learning rate; the data split is the course seed's."""
    seed, lrs, (depth, width) = _seed(seed), _lrs(lrs), _net(depth, width)
    check_fit_args(epochs, batch_size, lrs[0], 0.0)
    target = check_float(target, "target", low=0.0, high=1.0, low_open=True, fix="a val accuracy, e.g. 0.9")
    if isinstance(treatments, str) or not list(treatments):
        raise BadArgument(f"treatments={treatments!r}: must be a non-empty list of {', '.join(map(repr, LABELS))}")
    for t in treatments:
        check_choice(t, "treatments[...]", LABELS)
    data = load(dataset, seed=seed)
    sweep = Sweep(lrs=lrs, target=target, seeds=replicate_seeds(_runs(n_seeds), stream=5,
                                                                                     seed=seed),
                  epochs=epochs, treatments=tuple(treatments),
                  setup={"dataset": dataset, "depth": depth, "width": width, "batch_size": batch_size,
                         "device": device, "seed": seed})
    for lr in sweep.lrs:
        for t in sweep.treatments:
            sweep.histories[(t, lr)] = train_runs(t, data, sweep.seeds, widths=[width] * depth, lr=lr, epochs=epochs,
                                                  batch_size=batch_size, device=device)
    return sweep


@dataclass
class InitSensitivity:
    """Best val accuracy per run at one learning rate, with and without BN, each from PyTorch's default init and
    from He init (the same run seeds): how much the initialization matters with and without BN."""

    lr: float
    best_acc: dict[str, list[float]]  # treatment -> one value per run

    def change(self, batchnorm: bool) -> list[float]:
        """Per run: best accuracy from He init minus from the default init."""
        a, b = ("bn_he", "bn") if batchnorm else ("plain_he", "plain")
        return [x - y for x, y in zip(self.best_acc[a], self.best_acc[b])]


def init_sensitivity(sweep: Sweep, lr: float = 0.03) -> InitSensitivity:
    """Train the BN net from He init at ``lr`` with the sweep's run seeds and set-up (the sweep already has the
    other three treatments there) and collect the four treatments' best accuracies."""
    if not isinstance(sweep, Sweep):
        raise BadArgument(f"sweep must be the Sweep of lr_sweep, got {type(sweep).__name__}")
    lr = match_lr(sweep.lrs, lr)
    missing = [t for t in ("bn", "plain", "plain_he") if (t, lr) not in sweep.histories]
    if missing:
        raise BadArgument(f"the sweep has no runs of {missing} at lr {lr:g}: run lr_sweep with every treatment")
    st = sweep.setup
    data = load(st["dataset"], seed=st["seed"])
    if ("bn_he", lr) not in sweep.histories:
        sweep.histories[("bn_he", lr)] = train_runs("bn_he", data, sweep.seeds, widths=[st["width"]] * st["depth"],
                                                    lr=lr, epochs=sweep.epochs, batch_size=st["batch_size"],
                                                    device=st["device"])
    return InitSensitivity(lr, {t: sweep.best_acc(t, lr) for t in ("bn", "bn_he", "plain", "plain_he")})


# ----------------------------------------------------------------------------------------------
# What a trained network's gamma and beta learned, and how that changes with longer training
# ----------------------------------------------------------------------------------------------
@dataclass
class AffineParams:
    """One BatchNorm layer's learned ``gamma``, ``beta`` and the values that would undo its normalization
    exactly: ``undo_gamma`` = sqrt(running_var + eps), ``undo_beta`` = running_mean."""

    gamma: np.ndarray
    beta: np.ndarray
    undo_gamma: np.ndarray
    undo_beta: np.ndarray


def affine_parameters(model: nn.Module) -> list[AffineParams]:
    """:class:`AffineParams` of every affine BatchNorm layer of ``model``, input side first."""
    return [AffineParams(m.weight.detach().cpu().numpy().copy(), m.bias.detach().cpu().numpy().copy(),
                         np.sqrt(m.running_var.detach().cpu().numpy() + m.eps),
                         m.running_mean.detach().cpu().numpy().copy())
            for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]


@dataclass
class UndoDistance:
    """Mean |gamma - 1| and |gamma - sqrt(running_var + eps)| over all units, and the same for beta vs 0 and
    running_mean: how far training moved the affine terms, and how far they are from cancelling BN."""

    gamma_from_init: float
    gamma_from_undo: float
    beta_from_init: float
    beta_from_undo: float

    @property
    def closer_to_init(self) -> bool:
        return self.gamma_from_init < self.gamma_from_undo and self.beta_from_init < self.beta_from_undo


def undo_distance(params: list[AffineParams]) -> UndoDistance:
    g, ug = np.concatenate([p.gamma for p in params]), np.concatenate([p.undo_gamma for p in params])
    b, ub = np.concatenate([p.beta for p in params]), np.concatenate([p.undo_beta for p in params])
    return UndoDistance(float(np.mean(np.abs(g - 1))), float(np.mean(np.abs(g - ug))), float(np.mean(np.abs(b))),
                        float(np.mean(np.abs(b - ub))))


class UndoRecorder(Callback):
    """:func:`undo_distance` of the model's BN layers after every epoch of a ``fit``."""

    def __init__(self) -> None:
        self.per_epoch: list[UndoDistance] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.per_epoch.append(undo_distance(affine_parameters(state.model)))


@dataclass
class AffineOverTraining:
    """BN nets trained for ``epochs`` epochs, one run per seed: ``distances[run][epoch]`` (epoch 0 = after the
    first) and each run's History (``histories[run].train_loss`` per epoch)."""

    lr: float
    epochs: int
    seeds: list[int]
    distances: list[list[UndoDistance]]
    histories: list[History]

    def at(self, epoch: int) -> list[UndoDistance]:
        """Every run's distances after ``epoch`` epochs (1-based)."""
        epoch = check_int(epoch, "epoch", low=1, high=self.epochs, fix=f"epoch must be in 1..{self.epochs}")
        return [d[epoch - 1] for d in self.distances]

    def series(self, name: str) -> np.ndarray:
        """(runs, epochs) array of one UndoDistance field, or of "train_loss"."""
        check_choice(name, "name", ["train_loss", *(f.name for f in fields(UndoDistance))])
        if name == "train_loss":
            return np.array([h.train_loss for h in self.histories])
        return np.array([[getattr(d, name) for d in run] for run in self.distances])


def affine_over_training(*, lr: float = 0.03, epochs: int = 40, n_seeds: int = 5, depth: int = 4, width: int = 64,
                         batch_size: int = 64, dataset: str = "digits", device: str = "cpu",
                         seed: int | None = None) -> AffineOverTraining:
    """Train the BN net of the sweep (the same run seeds: its first epochs are the sweep's runs at this ``lr``)
    for ``epochs`` epochs and record after every epoch how far gamma and beta moved and how far they are from
    the values that would cancel BN."""
    seed, (depth, width) = _seed(seed), _net(depth, width)
    check_fit_args(epochs, batch_size, lr, 0.0)
    data = load(dataset, seed=seed)
    seeds = replicate_seeds(_runs(n_seeds), stream=5, seed=seed)
    recs, hists = [], []
    for s in seeds:
        rec = UndoRecorder()
        hists += train_runs("bn", data, [s], widths=[width] * depth, lr=lr, epochs=epochs, batch_size=batch_size,
                            device=device, callbacks=[rec])
        recs.append(rec.per_epoch)
    return AffineOverTraining(lr, epochs, seeds, recs, hists)
