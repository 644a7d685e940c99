"""The checks of lesson 05's exercises, each against something that is not a copy of the solution.

* :func:`check_batchnorm_forward`: the learner's forward against ``torch.nn.BatchNorm1d`` in float64, several
  training steps (the output, then ``running_mean`` and ``running_var`` after each) and then eval mode on a new
  batch; the cache against its contract ``(x_hat, gamma, inv_std, train)``.
* :func:`check_batchnorm_backward`: ``(dx, dgamma, dbeta)`` against torch autograd through
  ``torch.nn.functional.batch_norm``, in training and in eval mode.
* :func:`check_bn_parameters`, :func:`check_deploy_mode`: answers read off the learner's own run.

A wrong result is compared with what each typical mistake would have returned (recomputed here), so the hint
names the mistake; when none matches, the hint says which case failed, expected against got.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect, expect_shape, expect_signature
from ..validate import BadArgument
from .lab import Pitfalls
from .reference import new_state


def _close(a: Any, b: np.ndarray) -> bool:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-7, atol=1e-9))


def _count(answer: Any) -> Any:
    """A whole-number answer as an int (numpy and 0-d tensor numbers too); anything else as a text that matches no
    count (a bool, an array, a string), so a check compares without raising."""
    if hasattr(answer, "ndim") and getattr(answer, "ndim", None) == 0 and hasattr(answer, "item"):
        answer = answer.item()
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool) and float(answer).is_integer():
        return int(answer)
    return f"not a whole number: {type(answer).__name__} {answer!r:.40}"


def _show(v: Any) -> str:
    return np.array2string(np.asarray(v, dtype=np.float64).ravel()[:4], precision=4, suppress_small=True)


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: the forward pass, against torch.nn.BatchNorm1d
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Case:
    n: int
    c: int
    momentum: float
    eps: float
    train_steps: int
    seed: int

    def __str__(self) -> str:
        return f"x of shape ({self.n}, {self.c}), momentum {self.momentum}, eps {self.eps}"


FORWARD_CASES = (_Case(8, 5, 0.1, 1e-5, 3, 501), _Case(4, 3, 0.3, 0.1, 2, 502))


@dataclass
class _Call:
    """One call of torch's layer: its input, output, and the running statistics before and after."""

    x: np.ndarray
    out: np.ndarray
    train: bool
    mean_before: np.ndarray
    var_before: np.ndarray
    mean_after: np.ndarray
    var_after: np.ndarray


def _torch_calls(case: _Case) -> tuple[np.ndarray, np.ndarray, list[_Call]]:
    """gamma, beta and torch's BatchNorm1d (float64) on ``train_steps`` training batches, then one eval batch."""
    rng = np.random.default_rng(case.seed)
    gamma, beta = rng.normal(1.0, 0.4, case.c), rng.normal(0.0, 0.5, case.c)
    layer = nn.BatchNorm1d(case.c, momentum=case.momentum, eps=case.eps).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    calls = []
    for k in range(case.train_steps + 1):
        x = rng.normal(rng.normal(0.0, 3.0, case.c), rng.uniform(0.5, 4.0, case.c), size=(case.n, case.c))
        layer.train(k < case.train_steps)
        before = layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()
        with torch.no_grad():
            out = layer(torch.from_numpy(x)).numpy()
        calls.append(_Call(x, out, layer.training, *before, layer.running_mean.numpy().copy(),
                           layer.running_var.numpy().copy()))
    return gamma, beta, calls


