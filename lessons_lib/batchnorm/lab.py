"""Lesson 05's apparatus: the measurements on the from-scratch layer (gradient check, side by side with
``torch.nn.BatchNorm1d``, normalization, batch coupling, the affine identity task), the PyTorch experiments
(learning-rate sweep with and without BN, learned gamma/beta, eval-mode pitfalls, cost per step), the live
panel and the claims table. Figures are in :mod:`.plots`.

Every from-scratch measurement takes the ``forward`` / ``backward`` pair it runs on (the learner's once they
pass their checks, else :mod:`.reference`'s).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from ..claims import Claims
from ..data import Splits, load
from ..device import pick_device
from ..gradcheck import numerical_gradient_array, relative_error
from ..seeds import get_seed, numpy_rng, seed_everything
from ..timing import time_it
from ..training import History, evaluate, fit
from . import reference
from .reference import bn_mlp, new_state

SOURCE = "seeds/004_657bca9538d5b2ba.txt, 'Batch Normalization'"
Forward = Callable[..., tuple]
Backward = Callable[[np.ndarray, tuple], tuple]


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
# PyTorch: the panel's experiment and the learning-rate sweep
# ----------------------------------------------------------------------------------------------
def experiment(*, device: str = "cpu", callbacks: Sequence = (), batchnorm: bool = True, lr: float = 0.03,
               epochs: int = 8, depth: int = 4, width: int = 64, batch_size: int = 64, affine: bool = True,
               activation: str = "relu", optimizer: str = "sgd", dataset: str = "digits",
               seed: int | None = None) -> History:
    """The panel's experiment: an MLP of ``depth`` hidden layers of ``width`` with or without BN
    (:func:`.reference.bn_mlp`), trained with ``optimizer`` at ``lr`` on ``dataset``. ``history.config`` records
    the knobs and the trained ``model``."""
    seed = get_seed() if seed is None else seed
    data = load(dataset, seed=seed)
    seed_everything(seed)
    model = bn_mlp(data.n_features, [width] * depth, data.n_classes, batchnorm=batchnorm, affine=affine,
                   activation=activation)
    cfg = {"batchnorm": batchnorm, "lr": lr, "depth": depth, "width": width, "batch_size": batch_size,
           "affine": affine, "optimizer": optimizer}
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
            callbacks=list(callbacks), seed=seed, config=cfg)
    h.config["model"] = model
    return h


DEFAULT_LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class SweepRow:
    lr: float
    batchnorm: bool
    best_val_acc: float
    epochs_to_target: int | None  # 1-based; None: never
    final_train_loss: float


@dataclass
class Sweep:
    """Learning-rate sweep, with and without BN. ``histories[(batchnorm, lr)]`` is the run's History."""

    lrs: list[float]
    target: float
    histories: dict[tuple[bool, float], History] = field(default_factory=dict)

    def final_acc(self, batchnorm: bool) -> list[float]:
        """Best val accuracy of each run (a diverged run counts with its best before diverging)."""
        return [max(self.histories[(batchnorm, lr)].val_acc) for lr in self.lrs]

    def epochs_to_target(self, batchnorm: bool) -> list[int | None]:
        """1-based epoch at which each run first reaches ``target`` val accuracy (None: never)."""
        out = []
        for lr in self.lrs:
            i = self.histories[(batchnorm, lr)].first_epoch_reaching("val_acc", self.target)
            out.append(None if i is None else i + 1)
        return out

    def n_training_lrs(self, batchnorm: bool) -> int:
        """How many learning rates reach the target accuracy at all."""
        return sum(e is not None for e in self.epochs_to_target(batchnorm))

    def best_epochs_to_target(self, batchnorm: bool) -> int | None:
        e = [v for v in self.epochs_to_target(batchnorm) if v is not None]
        return min(e) if e else None

    def rows(self) -> list[SweepRow]:
        rows = []
        for bn in (False, True):
            for lr, acc, e in zip(self.lrs, self.final_acc(bn), self.epochs_to_target(bn)):
                rows.append(SweepRow(lr, bn, acc, e, self.histories[(bn, lr)].train_loss[-1]))
        return sorted(rows, key=lambda r: (r.lr, r.batchnorm))


def lr_sweep(lrs: Sequence[float] = DEFAULT_LRS, *, epochs: int = 8, depth: int = 4, width: int = 64,
             target: float = 0.9, batch_size: int = 64, dataset: str = "digits", device: str = "cpu",
             seed: int | None = None) -> Sweep:
    """Train the same MLP (same initial weights for the linear layers) with and without BN at each learning
    rate (SGD with momentum 0.9); record every History."""
    sweep = Sweep(lrs=[float(v) for v in lrs], target=target)
    for lr in sweep.lrs:
        for bn in (False, True):
            sweep.histories[(bn, lr)] = experiment(device=device, batchnorm=bn, lr=lr, epochs=epochs, depth=depth,
                                                   width=width, batch_size=batch_size, dataset=dataset, seed=seed)
    return sweep


# ----------------------------------------------------------------------------------------------
# What a trained network's gamma and beta learned; eval-mode pitfalls; cost per step
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
    seed = get_seed() if seed is None else seed
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


@dataclass
class StepCost:
    """Median seconds per training step of the MLP without and with BN on ``device``."""

    without_bn: float
    with_bn: float
    device: str

    @property
    def ratio(self) -> float:
        return self.with_bn / self.without_bn


