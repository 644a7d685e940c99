"""Lesson 01 · the apparatus: the polynomial and width sweeps, the random-label runs, the panel, the claims table
and the figures. The from-scratch pieces (the least-squares fit, random labels) are in ``reference.py``; every
sweep takes the learner's version as an argument.

Seed 004: "Models with high capacity tend to overfit; models with low capacity tend to underfit."
Representational capacity is what a model could approximate in theory; effective capacity is what it reaches in
practice with a given learning algorithm and data. The experiment of Zhang et al. (2017) makes the second concrete:
trained by minibatch gradient descent, the same network that generalizes on true labels also memorizes shuffled
training labels, which no model can generalize: the optimizer finds the memorizing solution.

Every claim that noise can move is measured over several seeds (:func:`lessons_lib.seeds.replicate_seeds`) and
judged on its 95% interval (:mod:`lessons_lib.stats`); the width sweep trains its seeds as one stacked model
(:func:`lessons_lib.multiseed.fit_seeds`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits, load
from ..models import count_parameters, mlp
from ..multiseed import fit_seeds
from ..seeds import numpy_rng, replicate_seeds, seed_everything
from ..stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Interval, mean_interval, paired_interval, verdict
from ..training import History, fit
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference

CHANCE = 0.1  # ten classes
FEATURES = {"digits": 64, "mnist1d": 40}
N_SEEDS = 4  # runs per measurement by default (the size knob: more seeds, narrower intervals)
WIDTHS = (2, 8, 32, 128, 256)
Relabel = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # random_labels(y, rng) -> new labels
Fit = Callable[..., tuple[np.ndarray, float, float]]  # fit_polynomial(x, y, x_val, y_val, degree)


def _check_function(fn: object, name: str, signature: str) -> None:
    """``fn`` must be a function taking as many positional arguments as ``signature`` shows."""
    if isinstance(fn, type) or not callable(fn):
        raise BadArgument(f"{name}={fn!r:.60}: must be a function {signature} (yours or the reference's), passed "
                          "itself, not called")
    n_args = signature.split("(")[1].split(")")[0].count(",") + 1
    try:
        params = inspect.signature(fn)
        params.bind(*range(n_args))
    except TypeError:
        raise BadArgument(f"{name} must be a function {signature}; yours takes {params}") from None
    except ValueError:  # no signature to read (a builtin)
        pass


def _check_seeds(n: object) -> int:
    return check_int(n, "n_seeds", low=2, fix="the number of runs per setting; an interval needs at least 2")


def with_random_train_labels(data: Splits, relabel: Relabel, seed: int) -> Splits:
    """``data`` with its training labels replaced by ``relabel(y_train, rng)``; validation and test keep their
    true labels, so they measure what the memorized labels say about real inputs (Zhang et al. 2017). What
    ``relabel`` returns must be one integer class per training example."""
    _check_function(relabel, "relabel", "random_labels(y, rng) -> labels")
    y_true = data.y_train.numpy().copy()
    y = relabel(y_true.copy(), numpy_rng(seed, stream=7))
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if (arr.shape != y_true.shape or not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0
            or arr.max(initial=0) >= data.n_classes):
        raise BadArgument(f"relabel returned {y!r:.60}: it must return one integer class in [0, {data.n_classes}) "
                          f"per training example, shape {y_true.shape} (got shape {arr.shape}, dtype {arr.dtype})")
    return replace(data, name=data.name + "+random-labels", y_train=torch.as_tensor(arr, dtype=torch.int64))


def experiment(
    *,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    dataset: str = "mnist1d",
    width: int = 256,
    depth: int = 2,
    labels: str = "true",
    epochs: int = 40,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int | None = None,
    relabel: Relabel = reference.random_labels,
) -> History:
    """Train an MLP of ``depth`` hidden layers of ``width`` units on ``dataset`` with ``labels`` "true" or
    "random" (training labels from ``relabel``); train accuracy is measured in eval mode on the whole training
    set (``eval_train``)."""
    labels = check_choice(labels, "labels", ("true", "random"))
    width = check_int(width, "width", low=1, fix="units per hidden layer, e.g. 256")
    depth = check_int(depth, "depth", low=0, fix="the number of hidden layers, e.g. 2")
    seed = seed_everything(seed)
    data = load(dataset, seed=seed)
    if labels == "random":
        data = with_random_train_labels(data, relabel, seed)
    model = mlp(data.n_features, [width] * depth, data.n_classes)
    return fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks,
               seed=seed, eval_train=True, config={"width": width, "depth": depth, "labels": labels})




@dataclass
class SweepRow:
    """One width of the sweep: the final accuracies of every seed (same seeds at every width)."""

    width: int
    params: int
    histories: list[History]  # one per seed

    @property
    def train_accs(self) -> list[float]:
        """Final training accuracy per seed (eval mode, the whole training set)."""
        return [h.train_acc[-1] for h in self.histories]

    @property
    def val_accs(self) -> list[float]:
        return [h.val_acc[-1] for h in self.histories]

    @property
    def gaps(self) -> list[float]:
        """train accuracy - validation accuracy per seed (the overfitting gap)."""
        return [t - v for t, v in zip(self.train_accs, self.val_accs)]

    @property
    def train_acc(self) -> float:
        """Mean over the seeds (likewise ``val_acc`` and ``gap``)."""
        return float(np.mean(self.train_accs))

    @property
    def val_acc(self) -> float:
        return float(np.mean(self.val_accs))

    @property
    def gap(self) -> float:
        return float(np.mean(self.gaps))


def width_sweep(
    widths: Sequence[int] = WIDTHS,
    *,
    n_seeds: int = N_SEEDS,
    dataset: str = "mnist1d",
    depth: int = 2,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int | None = None,
) -> list[SweepRow]:
    """Train MLPs of ``depth`` hidden layers of each width for ``epochs``, ``n_seeds`` seeds per width (the same
    seeds at every width, all seeds of a width in one stacked model); final train accuracy in eval mode over the
    whole training set. The data split comes from the course seed (``seed``: override it)."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (Sequence, np.ndarray)) or len(widths) == 0:
        raise BadArgument(f"widths={widths!r:.60}: must be a non-empty list of hidden-layer widths, e.g. (8, 32, 128)")
    widths = [check_int(w, f"widths[{i}]", low=1) for i, w in enumerate(widths)]
    n_seeds, depth = _check_seeds(n_seeds), check_int(depth, "depth", low=0)
    dataset = check_choice(dataset, "dataset", FEATURES)
    data = load(dataset, seed=seed)
    seeds = replicate_seeds(n_seeds, stream=1, seed=seed)
    rows = []
    for w in widths:
        runs = fit_seeds(lambda w=w: mlp(data.n_features, [w] * depth, data.n_classes), data, seeds, epochs=epochs,
                         lr=lr, batch_size=batch_size, device=device, eval_train=True)
        n_params = count_parameters(mlp(FEATURES[dataset], [w] * depth, 10))
        rows.append(SweepRow(w, n_params, [r.history for r in runs]))
    return rows


