"""Tests of lesson 09's wide sampled output layer (lessons_lib.hashing.wide_output) and the crossover sweep
(lessons_lib.hashing.crossover): the sampled softmax against torch, the candidates, the multiplication count by
hand, the generator, planted bugs, bad input. Tiny sizes: the whole file runs in a few seconds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lessons_lib.hashing import crossover as X
from lessons_lib.hashing import wide_output as W
from lessons_lib.lsh import RebuildSchedule
from lessons_lib.validate import BadArgument

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = replace(W.DEFAULT, n_classes=200, dim=16, group_size=10, train_per_class=3, n_val=100, n_test=100, epochs=1,
               batch_size=64, k=20, K=4, L=6, runs=2)


def _problem(B=5, C=12, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, d, generator=g), torch.randn(C, d, generator=g), torch.randint(0, C, (B,), generator=g)


def full(w, grad, rows):
    """The (C, d) gradient from sampled_softmax's (grad, rows)."""
    return grad if rows is None else torch.zeros_like(w).index_copy_(0, rows, grad)


def test_sampled_softmax_with_all_classes_equals_dense_cross_entropy_and_its_gradient():
    x, w, y = _problem()
    ref_w = w.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(x @ ref_w.T, y)
    ref.backward()
    for cand in (None, torch.arange(12).expand(5, -1).flip(1)):  # dense path, and every class as candidates
        loss, grad, rows = W.sampled_softmax(x, w, cand, y)
        torch.testing.assert_close(loss, ref.detach())
        torch.testing.assert_close(full(w, grad, rows), ref_w.grad)


def test_sampled_softmax_on_a_subset_equals_torch_on_that_subset():
    x, w, y = _problem(B=3)
    cand = torch.stack([torch.tensor([y[i].item(), (y[i].item() + 3) % 12, (y[i].item() + 7) % 12]) for i in range(3)])
    cand[1] = cand[1].flip(0)  # the true label need not come first
    cand = torch.cat([cand, torch.full((3, 1), -1)], 1)  # an empty slot takes no part
    loss, grad, touched = W.sampled_softmax(x, w, cand, y)
    ref_w = w.clone().requires_grad_(True)
    losses = [torch.nn.functional.cross_entropy((ref_w[c[c >= 0]] @ x[i])[None], (c[c >= 0] == y[i]).nonzero()[0])
              for i, c in enumerate(cand)]
    ref = torch.stack(losses).mean()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(full(w, grad, touched), ref_w.grad)
    assert touched.tolist() == sorted(set(cand[cand >= 0].tolist()))
    with pytest.raises(BadArgument, match="targets"):
        W.sampled_softmax(x, w, cand[:, 1:2] * 0 + (y[:, None] + 1) % 12, y)  # a label missing: refused


def brute_top(query, item, B, n, k, min_count):
    """Reference for top_by_count when counts are distinct: per query, the items met >= min_count times, most first."""
    counts = torch.bincount(query * n + item, minlength=B * n).view(B, n)
    out = []
    for row in counts:
        kept = [j for j in torch.argsort(row, descending=True, stable=True).tolist() if row[j] >= min_count][:k]
        out.append(sorted(kept))
    return out


@pytest.mark.parametrize("tally", [True, False])
def test_top_by_count_keeps_the_most_frequent_items(monkeypatch, tally):
    monkeypatch.setattr(X, "TALLY_CELLS", 2**24 if tally else 0)  # both paths: int16 tally and sorted pairs
    n, B = 9, 3
    reps = {0: [5, 4, 3, 2, 1, 0, 0, 0, 0], 1: [0, 0, 1, 0, 6, 0, 2, 3, 0], 2: [0] * 9}  # distinct counts
    query = torch.tensor([b for b, r in reps.items() for j, c in enumerate(r) for _ in range(c)])
    item = torch.tensor([j for r in reps.values() for j, c in enumerate(r) for _ in range(c)])
    perm = torch.randperm(len(item), generator=torch.Generator().manual_seed(0))  # order inside a query is free
    query, item = query.sort(stable=True).values, item[perm][torch.argsort(query[perm], stable=True)]
    g = torch.Generator().manual_seed(1)
    for k, m in ((2, 1), (4, 1), (4, 3), (9, 1)):
        got = W.top_by_count(query, item, B, n, k, g, min_count=m)
        assert got.shape == (B, k)
        assert [sorted(v for v in row if v >= 0) for row in got.tolist()] == brute_top(query, item, B, n, k, m)
    # ties: each of 6 items met once, k = 3 of them at random, differently under another generator
    q6, i6 = torch.zeros(6, dtype=torch.int64), torch.arange(6)
    picks = {tuple(sorted(W.top_by_count(q6, i6, 1, 6, 3, torch.Generator().manual_seed(s))[0].tolist()))
             for s in range(12)}
    assert len(picks) > 3


