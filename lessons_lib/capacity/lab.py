"""Lesson 01 · the apparatus: the polynomial and width sweeps, the random-label run, the panel, the claims table
and the figures. The from-scratch pieces (the least-squares fit, random labels) are in ``reference.py``; every
sweep takes the learner's version as an argument.

Seed 004: "Models with high capacity tend to overfit; models with low capacity tend to underfit."
Representational capacity is what a model *could* fit; effective capacity is what training finds in
practice. The experiment of Zhang et al. (2017) makes it concrete: the same network that generalizes
on true labels also memorizes shuffled training labels, which no model can generalize.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits, load
from ..models import count_parameters, mlp
from ..seeds import numpy_rng, seed_everything
from ..training import History, fit
from . import reference

CHANCE = 0.1  # ten classes
FEATURES = {"digits": 64, "mnist1d": 40}
Relabel = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # random_labels(y, rng) -> new labels
Fit = Callable[..., tuple[np.ndarray, float, float]]  # fit_polynomial(x, y, x_val, y_val, degree)


def with_random_train_labels(data: Splits, relabel: Relabel, seed: int) -> Splits:
    """``data`` with its training labels replaced by ``relabel(y_train, rng)``; validation and test keep their
    true labels, so they measure what the memorized labels say about real inputs (Zhang et al. 2017)."""
    y = relabel(data.y_train.numpy().copy(), numpy_rng(seed, stream=7))
    return replace(data, name=data.name + "+random-labels", y_train=torch.as_tensor(np.asarray(y), dtype=torch.int64))


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
    if labels not in ("true", "random"):
        raise ValueError(f"labels must be 'true' or 'random', got {labels!r}")
    seed = seed_everything(seed)
    data = load(dataset, seed=seed)
    if labels == "random":
        data = with_random_train_labels(data, relabel, seed)
    model = mlp(data.n_features, [width] * depth, data.n_classes)
    return fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks,
               seed=seed, eval_train=True, config={"width": width, "depth": depth, "labels": labels})




@dataclass
class SweepRow:
    width: int
    params: int
    train_acc: float
    val_acc: float
    history: History

    @property
    def gap(self) -> float:
        """train accuracy - validation accuracy (the overfitting gap)."""
        return self.train_acc - self.val_acc


def width_sweep(
    widths: Sequence[int] = (2, 8, 32, 128, 512),
    *,
    dataset: str = "mnist1d",
    depth: int = 2,
    epochs: int = 30,
    device: str = "cpu",
    seed: int | None = None,
) -> list[SweepRow]:
    """Train one MLP per width for ``epochs``; report final train (eval mode) and val accuracy."""
    rows = []
    for w in widths:
        h = experiment(dataset=dataset, width=w, depth=depth, epochs=epochs, device=device, seed=seed)
        n_params = count_parameters(mlp(FEATURES[dataset], [w] * depth, 10))
        rows.append(SweepRow(w, n_params, h.train_acc[-1], h.val_acc[-1], h))
    return rows


@dataclass
class Memorization:
    """The same network trained on the true labels and on random ones (validation labels stay true)."""

    true: History
    random: History
    n_classes: int = 10

    def items(self) -> Iterator[tuple[str, History]]:
        """("true", history), ("random", history)."""
        yield "true", self.true
        yield "random", self.random


def random_labels_experiment(
    *, dataset: str = "digits", width: int = 512, depth: int = 2, epochs: int = 50, lr: float = 2e-3,
    device: str = "cpu", seed: int | None = None, relabel: Relabel = reference.random_labels,
) -> Memorization:
    """The same network trained on the true labels and on training labels permuted by ``relabel``."""
    runs = {lab: experiment(dataset=dataset, width=width, depth=depth, labels=lab, epochs=epochs, lr=lr,
                            device=device, seed=seed, relabel=relabel)
            for lab in ("true", "random")}
    return Memorization(runs["true"], runs["random"])


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
    if n_train < 2:
        raise ValueError("polynomial_sweep needs n_train >= 2")
    rng = numpy_rng(seed, stream=11)
    x = np.sort(rng.uniform(-1, 1, n_train))
    y = _poly_target(x) + noise * rng.standard_normal(n_train)
    xv = rng.uniform(-1, 1, n_val)
    yv = _poly_target(xv) + noise * rng.standard_normal(n_val)
    fits = [fit(x, y, xv, yv, d) for d in degrees]
    return PolySweep(np.asarray(degrees), [np.asarray(f[0], dtype=float) for f in fits],
                     np.array([f[1] for f in fits], dtype=float), np.array([f[2] for f in fits], dtype=float),
                     x, y, noise)


def poly_fit_curve(sweep: PolySweep, degree: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(x, fitted y) of the sweep's degree-``degree`` fit, for plotting."""
    xs = np.linspace(-1, 1, n)
    return xs, reference.predict(sweep.coefs[list(sweep.degrees).index(degree)], xs)