@dataclass
class Memorization:
    """The same network trained on the true labels and on random ones, one pair per seed (run ``i`` of both used
    ``seeds[i]``: the same split, initial weights and batch order; the random run its own shuffle of the labels).
    Validation labels stay true."""

    true: list[History]
    random: list[History]
    seeds: list[int]
    n_classes: int = 10

    def items(self) -> Iterator[tuple[str, list[History]]]:
        """("true", histories), ("random", histories)."""
        yield "true", self.true
        yield "random", self.random

    def epochs_to(self, labels: str, target: float = 0.9) -> list[int]:
        """Per seed, the first epoch (0-based) whose training accuracy reaches ``target``; a run that never does
        counts as its number of epochs (a lower bound: it would have needed at least that many)."""
        return [h.first_epoch_reaching("train_acc", target) if h.first_epoch_reaching("train_acc", target) is not None
                else len(h) for h in getattr(self, labels)]


def random_labels_experiment(
    *, n_seeds: int = N_SEEDS, dataset: str = "digits", width: int = 512, depth: int = 2, epochs: int = 40,
    lr: float = 2e-3, device: str = "cpu", seed: int | None = None, relabel: Relabel = reference.random_labels,
) -> Memorization:
    """For each of ``n_seeds`` seeds, the same network trained on the true labels and on training labels permuted
    by ``relabel`` (a new permutation per seed: the shuffle is part of what varies between runs)."""
    n_seeds = _check_seeds(n_seeds)
    _check_function(relabel, "relabel", "random_labels(y, rng) -> labels")
    seeds = replicate_seeds(n_seeds, stream=2, seed=seed)
    runs = {lab: [experiment(dataset=dataset, width=width, depth=depth, labels=lab, epochs=epochs, lr=lr,
                             device=device, seed=s, relabel=relabel) for s in seeds]
            for lab in ("true", "random")}
    return Memorization(runs["true"], runs["random"], seeds)