def test_planted_bug_ignoring_the_counts_is_caught():
    def first_k(query, item, B, n, k, generator, min_count=1):  # the bug: the first k distinct items, not the top k
        out = torch.full((B, k), -1)
        for b in range(B):
            seen = list(dict.fromkeys(item[query == b].tolist()))[:k]
            out[b, :len(seen)] = torch.tensor(seen, dtype=torch.int64)
        return out

    query, item = torch.zeros(7, dtype=torch.int64), torch.tensor([3, 1, 1, 1, 2, 2, 0])
    got = first_k(query, item, 1, 4, 2, None)
    assert sorted(got[0].tolist()) != brute_top(query, item, 1, 4, 2, 1)[0]


def labels_in_candidates(layer: W.WideOutput, x: torch.Tensor, y: torch.Tensor) -> bool:
    cand = layer.candidates(x, y)
    valid = cand >= 0
    distinct = all(len(set(c[v].tolist())) == int(v.sum()) for c, v in zip(cand, valid))
    return bool((cand == y[:, None]).any(1).all()) and distinct and cand.shape == (len(x), layer.k)


@pytest.mark.parametrize("method", ["lsh", "random"])
def test_true_label_always_among_the_training_candidates(method):
    task = W.make_task(TINY, seed=3)
    layer = W.WideOutput(TINY.n_classes, TINY.dim, method=method, k=5, K=6, L=2, seed=1)
    assert labels_in_candidates(layer, task.x_train, task.y_train)


def test_training_fills_the_empty_lsh_slots_with_uniform_classes():
    task = W.make_task(TINY, seed=3)
    x, y = task.x_train[:64], task.y_train[:64]
    strict = dict(k=12, K=6, L=4, min_count=3, seed=1)  # few classes share 3 of 4 six-bit buckets
    bare = W.WideOutput(TINY.n_classes, TINY.dim, fill=False, **strict).candidates(x, y)
    filled = W.WideOutput(TINY.n_classes, TINY.dim, **strict).candidates(x, y)
    assert (bare >= 0).sum(1).float().mean() < 4  # the label and a few more
    assert (filled >= 0).sum(1).float().mean() > 11  # k = 12 minus the rare repeated draw
    assert (filled == y[:, None]).any(1).all()
    test_time = W.WideOutput(TINY.n_classes, TINY.dim, **strict).candidates(x)  # no targets: no fill
    assert (test_time >= 0).sum(1).float().mean() < 4


def test_planted_bug_forgetting_the_true_label_is_caught():
    class Forgetful(W.WideOutput):
        def candidates(self, x, targets=None, method=None, counter=None):
            return super().candidates(x, None, method, counter)  # the bug: targets dropped

    task = W.make_task(TINY, seed=3)
    assert not labels_in_candidates(Forgetful(TINY.n_classes, TINY.dim, k=5, K=6, L=2, seed=1), task.x_train,
                                    task.y_train)


def hand_count(C, d, B, k, K, L, steps, rebuilds):
    """layer: forward + weight gradient on k classes; hashing K*d per table per example; rebuilds C*K*L*d."""
    return dict(layer=steps * 2 * B * k * d, hashing=steps * B * K * L * d, rebuild=rebuilds * C * K * L * d,
                dense=steps * 2 * B * C * d)


def counted(layer, x, y, steps):
    for _ in range(steps):
        layer.train_step(x, y)
    m = layer.mults
    return dict(layer=m.layer, hashing=m.hashing, rebuild=m.rebuild, dense=m.dense)


class Recording(W.WideOutput):
    """Keeps the candidate sets each training step used (the hand count needs their sizes)."""

    used: list

    def candidates(self, x, targets=None, method=None, counter=None):
        out = super().candidates(x, targets, method, counter)
        if targets is not None:
            self.used = [*getattr(self, "used", []), out]
        return out


def test_multiplications_equal_a_hand_count():
    C, d, B, k, K, L = 8, 3, 2, 3, 2, 2
    x, y = torch.randn(B, d), torch.tensor([1, 5])
    layer = Recording(C, d, method="lsh", k=k, K=K, L=L, schedule=RebuildSchedule(first=2, growth=1.0), seed=0)
    got = counted(layer, x, y, steps=3)  # rebuilds at steps 0 and 2
    want = hand_count(C, d, B, k, K, L, steps=3, rebuilds=2)
    assert got["hashing"] == want["hashing"] == 3 * 2 * 2 * 2 * 3  # 72
    assert got["rebuild"] == want["rebuild"] == 2 * 8 * 2 * 2 * 3  # 192
    assert got["dense"] == want["dense"] == 3 * 2 * 2 * 8 * 3  # 288
    filled = [int((c >= 0).sum()) for c in layer.used]  # classes retrieved per step (<= k per example)
    assert len(filled) == 3 and all(B <= f <= B * k for f in filled)
    assert got["layer"] == sum(2 * d * f for f in filled) <= want["layer"]
    assert layer.mults.fraction == pytest.approx((got["layer"] + 72 + 192) / 288)
    dense = W.WideOutput(C, d, method="dense", seed=0)
    assert counted(dense, x, y, steps=2)["layer"] == 2 * 2 * B * C * d and dense.mults.fraction == 1.0