def _normalize(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
               eps: float) -> np.ndarray:
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def _output_mistakes(call: _Call, gamma: np.ndarray, beta: np.ndarray, eps: float) -> dict[str, Callable]:
    x = call.x
    mu, var, var_u = x.mean(0), x.var(0), x.var(0, ddof=1)
    xhat = (x - mu) / np.sqrt(var + eps)
    row_mu, row_var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    if not call.train:
        ev = {
            "batch statistics used in eval mode: with train=False normalize with state.running_mean and "
            "state.running_var (what training averaged), not with this batch's mean and variance":
                [_normalize(x, mu, var, gamma, beta, eps), _normalize(x, mu, var_u, gamma, beta, eps)],
            "eps added outside the square root: divide by np.sqrt(var + eps), not np.sqrt(var) + eps":
                [gamma * (x - call.mean_before) / (np.sqrt(call.var_before) + eps) + beta],
        }
        return {hint: (lambda v, cs=cs: any(_close(v, c) for c in cs)) for hint, cs in ev.items()}
    cands = {
        "eps added outside the square root: divide by np.sqrt(var + eps), not np.sqrt(var) + eps":
            gamma * (x - mu) / (np.sqrt(var) + eps) + beta,
        "eps missing: divide by np.sqrt(var + eps), not np.sqrt(var) (eps keeps a constant feature finite)":
            gamma * (x - mu) / np.sqrt(var) + beta,
        "the batch normalized with the unbiased variance (divided by N - 1): the batch itself uses the biased one, "
        "x.var(axis=0) (divided by N); only the running average takes the unbiased one":
            _normalize(x, mu, var_u, gamma, beta, eps),
        "running statistics used in training mode: with train=True normalize with this batch's mean and variance; "
        "the running averages are for eval mode": _normalize(x, call.mean_before, call.var_before, gamma, beta, eps),
        "statistics over the wrong axis: mean and variance are per feature, over the batch (axis=0), not per "
        "sample (axis=1)": gamma * (x - row_mu) / np.sqrt(row_var + eps) + beta,
        "gamma and beta not applied: out = gamma * x_hat + beta (the affine terms)": xhat,
        "gamma and beta swapped: out = gamma * x_hat + beta": beta * xhat + gamma,
    }
    return {hint: (lambda v, c=c: _close(v, c)) for hint, c in cands.items()}


def _running_mistakes(call: _Call, m: float) -> dict[str, Callable]:
    x, pm, pv = call.x, call.mean_before, call.var_before
    mu, var, var_u = x.mean(0), x.var(0), x.var(0, ddof=1)
    return {
        "running statistics not updated: assign the new averages to state.running_mean and state.running_var (a "
        "local variable is lost when the function returns)": lambda s: _close(s[0], pm) and _close(s[1], pv),
        "momentum applied the wrong way round (Keras convention: running = m·running + (1 − m)·batch); in PyTorch "
        "momentum is the weight of the NEW batch: running = (1 - momentum) * running + momentum * batch":
            lambda s: _close(s[0], m * pm + (1 - m) * mu),
        "running statistics replaced by this batch's instead of averaged: running = (1 - momentum) * running + "
        "momentum * batch": lambda s: _close(s[0], mu),
        "biased variance in the running average (PyTorch stores the unbiased one): running_var takes "
        "x.var(axis=0, ddof=1), i.e. var * N / (N - 1), while the batch is normalized with the biased var":
            lambda s: _close(s[1], (1 - m) * pv + m * var),
        "the standard deviation averaged into running_var: it is the running average of the variance":
            lambda s: _close(s[1], (1 - m) * pv + m * np.sqrt(var_u)) or _close(s[1], (1 - m) * pv + m * np.sqrt(var)),
    }