@dataclass
class PolySweep:
    """Polynomial fits of growing degree to the same training points: coefficients and both errors per degree."""

    degrees: np.ndarray
    coefs: list[np.ndarray]  # coefs[i][k] multiplies x**k for degree degrees[i]
    train_mse: np.ndarray
    val_mse: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    noise: float

    @property
    def best_degree(self) -> int:
        return int(self.degrees[int(np.argmin(self.val_mse))])


def _poly_target(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x)


def polynomial_sweep(
    degrees: Sequence[int] = tuple(range(0, 13)), *, n_train: int = 14, n_val: int = 500, noise: float = 0.25,
    seed: int | None = None, fit: Fit = reference.fit_polynomial,
) -> PolySweep:
    """Least-squares polynomial fits (``fit``: the learner's or the reference) of ``sin(pi x)`` + Gaussian noise.

    Capacity grows with the degree: the training error falls monotonically, the validation error
    falls (underfitting ends) and then rises (overfitting)."""
    if isinstance(degrees, (str, bytes)) or not isinstance(degrees, (Sequence, np.ndarray)) or len(degrees) == 0:
        raise BadArgument(f"degrees={degrees!r:.60}: must be a non-empty list of degrees, e.g. range(13)")
    degrees = [check_int(d, f"degrees[{i}]", low=0) for i, d in enumerate(degrees)]
    n_train = check_int(n_train, "n_train", low=2, fix="the number of training points, e.g. 14")
    n_val = check_int(n_val, "n_val", low=1, fix="the number of validation points, e.g. 500")
    noise = check_float(noise, "noise", low=0.0, fix="the standard deviation of the noise on y, e.g. 0.25")
    _check_function(fit, "fit", "fit_polynomial(x_train, y_train, x_val, y_val, degree)")
    rng = numpy_rng(seed, stream=11)
    x = np.sort(rng.uniform(-1, 1, n_train))
    y = _poly_target(x) + noise * rng.standard_normal(n_train)
    xv = rng.uniform(-1, 1, n_val)
    yv = _poly_target(xv) + noise * rng.standard_normal(n_val)
    fits = [_fitted(fit(x, y, xv, yv, d), d) for d in degrees]
    return PolySweep(np.asarray(degrees), [np.asarray(f[0], dtype=float) for f in fits],
                     np.array([f[1] for f in fits], dtype=float), np.array([f[2] for f in fits], dtype=float),
                     x, y, noise)