def test_planted_bug_free_hashing_is_caught():
    class FreeHashing(W.WideOutput):
        def rebuild(self, counter):
            super().rebuild(W.Mults())  # the bug: the rebuild's multiplications go nowhere

    C, d, B, k, K, L = 8, 3, 2, 3, 2, 2
    x, y = torch.randn(B, d), torch.tensor([1, 5])
    bad = FreeHashing(C, d, k=k, K=K, L=L, schedule=RebuildSchedule(first=2, growth=1.0), seed=0)
    assert counted(bad, x, y, 3)["rebuild"] != hand_count(C, d, B, k, K, L, 3, 2)["rebuild"]


def test_generator_is_deterministic_and_has_the_stated_structure():
    a, b, c = W.make_task(TINY, seed=5), W.make_task(TINY, seed=5), W.make_task(TINY, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.equal(torch.bincount(a.y_train, minlength=200), torch.full((200,), 3))  # train_per_class each
    cos = a.prototypes @ a.prototypes.T
    same = a.group[:, None] == a.group[None, :]
    off = ~torch.eye(200, dtype=torch.bool)
    assert cos[same & off].mean() > 0.5 and abs(cos[~same].mean()) < 0.05  # siblings close, other groups unrelated
    assert cos[same & off].mean() > cos[~same].abs().mean() + 0.2
    assert a.bayes_p1("val") > 0.5  # examples are near their own prototype


def test_training_is_deterministic_per_seed_and_the_test_count_adds_up():
    task = W.make_task(TINY, seed=2)
    a, b = (W.train(task, TINY, "lsh", seed=3, keep=True) for _ in range(2))
    assert torch.equal(a.layer.weight, b.layer.weight) and a.test == b.test and a.val == b.val
    c = W.train(task, TINY, "lsh", seed=4, keep=True)
    assert not torch.equal(a.layer.weight, c.layer.weight)
    t = a.test
    assert t["test_fraction"] == pytest.approx((TINY.K * TINY.L + t["cands"]) / TINY.n_classes)
    assert 0 < t["cands"] <= TINY.k and t["p1_lsh"] <= t["recall"]  # a prediction needs the true class retrieved


def test_compare_runs_and_reports(tmp_path):
    r = W.compare(replace(TINY, epochs=2), ("dense", "lsh", "random", "dense-eq"), seeds=[1, 2])
    assert [x.method for x in r.of("lsh")] == ["lsh", "lsh"] and r.of("dense")[0].mults.fraction == 1.0
    assert 0 < r.of("dense-eq")[0].steps < r.of("dense")[0].steps
    assert "recall" in r.table() and len(r.claims()) == 4
    assert all(row[3] in ("holds", "does not hold", "inconclusive") for row in r.claims())
    assert {row[1] for row in r.claims()} <= {"Chen et al. 2020 (SLIDE)", "lesson"}
    assert r.of("lsh")[0].val == {} and set(r.of("lsh")[0].test) >= {"p1", "recall", "test_fraction"}
    lsh = W.train(W.make_task(TINY), TINY, "lsh", seed=1, keep=True)
    grid = W.recall_grid(lsh.layer, W.make_task(TINY).x_val, W.make_task(TINY).y_val, (4,), (2, 6), (5,))
    assert "recall" in grid and len(grid.splitlines()) == 4


@pytest.mark.parametrize("kw, name", [(dict(n_classes=0), "n_classes"), (dict(k=10**6), "k"),
                                      (dict(lr=-1.0), "lr"), (dict(K=0), "K"), (dict(batch_size=2.5), "batch_size")])
def test_bad_config_names_the_argument(kw, name):
    with pytest.raises(BadArgument, match=name):
        replace(W.DEFAULT, **kw)


def test_bad_inputs_name_the_argument():
    with pytest.raises(BadArgument, match="method"):
        W.WideOutput(10, 4, method="slide")
    with pytest.raises(BadArgument, match="k="):
        W.WideOutput(10, 4, method="lsh", k=11)
    with pytest.raises(BadArgument, match="methods"):
        W.compare(TINY, ("dense-eq", "lsh"))
    with pytest.raises(BadArgument, match="widths"):
        X.SweepConfig(widths=(10,))
    with pytest.raises(BadArgument, match="width"):
        X.time_width(1, X.SweepConfig(widths=(100,), k=8))


def test_crossover_sweep_tiny_runs_and_plots():
    cfg = X.SweepConfig(widths=(256, 512), dim=8, batch_size=16, k=8, L=2, rounds=2)
    r = X.sweep(cfg)
    assert [p.width for p in r.points] == [256, 512] and all(0 < p.union_fraction <= 1 for p in r.points)
    assert X.bits_for(512, 2, 8) == 7 and "LSH/dense" in r.table() and len(r.claims()) == 1
    assert set(r.points[0].parts_ms()) == {*X.PARTS, "rebuild", "overhead"}
    import matplotlib

    matplotlib.use("Agg")
    fig = X.plot_crossover(r)
    assert len(fig.axes) == 2
