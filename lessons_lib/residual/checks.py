"""The checks of lesson 06's exercises, each against something that is not a copy of the solution.

* :func:`check_residual_forward`: the learner's block forward against the same block composed from
  ``torch.nn.functional`` ops (``F.linear``, ``F.conv2d``, ``F.batch_norm``, ``F.relu``) on the same weights: MLP
  and convolutional blocks, with an identity and with a projection shortcut.
* :func:`check_gradient_norms`: the learner's per-layer gradient norms against norms computed directly with
  ``torch.autograd.grad`` on a model with known layers, with fresh and with stale ``.grad``.
* :func:`check_dead_layer`, :func:`check_basicblock_output_shape`, :func:`check_basicblock_parameters`: answers,
  their right values taken from the learner's run or computed by running the block.

A wrong result is compared with what each typical mistake would have returned (recomputed here), so the hint
names the mistake; when none matches, the hint says which case failed, expected against got.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect, expect_signature
from ..models import count_parameters
from ..validate import BadArgument
from .lab import DeadLayer
from .reference import BasicBlock, ResidualBlock

# ---------------------------------------------------------------------------------------------------------
# Exercise 1: the residual block's forward, against torch.nn.functional on the same weights
# ---------------------------------------------------------------------------------------------------------


def _number(answer: Any) -> Any:
    """A whole number (numpy or 0-d tensor too) as an int; anything else as a text that equals no number."""
    if getattr(answer, "ndim", None) == 0 and hasattr(answer, "item"):
        answer = answer.item()
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool) and float(answer).is_integer():
        return int(answer)
    return f"not a whole number: {type(answer).__name__} {answer!r:.40}"


def _functional(layer: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` recomposed from torch.nn.functional ops on the layer's own weights (BN as in eval mode)."""
    if layer is None:
        return x
    if isinstance(layer, nn.Sequential):
        for m in layer:
            x = _functional(m, x)
        return x
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight, layer.bias)
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, training=False,
                            eps=layer.eps)
    raise TypeError(f"no functional form for {type(layer).__name__}")