def _fitted(res: object, degree: int) -> tuple[np.ndarray, float, float]:
    """``fit``'s answer checked: (coef of degree + 1 numbers, train MSE, val MSE)."""
    try:
        coef, tr, va = res  # type: ignore[misc]
        coef, tr, va = np.asarray(coef, dtype=float), float(tr), float(va)
    except (TypeError, ValueError):
        raise BadArgument(f"fit returned {res!r:.60}: it must return (coef, train_mse, val_mse), as "
                          "reference.fit_polynomial does") from None
    if coef.shape != (degree + 1,):
        raise BadArgument(f"fit returned {len(coef.reshape(-1))} coefficients for degree {degree}: it must return "
                          f"degree + 1 = {degree + 1}, lowest power first")
    return coef, tr, va


def polynomial_sweeps(n: int = 20, *, seed: int | None = None, fit: Fit = reference.fit_polynomial,
                      **kwargs) -> list[PolySweep]:
    """``n`` independent draws of the training and validation points (replicate seeds of the course seed), each
    swept over the degrees with ``fit`` (``kwargs``: those of :func:`polynomial_sweep`)."""
    n = check_int(n, "n", low=2, fix="the number of independent draws; an interval needs at least 2")
    return [polynomial_sweep(seed=s, fit=fit, **kwargs) for s in replicate_seeds(n, stream=3, seed=seed)]


