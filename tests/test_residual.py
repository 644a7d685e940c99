import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lessons_lib.callbacks import StopAfterSteps
from lessons_lib.data import load
from lessons_lib.models import count_parameters
from lessons_lib.residual import lab as rs
from lessons_lib.residual import runs as rs_runs
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
    with pytest.raises(ValueError, match="shortcut='none': must be one of"):
        BasicBlock(16, 16, shortcut="none")
    with pytest.raises(ValueError, match="can only add channels"):
        BasicBlock(32, 16, shortcut="pad")
    with pytest.raises(ValueError, match=r"in_planes=0: must be a whole number in \[1"):
        BasicBlock(0, 16)
    with pytest.raises(ValueError, match=r"n_blocks=-1: must be a whole number in \[0, 2000\]"):
        deep_mlp(4, 8, -1, 2)
    with pytest.raises(ValueError, match=r"d_in=0: must be a whole number"):
        ResidualBlock(0)
    with pytest.raises(ValueError, match=r"dead_block=.: must be a whole number in \[0, 1\]"):
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


def test_dead_layer_experiment_names_the_dead_layer_gradient():
    d = rs.dead_layer_experiment(n_blocks=4, seed=0)
    assert d.plain[d.dead_layer] == 0.0 and d.residual[d.dead_layer] > 0  # dead in plain, alive with the skip


def test_dead_layer_stays_dead_in_the_plain_net_and_revives_with_the_skip(one_thread):
    dt = rs.dead_layer_training(n_blocks=2, epochs=2, n_seeds=2, seed=0, width=16)
    assert dt.weight_norm["plain"].shape == (2, 3) and dt.dead_block == 1
    assert np.all(dt.weight_norm["plain"] == 0.0)  # exactly zero, every run, every epoch
    assert np.all(dt.weight_norm["residual"][:, 0] == 0.0) and np.all(dt.weight_norm["residual"][:, -1] > 0.05)
    assert all(a < 0.2 for a in dt.val_acc("plain"))  # one prediction for every image: about chance
    assert all(r > p + 0.3 for r, p in zip(dt.val_acc("residual"), dt.val_acc("plain")))
    with pytest.raises(ValueError, match=r"dead_block=.: must be a whole number in \[0, 1\]"):
        rs.dead_layer_training(n_blocks=2, dead_block=5)


def test_flat_plain_and_he_init():
    torch.manual_seed(0)
    deep = deep_mlp(10, 8, 2, 3, residual=False)
    flat = rs.flat_plain(deep)
    x = torch.randn(5, 10)
    assert torch.equal(flat(x), deep(x)) and len(rs.reference.weight_layers(flat)) == 6
    assert flat[2] is deep[2].layer1  # shared, not copied: training one trains the other
    with pytest.raises(ValueError, match="plain deep_mlp"):
        rs.flat_plain(deep_mlp(10, 8, 2, 3))
    torch.manual_seed(0)
    he = rs.he_init(rs.flat_plain(deep_mlp(256, 512, 2, 3, residual=False)))
    lin = [m for m in he if isinstance(m, nn.Linear)]
    assert abs(float(lin[1].weight.detach().std()) - (2 / 512) ** 0.5) < 0.05 * (2 / 512) ** 0.5
    assert all(float(m.bias.detach().abs().max()) == 0 for m in lin[:-1])
    assert float(lin[-1].bias.detach().abs().max()) > 0  # the output layer keeps PyTorch's init
    with pytest.raises(ValueError, match="treatment='resnet': must be one of"):
        rs_runs.build("resnet", None, 2, 8)
    with pytest.raises(ValueError, match="init='xavier': must be one of"):
        rs.experiment(init="xavier")