def _cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(description, block in eval mode with randomized BN statistics, input with negative values)."""
    g = torch.Generator().manual_seed(606)
    with torch.random.fork_rng(devices=[]):  # the blocks' initial weights, without touching the global RNG
        torch.manual_seed(606)
        cases = [("MLP block, 8 -> 8 features, identity shortcut", ResidualBlock(8), (5, 8)),
                 ("MLP block, 6 -> 10 features, projection shortcut", ResidualBlock(6, 10), (5, 6)),
                 ("BasicBlock 4 -> 4 channels, stride 1, identity shortcut", BasicBlock(4, 4), (2, 4, 6, 6)),
                 ("BasicBlock 4 -> 8 channels, stride 2, projection shortcut", BasicBlock(4, 8, stride=2),
                  (2, 4, 6, 6)),
                 ("BasicBlock 4 -> 4 channels with a projection shortcut all the same (ResNet's option C)",
                  BasicBlock(4, 4, shortcut="projection"), (2, 4, 5, 5))]
    out = []
    for name, block, shape in cases:
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0.0, 0.5, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                    m.weight.normal_(1.0, 0.3, generator=g)
                    m.bias.normal_(0.0, 0.3, generator=g)
        out.append((name, block.eval(), torch.randn(shape, generator=g)))
    return out


def _forward_case(fn: Callable, name: str, block: nn.Module, x: torch.Tensor) -> None:
    x_in = x.clone()
    try:
        out = fn(x_in, block)
    except RuntimeError as e:
        if block.shortcut is not None and ("size" in str(e) or "shape" in str(e)):
            raise Mistake(f"projection shortcut not used when the shape changes ({name}): x of shape "
                          f"{tuple(x.shape)} cannot be added to F(x); when block.shortcut is not None the shortcut "
                          "is block.shortcut(x)") from None
        raise
    except TypeError as e:
        if block.shortcut is None and "NoneType" in str(e):
            raise Mistake(f"block.shortcut is None when the shapes match ({name}): then the shortcut is x "
                          "itself") from None
        raise
    expect(torch.equal(x_in, x), f"your residual_forward changed x in place ({name}): e.g. x += ... or "
                                 "relu_(x); compute into new tensors (out = f + shortcut)")
    expect(isinstance(out, torch.Tensor), f"residual_forward must return a torch.Tensor, got {type(out).__name__}")
    with torch.no_grad():
        f = _functional(block.layer2, F.relu(_functional(block.layer1, x)))
        s = _functional(block.shortcut, x)
        want = F.relu(f + s)
        mistakes = {
            "ReLU applied before adding the shortcut: the block is relu(F(x) + shortcut(x)), with F(x) = "
            "layer2(relu(layer1(x))) and no ReLU of its own": [F.relu(f) + s, F.relu(F.relu(f) + s)],
            "no ReLU after the sum: out = relu(F(x) + shortcut(x))": [f + s],
            "shortcut missing (plain block): add the shortcut, out = relu(F(x) + shortcut(x))": [F.relu(f)],
            "projection shortcut not used: block.shortcut is not None here, so the shortcut is block.shortcut(x), "
            "not x": [F.relu(f + x)] if block.shortcut is not None and f.shape == x.shape else [],
            "the ReLU between the two layers is missing: F(x) = layer2(relu(layer1(x)))":
                [F.relu(_functional(block.layer2, _functional(block.layer1, x)) + s)],
        }
    got = out.detach()
    expect(tuple(got.shape) == tuple(want.shape), f"{name}: the output has shape {tuple(got.shape)}, expected "
                                                  f"{tuple(want.shape)} (the shape of F(x))")
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
        diagnose(got, {hint: (lambda v, cs=cs: any(torch.allclose(v, c, rtol=1e-5, atol=1e-6) for c in cs))
                       for hint, cs in mistakes.items()})
        err = float((got - want).abs().max())
        raise Mistake(f"{name}: the output differs from the block composed with torch.nn.functional by up to "
                      f"{err:.3g}")
    expect(out.requires_grad, f"{name}: the output is cut off from autograd (.detach(), .data or numpy inside?): "
                              "training could not learn through the block")


def check_residual_forward(fn: Callable) -> CheckResult:
    """Exercise 1: ``residual_forward(x, block) -> relu(F(x) + shortcut(x))`` against the same computation
    composed from torch.nn.functional ops, on MLP and convolutional blocks, with and without projection."""

    def body(f: Callable) -> None:
        expect_signature(f, "residual_forward(x, block)", 0, 0)
        for name, block, x in _cases():
            _forward_case(f, name, block, x)

    return check_code("residual_forward", fn, body,
                      praise="your block equals relu(F(x) + shortcut(x)) composed from torch.nn.functional on the "
                             "same weights: MLP and convolutional blocks, identity and projection shortcuts.",
                      not_written="It is checked against the same block composed from torch.nn.functional ops.")


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: gradient norms per layer, against torch.autograd.grad
# ---------------------------------------------------------------------------------------------------------
def _model_and_batches() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A small model with known weight layers (a conv, then three Linear of different sizes) and two batches."""
    g = torch.Generator().manual_seed(616)
    with torch.random.fork_rng(devices=[]):  # the default init draws from the global RNG: leave it alone
        model = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(48, 12), nn.Tanh(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
    batches = [(torch.randn(20, 16, generator=g), torch.randint(0, 5, (20,), generator=g)) for _ in range(2)]
    return model, batches[0], batches[1]


def _weights(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _autograd_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list, list]:
    """d (mean cross-entropy) / d weight and / d bias of every weight layer, by torch.autograd.grad on a copy."""
    model = copy.deepcopy(model)
    layers = _weights(model)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [m.weight for m in layers] + [m.bias for m in layers])
    return list(grads[: len(layers)]), list(grads[len(layers):])


def _norms(tensors: list[torch.Tensor]) -> np.ndarray:
    return np.array([float(t.norm()) for t in tensors])