def poly_fit_curve(sweep: PolySweep, degree: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(x, fitted y) of the sweep's degree-``degree`` fit, for plotting."""
    xs = np.linspace(-1, 1, n)
    return xs, reference.predict(sweep.coefs[list(sweep.degrees).index(degree)], xs)


def first_epoch_reaching(h: History, target: float) -> int | None:
    return h.first_epoch_reaching("train_acc", target)


def all_of(*verdicts: str) -> str:
    """One verdict for a claim made of parts: holds when every part holds, does not hold when any part does not."""
    return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else HOLDS if set(verdicts) == {HOLDS} else INCONCLUSIVE


def _pts(i: Interval) -> str:
    return i.format(".1f", scale=100, unit=" pts")


def _ratio(i: Interval) -> str:
    """An interval of log10 ratios, as a geometric-mean ratio with its interval."""
    return f"{10 ** i.mean:.3g}x (95% CI {10 ** i.low:.3g}–{10 ** i.high:.3g}x, {i.n} runs)"


GAP = 0.10  # underfitting / overfitting: a difference of more than 10 points of accuracy
MEMORIZED = 0.9  # "memorizes": final training accuracy above 90% on random labels
NEAR_CHANCE = 0.10  # "at chance": validation accuracy within 10 points of 1 in 10 (true labels give ~0.97)
SLOWER = 5  # "slower to fit": more than 5 more epochs to reach 90% training accuracy
MIDDLE_DEGREE = 3  # the bottom of the polynomial "U", fixed before looking (sin(pi x) is close to a cubic)


def claims(sweep: list[SweepRow], rand: Memorization, polys: list[PolySweep]) -> Claims:
    """The claims table of lesson 01: every verdict from a 95% interval over this run's seeds (paired where two
    treatments share seeds), against the threshold the claim states."""
    c = Claims("01 capacity")
    small, wide = sweep[0], sweep[-1]
    n = len(small.histories)
    under = paired_interval(wide.train_accs, small.train_accs)
    c.add(f"Models with low capacity tend to underfit: width {small.width} fits the training set more than "
          f"{GAP * 100:.0f} points worse than width {wide.width}", "seed 004",
          f"train acc, width {wide.width} − width {small.width} (same seeds): {_pts(under)}; width {small.width} "
          f"reaches {small.train_acc:.3f} train, {small.val_acc:.3f} val (mean of {n})", verdict(under, GAP))
    over = paired_interval(wide.gaps, small.gaps)
    c.add(f"Models with high capacity tend to overfit: the train − val gap at width {wide.width} exceeds width "
          f"{small.width}'s by more than {GAP * 100:.0f} points", "seed 004",
          f"gap difference (same seeds): {_pts(over)}; gap at width {wide.width}: {_pts(mean_interval(wide.gaps))}",
          verdict(over, GAP))
    mem = mean_interval([h.train_acc[-1] for h in rand.random])
    epochs = len(rand.random[0])
    c.add(f"Effective capacity: trained by minibatch gradient descent (Adam), the network memorizes random labels "
          f"(final train acc above {MEMORIZED:.0%})", "seed 004 (effective capacity); Zhang et al. 2017",
          f"train acc on random labels after {epochs} epochs: {mem.format('.3f')}", verdict(mem, MEMORIZED))
    val = mean_interval([h.val_acc[-1] for h in rand.random])
    c.add(f"…yet cannot generalize them: validation accuracy stays within {NEAR_CHANCE * 100:.0f} points of chance "
          f"({CHANCE:.0%})", "Zhang et al. 2017",
          f"val acc of the random-label runs: {val.format('.3f')}; of the true-label runs: "
          f"{mean_interval([h.val_acc[-1] for h in rand.true]).format('.3f')}",
          all_of(verdict(val, CHANCE - NEAR_CHANCE, "above"), verdict(val, CHANCE + NEAR_CHANCE, "below")))
    slow = paired_interval(rand.epochs_to("random"), rand.epochs_to("true"))
    c.add(f"Random labels take longer to fit than true ones: more than {SLOWER} more epochs to 90% train accuracy",
          "Zhang et al. 2017",
          f"epochs to 90%, random − true (same seeds; a run that never gets there counts its {epochs} epochs): "
          f"{slow.format('.1f')}", verdict(slow, SLOWER))
    degrees = list(polys[0].degrees)
    mid, lo, hi = degrees.index(MIDDLE_DEGREE), 0, len(degrees) - 1
    logs = [np.log10(p.val_mse) for p in polys]
    left = mean_interval([v[lo] - v[mid] for v in logs])
    right = mean_interval([v[hi] - v[mid] for v in logs])
    c.add(f"Validation error is U-shaped in capacity: degree {MIDDLE_DEGREE} beats both degree {degrees[lo]} and "
          f"degree {degrees[hi]}", "lesson",
          f"val MSE, degree {degrees[lo]} / degree {MIDDLE_DEGREE}: {_ratio(left)}; degree {degrees[hi]} / degree "
          f"{MIDDLE_DEGREE}: {_ratio(right)} (independent draws of {len(polys[0].x_train)} points)",
          all_of(verdict(left, 0.0), verdict(right, 0.0)))
    return c


# --- figures -----------------------------------------------------------------------------------
def _band(ax, x, runs, color: str, label: str, ls: str = "-", marker: str | None = None, errorbars: bool = False):
    """Mean over the runs (rows of ``runs``) with its 95% interval per point: a shaded band, or error bars."""
    runs = np.asarray(runs, dtype=float)
    mean = runs.mean(0)
    if len(runs) > 1:
        cis = [mean_interval(col) for col in runs.T]
        low, high = np.array([i.low for i in cis]), np.array([i.high for i in cis])
    else:
        low = high = mean
    if errorbars:
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], color=color, ls=ls, marker=marker, capsize=3,
                    label=label)
    else:
        ax.plot(x, mean, color=color, ls=ls, marker=marker, label=label)
        ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)


