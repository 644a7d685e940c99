"""Lesson 05's checks: the reference passes, a stub is "not written", a crash is named, and each typical planted
bug gets the hint that names it."""

import numpy as np
import pytest

from lessons_lib.batchnorm import checks, reference
from lessons_lib.batchnorm.lab import Pitfalls


def learner_forward(bug: str = ""):
    """A learner's batchnorm_forward, written step by step, with one typical mistake planted (``bug``)."""

    def forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
        n = x.shape[0]
        if train or bug == "batch_in_eval":
            mu = x.mean(axis=1, keepdims=True) if bug == "wrong_axis" else x.mean(axis=0)
            var = ((x - mu) ** 2).sum(axis=1 if bug == "wrong_axis" else 0, keepdims=bug == "wrong_axis") / n
            if bug == "wrong_axis":
                var = var * n / x.shape[1]
            var_running = var if bug == "biased_running" else var * n / (n - 1)
            if bug == "unbiased_norm":
                var = var_running
            m = 1 - momentum if bug == "keras" else momentum
            if bug != "not_updated" and not (bug == "batch_in_eval" and not train):
                state.running_mean = (1 - m) * state.running_mean + m * mu
                state.running_var = (1 - m) * state.running_var + m * var_running
        else:
            mu, var = state.running_mean, state.running_var
            if bug == "eval_updates":
                state.running_mean = state.running_mean + 0.0 * mu + 1e-3
        std = np.sqrt(var) + eps if bug == "eps_outside" else np.sqrt(var + eps)
        if bug == "in_place":
            x -= mu
            x_hat = x / std
        else:
            x_hat = (x - mu) / std
        out = x_hat if bug == "no_affine" else gamma * x_hat + beta
        if bug == "off":
            out = out * 1.01
        return out, (x_hat, gamma, std if bug == "bad_cache" else 1 / std, train)

    return forward


def learner_backward(bug: str = ""):
    """A learner's batchnorm_backward through the computational graph, with one planted mistake."""

    def backward(dout, cache):
        x_hat, gamma, inv_std, train = cache
        n = dout.shape[0]
        axis = 1 if bug == "axis" else 0
        dbeta, dgamma = dout.sum(axis=axis), (dout * x_hat).sum(axis=axis)
        dx_hat = dout if bug == "no_gamma" else dout * gamma
        if not (train or bug == "eval_train_formula") or bug == "constants":
            dx = dx_hat * inv_std
        else:
            dvar = -0.5 * (dx_hat * x_hat).sum(0) * inv_std**2  # d loss / d var, with x - mu = x_hat / inv_std
            dmu = -(dx_hat * inv_std).sum(0)
            dx = dx_hat * inv_std
            if bug != "no_var_path":
                dx = dx + dvar * 2 * x_hat / inv_std / n
            if bug != "no_mean_path":
                dx = dx + dmu / n
        if bug == "off":
            dx = dx + 1e-3
        return (dx, dbeta, dgamma) if bug == "swapped" else (dx, dgamma, dbeta)

    return backward


def test_the_reference_and_a_clean_learner_version_pass(capsys):
    for fn in (reference.batchnorm_forward, learner_forward()):
        assert checks.check_batchnorm_forward(fn).status == "correct"
    for fn in (reference.batchnorm_backward, learner_backward()):
        assert checks.check_batchnorm_backward(fn).status == "correct"
    assert capsys.readouterr().out.count("✓ Correct.") == 4


@pytest.mark.parametrize("check", [checks.check_batchnorm_forward, checks.check_batchnorm_backward])
def test_stub_is_not_written_and_a_crash_is_named(check, capsys):
    def stub(*args, **kw):
        raise NotImplementedError("write it")

    def crash(*args, **kw):
        return {}["nope"]

    assert check(stub).status == "not_written"
    assert check(...).status == "not_written"
    r = check(crash)
    assert r.status == "wrong" and "KeyError" in r.message
    assert r.yours_or(reference.batchnorm_forward) is reference.batchnorm_forward
    assert "use the library's reference" in capsys.readouterr().out


@pytest.mark.parametrize("bug,hint", [
    ("biased_running", "biased variance in the running average (PyTorch stores the unbiased one)"),
    ("batch_in_eval", "batch statistics used in eval mode"),
    ("keras", "momentum applied the wrong way round (Keras convention"),
    ("eps_outside", "eps added outside the square root"),
    ("not_updated", "running statistics not updated"),
    ("unbiased_norm", "the batch normalized with the unbiased variance"),
    ("wrong_axis", "statistics over the wrong axis"),
    ("no_affine", "gamma and beta not applied"),
    ("eval_updates", "eval mode changed the running statistics"),
    ("bad_cache", "cache[2] is sqrt(var + eps)"),
    ("in_place", "changed x in place"),
    ("off", "out differs from torch.nn.BatchNorm1d (training step 1"),
])
def test_forward_bugs_get_their_hint(bug, hint):
    r = checks.check_batchnorm_forward(learner_forward(bug))
    assert r.status == "wrong"
    assert hint in r.message, r.message


@pytest.mark.parametrize("bug,hint", [
    ("constants", "backward misses the terms through the mean and variance (treats them as constants)"),
    ("no_var_path", "misses the term through the variance"),
    ("no_mean_path", "misses the term through the mean"),
    ("axis", "dgamma/dbeta summed over the wrong axis"),
    ("swapped", "dgamma and dbeta swapped"),
    ("eval_train_formula", "in eval mode the statistics are constants"),
    ("no_gamma", "dx misses the factor gamma"),
    ("off", "dx differs from torch autograd (training mode"),
])
def test_backward_bugs_get_their_hint(bug, hint):
    r = checks.check_batchnorm_backward(learner_backward(bug))
    assert r.status == "wrong"
    assert hint in r.message, r.message


def test_a_wrong_return_shape_is_named():
    r = checks.check_batchnorm_forward(lambda x, *a, **k: x)
    assert r.status == "wrong" and "must return a tuple of 2" in r.message
    r = checks.check_batchnorm_backward(lambda dout, cache: (dout, dout.sum(), dout.sum(0)))
    assert r.status == "wrong" and "summed over every axis" in r.message


def test_answers_come_from_the_run():
    from lessons_lib.batchnorm.reference import bn_mlp

    model = bn_mlp(10, [8, 6], 3)  # 2 * 8 + 2 * 6 learnable BN parameters
    assert checks.check_bn_parameters(28, model)
    assert "buffers" in checks.check_bn_parameters(56, model).message
    assert "count beta too" in checks.check_bn_parameters(14, model).message
    assert "every BatchNorm layer" in checks.check_bn_parameters(16, model).message
    assert checks.check_bn_parameters(..., model).status == "not_written"
    pit = Pitfalls(0.97, {2: 0.4}, 0.2, 0.1, "Expected more than 1 value per channel", 0.97)
    assert checks.check_deploy_mode("model.eval()", pit) and checks.check_deploy_mode("Eval", pit)
    wrong = checks.check_deploy_mode("train", pit)
    assert not wrong and "Expected more than 1 value per channel" in wrong.message


def test_checks_are_fast():
    import time

    t = time.process_time()
    checks.check_batchnorm_forward(reference.batchnorm_forward)
    checks.check_batchnorm_backward(reference.batchnorm_backward)
    assert time.process_time() - t < 2.0  # CPU seconds: a busy machine does not count against the check