def _norms_case(fn: Callable, stale: bool) -> None:
    model, (x, y), (x2, y2) = _model_and_batches()
    layers = _weights(model)
    dw, db = _autograd_grads(model, x, y)
    want = _norms(dw)
    old: list[torch.Tensor] = []
    if stale:  # an earlier backward pass left its gradients in .grad
        F.cross_entropy(model(x2), y2).backward()
        old = [m.weight.grad.clone() for m in layers]
    where = "on a model whose .grad still holds an earlier backward pass" if stale else "on a fresh model"
    try:
        result = fn(model, x, y)
    except (AttributeError, TypeError) as e:
        if "NoneType" in str(e):
            raise Mistake(f"read before backward (grads are None) {where}: call loss.backward() first, then read "
                          "each layer's weight.grad") from None
        raise
    try:
        got = np.array([float(v) for v in result])
    except (TypeError, ValueError):
        raise Mistake(f"gradient_norms must return a list of numbers, one per weight layer, got "
                      f"{type(result).__name__} {result!r:.80}") from None
    n_params = len(list(model.parameters()))
    expect(len(got) != n_params, f"one norm per weight layer (its .weight), not one per parameter tensor: the "
                                 f"biases are not included; expected {len(layers)} numbers, got {len(got)}")
    expect(len(got) == len(layers), f"expected {len(layers)} norms (one per Linear/Conv layer: this model has "
                                    f"{len(layers)}), got {len(got)}")
    if np.allclose(got, want, rtol=1e-4, atol=1e-7):
        return
    cands = {}
    if not stale:
        cands["read before backward (grads are None: yours came out 0): call loss.backward() first, then read each "
              "layer's weight.grad"] = np.zeros_like(want)
    if stale:
        cands["read before backward (grads are stale): the .grad you read still holds an earlier backward pass; "
              "call loss.backward() first, then read"] = _norms(old)
        cands["gradients accumulated: .grad still held an earlier backward pass and backward() adds to it; clear "
              "them first (model.zero_grad())"] = _norms([a + b for a, b in zip(old, dw)])
    cands["recorded the weight norm instead of the gradient norm: take layer.weight.grad, not layer.weight"] = \
        _norms([m.weight.detach() for m in layers])
    cands["squared norm instead of norm: the L2 norm is the square root of the sum of squares (.norm())"] = want**2
    cands["layers in reverse order: input side first, the order of model.modules() (backward reaches the output "
          "side first)"] = want[::-1]
    cands["loss summed over the batch instead of averaged: use F.cross_entropy's default (the mean)"] = want * len(x)
    cands["norm of the weight and the bias gradients together: take the weight's gradient only"] = \
        _norms([torch.cat([a.ravel(), b.ravel()]) for a, b in zip(dw, db)])
    diagnose(got, {hint: (lambda v, c=c: np.allclose(v, c, rtol=1e-4, atol=1e-7)) for hint, c in cands.items()})
    raise Mistake(f"the gradient norms differ from torch.autograd.grad's ({where}): expected "
                  f"{np.array2string(want, precision=4)}, got {np.array2string(got, precision=4)}")


def check_gradient_norms(fn: Callable) -> CheckResult:
    """Exercise 2: ``gradient_norms(model, x, y) -> list[float]`` against norms of ``torch.autograd.grad`` of the
    mean cross-entropy on a model with a conv and three Linear layers, with fresh and with stale ``.grad``."""

    def body(f: Callable) -> None:
        expect_signature(f, "gradient_norms(model, x, y)", 0, 0, 0)
        for stale in (False, True):
            _norms_case(f, stale)

    return check_code("gradient_norms", fn, body,
                      praise="your norms equal torch.autograd.grad's, layer by layer from the input side, also when "
                             ".grad held an earlier pass.",
                      not_written="It is checked against torch.autograd.grad on a model with known layers.")


