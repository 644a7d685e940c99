"""Lesson 05, batch normalization: the layer from scratch (numpy), equal to ``torch.nn.BatchNorm1d``,
an MLP with a batch-norm switch, and the lesson's experiments, claims and exercise checks.

From scratch (seed 004 of the course, "Batch Normalization")::

    out, cache = batchnorm_forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

``x`` is ``(N, C)`` (or ``(N, C, *spatial)``; the statistics are then taken over N and the spatial
axes, like ``BatchNorm2d``); ``gamma``/``beta`` are ``(C,)``. ``state`` is a dict (make one with
:func:`new_state`) holding ``running_mean``, ``running_var`` and ``num_batches_tracked``; a training
call updates it with PyTorch's conventions::

    running_mean = (1 - momentum) * running_mean + momentum * batch_mean
    running_var  = (1 - momentum) * running_var  + momentum * batch_var_unbiased   # divides by m - 1

while the batch itself is normalized with the *biased* variance (divides by m). ``train=False``
normalizes with the running statistics instead and refuses to run before any training batch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..claims import Claims
from ..data import Splits, load
from ..device import pick_device
from ..exercises import check
from ..gradcheck import numerical_gradient_array, relative_error
from ..models import ACTIVATIONS
from ..seeds import get_seed, numpy_rng, seed_everything
from ..timing import time_it
from ..training import History, evaluate, fit

SOURCE = "seeds/004_657bca9538d5b2ba.txt, 'Batch Normalization'"


# ----------------------------------------------------------------------------------------------
# From scratch
# ----------------------------------------------------------------------------------------------
def new_state(n_features: int) -> dict[str, np.ndarray | int]:
    """A fresh running-statistics state for ``n_features`` channels, as PyTorch starts one:
    ``running_mean`` zeros, ``running_var`` ones (float64), ``num_batches_tracked`` 0."""
    if int(n_features) < 1:
        raise ValueError(f"new_state needs n_features >= 1, got {n_features}")
    return {"running_mean": np.zeros(int(n_features)), "running_var": np.ones(int(n_features)),
            "num_batches_tracked": 0}


def _check_args(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, momentum: float, eps: float) -> None:
    if x.ndim < 2:
        raise ValueError(f"batchnorm_forward needs x of shape (N, C) or (N, C, ...), got shape {x.shape}: "
                         "add a batch axis, e.g. x[None, :]")
    c = x.shape[1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"gamma and beta must have shape ({c},), one value per channel of x {x.shape}; got "
                         f"gamma {gamma.shape} and beta {beta.shape}. Make them with np.ones({c}) and np.zeros({c})")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a small positive number (it keeps 1/sqrt(var + eps) finite), got {eps!r}; "
                         "use the default 1e-5")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] (the weight of the new batch in the running average, "
                         f"PyTorch's convention), got {momentum!r}; use the default 0.1")


def _stat_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a (C,) vector to broadcast against an (N, C, ...) array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    state: dict,
    train: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Batch normalization: ``out = gamma * (x - mean) / sqrt(var + eps) + beta``, per channel.

    ``train=True``: mean/var of this batch (biased var), and ``state`` is updated in place
    (running averages with the unbiased variance, PyTorch's conventions). ``train=False``: the running
    statistics of ``state``. Returns ``(out, cache)``; ``cache`` is what :func:`batchnorm_backward` needs.
    """
    x = np.asarray(x)
    gamma = np.asarray(gamma)
    beta = np.asarray(beta)
    _check_args(x, gamma, beta, momentum, eps)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict (make one with new_state({x.shape[1]})), got {type(state).__name__}")
    axes = _stat_axes(x)
    m = x.size // x.shape[1]  # values per channel
    nd = x.ndim
    if train:
        if m < 2:
            raise ValueError(f"training-mode batch norm needs more than 1 value per channel, got x of shape "
                             f"{x.shape}: use a batch of 2 or more, or train=False to use the running statistics")
        if "running_mean" not in state:
            state.update(new_state(x.shape[1]))
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)  # biased: normalizes this batch
        state["running_mean"] = (1 - momentum) * state["running_mean"] + momentum * mean
        state["running_var"] = (1 - momentum) * state["running_var"] + momentum * var * m / (m - 1)
        state["num_batches_tracked"] = int(state.get("num_batches_tracked", 0)) + 1
    else:
        if "running_mean" not in state or "running_var" not in state or state.get("num_batches_tracked", 1) == 0:
            raise ValueError("batch norm in eval mode needs running statistics, but this state has seen no training "
                             "batch yet: run some batches with train=True first (or load trained running_mean/var)")
        mean, var = np.asarray(state["running_mean"]), np.asarray(state["running_var"])
        if mean.shape != (x.shape[1],) or var.shape != (x.shape[1],):
            raise ValueError(f"the state's running statistics have shape {mean.shape} but x has {x.shape[1]} channels")
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - _per_channel(mean, nd)) * _per_channel(inv_std, nd)
    out = _per_channel(gamma, nd) * xhat + _per_channel(beta, nd)
    cache = {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "axes": axes, "m": m, "train": bool(train)}
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of a loss given ``dout`` = d loss / d out.

    In training mode the batch mean and variance depend on every sample, so ``dx`` couples the batch::

        dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat))

    In eval mode the statistics are constants and ``dx = gamma * inv_std * dout``.
    """
    dout = np.asarray(dout)
    xhat, inv_std, gamma, axes, m = cache["xhat"], cache["inv_std"], cache["gamma"], cache["axes"], cache["m"]
    if dout.shape != xhat.shape:
        raise ValueError(f"dout has shape {dout.shape} but the forward output had shape {xhat.shape}")
    nd = dout.ndim
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    scale = _per_channel(gamma * inv_std, nd)
    if cache["train"]:
        dx = scale / m * (m * dout - _per_channel(dbeta, nd) - xhat * _per_channel(dgamma, nd))
    else:
        dx = scale * dout
    return dx, dgamma, dbeta


def gradient_check(seed: int | None = None, n: int = 6, c: int = 4) -> dict[str, float]:
    """Relative errors (analytic vs centred differences, float64) of dx, dgamma, dbeta in train and eval mode."""
    rng = numpy_rng(seed, stream=50)
    x = rng.normal(2.0, 3.0, size=(n, c))
    gamma, beta = rng.normal(1.0, 0.5, size=c), rng.normal(0.0, 0.5, size=c)
    dout = rng.normal(size=(n, c))
    errors = {}
    for train in (True, False):
        trained = new_state(c)
        batchnorm_forward(rng.normal(1.0, 2.0, size=(16, c)), gamma, beta, trained)  # some running stats

        def f(train=train, trained=trained):
            st = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in trained.items()}
            return batchnorm_forward(x, gamma, beta, st, train=train)[0]

        _, cache = batchnorm_forward(x, gamma, beta, dict(trained), train=train)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        mode = "train" if train else "eval"
        errors[f"dx ({mode})"] = relative_error(dx, numerical_gradient_array(f, x, dout))
        errors[f"dgamma ({mode})"] = relative_error(dgamma, numerical_gradient_array(f, gamma, dout))
        errors[f"dbeta ({mode})"] = relative_error(dbeta, numerical_gradient_array(f, beta, dout))
    return errors


def compare_with_torch(seed: int | None = None, steps: int = 5, n: int = 32, c: int = 8,
                       momentum: float = 0.1, eps: float = 1e-5, lr: float = 0.1) -> dict[str, float]:
    """Run ``steps`` training steps (forward, backward, SGD on gamma/beta) of our layer and of
    ``torch.nn.BatchNorm1d`` side by side in float64, then one eval step; return the largest absolute
    difference of each quantity (outputs, dx, dgamma, dbeta, running mean/var, eval output)."""
    rng = numpy_rng(seed, stream=51)
    bn = nn.BatchNorm1d(c, momentum=momentum, eps=eps).double()
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(rng.normal(1.0, 0.3, size=c)))
        bn.bias.copy_(torch.as_tensor(rng.normal(0.0, 0.3, size=c)))
    gamma, beta = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    state = new_state(c)
    diff: dict[str, float] = {}

    def upd(k: str, a, b) -> None:
        diff[k] = max(diff.get(k, 0.0), float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))

    bn.train()
    for _ in range(steps):
        x = rng.normal(rng.normal(0, 2, size=c), rng.uniform(0.5, 3, size=c), size=(n, c))
        dout = rng.normal(size=(n, c))
        xt = torch.tensor(x, requires_grad=True)
        yt = bn(xt)
        yt.backward(torch.as_tensor(dout))
        out, cache = batchnorm_forward(x, gamma, beta, state, train=True, momentum=momentum, eps=eps)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        upd("train output", out, yt.detach().numpy())
        upd("dx", dx, xt.grad.numpy())
        upd("dgamma", dgamma, bn.weight.grad.numpy())
        upd("dbeta", dbeta, bn.bias.grad.numpy())
        upd("running_mean", state["running_mean"], bn.running_mean.numpy())
        upd("running_var", state["running_var"], bn.running_var.numpy())
        with torch.no_grad():  # the same SGD step on both
            bn.weight -= lr * bn.weight.grad
            bn.bias -= lr * bn.bias.grad
            bn.weight.grad = None
            bn.bias.grad = None
        gamma, beta = gamma - lr * dgamma, beta - lr * dbeta
    bn.eval()
    x = rng.normal(0, 2, size=(n, c))
    xt = torch.tensor(x, requires_grad=True)
    yt = bn(xt)
    dout = rng.normal(size=(n, c))
    yt.backward(torch.as_tensor(dout))
    out, cache = batchnorm_forward(x, gamma, beta, state, train=False, momentum=momentum, eps=eps)
    dx, _, _ = batchnorm_backward(dout, cache)
    upd("eval output", out, yt.detach().numpy())
    upd("eval dx", dx, xt.grad.numpy())
    return diff


def normalization_stats(seed: int | None = None, n: int = 64, c: int = 16) -> dict[str, float]:
    """Train-mode output of our layer with gamma=1, beta=0 on a badly scaled batch: the largest
    per-channel |mean| and |sd - 1| before and after (sd here is the biased one the layer divides by)."""
    rng = numpy_rng(seed, stream=52)
    x = rng.normal(rng.uniform(-20, 20, size=c), rng.uniform(0.1, 30, size=c), size=(n, c))
    out, _ = batchnorm_forward(x, np.ones(c), np.zeros(c), new_state(c))
    return {"in_max_abs_mean": float(np.abs(x.mean(0)).max()),
            "in_max_abs_sd_minus_1": float(np.abs(x.std(0) - 1).max()),
            "out_max_abs_mean": float(np.abs(out.mean(0)).max()),
            "out_max_abs_sd_minus_1": float(np.abs(out.std(0) - 1).max())}


def batch_coupling(seed: int | None = None, n: int = 8, c: int = 4) -> dict[str, float]:
    """How much sample 0's output moves when the *other* samples of its batch are replaced, in train
    and in eval mode (the seed's point: batch statistics make the samples of a batch depend on each other)."""
    rng = numpy_rng(seed, stream=53)
    state = new_state(c)
    for _ in range(5):
        batchnorm_forward(rng.normal(size=(32, c)), np.ones(c), np.zeros(c), state)
    a = rng.normal(size=(n, c))
    b = a.copy()
    b[1:] = rng.normal(size=(n - 1, c))
    g, z = np.ones(c), np.zeros(c)
    st = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    train_a = batchnorm_forward(a, g, z, dict(st), train=True)[0][0]
    train_b = batchnorm_forward(b, g, z, dict(st), train=True)[0][0]
    eval_a = batchnorm_forward(a, g, z, st, train=False)[0][0]
    eval_b = batchnorm_forward(b, g, z, st, train=False)[0][0]
    return {"train": float(np.abs(train_a - train_b).max()), "eval": float(np.abs(eval_a - eval_b).max())}


# ----------------------------------------------------------------------------------------------
# PyTorch: the MLP with a batch-norm switch
# ----------------------------------------------------------------------------------------------
def bn_mlp(
    n_in: int,
    widths: Sequence[int],
    n_out: int,
    batchnorm: bool = True,
    affine: bool = True,
    activation: str = "relu",
    momentum: float = 0.1,
) -> nn.Sequential:
    """``n_in -> widths... -> n_out`` logits. Each hidden layer is ``Linear -> BatchNorm1d -> activation``
    with ``batchnorm`` (BN before the activation, as the seed says is usual; the Linear then has no bias,
    BN's beta plays its role), else ``Linear -> activation``. ``affine=False`` drops gamma and beta."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if n_in < 1 or n_out < 1 or any(int(w) < 1 for w in widths):
        raise ValueError(f"layer sizes must be >= 1, got n_in={n_in}, widths={list(widths)}, n_out={n_out}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    layers: list[nn.Module] = []
    prev = n_in
    for w in widths:
        layers.append(nn.Linear(prev, int(w), bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(int(w), momentum=momentum, affine=affine))
        layers.append(ACTIVATIONS[activation]())
        prev = int(w)
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def experiment(
    *,
    device: str = "cpu",
    callbacks: Sequence = (),
    batchnorm: bool = True,
    lr: float = 0.03,
    epochs: int = 8,
    depth: int = 4,
    width: int = 64,
    batch_size: int = 64,
    affine: bool = True,
    activation: str = "relu",
    optimizer: str = "sgd",
    dataset: str = "digits",
    seed: int | None = None,
) -> History:
    """The panel's experiment: an MLP of ``depth`` hidden layers of ``width`` with or without BN, trained
    with ``optimizer`` at ``lr`` on ``dataset``. ``history.config`` records the knobs."""
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


# ----------------------------------------------------------------------------------------------
# Experiments of the notebook
# ----------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Learning-rate sweep, with and without BN. ``histories[(batchnorm, lr)]`` is the run's History."""

    lrs: list[float]
    target: float
    histories: dict[tuple[bool, float], History] = field(default_factory=dict)

    def final_acc(self, batchnorm: bool) -> list[float]:
        """Best val accuracy of each run (NaN-safe: a diverged run counts as its best before diverging)."""
        return [max(self.histories[(batchnorm, lr)].val_acc) for lr in self.lrs]

    def epochs_to_target(self, batchnorm: bool) -> list[int | None]:
        """1-based epoch at which each run first reaches ``target`` val accuracy (None: never)."""
        out = []
        for lr in self.lrs:
            i = self.histories[(batchnorm, lr)].first_epoch_reaching("val_acc", self.target)
            out.append(None if i is None else i + 1)
        return out

    def trains(self, batchnorm: bool) -> list[bool]:
        """Which learning rates reach the target accuracy at all."""
        return [e is not None for e in self.epochs_to_target(batchnorm)]

    def n_training_lrs(self, batchnorm: bool) -> int:
        return sum(self.trains(batchnorm))

    def best_epochs_to_target(self, batchnorm: bool) -> int | None:
        e = [v for v in self.epochs_to_target(batchnorm) if v is not None]
        return min(e) if e else None

    def rows(self) -> list[dict]:
        rows = []
        for lr in self.lrs:
            for bn in (False, True):
                h = self.histories[(bn, lr)]
                i = h.first_epoch_reaching("val_acc", self.target)
                rows.append({"lr": lr, "batchnorm": bn, "best_val_acc": max(h.val_acc),
                             "epochs_to_target": None if i is None else i + 1,
                             "final_train_loss": h.train_loss[-1]})
        return rows


DEFAULT_LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def lr_sweep(
    lrs: Sequence[float] = DEFAULT_LRS,
    *,
    epochs: int = 8,
    depth: int = 4,
    width: int = 64,
    target: float = 0.9,
    batch_size: int = 64,
    dataset: str = "digits",
    device: str = "cpu",
    seed: int | None = None,
) -> Sweep:
    """Train the same MLP (same initial weights for the linear layers) with and without BN at each
    learning rate (SGD with momentum 0.9); record every History."""
    sweep = Sweep(lrs=[float(v) for v in lrs], target=target)
    for lr in sweep.lrs:
        for bn in (False, True):
            sweep.histories[(bn, lr)] = experiment(device=device, batchnorm=bn, lr=lr, epochs=epochs, depth=depth,
                                                   width=width, batch_size=batch_size, dataset=dataset, seed=seed)
    return sweep


def affine_parameters(model: nn.Module) -> list[dict[str, np.ndarray]]:
    """Per BatchNorm layer of ``model``: learned ``gamma`` and ``beta``, and the values that would undo the
    normalization exactly (``undo_gamma`` = sqrt(running_var + eps), ``undo_beta`` = running_mean)."""
    out = []
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine:
            out.append({"gamma": mod.weight.detach().cpu().numpy().copy(),
                        "beta": mod.bias.detach().cpu().numpy().copy(),
                        "undo_gamma": np.sqrt(mod.running_var.detach().cpu().numpy() + mod.eps),
                        "undo_beta": mod.running_mean.detach().cpu().numpy().copy()})
    return out


@dataclass
class IdentityTask:
    """A lone BN layer trained (numpy, our layer) to reproduce its input: y = BN(x) should equal x."""

    true_mean: np.ndarray
    true_sd: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    loss_affine: list[float]
    loss_plain: list[float]


def affine_identity_task(seed: int | None = None, c: int = 8, steps: int = 300, batch: int = 512,
                         lr: float = 0.1) -> IdentityTask:
    """The seed's affine argument, measured: normalization forces every channel to mean 0, sd 1, so a BN
    layer *without* affine terms cannot even pass its input through; *with* gamma and beta it can, by
    learning gamma = sd and beta = mean. Trains gamma, beta by gradient descent (step size decaying as
    lr / (1 + t / 100)) on the mean squared error between BN(x) and x with our numpy layer; returns the
    learned values and both loss curves. The error cannot reach 0: each batch's mean and sd differ a
    little from the true ones (a floor of about sd^2 * 1.5 / batch)."""
    rng = numpy_rng(seed, stream=54)
    mu, sd = rng.uniform(-3, 3, size=c), rng.uniform(0.5, 3, size=c)
    gamma, beta = np.ones(c), np.zeros(c)
    state_a, state_p = new_state(c), new_state(c)
    loss_a, loss_p = [], []
    for t in range(steps):
        x = rng.normal(mu, sd, size=(batch, c))
        out, cache = batchnorm_forward(x, gamma, beta, state_a)
        loss_a.append(float(np.mean((out - x) ** 2)))
        _, dgamma, dbeta = batchnorm_backward(2 * (out - x) / out.size, cache)
        step = lr / (1 + t / 100) * batch * c / 2  # the gradient of a mean is small: rescale it
        gamma, beta = gamma - step * dgamma / batch, beta - step * dbeta / batch
        plain, _ = batchnorm_forward(x, np.ones(c), np.zeros(c), state_p)  # no affine: nothing to learn
        loss_p.append(float(np.mean((plain - x) ** 2)))
    return IdentityTask(mu, sd, gamma, beta, loss_a, loss_p)


@torch.no_grad()
def _accuracy_in_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, train_mode: bool,
                         generator: torch.Generator | None = None) -> float:
    """Accuracy when predicting ``x`` in batches of ``batch_size`` (shuffled by ``generator`` if given) with
    the model in train or eval mode; the model's buffers are restored afterwards."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was = model.training
    model.train(train_mode)
    idx = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    idx = idx.to(x.device)
    correct = 0
    for i in range(0, len(x), batch_size):
        j = idx[i : i + batch_size]
        if train_mode and len(j) < 2:  # a lone last sample cannot be batch-normalized in train mode
            j = idx[i - 1 : i + batch_size]
            correct += int((model(x[j]).argmax(1)[1:] == y[j][1:]).sum())
            continue
        correct += int((model(x[j]).argmax(1) == y[j]).sum())
    model.load_state_dict(saved)
    model.train(was)
    return correct / len(x)


def eval_pitfalls(model: nn.Module, data: Splits, batch_sizes: Sequence[int] = (256, 32, 8, 2),
                  seed: int | None = None) -> dict:
    """Measure the eval-mode pitfalls of a trained BN model on the validation set.

    Returns ``eval_acc`` (model.eval(), the right way), ``train_mode_acc[bs]`` (forgot model.eval(),
    predicting in batches of ``bs``), ``flip_fraction_bs8`` (share of predictions that change when the
    same samples are put in other batches of 8, train mode), ``buffer_drift`` (how far running_mean moves
    when the forgotten-eval predictions run: in train mode every forward updates it),
    ``batch1_error`` (PyTorch's message for a batch of 1 in train mode) and ``batch1_eval_acc``
    (batch of 1 in eval mode: fine).
    """
    seed = get_seed() if seed is None else seed
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was = model.training
    try:
        return _measure_pitfalls(model, data, batch_sizes, seed)
    finally:  # every measurement above may touch the BN buffers: put them back
        model.load_state_dict(saved)
        model.train(was)


@torch.no_grad()
def _measure_pitfalls(model: nn.Module, data: Splits, batch_sizes: Sequence[int], seed: int) -> dict:
    dev = next(model.parameters()).device
    x, y = data.x_val.to(dev), data.y_val.to(dev)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict = {"eval_acc": evaluate(model, x, y)[1], "train_mode_acc": {}}
    for bs in batch_sizes:
        g = torch.Generator().manual_seed(seed * 7919 + bs)
        out["train_mode_acc"][int(bs)] = _accuracy_in_batches(model, x, y, int(bs), True, g)
    model.train()  # the same samples in two different batchings of 8
    preds = []
    for s in (1, 2):
        g = torch.Generator().manual_seed(seed * 104729 + s)
        idx = torch.randperm(len(x) - len(x) % 8, generator=g).to(dev)
        p = torch.empty(len(idx), dtype=torch.int64, device=dev)
        for i in range(0, len(idx), 8):
            j = idx[i : i + 8]
            p[j] = model(x[j]).argmax(1)
        preds.append(p)
    out["flip_fraction_bs8"] = float((preds[0] != preds[1]).float().mean())
    model.load_state_dict(saved)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    before = bns[0].running_mean.clone()
    model(x + 1.0)  # a forgotten model.eval() on shifted inputs: the running statistics are overwritten
    out["buffer_drift"] = float((bns[0].running_mean - before).abs().max())
    model.load_state_dict(saved)
    try:
        model(x[:1])
        out["batch1_error"] = None
    except ValueError as e:
        out["batch1_error"] = str(e)
    model.load_state_dict(saved)
    model.eval()
    correct = sum(int(model(x[i : i + 1]).argmax(1).item() == int(y[i])) for i in range(len(x)))
    out["batch1_eval_acc"] = correct / len(x)
    return out


def bn_step_cost(device: str = "cpu", *, depth: int = 4, width: int = 256, batch_size: int = 128,
                 rounds: int = 5, repeats: int = 6, seed: int | None = None) -> dict[str, float | str]:
    """Median seconds per training step (forward, backward, SGD step) of the MLP without and with BN on
    ``device``, and their ratio ``with_bn / without_bn``. Timed with :func:`lessons_lib.timing.time_it`
    (device synchronized); the two models alternate over ``rounds`` so that a machine busy with other
    work slows both alike."""
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
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    return {"without_bn": without, "with_bn": with_, "ratio": with_ / without, "device": str(dev)}


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib)
# ----------------------------------------------------------------------------------------------
def plot_sweep(sweep: Sweep):
    """Best val accuracy and epochs to the target, against the learning rate, with and without BN."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {False: ("without BN", "#d62728", "s--"), True: ("with BN", "#1f77b4", "o-")}
    for bn, (label, color, fmt) in styles.items():
        a.plot(sweep.lrs, sweep.final_acc(bn), fmt, color=color, label=label)
        ep = sweep.epochs_to_target(bn)
        n_ep = len(sweep.histories[(bn, sweep.lrs[0])].epoch)
        reached = [(lr, e) for lr, e in zip(sweep.lrs, ep) if e is not None]
        never = [lr for lr, e in zip(sweep.lrs, ep) if e is None]
        if reached:
            b.plot(*zip(*reached), fmt[0], color=color, label=label, ms=8, ls="none")
        if never:
            b.plot(never, [n_ep + 1 + (0.25 if bn else 0)] * len(never), "x", color=color, ms=9, mew=2,
                   label=f"{label}: never")
    a.axhline(sweep.target, color="gray", lw=1, ls=":")
    a.text(sweep.lrs[0], sweep.target + 0.015, f"target {sweep.target:.0%}", color="gray", fontsize=9)
    a.set(xscale="log", xlabel="learning rate (SGD, momentum 0.9)", ylabel="best val accuracy", ylim=(0, 1.02),
          title="How well each learning rate trains")
    n_ep = len(sweep.histories[(True, sweep.lrs[0])].epoch)
    b.set(xscale="log", xlabel="learning rate", ylabel="epochs", ylim=(0, n_ep + 2),
          title=f"Epochs to reach {sweep.target:.0%} val accuracy (x = never in {n_ep})")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left" if ax is a else "center right")
    fig.tight_layout()
    return fig


def plot_identity_task(task: IdentityTask):
    """Left: the identity task's error with and without affine terms. Right: what gamma and beta learned
    vs the input's sd and mean."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(task.loss_plain, color="#d62728", label="no affine (gamma = 1, beta = 0 fixed)")
    a.plot(task.loss_affine, color="#1f77b4", label="learnable gamma, beta")
    a.set(yscale="log", xlabel="gradient step", ylabel="mean squared error of BN(x) vs x",
          title="Can a BN layer pass its input through?")
    a.legend(fontsize=8)
    lo = min(task.true_mean.min(), task.beta.min(), 0) - 0.3
    hi = max(task.true_sd.max(), task.gamma.max(), task.true_mean.max()) + 0.3
    b.plot([lo, hi], [lo, hi], color="gray", lw=1, ls=":", label="learned = true")
    b.plot(task.true_sd, task.gamma, "o", color="#1f77b4", label="gamma vs the input's sd")
    b.plot(task.true_mean, task.beta, "s", color="#2ca02c", label="beta vs the input's mean")
    b.set(xlabel="what the input has (per channel)", ylabel="what BN learned", title="gamma -> sd, beta -> mean")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learned_affine(params: list[dict[str, np.ndarray]]):
    """A trained network's gamma (beta) per unit against the value that would undo its normalization,
    sqrt(running_var + eps) (running_mean): on the dotted diagonal the layer would cancel BN."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, p in enumerate(params):
        a.plot(p["undo_gamma"], p["gamma"], "o", ms=4, alpha=0.7, label=f"BN layer {i + 1}")
        b.plot(p["undo_beta"], p["beta"], "o", ms=4, alpha=0.7, label=f"BN layer {i + 1}")
    for ax, key, init, name in ((a, "gamma", 1.0, "gamma"), (b, "beta", 0.0, "beta")):
        vals = np.concatenate([np.r_[p[key], p["undo_" + key]] for p in params])
        lo, hi = min(vals.min(), init) - 0.1, max(vals.max(), init) + 0.1
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls=":", label=f"{name} that undoes BN")
        ax.axhline(init, color="black", lw=0.8, ls="--", label=f"initial {name} = {init:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    a.set(xlabel="sqrt(running_var + eps)", ylabel="learned gamma", title="gamma after training, per unit")
    b.set(xlabel="running_mean", ylabel="learned beta", title="beta after training, per unit")
    fig.tight_layout()
    return fig


def undo_distance(params: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean |gamma - 1| and |gamma - sqrt(running_var + eps)| over all units (and the same for beta vs 0
    and running_mean): how far training moved the affine terms, and how far they are from cancelling BN."""
    cat = lambda k: np.concatenate([p[k] for p in params])  # noqa: E731
    g, ug, b, ub = cat("gamma"), cat("undo_gamma"), cat("beta"), cat("undo_beta")
    return {"gamma_from_init": float(np.mean(np.abs(g - 1))), "gamma_from_undo": float(np.mean(np.abs(g - ug))),
            "beta_from_init": float(np.mean(np.abs(b))), "beta_from_undo": float(np.mean(np.abs(b - ub)))}


def plot_pitfalls(p: dict):
    """Validation accuracy of one trained BN model predicted the right way and the wrong ways."""
    import matplotlib.pyplot as plt

    labels = ["eval mode\n(whole set)", "eval mode\nbatch of 1"]
    values = [p["eval_acc"], p["batch1_eval_acc"]]
    colors = ["#1f77b4", "#1f77b4"]
    for bs, acc in sorted(p["train_mode_acc"].items(), reverse=True):
        labels.append(f"train mode\nbatches of {bs}")
        values.append(acc)
        colors.append("#d62728")
    fig, ax = plt.subplots(figsize=(9, 3.4))
    bars = ax.bar(range(len(values)), values, color=colors)
    for r, v in zip(bars, values):
        ax.text(r.get_x() + r.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="val accuracy", title="The same trained model, evaluated right (blue) and wrong (red)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------------
def claims(*, norm: dict, torch_diff: dict, coupling: dict, sweep: Sweep, affine: IdentityTask,
           pitfalls: dict, learned: dict | None = None) -> Claims:
    """The lesson's claims table, from the measurements of this run (``learned``: :func:`undo_distance`
    of a trained BN network, optional)."""
    c = Claims("05 batch normalization")
    c.add("In training, BN makes each neuron's output over the minibatch mean 0 and sd 1", SOURCE,
          f"max |mean| {norm['out_max_abs_mean']:.1e}, max |sd - 1| {norm['out_max_abs_sd_minus_1']:.1e} "
          f"(input: {norm['in_max_abs_mean']:.3g}, {norm['in_max_abs_sd_minus_1']:.3g})",
          norm["out_max_abs_mean"] < 1e-8 and norm["out_max_abs_sd_minus_1"] < 1e-3)
    worst = max(torch_diff.values())
    c.add("At evaluation the running averages replace the batch statistics (our layer = torch.nn.BatchNorm1d)",
          SOURCE, f"largest difference to torch over train steps + eval: {worst:.1e} (float64)", worst < 1e-6)
    c.add("Batch statistics make the samples of a minibatch depend on each other", SOURCE,
          f"sample 0's output moves by {coupling['train']:.3g} when its batch-mates change (train mode), "
          f"{coupling['eval']:.1g} in eval mode", coupling["train"] > 1e-3 and coupling["eval"] == 0.0)
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
        g_ok = learned["gamma_from_init"] < learned["gamma_from_undo"]
        b_ok = learned["beta_from_init"] < learned["beta_from_undo"]
        c.add("'Doesn't this defeat the purpose?' A trained net does not use gamma, beta to cancel BN", SOURCE,
              f"mean |gamma - 1| {learned['gamma_from_init']:.3f} vs |gamma - sqrt(running_var)| "
              f"{learned['gamma_from_undo']:.3f}; mean |beta| {learned['beta_from_init']:.3f} vs "
              f"|beta - running_mean| {learned['beta_from_undo']:.3f}", g_ok and b_ok)
    tm = pitfalls["train_mode_acc"]
    small = min(tm)
    c.add("Evaluate in eval mode: train-mode predictions depend on the batch", "course (lesson 05)",
          f"val acc {pitfalls['eval_acc']:.3f} in eval mode vs {tm[small]:.3f} in train mode with batches of "
          f"{small}; {pitfalls['flip_fraction_bs8']:.1%} of predictions change with the batching",
          pitfalls["eval_acc"] > tm[small] and pitfalls["flip_fraction_bs8"] > 0)
    return c


def make_panel():
    """The lesson's live panel: BN on/off, learning rate, depth, batch size, epochs. The runs table's
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


# ----------------------------------------------------------------------------------------------
# Exercises
# ----------------------------------------------------------------------------------------------
def check_running_mean(answer: float) -> bool:
    """Exercise 1: running_mean starts at 0, momentum 0.1, one training batch with mean 5. New value?"""
    return check(answer, 0.5, rel_tol=1e-6, praise="new = 0.9 * 0 + 0.1 * 5 = 0.5: the running mean starts "
                 "far from the data and takes many batches to catch up.",
                 hint="PyTorch's rule is new = (1 - momentum) * old + momentum * batch_mean.")


def check_running_var(answer: float) -> bool:
    """Exercise 2: running_var starts at 1, momentum 0.1, one training batch [1, 2, 3, 4] (one feature)."""
    expected = 0.9 * 1.0 + 0.1 * float(np.var([1, 2, 3, 4], ddof=1))
    return check(answer, expected, rel_tol=1e-4, praise="the running variance uses the unbiased batch variance "
                 "(5/3, divided by m - 1), while the batch itself is normalized with the biased one (5/4).",
                 hint="use the unbiased variance of [1, 2, 3, 4] (divide by m - 1 = 3) in the running average.")


def check_bn_parameters(answer: int) -> bool:
    """Exercise 3: how many learnable parameters does nn.BatchNorm1d(64) have?"""
    return check(answer, 128, praise="64 gammas and 64 betas; running_mean and running_var are buffers, "
                 "not parameters: the optimizer never touches them.",
                 hint="count gamma and beta (one each per feature); the running statistics are not learned.")


def check_eval_batch_of_one(answer: str) -> bool:
    """Exercise 4: which call makes a BN model predict a single example correctly: 'train' or 'eval'?"""
    return check(answer, "eval", normalize=lambda s: str(s).strip().lower().replace("model.", "").replace("()", ""),
                 praise="in eval mode BN uses the running statistics, so one example is fine.",
                 hint="in train mode a batch of 1 has no variance to normalize by: PyTorch refuses it.")