def plot_width_sweep(sweep: list[SweepRow]):
    """Left: final train/val accuracy vs width (mean and 95% interval over the seeds). Right: validation-loss
    curves per width (mean, with the 95% interval shaded)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    w = [r.width for r in sweep]
    n = len(sweep[0].histories)
    _band(a, w, np.array([r.train_accs for r in sweep]).T, "C0", "train", marker="o", errorbars=True)
    _band(a, w, np.array([r.val_accs for r in sweep]).T, "C1", "validation", marker="s", errorbars=True)
    a.set(xscale="log", xlabel="hidden width (2 layers)", ylabel="accuracy",
          title=f"final accuracy vs width ({n} seeds, 95% CI)")
    a.set_xticks(w, [str(x) for x in w])
    a.minorticks_off()
    a.axhline(CHANCE, color="gray", ls=":", label="chance")
    a.legend(fontsize=8)
    for k, r in enumerate(sweep):
        _band(b, r.histories[0].epoch, [h.val_loss for h in r.histories], f"C{k}", f"width {r.width}")
    b.set(xlabel="epoch", ylabel="validation loss", title=f"validation loss while training ({n} seeds, 95% CI)")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_random_labels(rand: Memorization):
    """Train and validation accuracy per epoch, true vs random labels (mean over the seeds, 95% interval shaded)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (lab, hs), color in zip(rand.items(), ("C0", "C3")):
        _band(ax, hs[0].epoch, [h.train_acc for h in hs], color, f"{lab} labels: train")
        _band(ax, hs[0].epoch, [h.val_acc for h in hs], color, f"{lab} labels: validation", ls="--")
    ax.axhline(CHANCE, color="gray", ls=":", label="chance")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02),
           title=f"memorizing random labels ({len(rand.seeds)} seeds, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_polynomial(poly: PolySweep, polys: Sequence[PolySweep] = (), show_degrees: Sequence[int] = (1, 3, 12)):
    """Left: fits of a few degrees to ``poly``'s points. Right: train / validation MSE vs degree (log scale) of
    ``poly`` (markers) and, over the independent draws ``polys``, the geometric mean with its 95% interval."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = np.linspace(-1, 1, 200)
    a.plot(xs, _poly_target(xs), color="gray", lw=3, alpha=0.4, label="true function")
    a.plot(poly.x_train, poly.y_train, "ko", label="training points")
    for d in show_degrees:
        x, y = poly_fit_curve(poly, d)
        a.plot(x, y, label=f"degree {d}")
    a.set(ylim=(-2, 2), xlabel="x", ylabel="y", title="fits of growing degree (this draw)")
    a.legend(fontsize=8)
    b.plot(poly.degrees, poly.train_mse, "o", color="C0", ms=4, label="train (this draw)")
    b.plot(poly.degrees, poly.val_mse, "s", color="C1", ms=4, label="validation (this draw)")
    if len(polys) > 1:
        for what, color in (("train", "C0"), ("val", "C1")):
            logs = np.log10([getattr(p, f"{what}_mse") for p in polys])
            cis = [mean_interval(col) for col in logs.T]
            b.plot(poly.degrees, [10 ** i.mean for i in cis], color=color,
                   label=f"{what}: {len(polys)} draws, geometric mean")
            b.fill_between(poly.degrees, [10 ** i.low for i in cis], [10 ** i.high for i in cis], color=color,
                           alpha=0.2, lw=0)
    b.axvline(poly.best_degree, color="gray", ls=":", label=f"best for this draw: degree {poly.best_degree}")
    b.set(yscale="log", xlabel="polynomial degree (capacity)", ylabel="mean squared error", title="error vs capacity")
    b.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


def make_panel(relabel: Relabel = reference.random_labels):
    """The lesson's live panel: width, depth, true/random labels (random ones from ``relabel``), epochs."""
    _check_function(relabel, "relabel", "random_labels(y, rng) -> labels")
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "70px"}
    knobs = {
        "width": w.SelectionSlider(options=[2, 8, 32, 128, 512, 1024], value=128, description="width", style=style),
        "depth": w.IntSlider(value=2, min=1, max=4, description="depth", style=style),
        "labels": w.ToggleButtons(options=["true", "random"], value="true", description="labels", style=style),
        "epochs": w.IntSlider(value=20, min=1, max=100, description="epochs", style=style),
    }
    return LivePanel(partial(experiment, relabel=relabel), knobs, title="Capacity: an MLP on MNIST-1D")
