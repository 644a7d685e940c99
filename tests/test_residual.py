import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.models import count_parameters
from lessons_lib.residual import lab as rs
from lessons_lib.residual.reference import (
    BasicBlock,
    PadShortcut,
    ResidualBlock,
    deep_mlp,
    gradient_norms,
    residual_forward,
    small_resnet,
    weight_layers,
)
from lessons_lib.training import History


def test_residual_block_computes_the_seed_formula():
    torch.manual_seed(0)
    blk = ResidualBlock(8)
    x = torch.randn(5, 8)
    expected = F.relu(x + blk.layer2(F.relu(blk.layer1(x))))
    assert torch.allclose(blk(x), expected) and blk.shortcut is None
    plain = ResidualBlock(8, skip=False)
    plain.load_state_dict(blk.state_dict())
    assert torch.allclose(plain(x), F.relu(blk.layer2(F.relu(blk.layer1(x)))))
    with torch.no_grad():  # a dead layer2: the residual block passes a non-negative input through unchanged
        blk.layer2.weight.zero_()
        blk.layer2.bias.zero_()
    xp = x.relu()
    assert torch.equal(blk(xp), xp)


def test_projection_block_and_the_forward_it_runs():
    torch.manual_seed(1)
    blk = ResidualBlock(6, 10)
    x = torch.randn(3, 6)
    assert isinstance(blk.shortcut, nn.Linear) and blk.shortcut.bias is None
    assert torch.allclose(blk(x), F.relu(blk.layer2(F.relu(blk.layer1(x))) + blk.shortcut(x)))
    assert ResidualBlock(6, 10, skip=False).shortcut is None
    calls = []

    def spy(x, block):
        calls.append(block)
        return residual_forward(x, block)

    net = deep_mlp(6, 8, 3, 2, block_forward=spy)
    net(torch.randn(4, 6))
    assert len(calls) == 3
    calls.clear()
    plain = deep_mlp(6, 8, 3, 2, residual=False, block_forward=spy)
    assert plain(x).shape == (3, 2) and calls == []  # a plain block never runs the residual forward


def test_plain_and_residual_nets_share_initial_weights():
    torch.manual_seed(3)
    p = deep_mlp(64, 32, 5, 10, residual=False)
    torch.manual_seed(3)
    r = deep_mlp(64, 32, 5, 10)
    assert len(weight_layers(p)) == 2 * 5 + 2
    assert all(torch.equal(a, b) for a, b in zip(p.state_dict().values(), r.state_dict().values()))
    assert r(torch.randn(3, 64)).shape == (3, 10)
    assert not p[2].skip and r[2].skip
    bnr = deep_mlp(16, 8, 2, 3, batchnorm=True)
    assert isinstance(bnr[2].layer1[1], nn.BatchNorm1d) and bnr[2].layer1[0].bias is None


def test_basicblock_is_the_seeds_forward():
    torch.manual_seed(0)
    blk = BasicBlock(4, 4).eval()
    x = torch.randn(2, 4, 6, 6)
    (conv1, bn1), (conv2, bn2) = blk.layer1, blk.layer2
    out = F.relu(bn1(conv1(x)))
    out = bn2(conv2(out))
    out = out + x
    assert torch.allclose(blk(x), F.relu(out))
    assert blk.shortcut_kind == "identity" and blk.shortcut is None


@pytest.mark.parametrize("shortcut,extra", [("projection", 16 * 32 + 2 * 32), ("pad", 0)])
def test_basicblock_shortcuts_shapes_and_parameters(shortcut, extra):
    blk = BasicBlock(16, 32, stride=2, shortcut=shortcut)
    assert blk(torch.randn(5, 16, 8, 8)).shape == (5, 32, 4, 4)
    assert blk(torch.randn(5, 16, 7, 7)).shape == (5, 32, 4, 4)
    assert count_parameters(blk) == 16 * 32 * 9 + 32 * 32 * 9 + 2 * 2 * 32 + extra
    assert BasicBlock(16, 32, stride=2).shortcut_kind == "projection"  # "auto"
    assert BasicBlock(3, 5, stride=1, skip=False)(torch.randn(1, 3, 4, 4)).shape == (1, 5, 4, 4)


def test_pad_shortcut_keeps_the_input_and_pads_with_zeros():
    sc = PadShortcut(2, 6, stride=2)
    x = torch.randn(1, 2, 4, 4)
    y = sc(x)
    assert y.shape == (1, 6, 2, 2)
    assert torch.equal(y[:, 2:4], x[:, :, ::2, ::2]) and y[:, :2].abs().sum() == 0 and y[:, 4:].abs().sum() == 0


def test_bad_blocks_are_clear_errors():
    with pytest.raises(ValueError, match="shortcut='projection'"):
        BasicBlock(16, 32, shortcut="identity")
    with pytest.raises(ValueError, match="shapes differ"):
        BasicBlock(16, 16, stride=2, shortcut="identity")
    with pytest.raises(ValueError, match="unknown shortcut"):
        BasicBlock(16, 16, shortcut="none")
    with pytest.raises(ValueError, match="can only add channels"):
        BasicBlock(32, 16, shortcut="pad")
    with pytest.raises(ValueError, match=">= 1"):
        BasicBlock(0, 16)
    with pytest.raises(ValueError, match="n_blocks must be >= 0"):
        deep_mlp(4, 8, -1, 2)
    with pytest.raises(ValueError, match="d_in, d_out >= 1"):
        ResidualBlock(0)
    with pytest.raises(ValueError, match="dead_block must be in"):
        rs.dead_layer_experiment(n_blocks=2, dead_block=2)


