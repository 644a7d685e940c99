"""Lesson 05's apparatus: the measurements on the from-scratch layer (gradient check, side by side with
``torch.nn.BatchNorm1d``, normalization, batch coupling, the affine identity task), the live panel and the claims
table. The PyTorch training runs repeated over seeds (learning-rate sweep of BN against two plain controls,
gamma/beta over a longer training) are in :mod:`.runs`, the eval-mode pitfalls and the cost per step in
:mod:`.pitfalls`; both are re-exported here. Figures are in :mod:`.plots`.

Every from-scratch measurement takes the ``forward`` / ``backward`` pair it runs on (the learner's once they
pass their checks, else :mod:`.reference`'s).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from ..claims import Claims
from ..gradcheck import numerical_gradient_array, relative_error
from ..seeds import numpy_rng
from ..stats import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    mean_interval,
    paired_interval,
    verdict,
)
from ..validate import BadArgument, check_float, check_int
from . import reference
from .pitfalls import Pitfalls, StepCost, bn_step_cost, eval_pitfalls, pitfalls_over_runs  # noqa: F401
from .reference import new_state
from .runs import (  # noqa: F401  (re-exported: the notebook reaches every experiment through lab)
    DEFAULT_LRS,
    LABELS,
    TREATMENTS,
    AffineOverTraining,
    AffineParams,
    InitSensitivity,
    Sweep,
    SweepRow,
    UndoDistance,
    affine_over_training,
    affine_parameters,
    build,
    experiment,
    he_init,
    init_sensitivity,
    lr_sweep,
    match_lr,
    undo_distance,
)

SOURCE = "seed 004 ('Batch Normalization')"
Forward = Callable[..., tuple]
Backward = Callable[[np.ndarray, tuple], tuple]


def _sizes(**sizes: object) -> list[int]:
    """Each keyword a whole number; ``n`` (a batch) at least 2, the others at least 1 (up to 2**16)."""
    return [check_int(v, k, low=2 if k in ("n", "batch") else 1, high=2**16) for k, v in sizes.items()]


def _pair(forward: object, backward: object = reference.batchnorm_backward) -> None:
    for name, fn in (("forward", forward), ("backward", backward)):
        if not callable(fn) or isinstance(fn, type):
            raise BadArgument(f"{name}={fn!r}: must be a function like reference.batchnorm_{name}")


# ----------------------------------------------------------------------------------------------
# Measurements on the from-scratch layer
# ----------------------------------------------------------------------------------------------
@dataclass
class GradientErrors:
    """Relative errors (analytic vs centred differences, float64) of one mode's gradients."""

    mode: str
    dx: float
    dgamma: float
    dbeta: float

    @property
    def worst(self) -> float:
        return max(self.dx, self.dgamma, self.dbeta)


def gradient_check(forward: Forward = reference.batchnorm_forward, backward: Backward = reference.batchnorm_backward,
                   seed: int | None = None, n: int = 6, c: int = 4) -> list[GradientErrors]:
    """``backward``'s gradients against centred differences of ``forward``, in train and in eval mode."""
    _pair(forward, backward)
    n, c = _sizes(n=n, c=c)
    rng = numpy_rng(seed, stream=50)
    x = rng.normal(2.0, 3.0, size=(n, c))
    gamma, beta = rng.normal(1.0, 0.5, size=c), rng.normal(0.0, 0.5, size=c)
    dout = rng.normal(size=(n, c))
    rows = []
    for train in (True, False):
        trained = new_state(c)
        forward(rng.normal(1.0, 2.0, size=(16, c)), gamma, beta, trained)  # some running statistics

        def f(train=train, trained=trained):
            return forward(x, gamma, beta, trained.copy(), train=train)[0]

        dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta, trained.copy(), train=train)[1])
        rows.append(GradientErrors("train" if train else "eval",
                                   relative_error(dx, numerical_gradient_array(f, x, dout)),
                                   relative_error(dgamma, numerical_gradient_array(f, gamma, dout)),
                                   relative_error(dbeta, numerical_gradient_array(f, beta, dout))))
    return rows