# ---------------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------------
def check_dead_layer(answer: Any, dead: DeadLayer) -> CheckResult:
    """In the residual net of the dead-layer experiment, which layer (1 = input side) is the only one before
    the dead ``layer2`` whose gradient is exactly 0? Expected from the run's :class:`~.lab.DeadLayer`."""
    if not isinstance(dead, DeadLayer):
        raise BadArgument(f"dead must be the DeadLayer of section 3 (lab.dead_layer_experiment), got "
                          f"{type(dead).__name__}")
    zero = [i + 1 for i in range(dead.dead_layer) if dead.residual[i] == 0.0]
    expected = zero[0] if len(zero) == 1 else zero
    return check_answer(answer, expected, exercise="zero_layer", normalize=_number,
                        praise="the dead block's own first layer: its only way to the loss runs through the dead "
                               "layer2 (the seed's 'what's in between'); every layer before it still gets a gradient "
                               "through the skips.",
                        mistakes={dead.dead_layer + 1: "that is the dead layer itself: its weights are 0 but its "
                                                       "gradient is not (its input is alive)",
                                  dead.block_start: "layers are numbered from 1 on the input side (the plot's x axis)"},
                        hint="look at the blue curve of the dead-layer plot: which layer left of the shaded block's "
                             "end sits on the 'exactly 0' line?")


def check_basicblock_output_shape(answer: Any) -> CheckResult:
    """Output shape of ``BasicBlock(16, 32, stride=2)`` on an input of shape (5, 16, 7, 7)?"""
    with torch.no_grad():
        expected = tuple(BasicBlock(16, 32, stride=2)(torch.zeros(5, 16, 7, 7)).shape)
    if answer is not None and answer is not Ellipsis:  # a shape of numbers as a tuple of ints, else as text
        items = list(answer) if isinstance(answer, (tuple, list, torch.Size, np.ndarray)) else None
        answer = tuple(_number(v) for v in items) if items and getattr(answer, "ndim", 1) == 1 else \
            f"not a shape: {type(answer).__name__} {answer!r:.40}"
    return check_answer(answer, expected, exercise="shape",
                        praise="32 channels, and a 3x3 conv with padding 1 and stride 2 takes 7 to ceil(7 / 2) = 4; "
                               "the 1x1 projection shortcut (stride 2) does the same to x so that the two add up.",
                        mistakes={(5, 32, 3, 3): "a 3x3 conv with padding 1 and stride 2 rounds up: "
                                                 "floor((7 + 2 - 3) / 2) + 1 = 4",
                                  (5, 16, 4, 4): "the channels become planes (32)",
                                  (5, 32, 7, 7): "stride 2 halves the height and width (rounding up)"},
                        hint="the channels become `planes`; a 3x3 conv with padding 1 and stride 2 maps H to "
                             "floor((H + 2 - 3) / 2) + 1.")


def check_basicblock_parameters(answer: Any) -> CheckResult:
    """Trainable parameters of ``BasicBlock(32, 64, stride=2, shortcut="projection")``?"""
    expected = count_parameters(BasicBlock(32, 64, stride=2, shortcut="projection"))
    projection, bns, biases = 32 * 64 + 2 * 64, 3 * 2 * 64, 3 * 64
    return check_answer(answer, expected, exercise="n_parameters", normalize=_number,
                        praise="conv1 32*64*9 + conv2 64*64*9 + the 1x1 projection 32*64, plus gamma and beta of "
                               "three BatchNorms (3 * 2 * 64); the convolutions have no bias (BN's beta replaces it).",
                        mistakes={expected - projection: "count the projection shortcut too: a 1x1 conv 32 -> 64 and "
                                                         "its BatchNorm",
                                  expected + biases: "the convolutions have no bias (BN's beta replaces it)",
                                  expected - bns: "each of the three BatchNorms has a gamma and a beta per channel"},
                        hint="count conv1 (3x3, 32 -> 64), conv2 (3x3, 64 -> 64), the 1x1 projection (32 -> 64) and "
                             "2 parameters per channel for each of the three BatchNorms; no conv bias.")
