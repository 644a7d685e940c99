"""fit_seeds trains M seeds at once, each exactly as fit would (same init, batches and optimizer state)."""

from __future__ import annotations

import pytest
import torch

from lessons_lib.data import load
from lessons_lib.models import mlp
from lessons_lib.multiseed import fit_seeds
from lessons_lib.training import evaluate, fit


@pytest.fixture(scope="module")
def small():
    return load("mnist1d").subset_train(300)


def test_each_seed_equals_its_own_fit(small, one_thread):
    def build():
        return mlp(40, [32, 16], 10)

    runs = fit_seeds(build, small, [3, 7], epochs=3, batch_size=64, optimizer="adam", lr=3e-3)
    for run in runs:
        torch.manual_seed(run.seed)
        model = build()
        h = fit(model, small, epochs=3, batch_size=64, optimizer="adam", lr=3e-3, seed=run.seed)
        assert run.history.val_loss == pytest.approx(h.val_loss, rel=1e-4)
        assert run.history.train_acc == pytest.approx(h.train_acc, abs=1e-6)
        for a, b in zip(run.model.parameters(), model.parameters()):
            assert torch.allclose(a, b, atol=1e-5)
        loss, acc = evaluate(run.model, small.x_val, small.y_val)
        assert loss == pytest.approx(run.history.val_loss[-1], rel=1e-5)  # the returned model is the trained one


def test_dropout_runs_differ_per_seed_and_train(small, one_thread):
    runs = fit_seeds(lambda: mlp(40, [64], 10, dropout=0.5), small, [0, 1, 2], epochs=4, lr=3e-3)
    finals = [r.history.val_acc[-1] for r in runs]
    assert len(set(finals)) > 1 and min(finals) > 0.15  # trained (chance is 0.1), and not three copies


@pytest.mark.parametrize("seeds, match", [([], "one or more"), ([1, 1], "distinct"), ([0.5], r"seeds\[0\]=0.5"),
                                          ([True], r"seeds\[0\]=True"), ([3, -1], r"seeds\[1\]=-1"),
                                          (5, "list of run seeds")])
def test_bad_seeds_are_refused(small, seeds, match):
    with pytest.raises(ValueError, match=match):
        fit_seeds(lambda: mlp(40, [8], 10), small, seeds, epochs=1)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "epochs=0"), ({"lr": float("nan")}, "lr=nan"),
                                           ({"batch_size": 2.5}, "batch_size=2.5"), ({"build": 3}, "build=3")])
def test_bad_training_arguments_are_named_like_fit(small, kwargs, match):
    args = {"build": lambda: mlp(40, [8], 10), **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_seeds(args.pop("build"), small, [1, 2], **args)


def test_batch_norm_is_refused_with_the_fix(small):
    def build():
        return torch.nn.Sequential(torch.nn.Linear(40, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 10))

    with pytest.raises(ValueError, match="BatchNorm1d.*lessons_lib.training.fit"):
        fit_seeds(build, small, [0, 1], epochs=1)


def test_train_stacked_epoch_needs_one_loader_per_model():
    from lessons_lib.multiseed import StackedMLP, train_stacked_epoch

    net = StackedMLP([mlp(4, [3], 2), mlp(4, [3], 2)])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    batch = [(torch.randn(5, 4), torch.randint(0, 2, (5,)))]
    with pytest.raises(ValueError, match="got 1 for 2 stacked models"):
        train_stacked_epoch(net, opt, [batch])
    with pytest.raises(ValueError, match="empty loaders"):
        train_stacked_epoch(net, opt, [[], []])
    ep = train_stacked_epoch(net, opt, [batch, batch])
    assert ep.steps == 1 and ep.seen == 5 and ep.loss.shape == ep.acc.shape == (2,)