def test_stacked_plain_runs_equal_one_fit_per_seed(one_thread):
    """The paired design rests on this: run i of a plain net (all seeds stacked) is what fit trains for seed i."""
    data = load("digits", seed=0)
    kw = dict(n_blocks=2, width=16, lr=0.05, epochs=2)
    stacked = rs_runs.train_runs("plain_he", data, [3, 4], **kw)
    looped = rs_runs.train_runs("plain_he", data, [3, 4], callbacks=[StopAfterSteps(10**6)], **kw)
    for a, b in zip(stacked, looped):
        assert np.allclose(a.train_loss, b.train_loss, rtol=1e-4) and np.allclose(a.val_acc, b.val_acc, atol=1e-6)
        assert np.allclose(a.config["norms_init"], b.config["norms_init"])
        assert np.allclose(a.config["norms_final"], b.config["norms_final"], rtol=1e-3)


def test_depth_sweep_residual_trains_deep_plain_does_not(one_thread):
    sw = rs.depth_sweep((1, 8), epochs=3, n_seeds=2, seed=0)
    assert sw.deepest == 8 and len(sw.seeds) == 2
    for r, p in zip(sw.final("val_acc", "residual", 8), sw.final("val_acc", "plain", 8)):
        assert r > 0.6 and p < 0.3
    assert all(v < -3 for v in sw.log_ratio("plain", 8)) and all(v > -1 for v in sw.log_ratio("residual", 8))
    assert all(v > -1 for v in sw.log_ratio("plain_he", 8))  # He init: no vanishing gradient at init
    assert sw.norms("residual", 8).shape == (2, 18) and sw.norms("plain_he", 8, "final").shape == (2, 18)
    with pytest.raises(ValueError, match="when must be"):
        sw.norms("plain", 8, "later")
    deg = rs.degradation(sw, lrs=(0.02,))
    assert deg.lrs == [0.02, 0.05] and deg.histories[(8, 0.05)] is sw.histories[("plain_he", 8)]
    assert deg.best_lr(8) in deg.lrs and deg.best(8) == deg.train_loss(8, deg.best_lr(8))
    assert all(d > s for d, s in zip(deg.best(8), deg.best(1)))  # deeper plain trains worse, even at its best lr


def test_degradation_picks_each_depths_best_learning_rate():
    hist = {(1, 0.01): [_hist([0.9], loss=0.5)] * 2, (1, 0.05): [_hist([0.9], loss=0.1)] * 2,
            (4, 0.01): [_hist([0.5], loss=1.0)] * 2, (4, 0.05): [_hist([0.1], loss=float("nan"))] * 2}
    deg = rs.Degradation(1, 4, [0.01, 0.05], hist)
    assert deg.best_lr(1) == 0.05 and deg.best_lr(4) == 0.01 and deg.best(4) == [1.0, 1.0]


def test_basicblock_resnet_learns_digits(one_thread):
    runs = rs.basicblock_experiment(epochs=3, n_seeds=2, seed=1)
    assert len(runs.residual) == len(runs.plain) == 2 and len(set(runs.seeds)) == 2
    assert all(h.val_acc[-1] > 0.85 for h in runs.residual)
    assert runs.residual[0].config["params"] == runs.plain[0].config["params"] + 16 * 32 + 2 * 32


def _hist(accs, loss=1.0):
    h = History()
    for i, a in enumerate(accs):
        h.append({"epoch": i, "train_loss": loss, "train_acc": a, "val_acc": a, "val_loss": 1, "seconds": 1,
                  "samples_per_s": 1, "step_seconds": 1})
    return h


def _sweep(val: dict[str, list[float]], loss: dict[str, list[float]], log_ratio: dict[str, list[float]]):
    sw = rs.DepthSweep(depths=[4], seeds=[0, 1, 2], epochs=1, lr=0.05)
    for t in rs.TREATMENTS:
        sw.histories[(t, 4)] = []
        for v, lo, g in zip(val[t], loss[t], log_ratio[t]):
            h = _hist([v], loss=lo)
            h.config.update(norms_init=np.array([10.0**g, 1.0]), norms_final=np.array([1.0, 1.0]))
            sw.histories[(t, 4)].append(h)
    return sw


GOOD_VAL = {"plain": [0.1, 0.09, 0.1], "plain_he": [0.2, 0.1, 0.15], "residual": [0.95, 0.93, 0.94]}
GOOD_LOSS = {"plain": [2.3] * 3, "plain_he": [2.0, 2.2, 2.1], "residual": [0.1, 0.15, 0.12]}
GOOD_RATIO = {"plain": [-9, -8.5, -9.2], "plain_he": [-0.1, 0.05, -0.2], "residual": [0.0, -0.05, 0.02]}