def bn_step_cost(device: str = "cpu", *, depth: int = 4, width: int = 256, batch_size: int = 128, rounds: int = 5,
                 repeats: int = 6, seed: int | None = None) -> StepCost:
    """Median seconds per training step (forward, backward, SGD step) of the MLP without and with BN, timed
    with :func:`lessons_lib.timing.time_it` (device synchronized); the two models alternate over ``rounds`` so
    that a machine busy with other work slows both alike."""
    dev = pick_device(device)
    seed = get_seed() if seed is None else seed
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
    for r in range(rounds):
        for bn in (False, True) if r % 2 == 0 else (True, False):
            times[bn] += time_it(steps[bn], device=dev, warmup=2, repeats=repeats).times
    return StepCost(statistics.median(times[False]), statistics.median(times[True]), str(dev))


# ----------------------------------------------------------------------------------------------
# Claims and panel
# ----------------------------------------------------------------------------------------------
def claims(*, norm: Normalization, torch_diff: TorchDiff, coupling: Coupling, sweep: Sweep, affine: IdentityTask,
           pitfalls: Pitfalls, learned: UndoDistance | None = None) -> Claims:
    """The lesson's claims table, from the measurements of this run (``learned``: :func:`undo_distance` of a
    trained BN network, optional)."""
    c = Claims("05 batch normalization")
    c.add("In training, BN makes each neuron's output over the minibatch mean 0 and sd 1", SOURCE,
          f"max |mean| {norm.out_max_abs_mean:.1e}, max |sd - 1| {norm.out_max_abs_sd_minus_1:.1e} "
          f"(input: {norm.in_max_abs_mean:.3g}, {norm.in_max_abs_sd_minus_1:.3g})",
          norm.out_max_abs_mean < 1e-8 and norm.out_max_abs_sd_minus_1 < 1e-3)
    worst = torch_diff.worst
    c.add("At evaluation the running averages replace the batch statistics (our layer = torch.nn.BatchNorm1d)",
          SOURCE, f"largest difference to torch over train steps + eval: {worst:.1e} (float64)", worst < 1e-6)
    c.add("Batch statistics make the samples of a minibatch depend on each other", SOURCE,
          f"sample 0's output moves by {coupling.train:.3g} when its batch-mates change (train mode), "
          f"{coupling.eval:.1g} in eval mode", coupling.train > 1e-3 and coupling.eval == 0.0)
    e0, e1 = sweep.best_epochs_to_target(False), sweep.best_epochs_to_target(True)
    c.add(f"Despite this BN trains well: fewer epochs to {sweep.target:.0%} val accuracy", SOURCE + " + course",
          f"best over the sweep: {e1 if e1 else 'never'} epoch(s) with BN, {e0 if e0 else 'never'} without",
          e1 is not None and (e0 is None or e1 < e0))
    n0, n1 = sweep.n_training_lrs(False), sweep.n_training_lrs(True)
    c.add("BN trains over a wider range of learning rates", "course (lesson 05)",
          f"{n1} of {len(sweep.lrs)} learning rates reach {sweep.target:.0%} with BN, {n0} without", n1 > n0)
    rel_g = float(np.max(np.abs(affine.gamma - affine.true_sd) / affine.true_sd))
    rel_b = float(np.max(np.abs(affine.beta - affine.true_mean) / affine.true_sd))
    la, lp = float(np.mean(affine.loss_affine[-20:])), float(np.mean(affine.loss_plain[-20:]))
    c.add("Normalizing to mean 0, sd 1 limits what a layer can represent; the learnable affine gamma, beta give "
          "it back", SOURCE,
          f"a BN layer asked to pass its input through: error {la:.2g} with affine vs {lp:.3g} without; it learned "
          f"gamma = input sd (worst {rel_g:.1%} off), beta = input mean (worst {rel_b:.1%} of an sd off)",
          la < 0.02 * lp and rel_g < 0.05 and rel_b < 0.05)
    if learned is not None:
        c.add("'Doesn't this defeat the purpose?' A trained net does not use gamma, beta to cancel BN", SOURCE,
              f"mean |gamma - 1| {learned.gamma_from_init:.3f} vs |gamma - sqrt(running_var)| "
              f"{learned.gamma_from_undo:.3f}; mean |beta| {learned.beta_from_init:.3f} vs "
              f"|beta - running_mean| {learned.beta_from_undo:.3f}", learned.closer_to_init)
    tm = pitfalls.train_mode_acc
    small = min(tm)
    c.add("Evaluate in eval mode: train-mode predictions depend on the batch", "course (lesson 05)",
          f"val acc {pitfalls.eval_acc:.3f} in eval mode vs {tm[small]:.3f} in train mode with batches of "
          f"{small}; {pitfalls.flip_fraction_bs8:.1%} of predictions change with the batching",
          pitfalls.eval_acc > tm[small] and pitfalls.flip_fraction_bs8 > 0)
    return c


def make_panel():
    """The lesson's live panel: BN on/off, learning rate, depth, width, batch size, epochs. The runs table's
    ms/step column is BN's cost per step on the chosen device."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "batchnorm": w.ToggleButtons(options=[("with BN", True), ("without BN", False)], value=True,
                                     description="batch norm", style=style),
        "lr": w.SelectionSlider(options=list(DEFAULT_LRS), value=0.03, description="lr (SGD)", style=style),
        "depth": w.IntSlider(value=4, min=1, max=10, description="depth", style=style),
        "width": w.SelectionSlider(options=[16, 64, 256, 1024], value=64, description="width", style=style),
        "batch_size": w.SelectionSlider(options=[4, 8, 32, 64, 256], value=64, description="batch size",
                                        style=style),
        "epochs": w.IntSlider(value=8, min=1, max=40, description="epochs", style=style),
    }
    return LivePanel(experiment, knobs, title="Batch norm: an MLP on the 8x8 digits")