def test_small_resnet_on_flat_digits():
    m = small_resnet((1, 8, 8), 10, channels=(8, 16), blocks_per_stage=2)
    assert m(torch.randn(4, 64)).shape == (4, 10)
    assert sum(isinstance(x, BasicBlock) for x in m) == 4
    assert not any(b.skip for b in small_resnet(residual=False) if isinstance(b, BasicBlock))


def test_gradient_norms_are_the_weight_gradients_of_one_pass():
    torch.manual_seed(0)
    m = deep_mlp(10, 8, 2, 3)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    F.cross_entropy(m(x[:4]), y[:4]).backward()  # stale gradients from another pass
    norms = gradient_norms(m, x, y)
    layers = [mod for _, mod in weight_layers(m)]
    expected = [float(g.norm()) for g in torch.autograd.grad(F.cross_entropy(m(x), y), [w.weight for w in layers])]
    assert np.allclose(norms, expected)
    assert [n for n, _ in weight_layers(m)] == ["0", "2.layer1", "2.layer2", "3.layer1", "3.layer2", "4"]


def test_recorder_as_fit_callback(one_thread):
    h = rs.experiment(n_blocks=2, epochs=2, callbacks=[StopAfterSteps(25)], seed=0)
    rec = h.config["grad_norms"]
    assert h.steps == 25 and len(rec.after_epoch) == 2  # a full epoch (17 steps) + the partial one
    assert rec.at_init.shape == (6,) and np.all(rec.at_init > 0)
    assert rec.layer_names[0] == "0" and rec.layer_names[-1] == "4"


def test_experiment_runs_the_functions_it_is_given(one_thread):
    seen = {"block": 0, "norms": 0}

    def block(x, b):
        seen["block"] += 1
        return residual_forward(x, b)

    def norms(model, x, y):
        seen["norms"] += 1
        return gradient_norms(model, x, y)

    h = rs.experiment(n_blocks=2, epochs=2, seed=0, block_forward=block, gradient_norms=norms)
    assert seen["norms"] == 3  # at init, after each epoch
    assert seen["block"] > 2 * 17
    assert len(h.config["grad_norms"].after_epoch) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dead_layer_blocks_the_plain_gradient_but_not_the_residual_one(seed):
    d = rs.dead_layer_experiment(n_blocks=4, seed=seed)
    assert d.layer_names[d.dead_layer] == "4.layer2" and d.block_start == d.dead_layer - 1
    assert np.all(d.before("plain") == 0.0)  # exactly zero
    assert np.all(d.before("residual") > 1e-3)
    assert np.all(d.before("plain_alive") > 0)  # the same plain net without the dead layer gets a gradient
    assert d.residual[d.block_start] == 0.0  # inside the dead block, the seed's "what's in between"
    assert d.plain[-1] > 0 and d.residual[-1] > 0 and d.residual[d.dead_layer] > 0


def test_depth_sweep_residual_trains_deep_plain_does_not(one_thread):
    sw = rs.depth_sweep((8,), epochs=3, seed=0)
    acc_plain, acc_res = sw.final_acc(False)[0], sw.final_acc(True)[0]
    assert acc_res > 0.6 and acc_plain < 0.3
    g_plain, g_res = sw.recorder(False).at_init, sw.recorder(True).at_init
    assert g_res[0] / g_res[-1] > 1e3 * g_plain[0] / g_plain[-1]
    rows = sw.rows()
    assert len(rows) == 2 and rows[0].linear_layers == 18 and rows[1].residual


def test_basicblock_resnet_learns_digits(one_thread):
    runs = rs.basicblock_experiment(epochs=3, seed=1)
    assert runs.residual.val_acc[-1] > 0.85
    assert runs.residual.config["params"] == runs.plain.config["params"] + 16 * 32 + 2 * 32


def _hist(accs):
    h = History()
    for i, a in enumerate(accs):
        h.append({"epoch": i, "train_loss": 1, "train_acc": a, "val_acc": a, "val_loss": 1, "seconds": 1,
                  "samples_per_s": 1, "step_seconds": 1})
    return h


def test_claim_verdicts_follow_the_numbers():
    sw = rs.DepthSweep(depths=[4])
    for r, acc, g in ((False, 0.1, [1e-12, 1.0]), (True, 0.95, [0.5, 1.0])):
        h = _hist([acc])
        rec = rs.GradNormRecorder(torch.zeros(1, 2), torch.zeros(1))
        rec.at_init = np.array(g)
        h.config["grad_norms"] = rec
        sw.histories[(r, 4)] = h
    blocks = rs.BlockRuns(residual=_hist([0.95]), plain=_hist([0.9]))
    dead = rs.DeadLayer(["a", "b", "c", "d"], 1, 2, 1, np.array([0.0, 0, 0, 1]), np.array([1.0, 0, 0, 1]),
                        np.array([1.0, 1, 1, 1]))
    assert all(r.holds for r in rs.claims(sweep=sw, dead=dead, blocks=blocks).rows)
    bad_dead = rs.DeadLayer(["a", "b", "c", "d"], 1, 2, 1, np.array([1e-3, 0, 0, 1]), np.array([0.0, 0, 0, 1]),
                            np.array([1.0, 1, 1, 1]))
    sw.histories[(True, 4)].val_acc[-1] = 0.1
    bad = rs.claims(sweep=sw, dead=bad_dead, blocks=rs.BlockRuns(residual=_hist([0.5]), plain=_hist([0.9])))
    assert [r.holds for r in bad.rows] == [False, False, False, True, False]