def _deg(shallow, deep):
    return rs.Degradation(1, 4, [0.05], {(1, 0.05): [_hist([0.9], loss=v) for v in shallow],
                                         (4, 0.05): [_hist([0.5], loss=v) for v in deep]})


def _dead_training(plain_max, gains):
    hist = {"plain": [_hist([0.1]) for _ in gains], "residual": [_hist([0.1 + g]) for g in gains]}
    return rs.DeadTraining(4, 2, [0, 1, 2], {"plain": np.array([[0.0, plain_max]] * 3),
                                             "residual": np.array([[0.0, 1.0]] * 3)}, hist)


def test_claim_verdicts_follow_the_intervals():
    dead = rs.DeadLayer(["a", "b", "c", "d"], 1, 2, 1, np.array([0.0, 0, 0, 1]), np.array([1.0, 0, 0, 1]),
                        np.array([1.0, 1, 1, 1]))
    blocks = rs.BlockRuns(residual=[_hist([0.95]), _hist([0.96]), _hist([0.97])],
                          plain=[_hist([0.9]), _hist([0.95]), _hist([0.96])])
    rows = rs.claims(sweep=_sweep(GOOD_VAL, GOOD_LOSS, GOOD_RATIO), dead=dead, blocks=blocks,
                     dead_training=_dead_training(0.0, [0.8, 0.85, 0.9]),
                     degraded=_deg([0.1, 0.12, 0.09], [2.0, 1.5, 1.8])).rows
    assert len(rows) == 11 and all(r.verdict == "holds" for r in rows), [(r.claim, r.verdict) for r in rows]
    # the opposite numbers: every row "does not hold"
    bad_dead = rs.DeadLayer(["a", "b", "c", "d"], 1, 2, 1, np.array([1e-3, 0, 0, 1]), np.array([0.0, 0, 0, 1]),
                            np.array([1.0, 1, 1, 1]))
    bad_val = {"plain": [0.9, 0.9, 0.9], "plain_he": [0.9, 0.91, 0.92], "residual": [0.9, 0.91, 0.92]}
    bad_ratio = {"plain": [-0.1, 0.0, -0.2], "plain_he": [-5, -6, -5.5], "residual": [-4, -5, -4.5]}
    bad_blocks = rs.BlockRuns(residual=[_hist([0.5]), _hist([0.6]), _hist([0.55])], plain=blocks.plain)
    rows = rs.claims(sweep=_sweep(bad_val, {**GOOD_LOSS, "residual": [2.5, 2.6, 2.7]}, bad_ratio), dead=bad_dead,
                     blocks=bad_blocks, dead_training=_dead_training(0.5, [-0.3, -0.35, -0.4]),
                     degraded=_deg([2.0, 1.5, 1.8], [0.1, 0.12, 0.09])).rows
    assert all(r.verdict == "does not hold" for r in rows), [(r.claim, r.verdict) for r in rows]
    # runs that straddle the thresholds: "inconclusive", never a success
    mixed_val = {**GOOD_VAL, "residual": [0.95, 0.1, 0.5]}
    mixed_ratio = {"plain": [-9, 0.0, -5], "plain_he": [-0.1, -2.5, -1.0], "residual": [0.0, -2.0, -1.0]}
    rows = rs.claims(sweep=_sweep(mixed_val, {**GOOD_LOSS, "residual": [0.1, 1.5, 0.5]}, mixed_ratio), dead=dead,
                     blocks=rs.BlockRuns(residual=[_hist([0.99]), _hist([0.8]), _hist([0.91])], plain=blocks.plain),
                     dead_training=_dead_training(0.0, [0.8, -0.5, 0.3]),
                     degraded=_deg([0.1, 1.0, 0.5], [0.5, 0.9, 0.6])).rows
    assert [r.verdict for r in rows[2:]] == ["inconclusive"] * 9, [(r.claim, r.verdict) for r in rows]