def _unpack(result: Any, n_out: int, what: str) -> tuple:
    if not isinstance(result, (tuple, list)) or len(result) != n_out:
        raise Mistake(f"{what} must return a tuple of {n_out}, got {type(result).__name__}"
                      + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    return tuple(result)


def _check_cache(cache: Any, call: _Call, gamma: np.ndarray, eps: float) -> None:
    contract = "the cache must be the tuple (x_hat, gamma, inv_std, train) that batchnorm_backward reads"
    if not isinstance(cache, tuple) or len(cache) != 4:
        raise Mistake(f"{contract}; got {type(cache).__name__}" + (f" of length {len(cache)}"
                                                                    if isinstance(cache, (tuple, list)) else ""))
    x_hat, g, inv_std, train = cache
    mean, var = (call.x.mean(0), call.x.var(0)) if call.train else (call.mean_before, call.var_before)
    want = 1.0 / np.sqrt(var + eps)
    expect(not _close(inv_std, 1.0 / want), f"{contract}: cache[2] is sqrt(var + eps), the backward needs its "
                                             "inverse inv_std = 1 / np.sqrt(var + eps)")
    expect(_close(inv_std, want), f"{contract}: cache[2] must be inv_std = 1 / np.sqrt(var + eps), shape (C,), with "
                                  f"the statistics this call normalized with; got {_show(inv_std)}")
    expect(_close(x_hat, (call.x - mean) * want), f"{contract}: cache[0] must be x_hat = (x - mean) * inv_std, "
                                                  "the normalized input before gamma and beta")
    expect(_close(g, gamma), f"{contract}: cache[1] must be gamma")
    expect(isinstance(train, (bool, np.bool_)) and bool(train) == call.train,
           f"{contract}: cache[3] must be the train flag of this call ({call.train}), got {train!r}")


def _forward_case(fn: Callable, case: _Case) -> None:
    gamma, beta, calls = _torch_calls(case)
    state = new_state(case.c)
    for k, call in enumerate(calls):
        where = (f"training step {k + 1}" if call.train else f"eval mode after {case.train_steps} training steps") \
            + f", {case}"
        x = call.x.copy()
        out, cache = _unpack(fn(x, gamma.copy(), beta.copy(), state, train=call.train, momentum=case.momentum,
                                eps=case.eps), 2, "batchnorm_forward")
        expect(np.array_equal(x, call.x), f"your batchnorm_forward changed x in place ({where}): compute into new "
                                          "arrays (x - mean, not x -= mean)")
        expect_shape(out, x.shape, f"out ({where})")
        if not _close(out, call.out):
            diagnose(out, _output_mistakes(call, gamma, beta, case.eps))
            err = float(np.max(np.abs(np.asarray(out, dtype=np.float64) - call.out)))
            raise Mistake(f"out differs from torch.nn.BatchNorm1d ({where}) by up to {err:.3g}: first row expected "
                          f"{_show(call.out[0])}, got {_show(np.asarray(out)[0])}")
        running = (np.asarray(state.running_mean), np.asarray(state.running_var))
        if call.train and not (_close(running[0], call.mean_after) and _close(running[1], call.var_after)):
            diagnose(running, _running_mistakes(call, case.momentum))
            raise Mistake(f"state's running statistics after {where} differ from torch's: running_mean expected "
                          f"{_show(call.mean_after)}, got {_show(running[0])}; running_var expected "
                          f"{_show(call.var_after)}, got {_show(running[1])}")
        if not call.train:
            expect(_close(running[0], call.mean_before) and _close(running[1], call.var_before),
                   "eval mode changed the running statistics: with train=False only read them (PyTorch updates them "
                   "in training mode only)")
        _check_cache(cache, call, gamma, case.eps)


def check_batchnorm_forward(fn: Callable) -> CheckResult:
    """Exercise 1: ``batchnorm_forward(x, gamma, beta, state, train, momentum, eps) -> (out, cache)`` against
    ``torch.nn.BatchNorm1d`` (float64): a few training steps, then eval mode."""

    def body(f: Callable) -> None:
        expect_signature(f, "batchnorm_forward(x, gamma, beta, state, train=..., momentum=..., eps=...)", 0, 0, 0, 0,
               train=True, momentum=0.1, eps=1e-5)
        for case in FORWARD_CASES:
            _forward_case(f, case)

    return check_code("batchnorm_forward", fn, body,
                      praise="your forward equals torch.nn.BatchNorm1d in float64: outputs, running_mean and "
                             "running_var over several training steps (unbiased variance, PyTorch's momentum), "
                             "then eval mode with the running statistics.",
                      not_written="It is checked against torch.nn.BatchNorm1d over a few training steps and eval.")


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: the backward pass, against torch autograd
# ---------------------------------------------------------------------------------------------------------
BACKWARD_CASES = ((6, 4, True, 1e-5, 511), (5, 3, False, 1e-5, 512), (3, 5, True, 0.01, 513))


def _autograd(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dout: np.ndarray, train: bool, eps: float,
              running: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    rm, rv = (None, None) if running is None else (torch.from_numpy(running[0]), torch.from_numpy(running[1]))
    F.batch_norm(xt, rm, rv, gt, bt, training=train, eps=eps).backward(torch.from_numpy(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def _backward_case(fn: Callable, n: int, c: int, train: bool, eps: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.normal(0.0, 2.0, c), rng.uniform(0.5, 3.0, c), size=(n, c))
    gamma, beta, dout = rng.normal(1.0, 0.5, c), rng.normal(0.0, 0.5, c), rng.normal(size=(n, c))
    running = (rng.normal(0.0, 1.0, c), rng.uniform(0.5, 2.0, c))
    mean, var = (x.mean(0), x.var(0)) if train else running
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    dx_t, dgamma_t, dbeta_t = _autograd(x, gamma, beta, dout, train, eps, None if train else running)
    where = f"{'training' if train else 'eval'} mode, x of shape ({n}, {c})"
    dx, dgamma, dbeta = _unpack(fn(dout.copy(), (x_hat.copy(), gamma.copy(), inv_std.copy(), train)), 3,
                                "batchnorm_backward")
    for name, g in (("dgamma", dgamma), ("dbeta", dbeta)):
        shape = np.shape(g)
        expect(shape != (n,), f"dgamma/dbeta summed over the wrong axis: {name} has shape {shape}, one value per "
                              f"sample; sum over the batch (axis=0) to get one value per feature, shape ({c},)")
        expect(shape != (), f"{name} summed over every axis (a single number): sum over the batch only (axis=0), "
                             f"one value per feature, shape ({c},)")
        expect_shape(g, (c,), f"{name} ({where})")
    expect_shape(dx, (n, c), f"dx ({where})")
    if not (_close(dgamma, dgamma_t) and _close(dbeta, dbeta_t)):
        diagnose((dgamma, dbeta), {
            "dgamma and dbeta swapped: dbeta = sum(dout), dgamma = sum(dout * x_hat) over the batch":
                lambda v: _close(v[0], dbeta_t) and _close(v[1], dgamma_t),
            "dgamma/dbeta averaged over the batch instead of summed: every sample adds its share to the gradient":
                lambda v: _close(v[1], dbeta_t / n) or _close(v[0], dgamma_t / n),
            "dgamma misses x_hat: out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat) over the batch":
                lambda v: _close(v[0], dbeta_t),
        })
        raise Mistake(f"dgamma or dbeta differs from torch autograd ({where}): dgamma expected {_show(dgamma_t)}, got "
                      f"{_show(dgamma)}; dbeta expected {_show(dbeta_t)}, got {_show(dbeta)}")
    if _close(dx, dx_t):
        return
    direct = gamma * inv_std * dout
    through_mean = gamma * inv_std * dout.mean(0)
    through_var = gamma * inv_std * x_hat * (dout * x_hat).mean(0)
    mistakes = {
        "backward misses the terms through the mean and variance (treats them as constants): in training mode each "
        "x_i also moves the batch mean and variance, which adds two terms to dx": direct,
        "backward misses the term through the variance: the variance depends on every x_i too "
        "(d var / d x_i = 2 (x_i - mean) / N)": direct - through_mean,
        "backward misses the term through the mean: the mean depends on every x_i too (d mean / d x_i = 1 / N)":
            direct - through_var,
        "dx misses the factor gamma: out = gamma * x_hat + beta, so d out / d x_hat = gamma": dx_t / gamma,
        "dx is N times too large: the mean and the variance divide by N": dx_t * n,
    } if train else {
        "in eval mode the statistics are constants (the running averages), so dx = gamma * inv_std * dout: read "
        "the train flag from the cache": direct - through_mean - through_var,
        "dx misses the factor gamma: out = gamma * x_hat + beta, so d out / d x_hat = gamma": dx_t / gamma,
    }
    diagnose(dx, {hint: (lambda v, c=c: _close(v, c)) for hint, c in mistakes.items()})
    err = float(np.max(np.abs(np.asarray(dx, dtype=np.float64) - dx_t)))
    raise Mistake(f"dx differs from torch autograd ({where}) by up to {err:.3g}: first row expected {_show(dx_t[0])}, "
                  f"got {_show(np.asarray(dx)[0])}")


def check_batchnorm_backward(fn: Callable) -> CheckResult:
    """Exercise 2: ``batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)`` against torch autograd through
    ``F.batch_norm`` (float64), in training and eval mode; the cache is built by the contract."""

    def body(f: Callable) -> None:
        expect_signature(f, "batchnorm_backward(dout, cache)", 0, 0)
        for case in BACKWARD_CASES:
            _backward_case(f, *case)

    return check_code("batchnorm_backward", fn, body,
                      praise="dx, dgamma and dbeta equal torch autograd in training mode (the batch statistics "
                             "depend on every sample) and in eval mode (they are constants).",
                      not_written="It is checked against torch autograd through F.batch_norm.")


# ---------------------------------------------------------------------------------------------------------
# Answers from the learner's run
# ---------------------------------------------------------------------------------------------------------
def check_bn_parameters(answer: Any, model: nn.Module) -> CheckResult:
    """How many learnable parameters do the BatchNorm layers of ``model`` (the trained network) hold?"""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
        if isinstance(model, nn.Module) else []
    if not bns:
        raise BadArgument(f"model must be the trained network with BatchNorm layers (section 5's model), got "
                          f"{type(model).__name__}" + (" without BatchNorm layers" if isinstance(model, nn.Module)
                                                       else ""))
    expected = sum(p.numel() for m in bns for p in m.parameters())
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in bns)
    mistakes = {expected + stats: "that counts running_mean and running_var too: they are buffers, not parameters "
                                  "(the optimizer never touches them; training mode averages them)",
                expected // 2: "count beta too: gamma and beta, one of each per unit",
                sum(p.numel() for p in bns[0].parameters()): "count every BatchNorm layer of the model, not only the "
                                                              "first"}
    hint = "print(model) lists its BatchNorm1d layers; count gamma and beta (one each per unit)."
    if isinstance(_count(answer), str) and not isinstance(answer, (bool, np.bool_, list, tuple, dict, set)) \
            and getattr(answer, "size", 1) == 1:  # (check_answer itself names bools, containers and arrays)
        hint = f"expected a whole number (how many parameters), got {type(answer).__name__} {answer!r:.40}. " + hint
    return check_answer(answer, expected, exercise="n_bn_parameters", mistakes=mistakes, normalize=_count,
                        praise=f"{len(bns)} BatchNorm layers, each with a gamma and a beta per unit. Their "
                               f"running_mean and running_var ({stats} numbers) are buffers: saved with the model, "
                               "never touched by the optimizer.", hint=hint)


def check_deploy_mode(answer: Any, pitfalls: Pitfalls) -> CheckResult:
    """A deployed BN model classifies one example at a time: which mode, "train" or "eval"? Checked with the
    run's :class:`~lessons_lib.batchnorm.lab.Pitfalls`."""
    if not isinstance(pitfalls, Pitfalls):
        raise BadArgument(f"pitfalls must be the Pitfalls of section 6 (lab.eval_pitfalls), got "
                          f"{type(pitfalls).__name__}")
    said = f"PyTorch said: {pitfalls.batch1_error}" if pitfalls.batch1_error else "it normalized each example by itself"
    return check_answer(answer, "eval", exercise="mode",
                        normalize=lambda s: str(s).strip().lower().removeprefix("model.").removesuffix("()"),
                        praise="in eval mode BN normalizes with the running statistics, so a batch of one is fine "
                               "(section 6 predicted the validation set one example at a time that way).",
                        mistakes={"train": f"in train mode a batch of one has no spread to normalize by ({said}).",
                          "model.train": f"in train mode a batch of one has no spread to normalize by ({said})."},
                        hint='answer "train" or "eval".')
