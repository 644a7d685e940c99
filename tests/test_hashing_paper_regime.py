"""Lesson 09, the paper's regime (lessons_lib.hashing.paper_regime): row-sparse updates, the multiplication
accounting, the equal-compute width, the rebuild schedule, bad input. Fast: tiny layers and a tiny data set."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lessons_lib.data import Splits
from lessons_lib.hashing import paper_regime as pr
from lessons_lib.lsh import RebuildSchedule
from lessons_lib.validate import BadArgument


def _untouched(before: torch.Tensor, after: torch.Tensor, rows: torch.Tensor) -> bool:
    """Are ``rows`` of ``after`` bit-identical to ``before``?"""
    return torch.equal(before[rows], after[rows])


def _setup(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    param, state = torch.randn(10, 4, generator=g), torch.rand(10, 4, generator=g)
    rows = torch.tensor([1, 4, 7])
    inactive = torch.tensor([r for r in range(10) if r not in rows.tolist()])
    return param, state, rows, inactive, torch.randn(3, 4, generator=g)


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_row_sparse_step_leaves_inactive_rows_and_state_bit_identical(optimizer):
    param, state, rows, inactive, grad = _setup()
    p0, s0 = param.clone(), state.clone()
    pr.sparse_step_(param, state, grad, rows, lr=0.1, optimizer=optimizer, weight_decay=0.01)
    assert _untouched(p0, param, inactive) and _untouched(s0, state, inactive)
    assert not torch.equal(p0[rows], param[rows])  # the active rows did move
    if optimizer == "adagrad":  # Adagrad by hand on the active rows
        g = grad + 0.01 * p0[rows]
        s = s0[rows] + g * g
        assert torch.allclose(state[rows], s)
        assert torch.allclose(param[rows], p0[rows] - 0.1 * g / (s.sqrt() + pr.EPS))
    else:
        assert torch.equal(state, s0)


def test_a_planted_dense_update_is_caught():
    """The check above must fail for a dense update (every row stepped, as torch.optim.Adagrad with weight decay
    or Adam's moments would): the inactive rows and their state move."""
    param, state, rows, inactive, grad = _setup()
    p0, s0 = param.clone(), state.clone()
    dense_grad = torch.zeros_like(param).index_copy_(0, rows, grad)
    pr.sparse_step_(param, state, dense_grad, torch.arange(10), lr=0.1, weight_decay=0.01)  # the planted bug
    assert not _untouched(p0, param, inactive) and not _untouched(s0, state, inactive)


def _tiny(n_train: int = 24, n_in: int = 6) -> Splits:
    g = torch.Generator().manual_seed(3)
    x = lambda n: torch.randn(n, n_in, generator=g)  # noqa: E731
    y = lambda n: torch.randint(0, 3, (n,), generator=g)  # noqa: E731
    return Splits("tiny", x(n_train), y(n_train), x(9), y(9), x(9), y(9), 3)


TINY = pr.PaperConfig(width=40, active_fraction=0.1, epochs=3, batch_size=8, K=2, L=3, pool_dim=2,
                      rebuild_first=2, rebuild_growth=1.5, seeds=2)


def test_a_training_step_moves_only_the_active_units():
    cfg = TINY
    net = pr._Net(6, 40, 3, 4, "random", cfg, seed=1)
    p0, s0, x = net.p.clone(), net.state.clone(), _tiny().x_train[:2]
    net.gen.manual_seed(7)
    idx = net.select(x)
    net.gen.manual_seed(7)
    net.train_step(x, torch.tensor([0, 2]))
    inactive = torch.tensor([j for j in range(40) if j not in idx.unique().tolist()])
    assert len(inactive) >= 40 - 8
    assert _untouched(p0, net.p, inactive) and _untouched(s0, net.state, inactive)
    assert not torch.equal(p0[idx.unique()], net.p[idx.unique()])


def test_multiplication_accounting_equals_a_hand_count():
    # n_in 6, width 40, keep 4 units; K=2, L=3, pool 2: hashing one vector = 2 + 2*2*3 = 14 multiplications
    m = pr.lsh_mults(6, TINY, rebuilds=5, examples=70)
    assert (m.matmul, m.selection, m.dense) == (2 * 4 * 6, 14, 2 * 40 * 6)
    assert m.rebuild == 5 * 40 * 14 / 70 and m.total == 48 + 14 + 40
    assert pr.equal_compute_width(6, TINY, rebuilds=5, examples=70) == round(102 / 12)


def test_a_run_counts_rebuilds_on_the_schedule_and_its_multiplications():
    data = _tiny()
    r = pr.train_run("lsh", data, TINY, seed=4)
    steps = TINY.epochs * 3  # 24 examples in batches of 8
    expected = RebuildSchedule(2, 1.5).steps(steps)
    assert expected == [0, 2, 5] and r.rebuilds == len(expected)
    assert r.mults == pr.lsh_mults(6, TINY, rebuilds=3, examples=3 * 24)
    narrow = pr.train_run("narrow", data, TINY, seed=4)
    assert narrow.width == narrow.k == pr.equal_compute_width(6, TINY, rebuilds=3, examples=72)
    assert narrow.mults.matmul == 2 * narrow.width * 6 and narrow.mults.selection == narrow.mults.rebuild == 0
    top = pr.train_run("topk", data, TINY, seed=4)
    assert top.mults.selection == 40 * 6 and top.rebuilds == 0


def test_runs_are_deterministic_from_the_seed_and_compare_pairs_them():
    data = _tiny()
    a, b = pr.train_run("lsh", data, TINY, seed=9), pr.train_run("lsh", data, TINY, seed=9)
    assert a.val_curve == b.val_curve and a.test_acc == b.test_acc and len(a.val_curve) == TINY.epochs
    comp = pr.compare(data, TINY, methods=("dense", "lsh", "narrow"), seeds=[1, 2])
    assert [r.seed for r in comp.of("lsh")] == [1, 2]
    assert "narrow" in comp.table()
    assert {row[3] for row in pr.claims(comp)} <= {"holds", "does not hold", "inconclusive"}


@pytest.mark.parametrize("field, value", [("width", 0), ("active_fraction", 1.5), ("batch_size", 0.5),
                                          ("optimizer", "adam"), ("lr", -1.0), ("seeds", 1), ("epochs", True),
                                          ("lrs", (("dense", 0.0),)), ("K", 40)])
def test_bad_config_raises_badargument_naming_the_field(field, value):
    with pytest.raises(BadArgument, match=field.rstrip("s") if field == "lrs" else field):
        replace(TINY, **{field: value}).checked()


def test_bad_arguments_raise_badargument():
    with pytest.raises(BadArgument, match="method"):
        pr.train_run("adam", _tiny(), TINY)
    with pytest.raises(BadArgument, match="data"):
        pr.train_run("lsh", "mnist1d", TINY)
    with pytest.raises(BadArgument, match="examples"):
        pr.lsh_mults(6, TINY, rebuilds=1, examples=0)
    with pytest.raises(BadArgument, match="dense"):
        pr.compare(_tiny(), TINY, methods=("lsh", "random"))
    with pytest.raises(BadArgument, match="seeds"):
        pr.compare(_tiny(), TINY, methods=("dense",), seeds=[3, 3])
    with pytest.raises(BadArgument, match="seed"):
        pr.train_run("dense", _tiny(), TINY, seed=-1)


def _run(method: str, seed: int, acc: float, curve: tuple[float, ...] = (0.5, 0.6, 0.6, 0.6, 0.6, 0.6)) -> pr.PaperRun:
    return pr.PaperRun(method, seed, 40, 4, 0.1, acc, list(curve), pr.Mults(20, 14, 5.0, 480), 3, 0.1)


def test_comparison_pairs_gaps_by_seed_and_gives_verdicts():
    runs = [_run("dense", 1, 0.600), _run("dense", 2, 0.700), _run("dense", 3, 0.650),
            _run("lsh", 3, 0.648), _run("lsh", 1, 0.598), _run("lsh", 2, 0.697),  # 0.2-0.3 points below, per seed
            _run("narrow", 1, 0.500), _run("narrow", 2, 0.520), _run("narrow", 3, 0.510)]
    comp = pr.PaperComparison(TINY, [1, 2, 3], runs)
    gap = comp.gap("lsh")
    assert gap.mean == pytest.approx((0.002 + 0.003 + 0.002) / 3) and gap.high < 0.01
    assert comp.verdict("lsh") == "holds" and comp.verdict("narrow") == "does not hold"
    assert comp.converged().mean == 0.0  # flat curves: nothing gained in the last third
    verdicts = [r[3] for r in pr.claims(comp)]
    # 39/480 = 8.1% of dense; LSH within 1 point of dense; dense converged; LSH beats the narrow net
    assert runs[0].mults.fraction == pytest.approx(39 / 480)
    assert verdicts == ["holds", "holds", "holds", "holds"]
    assert "does not hold" in comp.table() and "+0.2 ± " in comp.table()