@dataclass
class TorchDiff:
    """Largest |ours - torch| of each quantity over the training steps and the eval step (float64)."""

    train_output: float = 0.0
    dx: float = 0.0
    dgamma: float = 0.0
    dbeta: float = 0.0
    running_mean: float = 0.0
    running_var: float = 0.0
    eval_output: float = 0.0
    eval_dx: float = 0.0

    def record(self, name: str, ours, theirs) -> None:
        d = float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))
        setattr(self, name, max(getattr(self, name), d))

    def items(self) -> list[tuple[str, float]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    @property
    def worst(self) -> float:
        return max(v for _, v in self.items())


def compare_with_torch(forward: Forward = reference.batchnorm_forward,
                       backward: Backward = reference.batchnorm_backward, seed: int | None = None, steps: int = 5,
                       n: int = 32, c: int = 8, momentum: float = 0.1, eps: float = 1e-5,
                       lr: float = 0.1) -> TorchDiff:
    """``steps`` training steps (forward, backward, the same SGD step on gamma and beta) of our layer and of
    ``torch.nn.BatchNorm1d`` side by side in float64, then one eval step."""
    _pair(forward, backward)
    n, c = _sizes(n=n, c=c)
    steps = check_int(steps, "steps", low=0, high=10_000)
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0, fix="e.g. 0.1")
    eps = check_float(eps, "eps", low=0.0, low_open=True, fix="e.g. 1e-5")
    lr = check_float(lr, "lr", low=0.0, fix="the SGD step on gamma and beta, e.g. 0.1")
    rng = numpy_rng(seed, stream=51)
    bn = nn.BatchNorm1d(c, momentum=momentum, eps=eps).double()
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(rng.normal(1.0, 0.3, size=c)))
        bn.bias.copy_(torch.as_tensor(rng.normal(0.0, 0.3, size=c)))
    gamma, beta = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    state, diff = new_state(c), TorchDiff()
    for step in range(steps + 1):
        train = step < steps
        bn.train(train)
        x = rng.normal(rng.normal(0, 2, size=c), rng.uniform(0.5, 3, size=c), size=(n, c))
        dout = rng.normal(size=(n, c))
        xt = torch.tensor(x, requires_grad=True)
        yt = bn(xt)
        yt.backward(torch.as_tensor(dout))
        out, cache = forward(x, gamma, beta, state, train=train, momentum=momentum, eps=eps)
        dx, dgamma, dbeta = backward(dout, cache)
        if not train:
            diff.record("eval_output", out, yt.detach().numpy())
            diff.record("eval_dx", dx, xt.grad.numpy())
            break
        for name, ours, theirs in (("train_output", out, yt.detach()), ("dx", dx, xt.grad),
                                   ("dgamma", dgamma, bn.weight.grad), ("dbeta", dbeta, bn.bias.grad),
                                   ("running_mean", state.running_mean, bn.running_mean),
                                   ("running_var", state.running_var, bn.running_var)):
            diff.record(name, ours, theirs.numpy())
        with torch.no_grad():  # the same SGD step on both
            bn.weight -= lr * bn.weight.grad
            bn.bias -= lr * bn.bias.grad
        bn.weight.grad = bn.bias.grad = None
        gamma, beta = gamma - lr * dgamma, beta - lr * dbeta
    return diff


@dataclass
class Normalization:
    """Largest per-feature |mean| and |sd - 1| of a badly scaled batch before and after a train-mode BN
    (gamma = 1, beta = 0; sd is the biased one the layer divides by)."""

    in_max_abs_mean: float
    in_max_abs_sd_minus_1: float
    out_max_abs_mean: float
    out_max_abs_sd_minus_1: float


