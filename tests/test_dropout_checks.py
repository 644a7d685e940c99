"""Lesson 03's checks: the reference passes, a stub is "not written", a crash names its exception, and each
typical planted bug is "wrong" with the hint that names it. For any LESSONS_SEED."""

import numpy as np
import pytest

from lessons_lib.dropout import checks, lab, reference
from lessons_lib.history import History


def _forward(keep_rule, scale_rule, eval_rule=None):
    """A dropout_forward built from pieces, so a test can plant one mistake."""
    def forward(x, p, train, rng):
        if not train:
            return (x, (None, p)) if eval_rule is None else eval_rule(x, p, rng)
        keep = keep_rule(x, p, rng)
        return x * keep * scale_rule(p), (keep, p)
    return forward


def right_keep(x, p, rng):
    return rng.random(x.shape) >= p


def inverted(p):
    return 1 / (1 - p)


def _stub(*args):
    raise NotImplementedError("write dropout here")


def _crash(*args):
    return {}["missing"]


FORWARD_BUGS = {
    "scaled by 1/p instead of 1/(1−p)": _forward(right_keep, lambda p: 1 / p),
    "kept units not scaled (expected value shrinks by 1−p)": _forward(right_keep, lambda p: 1.0),
    "kept with probability p: p is the probability to DROP": _forward(lambda x, p, rng: rng.random(x.shape) < p,
                                                                      inverted),
    "p treated as the probability to KEEP": _forward(lambda x, p, rng: rng.random(x.shape) < p, lambda p: 1 / p),
    "mask applied in eval mode": _forward(right_keep, inverted,
                                          lambda x, p, rng: (x * (rng.random(x.shape) >= p), (None, p))),
    "scaled by 1/(1−p) in eval mode": _forward(right_keep, inverted, lambda x, p, rng: (x / (1 - p), (None, p))),
    "eval mode drew random numbers": _forward(right_keep, inverted,
                                              lambda x, p, rng: (x, (None, p)) if rng.random() < 2 else None),
    "the cache must be (None, p)": _forward(right_keep, inverted, lambda x, p, rng: (x, (np.ones(x.shape, bool), p))),
    "draw the mask from the rng argument": _forward(lambda x, p, rng: np.random.random(x.shape) >= p, inverted),
    "the same mask every call": _forward(lambda x, p, rng: np.random.default_rng(0).random(x.shape) >= p, inverted),
}


@pytest.mark.parametrize("seed", ["0", "7"])
def test_reference_forward_passes_for_any_seed(monkeypatch, seed):
    monkeypatch.setenv("LESSONS_SEED", seed)
    r = checks.check_dropout_forward(reference.dropout_forward)
    assert r.status == "correct" and "Correct" in r.message
    assert checks.check_dropout_forward(_forward(right_keep, inverted)).ok  # another right way to write it


def test_forward_stub_and_crash():
    r = checks.check_dropout_forward(_stub)
    assert r.status == "not_written" and "write dropout here" in r.message
    assert checks.check_dropout_forward(None).status == "not_written"
    r = checks.check_dropout_forward(_crash)
    assert r.status == "wrong" and "KeyError" in r.message
    r = checks.check_dropout_forward(lambda x, p, train, rng: x)
    assert r.status == "wrong" and "(out, cache)" in r.message


@pytest.mark.parametrize("hint", list(FORWARD_BUGS))
def test_forward_planted_bugs_get_their_hint(hint, capsys):
    r = checks.check_dropout_forward(FORWARD_BUGS[hint])
    assert r.status == "wrong", r.message
    assert hint in r.message
    assert capsys.readouterr().out.strip() == r.message  # one verdict line, printed


def _backward(rule, eval_rule=None):
    def backward(dout, cache):
        keep, p = cache
        if keep is None:
            return dout if eval_rule is None else eval_rule(dout, p)
        return rule(dout, keep, p)
    return backward


BACKWARD_BUGS = {
    "backward forgets the 1/(1−p) scale": _backward(lambda d, k, p: d * k),
    "backward draws a new mask instead of using the cache":
        _backward(lambda d, k, p: d * (np.random.random(d.shape) >= p) / (1 - p)),
    "backward ignores the mask": _backward(lambda d, k, p: d / (1 - p)),
    "multiplied by (1 − p) instead of divided by it": _backward(lambda d, k, p: d * k * (1 - p)),
    "in eval mode (cache = (None, p)) the layer is the identity": _backward(lambda d, k, p: d * k / (1 - p),
                                                                           lambda d, p: d / (1 - p)),
}


def test_reference_backward_passes_with_either_forward():
    assert checks.check_dropout_backward(reference.dropout_backward).status == "correct"
    r = checks.check_dropout_backward(_backward(lambda d, k, p: d * k / (1 - p)), _forward(right_keep, inverted))
    assert r.status == "correct"


def test_backward_stub_and_crash():
    assert checks.check_dropout_backward(_stub).status == "not_written"
    r = checks.check_dropout_backward(_crash)
    assert r.status == "wrong" and "KeyError" in r.message


@pytest.mark.parametrize("hint", list(BACKWARD_BUGS))
def test_backward_planted_bugs_get_their_hint(hint):
    r = checks.check_dropout_backward(BACKWARD_BUGS[hint])
    assert r.status == "wrong" and hint in r.message, r.message


def _sweep(gaps: dict[float, float], seconds: dict[float, float]) -> lab.Sweep:
    hs = {}
    for p, gap in gaps.items():
        h = History()
        for i, v in enumerate((0.4, 0.45, 0.5 + p / 10)):
            h.append({"epoch": i, "train_loss": 0, "train_acc": v + gap, "val_loss": 0, "val_acc": v,
                      "seconds": seconds[p], "samples_per_s": 1, "step_seconds": 0.1})
        hs[p] = [h, h]  # two seeds alike: the answers read the means over seeds
    return lab.Sweep(list(gaps), hs, [0, 1])


def test_answers_come_from_the_run():
    sweep = _sweep({0.0: 0.5, 0.2: 0.45, 0.5: 0.3}, {0.0: 1.0, 0.2: 1.5, 0.5: 2.0})
    assert checks.check_smallest_gap_p(0.5, sweep).ok
    r = checks.check_smallest_gap_p(0.0, sweep)
    assert r.status == "wrong" and "largest gap" in r.message
    assert checks.check_smallest_gap_p(..., sweep).status == "not_written"
    other = _sweep({0.0: 0.5, 0.2: 0.1, 0.5: 0.3}, {0.0: 1.0, 0.2: 1.5, 0.5: 2.0})
    assert checks.check_smallest_gap_p(0.2, other).ok and not checks.check_smallest_gap_p(0.5, other).ok
    assert checks.check_epoch_cost_ratio(2.0, sweep).ok
    r = checks.check_epoch_cost_ratio(0.5, sweep)
    assert r.status == "wrong" and "other way round" in r.message
