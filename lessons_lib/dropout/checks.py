"""Lesson 03's exercise checks: the learner's inverted dropout, forward and backward, against references that
are not a copy of the solution: exact binomial bounds on the dropped count, the spec's two output values, the
identity in eval mode (and an untouched random generator), PyTorch's ``nn.Dropout`` and centred differences.

Every check is deterministic (its generators have fixed seeds) and returns an :class:`exercises.CheckResult`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import binom

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect, expect_shape
from ..gradcheck import numerical_gradient_array, relative_error
from . import reference
from .lab import Sweep

ALPHA = 1e-9  # a right answer falls outside a bound with probability below this


def _dropped_bounds(n: int, p: float) -> tuple[int, int]:
    """Exact binomial bounds on how many of ``n`` units are dropped at drop probability ``p``."""
    lo, hi = binom.interval(1 - ALPHA, n, p)
    return int(lo), int(hi)


def _call(forward, x: np.ndarray, p: float, train: bool, rng) -> tuple[np.ndarray, tuple]:
    res = forward(x, p, train, rng)
    expect(isinstance(res, tuple) and len(res) == 2,
           f"dropout_forward must return a pair (out, cache); got {type(res).__name__}"
           f"{f' of {len(res)} items' if isinstance(res, tuple) else ''}. End with `return out, cache`.")
    out, cache = res
    expect_shape(out, x.shape, "out")
    return np.asarray(out), cache


def _check_values_and_rate(forward, p: float) -> None:
    """Every output is 0 or x/(1-p); the dropped count is within exact binomial bounds; the mean is kept."""
    x = 0.5 + np.random.default_rng(100).random((200, 500))  # no zeros: an output of 0 means "dropped"
    out, _ = _call(forward, x, p, True, np.random.default_rng(101))
    kept = out != 0
    n, n_dropped = x.size, int(x.size - kept.sum())
    ratio = out[kept] / x[kept]  # the scale applied to the kept units

    def scaled(s: float) -> bool:
        return bool(kept.any()) and np.allclose(ratio, s, rtol=1e-6)

    lo, hi = _dropped_bounds(n, p)
    lo_swap, hi_swap = _dropped_bounds(n, 1 - p)
    swapped = lo_swap <= n_dropped <= hi_swap
    if not scaled(1 / (1 - p)):
        diagnose(out, {
            "p treated as the probability to KEEP (cs231n's convention): here p is the probability to DROP. Keep a "
            "unit with probability 1 − p and scale the kept ones by 1/(1 − p).": lambda _: swapped and scaled(1 / p),
            "kept units scaled by 1/p instead of 1/(1−p): p is the DROP probability, 1 − p of the units survive, so "
            f"scale by 1/(1 − p) (= {1 / (1 - p):g} at p = {p:g}).": lambda _: scaled(1 / p),
            f"kept units not scaled (expected value shrinks by 1−p): at p = {p:g} the mean of your output is "
            f"{out.mean() / x.mean():.3f} of the input's. Divide the kept units by (1 − p).": lambda _: scaled(1.0),
            "kept units multiplied by (1 − p) instead of divided by it.": lambda _: scaled(1 - p),
        })
        bad = np.flatnonzero(kept.ravel() & ~np.isclose(out.ravel(), (x / (1 - p)).ravel(), rtol=1e-6))[0]
        raise Mistake(f"every output must be 0 (dropped) or x/(1−p) (kept); at p = {p:g}, x = {x.flat[bad]:.4f} "
                      f"gave {out.flat[bad]:.4f}, expected 0 or {x.flat[bad] / (1 - p):.4f}.")
    if not lo <= n_dropped <= hi:
        expect(not swapped, f"kept with probability p: p is the probability to DROP. At p = {p:g} you dropped "
                            f"{n_dropped / n:.3f} of the units instead of {p:g}: drop where rng.random(x.shape) < p.")
        raise Mistake(f"at p = {p:g} you dropped {n_dropped} of {n} units ({n_dropped / n:.4f}); a fair mask drops "
                      f"between {lo} and {hi} (exact binomial bounds). Draw one uniform number per unit.")
    sd = math.sqrt(p / (1 - p) * float(np.sum(x * x))) / n  # standard deviation of the mean of the output
    expect(abs(out.mean() - x.mean()) <= 6.5 * sd,
           f"the mean is not kept: {out.mean():.4f} vs the input's {x.mean():.4f} (more than 6.5 standard deviations).")


def _check_eval_mode(forward, x: np.ndarray) -> None:
    g = np.random.default_rng(102)
    state = g.bit_generator.state
    out, cache = _call(forward, x, 0.5, False, g)
    if not np.array_equal(out, x):
        diagnose(out, {
            "mask applied in eval mode: at evaluation dropout is the identity (return x unchanged: nothing dropped, "
            "nothing scaled).": lambda o: np.any((o == 0) & (x != 0)),
            "scaled by 1/(1−p) in eval mode: inverted dropout already scaled during training, so eval mode returns x "
            "itself.": lambda o: np.allclose(o, x / 0.5),
        })
        raise Mistake("in eval mode (train=False) dropout must return x unchanged.")
    expect(g.bit_generator.state == state, "eval mode drew random numbers from rng: return (x, (None, p)) before "
                                           "drawing a mask (evaluation must be deterministic and free).")
    expect(isinstance(cache, tuple) and len(cache) == 2 and cache[0] is None,
           "in eval mode the cache must be (None, p), so that the backward knows nothing was dropped; got "
           f"{cache!r:.80}")


def _check_cache_and_rng(forward, x: np.ndarray, p: float) -> None:
    out, cache = _call(forward, x, p, True, np.random.default_rng(103))
    expect(isinstance(cache, tuple) and len(cache) == 2,
           f"the cache must be the pair (keep, p); got {type(cache).__name__} {cache!r:.60}")
    keep, cache_p = cache
    expect_shape(keep, x.shape, "the cache's keep mask")
    expect(np.array_equal(np.asarray(keep) != 0, out != 0),
           "the cache's keep mask is not the mask you applied: keep must be True exactly where out is nonzero.")
    expect(cache_p == p, f"the cache's second item must be p ({p}), got {cache_p!r}.")
    again, _ = _call(forward, x, p, True, np.random.default_rng(103))
    expect(np.array_equal(out, again), "two generators seeded alike gave different masks: draw the mask from the "
                                       "rng argument (rng.random(x.shape)), not from np.random.")
    g = np.random.default_rng(104)
    expect(not np.array_equal(_call(forward, x, p, True, g)[0], _call(forward, x, p, True, g)[0]),
           "the same mask every call: draw a new one from rng each time (do not re-create a seeded generator).")


def _check_like_nn_dropout(forward, p: float, shape: tuple[int, int] = (256, 512)) -> None:
    """Same distribution as torch.nn.Dropout on ones: the same two values, dropped fractions within bounds."""
    out, _ = _call(forward, np.ones(shape), p, True, np.random.default_rng(105))
    with torch.random.fork_rng():
        torch.manual_seed(105)
        theirs = torch.nn.Dropout(p).train()(torch.ones(shape)).double().numpy()
    ours_v, theirs_v = np.unique(out), np.unique(theirs)
    expect(len(ours_v) == len(theirs_v) and np.allclose(ours_v, theirs_v, rtol=1e-6),
           f"on ones at p = {p:g}, nn.Dropout outputs the values {np.round(theirs_v, 4).tolist()}, yours "
           f"{np.round(ours_v[:4], 4).tolist()}.")
    n = out.size
    diff = abs(np.mean(out == 0) - np.mean(theirs == 0))
    expect(diff <= 6.5 * math.sqrt(2 * p * (1 - p) / n), f"on ones at p = {p:g} you dropped "
           f"{np.mean(out == 0):.4f} of the units and nn.Dropout {np.mean(theirs == 0):.4f}: too far apart.")


def check_dropout_forward(fn) -> CheckResult:
    """Check ``dropout_forward(x, p, train, rng) -> (out, cache)``, inverted dropout with cache ``(keep, p)``."""
    def body(forward) -> None:
        x = np.random.default_rng(106).standard_normal((8, 16))
        x[x == 0] = 1.0
        for p in (0.2, 0.5, 0.8):  # 0.2 first: 1/p and 1/(1-p) differ there
            _check_values_and_rate(forward, p)
        _check_eval_mode(forward, x)
        _check_cache_and_rng(forward, x, 0.3)
        for p in (0.2, 0.5):
            _check_like_nn_dropout(forward, p)

    return check_code("dropout_forward", fn, body,
                      praise="outputs are 0 or x/(1−p), the dropped share is within exact binomial bounds at p = "
                             "0.2, 0.5, 0.8, the mean is kept, eval mode is the identity and draws nothing, and the "
                             "distribution matches torch's nn.Dropout.",
                      not_written="It is checked against exact binomial bounds, the kept mean and nn.Dropout's "
                                  "statistics.")


def check_dropout_backward(fn, forward=reference.dropout_forward) -> CheckResult:
    """Check ``dropout_backward(dout, cache) -> dx`` against centred differences of ``forward`` with the cache's
    mask held fixed (``forward``: the learner's forward once it passes, else the reference)."""
    def body(backward) -> None:
        data = np.random.default_rng(107)
        x, dout, p = data.standard_normal((6, 8)), data.standard_normal((6, 8)), 0.25
        _, cache = forward(x, p, True, np.random.default_rng(108))
        keep = np.asarray(cache[0]) != 0
        dx = backward(dout.copy(), cache)
        expect_shape(dx, x.shape, "dx")
        dx = np.asarray(dx, dtype=np.float64)
        num = numerical_gradient_array(lambda: forward(x, p, True, np.random.default_rng(108))[0], x, dout)
        if relative_error(dx, num) > 1e-6:
            diagnose(dx, {
                "backward forgets the 1/(1−p) scale: the forward multiplied the kept units by 1/(1 − p), so their "
                "gradient is dout / (1 − p).": lambda d: np.allclose(d, dout * keep),
                "backward ignores the mask: dropped units did not affect the loss, so their gradient is 0.":
                lambda d: np.allclose(d, dout / (1 - p)) or np.allclose(d, dout),
                "backward draws a new mask instead of using the cache: multiply by the forward's keep mask from "
                "cache = (keep, p).": lambda d: np.any(d == 0) and not np.array_equal(d != 0, keep),
                "kept units multiplied by (1 − p) instead of divided by it.":
                lambda d: np.allclose(d, dout * keep * (1 - p)),
                "scaled by 1/p instead of 1/(1−p).": lambda d: np.allclose(d, dout * keep / p),
            })
            i = int(np.argmax(np.abs(dx - num)))
            raise Mistake(f"dx differs from the numerical gradient of the forward (relative error "
                          f"{relative_error(dx, num):.1e}): at flat index {i} got {dx.flat[i]:.4f}, expected "
                          f"{num.flat[i]:.4f}.")
        expect(np.array_equal(backward(dout.copy(), cache), dx),
               "backward draws a new mask instead of using the cache: two calls with the same cache differ.")
        _, eval_cache = forward(x, p, False, np.random.default_rng(109))
        expect(np.allclose(backward(dout.copy(), eval_cache), dout),
               "in eval mode (cache = (None, p)) the layer is the identity, so dx = dout.")

    return check_code("dropout_backward", fn, body,
                      praise="dx equals the centred-difference gradient of the forward with its mask held fixed, "
                             "and is the identity in eval mode.",
                      not_written="It is checked against centred differences of the forward with its mask held fixed.")


def check_smallest_gap_p(answer, sweep: Sweep) -> CheckResult:
    """Question: in your sweep, which p left the smallest train/val gap (last epoch)?"""
    rows = sweep.rows()
    best = min(rows, key=lambda r: r.gap)
    mistakes = {}
    worst = max(rows, key=lambda r: r.gap)
    if worst.p != best.p:
        mistakes[worst.p] = f"p = {worst.p:g} has the largest gap; the question asks for the smallest."
    top = max(rows, key=lambda r: r.best_val_acc)
    if top.p not in mistakes and top.p != best.p:
        mistakes[top.p] = (f"p = {top.p:g} has the best val accuracy; the gap is train acc − val acc (the 'gap' "
                           "column).")
    return check_answer(answer, best.p, exercise="smallest_gap_p", abs_tol=1e-9, mistakes=mistakes,
                        praise="the table's gap column (train acc − val acc) is smallest there.",
                        hint="read the 'gap' column of the sweep's table and give that row's p.")


def check_epoch_cost_ratio(answer, sweep: Sweep, p: float = 0.5) -> CheckResult:
    """Question: how many times the seconds per epoch of the p = 0 run does the p = ``p`` run take?"""
    r0, rp = sweep.row(0.0), sweep.row(p)
    expected = rp.epoch_s / r0.epoch_s
    return check_answer(answer, expected, exercise="epoch_cost_ratio", rel_tol=0.01,
                        mistakes={1 / expected: "that is p = 0 over p = 0.5: divide the other way round."},
                        praise="the dropout epoch's seconds over the plain epoch's, from the s/epoch column.",
                        hint=f"divide the s/epoch of p = {p:g} by the s/epoch of p = 0 (sweep.row(p).epoch_s).")