def normalization_stats(forward: Forward = reference.batchnorm_forward, seed: int | None = None, n: int = 64,
                        c: int = 16) -> Normalization:
    """What ``forward`` does to a batch whose features have means up to 20 and sds from 0.1 to 30."""
    _pair(forward)
    n, c = _sizes(n=n, c=c)
    rng = numpy_rng(seed, stream=52)
    x = rng.normal(rng.uniform(-20, 20, size=c), rng.uniform(0.1, 30, size=c), size=(n, c))
    out, _ = forward(x, np.ones(c), np.zeros(c), new_state(c))
    return Normalization(float(np.abs(x.mean(0)).max()), float(np.abs(x.std(0) - 1).max()),
                         float(np.abs(out.mean(0)).max()), float(np.abs(out.std(0) - 1).max()))


@dataclass
class Coupling:
    """How far sample 0's output moves when the other samples of its batch are replaced."""

    train: float
    eval: float


def batch_coupling(forward: Forward = reference.batchnorm_forward, seed: int | None = None, n: int = 8,
                   c: int = 4) -> Coupling:
    """The seed's point, measured: batch statistics make the samples of a batch depend on each other (train
    mode); the running statistics do not (eval mode)."""
    _pair(forward)
    n, c = _sizes(n=n, c=c)
    rng = numpy_rng(seed, stream=53)
    g, z = np.ones(c), np.zeros(c)
    state = new_state(c)
    for _ in range(5):
        forward(rng.normal(size=(32, c)), g, z, state)
    a = rng.normal(size=(n, c))
    b = a.copy()
    b[1:] = rng.normal(size=(n - 1, c))

    def first(x: np.ndarray, train: bool) -> np.ndarray:
        return forward(x, g, z, state.copy(), train=train)[0][0]

    return Coupling(float(np.abs(first(a, True) - first(b, True)).max()),
                    float(np.abs(first(a, False) - first(b, False)).max()))


@dataclass
class IdentityTask:
    """A lone BN layer trained (numpy) to reproduce its input: y = BN(x) should equal x."""

    true_mean: np.ndarray
    true_sd: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    loss_affine: list[float]
    loss_plain: list[float]


def affine_identity_task(forward: Forward = reference.batchnorm_forward,
                         backward: Backward = reference.batchnorm_backward, seed: int | None = None, c: int = 8,
                         steps: int = 300, batch: int = 512, lr: float = 0.1) -> IdentityTask:
    """The seed's affine argument, measured: normalization forces every feature to mean 0, sd 1, so a BN layer
    *without* affine terms cannot even pass its input through; *with* gamma and beta it can, by learning
    gamma = sd and beta = mean. Trains gamma, beta by gradient descent (step size lr / (1 + t / 100)) on the
    mean squared error between BN(x) and x. The error cannot reach 0: each batch's mean and sd differ a little
    from the true ones (a floor of about sd^2 * 1.5 / batch)."""
    _pair(forward, backward)
    c, steps, batch = _sizes(c=c, steps=steps, batch=batch)
    lr = check_float(lr, "lr", low=0.0, low_open=True, fix="a step size such as 0.1")
    rng = numpy_rng(seed, stream=54)
    mu, sd = rng.uniform(-3, 3, size=c), rng.uniform(0.5, 3, size=c)
    gamma, beta = np.ones(c), np.zeros(c)
    state_a, state_p = new_state(c), new_state(c)
    loss_a, loss_p = [], []
    for t in range(steps):
        x = rng.normal(mu, sd, size=(batch, c))
        out, cache = forward(x, gamma, beta, state_a)
        loss_a.append(float(np.mean((out - x) ** 2)))
        _, dgamma, dbeta = backward(2 * (out - x) / out.size, cache)
        step = lr / (1 + t / 100) * c / 2  # the gradient of a mean over batch * c values is small: rescale it
        gamma, beta = gamma - step * dgamma, beta - step * dbeta
        plain, _ = forward(x, np.ones(c), np.zeros(c), state_p)  # no affine: nothing to learn
        loss_p.append(float(np.mean((plain - x) ** 2)))
    return IdentityTask(mu, sd, gamma, beta, loss_a, loss_p)