def first_epoch_reaching(h: History, target: float) -> int | None:
    return h.first_epoch_reaching("train_acc", target)


def claims(sweep: list[SweepRow], rand: Memorization, poly: PolySweep) -> Claims:
    """The claims table of lesson 01, each verdict computed from this run's results."""
    c = Claims("01 capacity")
    small, big = sweep[0], max(sweep, key=lambda r: r.gap)
    c.add("Models with low capacity tend to underfit", "seed 004",
          f"width {small.width}: train acc {small.train_acc:.3f}, val acc {small.val_acc:.3f} "
          f"(widest: train {sweep[-1].train_acc:.3f})",
          small.train_acc < sweep[-1].train_acc - 0.1)
    c.add("Models with high capacity tend to overfit", "seed 004",
          f"largest train-val gap {big.gap:.3f} at width {big.width}; smallest width's gap {small.gap:.3f}",
          big.gap > 0.15 and big.width > small.width)
    r, t = rand.random, rand.true
    c.add("A network can memorize random labels (high representational capacity)", "Zhang et al. 2017; lesson",
          f"train acc on random labels {r.train_acc[-1]:.3f} after {len(r)} epochs", r.train_acc[-1] >= 0.9)
    c.add("…yet cannot generalize them (validation stays at chance)", "lesson",
          f"val acc on random labels {r.val_acc[-1]:.3f} (chance {CHANCE})", abs(r.val_acc[-1] - CHANCE) < 0.07)
    e_true, e_rand = first_epoch_reaching(t, 0.9), first_epoch_reaching(r, 0.9)
    c.add("Effective capacity: random labels take longer to fit than true ones", "Zhang et al. 2017; lesson",
          f"epochs to 90% train acc: true labels {e_true}, random labels {e_rand}",
          e_true is not None and (e_rand is None or e_rand > e_true))
    u = poly.val_mse
    c.add("Validation error is U-shaped in capacity (polynomial degree)", "lesson",
          f"val MSE {u[0]:.3f} at degree 0, {u.min():.3f} at degree {poly.best_degree}, {u[-1]:.3g} at degree "
          f"{poly.degrees[-1]}", u.min() < u[0] and u.min() < u[-1])
    return c


# --- figures -----------------------------------------------------------------------------------
def plot_width_sweep(sweep: list[SweepRow]):
    """Left: final train/val accuracy vs width. Right: validation-loss curves per width."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    w = [r.width for r in sweep]
    a.plot(w, [r.train_acc for r in sweep], "o-", label="train")
    a.plot(w, [r.val_acc for r in sweep], "s-", label="validation")
    a.set(xscale="log", xlabel="hidden width (2 layers)", ylabel="accuracy", title="final accuracy vs width")
    a.set_xticks(w, [str(x) for x in w])
    a.minorticks_off()
    a.axhline(CHANCE, color="gray", ls=":", label="chance")
    a.legend()
    for r in sweep:
        b.plot(r.history.epoch, r.history.val_loss, label=f"width {r.width}")
    b.set(xlabel="epoch", ylabel="validation loss", title="validation loss while training")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_random_labels(rand: Memorization):
    """Train and validation accuracy per epoch, true vs random labels."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for (lab, h), color in zip(rand.items(), ("C0", "C3")):
        ax.plot(h.epoch, h.train_acc, color=color, label=f"{lab} labels: train")
        ax.plot(h.epoch, h.val_acc, color=color, ls="--", label=f"{lab} labels: validation")
    ax.axhline(CHANCE, color="gray", ls=":", label="chance")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="memorizing random labels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_polynomial(poly: PolySweep, show_degrees: Sequence[int] = (1, 3, 12)):
    """Left: fits of a few degrees. Right: train / validation MSE vs degree (log scale)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    xs = np.linspace(-1, 1, 200)
    a.plot(xs, _poly_target(xs), color="gray", lw=3, alpha=0.4, label="true function")
    a.plot(poly.x_train, poly.y_train, "ko", label="training points")
    for d in show_degrees:
        x, y = poly_fit_curve(poly, d)
        a.plot(x, y, label=f"degree {d}")
    a.set(ylim=(-2, 2), xlabel="x", ylabel="y", title="fits of growing degree")
    a.legend(fontsize=8)
    b.semilogy(poly.degrees, poly.train_mse, "o-", label="train")
    b.semilogy(poly.degrees, poly.val_mse, "s-", label="validation")
    b.axvline(poly.best_degree, color="gray", ls=":", label=f"best: degree {poly.best_degree}")
    b.set(xlabel="polynomial degree (capacity)", ylabel="mean squared error", title="error vs capacity")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_panel(relabel: Relabel = reference.random_labels):
    """The lesson's live panel: width, depth, true/random labels (random ones from ``relabel``), epochs."""
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
