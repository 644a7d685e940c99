"""Lesson 06's checks: the reference passes, a stub is "not written", a crash is named, and each typical planted
bug gets the hint that names it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lessons_lib.residual import checks, reference
from lessons_lib.residual.lab import DeadLayer


def learner_block(bug: str = ""):
    """A learner's residual_forward with one typical mistake planted (``bug``)."""

    def residual_forward(x, block):
        h = block.layer1(x)
        if bug != "no_mid_relu":
            h = torch.relu(h)
        f = block.layer2(h)
        if bug == "call_none":
            s = block.shortcut(x)
        elif bug in ("no_projection", "relu_before", "no_final_relu") and block.shortcut is None:
            s = x
        elif bug == "no_projection":
            s = x  # the shapes differ: adding crashes
        elif bug == "shape_test":
            s = x if x.shape == f.shape else block.shortcut(x)
        else:
            s = x if block.shortcut is None else block.shortcut(x)
        if bug == "relu_before":
            return torch.relu(f) + s
        if bug == "no_final_relu":
            return f + s
        if bug == "plain":
            return torch.relu(f)
        if bug == "in_place":
            return torch.relu(x.add_(f)) if block.shortcut is None else torch.relu(f + s)
        out = torch.relu(f + s)
        if bug == "detach":
            return out.detach()
        return out * 1.01 if bug == "off" else out

    return residual_forward


def learner_norms(bug: str = ""):
    """A learner's gradient_norms(model, x, y) with one planted mistake."""

    def gradient_norms(model, x, y):
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if bug == "before_backward":
            norms = [m.weight.grad.norm().item() for m in layers]
        if bug == "before_backward_guarded":
            norms = [0.0 if m.weight.grad is None else m.weight.grad.norm().item() for m in layers]
        if bug != "accumulate":
            model.zero_grad()
        loss = F.cross_entropy(model(x), y, reduction="sum" if bug == "sum_loss" else "mean")
        loss.backward()
        if bug.startswith("before_backward"):
            return norms
        if bug == "weight_norm":
            return [m.weight.norm().item() for m in layers]
        if bug == "per_parameter":
            return [p.grad.norm().item() for p in model.parameters()]
        if bug == "with_bias":
            return [torch.cat([m.weight.grad.ravel(), m.bias.grad.ravel()]).norm().item() for m in layers]
        norms = [(m.weight.grad**2).sum().item() if bug == "squared" else m.weight.grad.norm().item() for m in layers]
        if bug == "reverse":
            norms = norms[::-1]
        return [v * 1.1 for v in norms] if bug == "off" else norms

    return gradient_norms


def test_the_reference_and_a_clean_learner_version_pass(capsys):
    for fn in (reference.residual_forward, learner_block()):
        assert checks.check_residual_forward(fn).status == "correct"
    for fn in (reference.gradient_norms, learner_norms()):
        assert checks.check_gradient_norms(fn).status == "correct"
    assert capsys.readouterr().out.count("✓ Correct.") == 4


@pytest.mark.parametrize("check,ref", [(checks.check_residual_forward, reference.residual_forward),
                                       (checks.check_gradient_norms, reference.gradient_norms)])
def test_stub_is_not_written_and_a_crash_is_named(check, ref, capsys):
    def stub(*args):
        raise NotImplementedError("write it")

    def crash(*args):
        return [][1]

    assert check(stub).status == "not_written"
    assert check(None).status == "not_written"
    r = check(crash)
    assert r.status == "wrong" and "IndexError" in r.message
    assert r.yours_or(ref) is ref
    assert "use the library's reference" in capsys.readouterr().out


@pytest.mark.parametrize("bug,hint", [
    ("relu_before", "ReLU applied before adding the shortcut"),
    ("plain", "shortcut missing (plain block)"),
    ("no_projection", "projection shortcut not used when the shape changes"),
    ("shape_test", "projection shortcut not used: block.shortcut is not None"),
    ("no_final_relu", "no ReLU after the sum"),
    ("no_mid_relu", "the ReLU between the two layers is missing"),
    ("call_none", "block.shortcut is None when the shapes match"),
    ("in_place", "changed x in place"),
    ("detach", "cut off from autograd"),
    ("off", "the output differs from the block composed with torch.nn.functional"),
])
def test_block_bugs_get_their_hint(bug, hint):
    r = checks.check_residual_forward(learner_block(bug))
    assert r.status == "wrong"
    assert hint in r.message, r.message


@pytest.mark.parametrize("bug,hint", [
    ("weight_norm", "recorded the weight norm instead of the gradient norm"),
    ("before_backward", "read before backward (grads are None)"),
    ("before_backward_guarded", "read before backward (grads are None"),
    ("accumulate", "gradients accumulated"),
    ("squared", "squared norm instead of norm"),
    ("reverse", "layers in reverse order"),
    ("sum_loss", "loss summed over the batch instead of averaged"),
    ("with_bias", "norm of the weight and the bias gradients together"),
    ("per_parameter", "not one per parameter tensor"),
    ("off", "the gradient norms differ from torch.autograd.grad's"),
])
def test_recorder_bugs_get_their_hint(bug, hint):
    r = checks.check_gradient_norms(learner_norms(bug))
    assert r.status == "wrong"
    assert hint in r.message, r.message


def test_stale_read_is_named():
    """A function that reads .grad without any backward of its own returns the earlier pass's norms."""
    def stale(model, x, y):
        layers = [m for _, m in reference.weight_layers(model)]
        return [0.0 if m.weight.grad is None else float(m.weight.grad.norm()) for m in layers]

    r = checks.check_gradient_norms(stale)
    assert not r and "read before backward" in r.message


def test_answers():
    dead = DeadLayer([f"l{i}" for i in range(8)], 1, 4, 3, np.zeros(8), np.array([1.0, 1, 1, 0, 1, 1, 1, 1]),
                     np.ones(8))
    assert checks.check_dead_layer(4, dead)
    assert "the dead layer itself" in checks.check_dead_layer(5, dead).message
    assert "numbered from 1" in checks.check_dead_layer(3, dead).message
    assert checks.check_dead_layer(..., dead).status == "not_written"
    assert checks.check_basicblock_output_shape((5, 32, 4, 4))
    assert "rounds up" in checks.check_basicblock_output_shape([5, 32, 3, 3]).message
    assert checks.check_basicblock_output_shape(...).status == "not_written"
    n = 32 * 64 * 9 + 64 * 64 * 9 + 32 * 64 + 3 * 2 * 64
    assert checks.check_basicblock_parameters(n)
    assert "projection shortcut too" in checks.check_basicblock_parameters(n - 32 * 64 - 128).message
    assert "no bias" in checks.check_basicblock_parameters(n + 3 * 64).message


def test_checks_are_fast_and_leave_the_global_rng_alone():
    import time

    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    t = time.process_time()
    checks.check_residual_forward(reference.residual_forward)
    checks.check_gradient_norms(reference.gradient_norms)
    assert time.process_time() - t < 2.0  # CPU seconds: a busy machine does not count against the check
    assert torch.equal(before, torch.random.get_rng_state())
