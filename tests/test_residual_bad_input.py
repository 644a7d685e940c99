"""Lesson 06's public API under bad input: a clear error naming the argument, the value and the fix (never a raw
torch error, never a silent wrong result); numpy scalars are numbers, bools are not. Checks turn nonsense answers
into "✗ Not yet". Plus property tests of the blocks and builders (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.models import count_parameters
from lessons_lib.residual import checks
from lessons_lib.residual import lab as rs
from lessons_lib.residual.reference import (
    BasicBlock,
    ResidualBlock,
    deep_mlp,
    gradient_norms,
    residual_forward,
    small_resnet,
    weight_layers,
)
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
LONG = torch.zeros(5, dtype=torch.long)


@pytest.mark.parametrize("call, match", [
    (lambda: ResidualBlock(0), r"d_in=0: must be a whole number in \[1"),
    (lambda: ResidualBlock(2.5), "d_in=2.5: .*not rounded"),
    (lambda: ResidualBlock(True), "d_in=True: .*got bool"),
    (lambda: ResidualBlock("4"), "d_in='4': .*got str"),
    (lambda: ResidualBlock(4, 6.5), "d_out=6.5"),
    (lambda: ResidualBlock(4, skip="no"), "skip='no': must be True or False"),
    (lambda: ResidualBlock(4, forward_fn=3), "forward_fn=3: must be a function"),
    (lambda: BasicBlock(0, 4), "in_planes=0"),
    (lambda: BasicBlock(4.5, 4), "in_planes=4.5"),
    (lambda: BasicBlock(True, 4), "in_planes=True"),
    (lambda: BasicBlock("4", 4), "in_planes='4'"),
    (lambda: BasicBlock(4, 4, 0), r"stride=0: must be a whole number in \[1, 64\]"),
    (lambda: BasicBlock(4, 8, 1.5), "stride=1.5"),
    (lambda: BasicBlock(4, 8, 2, shortcut="x"), "shortcut='x': must be one of"),
    (lambda: BasicBlock(4, 4)(torch.zeros(2, 3, 6, 6)), r"BasicBlock needs x of shape \(N, channels, H, W\) with 4"),
    (lambda: BasicBlock(4, 4)(torch.zeros(2, 4, 6, 6, dtype=torch.long)), "needs a float torch.Tensor"),
    (lambda: ResidualBlock(4)(torch.zeros(2, 5)), r"ResidualBlock needs x of shape \(N, features\) with 4 .* \(2, 5\)"),
    (lambda: ResidualBlock(4)(np.zeros((2, 4))), "got ndarray"),
    (lambda: deep_mlp(64, 8, -1, 10), r"n_blocks=-1: must be a whole number in \[0, 2000\]"),
    (lambda: deep_mlp(64, 8, 2.5, 10), "n_blocks=2.5"),
    (lambda: deep_mlp(64, 8, True, 10), "n_blocks=True: .*got bool"),
    (lambda: deep_mlp(64, 8, "2", 10), "n_blocks='2'"),
    (lambda: deep_mlp(64, 8, float("nan"), 10), "n_blocks=nan"),
    (lambda: deep_mlp(64, 8, 10**6, 10), "n_blocks=1000000"),
    (lambda: deep_mlp(64, 0, 2, 10), "width=0"),
    (lambda: deep_mlp(64, 8.5, 2, 10), "width=8.5"),
    (lambda: deep_mlp(64, None, 2, 10), "width=None"),
    (lambda: deep_mlp(64, 8, 2, 10, residual="yes"), "residual='yes'"),
    (lambda: small_resnet((8, 8)), r"image_shape=\(8, 8\): must be \(channels, height, width\)"),
    (lambda: small_resnet((1, 8, 8.5)), r"image_shape\[2\]=8.5"),
    (lambda: small_resnet((1, -8, 8)), r"image_shape\[1\]=-8"),
    (lambda: small_resnet(channels=()), r"channels=\(\): must be a list"),
    (lambda: small_resnet(channels=16), "channels=16: must be a list"),
    (lambda: small_resnet(channels=(0,)), r"channels\[0\]=0"),
    (lambda: small_resnet(blocks_per_stage=1.5), "blocks_per_stage=1.5"),
    (lambda: small_resnet(blocks_per_stage=True), "blocks_per_stage=True"),
    (lambda: small_resnet(n_classes=0), "n_classes=0"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3), torch.zeros(5, 4), torch.zeros(5)), "y must be a torch.long"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3), torch.zeros(5, 4), torch.full((5,), 7)),
     r"labels from 7 to 7 but the model has 3 outputs"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3), torch.zeros(5, 6), LONG), r"x of shape \(5, 6\) does not fit"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3), torch.zeros(5, 4), LONG[:3]), "5 class labels"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3), np.zeros((5, 4)), LONG), "x must be a float torch.Tensor"),
    (lambda: gradient_norms(None, torch.zeros(5, 4), LONG), "model must be an nn.Module"),
    (lambda: gradient_norms(deep_mlp(4, 8, 1, 3).requires_grad_(False), torch.zeros(5, 4), LONG), "are frozen"),
    (lambda: weight_layers(None), "model must be an nn.Module"),
    (lambda: residual_forward(torch.zeros(2, 4), None), "block must have layer1, layer2 and shortcut"),
])
def test_reference_refuses_with_the_fix(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_reference_takes_numpy_scalars():
    b = BasicBlock(np.int64(4), np.int64(8), np.int64(2))
    assert b(torch.zeros(1, 4, 6, 6)).shape == (1, 8, 3, 3) and isinstance(b.layer1[0].stride[0], int)
    m = deep_mlp(np.int64(64), np.int32(8), np.int64(2), np.int64(10))
    assert len(weight_layers(m)) == 6 and m[0].out_features == 8
    assert small_resnet((np.int64(1), 8, 8), np.int64(10), channels=[np.int64(4)])(torch.zeros(2, 64)).shape == (2, 10)


def _sweep():
    return rs.DepthSweep(depths=[1, 2], seeds=[1, 2], epochs=1, lr=0.05)


@pytest.mark.parametrize("call, match", [
    (lambda: rs.depth_sweep((), n_seeds=2), r"depths=\(\): must be a non-empty list"),
    (lambda: rs.depth_sweep(4, n_seeds=2), "depths=4: must be a non-empty list"),
    (lambda: rs.depth_sweep((1, 2.5), n_seeds=2), r"depths\[1\]=2.5"),
    (lambda: rs.depth_sweep((1, 1), n_seeds=2), "holds a depth twice"),
    (lambda: rs.depth_sweep((1,), n_seeds=1), "n_seeds=1"),
    (lambda: rs.depth_sweep((1,), n_seeds=2, lr=0), "lr=0"),
    (lambda: rs.depth_sweep((1,), n_seeds=2, epochs=True), "epochs=True"),
    (lambda: rs.depth_sweep((1,), n_seeds=2, treatments=("resnet",)), "='resnet': must be one of"),
    (lambda: rs.depth_sweep((1,), n_seeds=2, block_forward="mine"), "block_forward='mine': must be a function"),
    (lambda: rs.depth_sweep((1,), n_seeds=2, seed=-3), "seed=-3"),
    (lambda: rs.dead_layer_experiment(n_blocks=2, dead_block=2), r"dead_block=2: must be a whole number in \[0, 1\]"),
    (lambda: rs.dead_layer_experiment(n_blocks=4, dead_block=1.5), "dead_block=1.5"),
    (lambda: rs.dead_layer_experiment(n_blocks=4, dead_block=True), "dead_block=True"),
    (lambda: rs.dead_layer_experiment(n_blocks=0), "n_blocks=0"),
    (lambda: rs.dead_layer_experiment(gradient_norms=print.__class__), "gradient_norms=.*must be a function"),
    (lambda: rs.dead_layer_training(n_blocks=2, dead_block=5), "dead_block=5"),
    (lambda: rs.dead_layer_training(n_seeds=2, epochs=0), "epochs=0"),
    (lambda: rs.basicblock_experiment(n_seeds=2, channels=(0,)), r"channels\[0\]=0"),
    (lambda: rs.basicblock_experiment(n_seeds=2, lr=float("inf")), "lr=inf"),
    (lambda: rs.experiment(init="xavier"), "init='xavier': must be one of"),
    (lambda: rs.experiment(n_blocks=1.5), "n_blocks=1.5"),
    (lambda: rs.experiment(epochs=0), "epochs=0"),
    (lambda: rs.degradation("sweep"), "sweep must be the DepthSweep"),
    (lambda: rs.degradation(_sweep(), shallow=2, deep=1), "the deep net needs more blocks"),
    (lambda: rs.degradation(_sweep(), lrs=(0.01, -1)), r"lrs\[1\]=-1"),
    (lambda: _sweep().final("val_acc", "plain", 3), r"n_blocks=3: not one of the sweep's depths \[1, 2\]"),
    (lambda: _sweep().final("accuracy", "plain", 1), "metric='accuracy': must be one of"),
    (lambda: _sweep().final("val_acc", "resnet", 1), "treatment='resnet'"),
    (lambda: _sweep().norms("plain", 1, when="end"), "when must be 'init' or 'final'"),
    (lambda: rs.DeadTraining(2, 1, [1], {}, {}).val_acc("resnet"), "kind='resnet': must be one of"),
    (lambda: rs.Degradation(1, 2, [0.01], {}).train_loss(3, 0.01), r"no runs at n_blocks=3, lr=0.01"),
])
def test_apparatus_refuses_before_training(call, match):
    with pytest.raises(ValueError, match=match):
        call()


class NotAFunction:
    pass


@pytest.mark.parametrize("check", [checks.check_residual_forward, checks.check_gradient_norms])
@pytest.mark.parametrize("candidate, says", [
    (NotAFunction, "got the class NotAFunction"),
    (lambda: 1, "the check calls "),
    (lambda *a: None, "got NoneType"),
    (lambda *a: (1, 2, 3), "got "),  # "must return a torch.Tensor, got tuple" / "expected 4 norms ..., got 3"
    (lambda *a: {}["k"], "raised KeyError"),
])
def test_code_checks_turn_nonsense_into_not_yet(check, candidate, says, capsys):
    r = check(candidate)
    assert r.status == "wrong" and r.message.startswith("✗ Not yet:") and says in r.message, r.message


@pytest.mark.parametrize("answer", ["6", "abc", 6.5, True, float("nan"), 32.0, np.int64(7), [1, 2], np.array([5, 32]),
                                    {}, 3j, int, torch.tensor(3), (5, 32), "(5, 32, 4, 4)"])
def test_answer_checks_turn_nonsense_into_not_yet(answer, capsys):
    dead = rs.DeadLayer(["a"] * 8, 2, 7, 5, np.zeros(8), np.r_[np.ones(5), 0.0, 1.0, 1.0], np.ones(8))
    for r in (checks.check_dead_layer(answer, dead), checks.check_basicblock_output_shape(answer),
              checks.check_basicblock_parameters(answer)):
        assert r.status == "wrong" and r.message.startswith("✗ Not yet:"), r.message


def test_answer_checks_take_numpy_and_tensor_forms(capsys):
    dead = rs.DeadLayer(["a"] * 8, 2, 7, 5, np.zeros(8), np.r_[np.ones(5), 0.0, 1.0, 1.0], np.ones(8))
    for right in (6, 6.0, np.int64(6), torch.tensor(6)):
        assert checks.check_dead_layer(right, dead).ok
    for shape in ((5, 32, 4, 4), [5, 32, 4, 4], np.array([5, 32, 4, 4]), torch.Size([5, 32, 4, 4]),
                  (5.0, np.int64(32), 4, 4)):
        assert checks.check_basicblock_output_shape(shape).ok
    n = count_parameters(BasicBlock(32, 64, stride=2, shortcut="projection"))
    assert checks.check_basicblock_parameters(np.int64(n)).ok and checks.check_basicblock_parameters(float(n)).ok
    with pytest.raises(BadArgument, match="dead must be the DeadLayer"):
        checks.check_dead_layer(6, None)


# --- property tests ----------------------------------------------------------------------------------------------
@FAST
@given(d_in=st.integers(1, 12), d_out=st.integers(1, 12), n=st.integers(1, 6), batchnorm=st.booleans(),
       skip=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_residual_block_shapes_dtypes_and_skip(d_in, d_out, n, batchnorm, skip, dtype):
    torch.manual_seed(0)
    block = ResidualBlock(d_in, d_out, skip=skip, batchnorm=batchnorm).to(dtype).eval()
    x = torch.rand(n, d_in, dtype=dtype)
    y = block(x)
    assert y.shape == (n, d_out) and y.dtype == dtype and bool((y >= 0).all())
    assert (block.shortcut is not None) == (skip and d_in != d_out)
    with torch.no_grad():  # a dead second layer: the residual block passes a non-negative input through
        last = block.layer2[0] if batchnorm else block.layer2
        last.weight.zero_()
        if batchnorm:
            block.layer2[1].bias.zero_()
        else:
            last.bias.zero_()
    if skip and d_in == d_out:
        assert torch.allclose(block(x), x)
    elif not skip:
        assert bool((block(x) == 0).all())


@FAST
@given(in_planes=st.integers(1, 6), planes=st.integers(1, 6), stride=st.integers(1, 3), h=st.integers(1, 7),
       w=st.integers(1, 7), shortcut=st.sampled_from(["auto", "projection", "pad"]))
def test_basicblock_output_shape(in_planes, planes, stride, h, w, shortcut):
    if shortcut == "pad" and planes < in_planes:
        with pytest.raises(ValueError, match="can only add channels"):
            BasicBlock(in_planes, planes, stride, shortcut)
        return
    block = BasicBlock(in_planes, planes, stride, shortcut).eval()
    y = block(torch.randn(2, in_planes, h, w))
    assert y.shape == (2, planes, -(-h // stride), -(-w // stride))


@FAST
@given(n_blocks=st.integers(0, 5), width=st.integers(1, 16), residual=st.booleans())
def test_deep_mlp_layers_and_gradient_norms(n_blocks, width, residual):
    torch.manual_seed(0)
    m = deep_mlp(6, width, n_blocks, 3, residual=residual)
    norms = gradient_norms(m, torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    assert len(norms) == len(weight_layers(m)) == 2 * n_blocks + 2
    assert all(isinstance(v, float) and v >= 0 and np.isfinite(v) for v in norms)
