"""Batch normalization from scratch (numpy), cs231n style: a forward/backward pair with an explicit cache,
and the PyTorch MLP where the layer sits (lesson 05; seed 004 of the course, "Batch Normalization")::

    state = new_state(C)
    out, cache = batchnorm_forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

``x`` is ``(N, C)``: N samples of C features; ``gamma`` and ``beta`` are ``(C,)``. In **training** mode the
batch is normalized with its own mean and *biased* variance (divided by N), and the running averages in
``state`` are updated in place with PyTorch's conventions::

    running_mean = (1 - momentum) * running_mean + momentum * batch_mean
    running_var  = (1 - momentum) * running_var  + momentum * batch_var * N / (N - 1)   # the unbiased one

In **eval** mode the running averages replace the batch statistics and ``state`` is left alone.
The cache is the tuple ``(x_hat, gamma, inv_std, train)``: what the backward pass needs, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..models import ACTIVATIONS
from ..validate import BadArgument, check_choice, check_float, check_int


@dataclass
class BatchNormState:
    """The running statistics of one batch-norm layer, ``(C,)`` each (float64). A training-mode forward
    updates them in place; eval mode reads them."""

    running_mean: np.ndarray
    running_var: np.ndarray

    def copy(self) -> BatchNormState:
        return BatchNormState(self.running_mean.copy(), self.running_var.copy())


def new_state(n_features: int) -> BatchNormState:
    """Fresh running statistics for ``n_features`` channels, as PyTorch starts them: mean 0, variance 1."""
    c = check_int(n_features, "n_features", low=1, fix="one running mean and variance per feature, e.g. new_state(64)")
    return BatchNormState(np.zeros(c), np.ones(c))


def _real_array(a: object, name: str, fix: str) -> np.ndarray:
    """``a`` as a float array (integers become float64, float32 stays), refusing what is not real-valued."""
    arr = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise BadArgument(f"{name} must be an array of real numbers, got dtype {arr.dtype}; {fix}")
    arr = arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise BadArgument(f"{name} holds NaN or inf (a diverged step upstream?); {fix}")
    return arr


def _check_args(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, state: BatchNormState, train: object,
                momentum: object, eps: object) -> tuple[float, float]:
    """Clear errors for the inputs people get wrong, each naming the fix; returns ``(momentum, eps)`` as floats."""
    if x.ndim != 2 or 0 in x.shape:
        raise BadArgument(f"batchnorm_forward needs x of shape (N, C) with N, C >= 1, got shape {x.shape}"
                          + (": add a batch axis, e.g. x[None, :]" if x.ndim == 1 else ""))
    c = x.shape[1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise BadArgument(f"gamma and beta must have shape ({c},), one value per feature of x {x.shape}; got "
                          f"gamma {gamma.shape} and beta {beta.shape}. Make them with np.ones({c}) and np.zeros({c})")
    if not isinstance(state, BatchNormState):
        raise BadArgument(f"state must be a BatchNormState (make one with new_state({c})), got {type(state).__name__}")
    for name in ("running_mean", "running_var"):
        v = _real_array(getattr(state, name), f"state.{name}", f"make the state with new_state({c})")
        if v.shape != (c,):
            raise BadArgument(f"state.{name} has shape {v.shape} but x has {c} features: make the state with "
                              f"new_state({c})")
        if name == "running_var" and np.any(v < 0):
            raise BadArgument(f"state.running_var holds negative values {v[v < 0][:3]}: a variance is >= 0")
        setattr(state, name, v)
    if not isinstance(train, (bool, np.bool_)):
        raise BadArgument(f"train={train!r}: must be True (batch statistics) or False (running statistics), "
                          f"got {type(train).__name__}")
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0,
                           fix="the weight of the new batch in the running average (PyTorch's convention), e.g. 0.1")
    eps = check_float(eps, "eps", low=0.0, low_open=True, fix="a small positive number that keeps 1/sqrt(var + eps) "
                                                              "finite, e.g. the default 1e-5")
    if train and x.shape[0] < 2:
        raise BadArgument(f"training-mode batch norm needs more than 1 value per feature, got x of shape {x.shape}: "
                          "use a batch of 2 or more, or train=False to use the running statistics")
    return momentum, eps


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, state: BatchNormState,
                      train: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature, and the cache for the backward.

    ``train=True``: mean and biased variance of this batch; ``state``'s running averages move towards them
    (unbiased variance). ``train=False``: ``state``'s running averages, untouched.
    Returns ``(out, (x_hat, gamma, inv_std, train))``, ``out`` of the shape of ``x``.
    """
    fix = "pass numpy arrays of finite numbers: x (N, C), gamma and beta (C,)"
    x, gamma, beta = (_real_array(a, n, fix) for a, n in ((x, "x"), (gamma, "gamma"), (beta, "beta")))
    momentum, eps = _check_args(x, gamma, beta, state, train, momentum, eps)
    if train:
        n = x.shape[0]
        mean, var = x.mean(axis=0), x.var(axis=0)  # var divides by n: it normalizes this very batch
        state.running_mean = (1 - momentum) * state.running_mean + momentum * mean
        state.running_var = (1 - momentum) * state.running_var + momentum * var * n / (n - 1)
    else:
        mean, var = state.running_mean.astype(x.dtype), state.running_var.astype(x.dtype)  # float32 stays float32
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    return gamma * x_hat + beta, (x_hat, gamma, inv_std, bool(train))


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of a loss, given ``dout`` = d loss / d out ``(N, C)``.

    ``dbeta = sum(dout)``, ``dgamma = sum(dout * x_hat)`` over the batch axis. In training mode the batch
    mean and variance depend on every sample, so ``dx`` couples the batch (three paths: direct, through the
    mean, through the variance), which sums up to::

        dx = gamma * inv_std / N * (N * dout - sum(dout) - x_hat * sum(dout * x_hat))

    In eval mode the statistics are constants and ``dx = gamma * inv_std * dout``.
    """
    if not isinstance(cache, (tuple, list)) or len(cache) != 4:
        raise BadArgument(f"cache must be the tuple (x_hat, gamma, inv_std, train) that batchnorm_forward returned, "
                          f"got {type(cache).__name__}" + (f" of length {len(cache)}" if hasattr(cache, "__len__")
                                                           else ""))
    x_hat, gamma, inv_std, train = cache
    x_hat, gamma, inv_std = (np.asarray(a) for a in (x_hat, gamma, inv_std))
    if x_hat.ndim != 2 or gamma.shape != (x_hat.shape[1],) or inv_std.shape != gamma.shape:
        raise BadArgument(f"cache does not hold what batchnorm_forward returns: x_hat {x_hat.shape} must be (N, C), "
                          f"gamma {gamma.shape} and inv_std {inv_std.shape} must be (C,): pass the forward's cache")
    dout = _real_array(dout, "dout", f"pass d loss / d out: finite numbers of the forward output's shape {x_hat.shape}")
    if dout.shape != x_hat.shape:
        raise BadArgument(f"dout has shape {dout.shape} but the forward output had shape {x_hat.shape}: pass "
                          "d loss / d out, one value per output")
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    if not train:
        return gamma * inv_std * dout, dgamma, dbeta
    n = dout.shape[0]
    dx = gamma * inv_std / n * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def bn_mlp(n_in: int, widths: Sequence[int], n_out: int, batchnorm: bool = True, affine: bool = True,
           activation: str = "relu", momentum: float = 0.1) -> nn.Sequential:
    """The PyTorch side: ``n_in -> widths... -> n_out`` logits. Each hidden layer is ``Linear -> BatchNorm1d ->
    activation`` with ``batchnorm`` (BN before the activation, as the seed says is usual; the Linear has no bias:
    BN's beta plays its role), else ``Linear -> activation``. ``affine=False`` drops gamma and beta."""
    check_choice(activation, "activation", ACTIVATIONS)
    n_in = check_int(n_in, "n_in", low=1, fix="the number of input features, e.g. data.n_features")
    n_out = check_int(n_out, "n_out", low=1, fix="the number of classes, e.g. data.n_classes")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise BadArgument(f"widths={widths!r}: must be a list of hidden-layer widths, e.g. [64, 64] ([] for none)")
    widths = [check_int(w, f"widths[{i}]", low=1) for i, w in enumerate(widths)]
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0, fix="PyTorch's convention, e.g. 0.1")
    for name, flag in (("batchnorm", batchnorm), ("affine", affine)):
        if not isinstance(flag, (bool, np.bool_)):
            raise BadArgument(f"{name}={flag!r}: must be True or False")
    layers: list[nn.Module] = []
    prev = n_in
    for w in widths:
        layers.append(nn.Linear(prev, w, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(w, momentum=momentum, affine=bool(affine)))
        layers.append(ACTIVATIONS[activation]())
        prev = w
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)