# ----------------------------------------------------------------------------------------------
# Claims and panel
# ----------------------------------------------------------------------------------------------
PAPER = "Ioffe & Szegedy 2015"
INIT_MARGIN = 0.02  # "the init hardly matters": He vs default init within 2 points of val accuracy


def _both(a: str, b: str) -> str:
    """The verdict of "a and b": holds if both hold, does not hold if either does not, else inconclusive."""
    if DOES_NOT_HOLD in (a, b):
        return DOES_NOT_HOLD
    return HOLDS if a == b == HOLDS else INCONCLUSIVE


def claims(*, norm: Normalization, torch_diff: TorchDiff, coupling: Coupling, sweep: Sweep, affine: IdentityTask,
           pitfalls: Sequence[Pitfalls], init: InitSensitivity | None = None,
           learned: AffineOverTraining | None = None, short: int = 8) -> Claims:
    """The lesson's claims table, from the measurements of this run. ``pitfalls``: one per trained BN run
    (:func:`pitfalls_over_runs`); ``init``: :func:`init_sensitivity` (optional); ``learned``:
    :func:`affine_over_training` (optional), compared after ``short`` epochs and at its end. Claims that noise
    can move carry a 95% interval over the runs; BN is compared with the He-initialized plain net (the fair
    control) by paired runs (same seeds)."""
    c = Claims("05 batch normalization")
    c.add("Illustration, by construction: in training BN gives each neuron mean 0 and sd 1 over the minibatch",
          SOURCE, f"max |mean| {norm.out_max_abs_mean:.1e}, max |sd - 1| {norm.out_max_abs_sd_minus_1:.1e} "
                  f"(input: {norm.in_max_abs_mean:.3g}, {norm.in_max_abs_sd_minus_1:.3g})",
          norm.out_max_abs_mean < 1e-8 and norm.out_max_abs_sd_minus_1 < 1e-3)
    worst = torch_diff.worst
    c.add("Check of our layer: at evaluation the running averages replace the batch statistics, as in "
          "torch.nn.BatchNorm1d", SOURCE,
          f"largest difference to torch over train steps + eval: {worst:.1e} (float64)", worst < 1e-6)
    c.add("Illustration, by construction: batch statistics make the samples of a minibatch depend on each other",
          SOURCE, f"sample 0's output moves by {coupling.train:.3g} when its batch-mates change (train mode), "
                  f"{coupling.eval:.1g} in eval mode", coupling.train > 1e-3 and coupling.eval == 0.0)
    n, t = len(sweep.seeds), f"{sweep.target:.0%}"
    fb, fh, fp = sweep.fastest("bn"), sweep.fastest("plain_he"), sweep.fastest("plain")
    gain = paired_interval(fh, fb)
    c.add(f"BN trains faster: fewer epochs to {t} val accuracy, each net at its best learning rate (control: the "
          "plain net with He init)", f"{PAPER}; {SOURCE} ('it performs good')",
          f"epochs saved vs He init: {gain.format('.2f')}; median epochs with BN {statistics.median(fb):g}, "
          f"He init {statistics.median(fh):g}, default init {statistics.median(fp):g} (never = {sweep.epochs + 1})",
          verdict(gain, 0.0))
    nb, nh, npl = sweep.n_training_lrs("bn"), sweep.n_training_lrs("plain_he"), sweep.n_training_lrs("plain")
    more = paired_interval(nb, nh)
    c.add(f"BN trains at more learning rates (of {len(sweep.lrs)}, from {min(sweep.lrs):g} to {max(sweep.lrs):g}) "
          "than a plain net, also one with He init", PAPER,
          f"learning rates reaching {t} per run: BN {statistics.mean(nb):.1f}, He init {statistics.mean(nh):.1f}, "
          f"default init {statistics.mean(npl):.1f} ({n} runs each); BN - He init: {more.format('.2f')}",
          verdict(more, 0.0))
    if init is not None:
        with_bn, without = mean_interval(init.change(True)), mean_interval(init.change(False))
        c.add(f"BN makes training steadier against the initialization: with BN, He init instead of the default "
              f"changes the best val accuracy by less than {INIT_MARGIN * 100:.0f} points (at lr {init.lr:g})",
              f"{PAPER} ('less careful about initialization')",
              f"He minus default init: with BN {with_bn.format('.3f')}; without BN {without.format('.3f')}",
              _both(verdict(with_bn, -INIT_MARGIN, "above"), verdict(with_bn, INIT_MARGIN, "below")))
    rel_g = float(np.max(np.abs(affine.gamma - affine.true_sd) / affine.true_sd))
    rel_b = float(np.max(np.abs(affine.beta - affine.true_mean) / affine.true_sd))
    la, lp = float(np.mean(affine.loss_affine[-20:])), float(np.mean(affine.loss_plain[-20:]))
    c.add("Normalizing to mean 0, sd 1 limits what a layer can represent; the learnable affine gamma, beta give "
          "it back", SOURCE,
          f"a BN layer asked to pass its input through: error {la:.2g} with affine vs {lp:.3g} without; it learned "
          f"gamma = input sd (worst {rel_g:.1%} off), beta = input mean (worst {rel_b:.1%} of an sd off)",
          la < 0.02 * lp and rel_g < 0.05 and rel_b < 0.05)
    if learned is not None:
        end, early = learned.at(learned.epochs), learned.at(min(short, learned.epochs))
        g_gap = paired_interval([d.gamma_from_undo for d in end], [d.gamma_from_init for d in end])
        b_gap = paired_interval([d.beta_from_undo for d in end], [d.beta_from_init for d in end])
        moved = paired_interval([d.gamma_from_init for d in end], [d.gamma_from_init for d in early])
        loss = mean_interval([h.train_loss[-1] for h in learned.histories])
        c.add(f"'Doesn't this defeat the purpose?' Trained {learned.epochs} epochs, a net does not use gamma, beta to "
              "cancel BN", SOURCE,
              f"mean |gamma - 1| grew by {moved.format('.3f')} from epoch {min(short, learned.epochs)} to "
              f"{learned.epochs} (training loss then {loss.format('.3f')}); still closer to the start than to "
              f"cancelling BN by: gamma {g_gap.format('.3f')}, beta {b_gap.format('.3f')}",
              _both(verdict(g_gap, 0.0), verdict(b_gap, 0.0)))
    small = min(pitfalls[0].train_mode_acc)
    drop = paired_interval([p.eval_acc for p in pitfalls], [p.train_mode_acc[small] for p in pitfalls])
    flips = statistics.mean(p.flip_fraction_bs8 for p in pitfalls)
    c.add("Evaluate in eval mode: train-mode predictions depend on the batch", "lesson",
          f"val acc in eval mode minus train mode with batches of {small}: {drop.format('.3f')}; on average "
          f"{flips:.1%} of predictions change with the batching (batches of 8)", verdict(drop, 0.0))
    return c


def make_panel():
    """The lesson's live panel: BN on/off, initialization, learning rate, depth, width, batch size, epochs. The runs
    table's ms/step column is BN's cost per step on the chosen device."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "batchnorm": w.ToggleButtons(options=[("with BN", True), ("without BN", False)], value=True,
                                     description="batch norm", style=style),
        "init": w.ToggleButtons(options=[("PyTorch default", "default"), ("He", "he")], value="default",
                                description="init", style=style),
        "lr": w.SelectionSlider(options=list(DEFAULT_LRS), value=0.03, description="lr (SGD)", style=style),
        "depth": w.IntSlider(value=4, min=1, max=10, description="depth", style=style),
        "width": w.SelectionSlider(options=[16, 64, 256, 1024], value=64, description="width", style=style),
        "batch_size": w.SelectionSlider(options=[4, 8, 32, 64, 256], value=64, description="batch size",
                                        style=style),
        "epochs": w.IntSlider(value=8, min=1, max=40, description="epochs", style=style),
    }
    return LivePanel(experiment, knobs, title="Batch norm: an MLP on the 8x8 digits")
