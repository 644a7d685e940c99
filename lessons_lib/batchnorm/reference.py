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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..models import ACTIVATIONS


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
    if int(n_features) < 1:
        raise ValueError(f"new_state needs n_features >= 1, got {n_features}")
    return BatchNormState(np.zeros(int(n_features)), np.ones(int(n_features)))


def _check_args(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, state: BatchNormState, train: bool,
                momentum: float, eps: float) -> None:
    """Clear errors for the inputs people get wrong, each naming the fix."""
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward needs x of shape (N, C), got shape {x.shape}"
                         + (": add a batch axis, e.g. x[None, :]" if x.ndim == 1 else ""))
    c = x.shape[1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"gamma and beta must have shape ({c},), one value per feature of x {x.shape}; got "
                         f"gamma {gamma.shape} and beta {beta.shape}. Make them with np.ones({c}) and np.zeros({c})")
    if not isinstance(state, BatchNormState):
        raise TypeError(f"state must be a BatchNormState (make one with new_state({c})), got {type(state).__name__}")
    if state.running_mean.shape != (c,) or state.running_var.shape != (c,):
        raise ValueError(f"the state's running statistics have shape {state.running_mean.shape} but x has {c} "
                         f"features: make the state with new_state({c})")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a small positive number (it keeps 1/sqrt(var + eps) finite), got {eps!r}; "
                         "use the default 1e-5")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] (the weight of the new batch in the running average, "
                         f"PyTorch's convention), got {momentum!r}; use the default 0.1")
    if train and x.shape[0] < 2:
        raise ValueError(f"training-mode batch norm needs more than 1 value per feature, got x of shape {x.shape}: "
                         "use a batch of 2 or more, or train=False to use the running statistics")


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, state: BatchNormState,
                      train: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature, and the cache for the backward.

    ``train=True``: mean and biased variance of this batch; ``state``'s running averages move towards them
    (unbiased variance). ``train=False``: ``state``'s running averages, untouched.
    Returns ``(out, (x_hat, gamma, inv_std, train))``, ``out`` of the shape of ``x``.
    """
    x, gamma, beta = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    _check_args(x, gamma, beta, state, train, momentum, eps)
    if train:
        n = x.shape[0]
        mean, var = x.mean(axis=0), x.var(axis=0)  # var divides by n: it normalizes this very batch
        state.running_mean = (1 - momentum) * state.running_mean + momentum * mean
        state.running_var = (1 - momentum) * state.running_var + momentum * var * n / (n - 1)
    else:
        mean, var = state.running_mean, state.running_var
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
    x_hat, gamma, inv_std, train = cache
    dout = np.asarray(dout)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout has shape {dout.shape} but the forward output had shape {x_hat.shape}")
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
