import numpy as np
import pytest
import torch

from lessons_lib import seeds


def test_seed_from_environment(monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", "7")
    assert seeds.get_seed() == 7
    assert seeds.seed_everything() == 7
    a = (np.random.rand(), torch.rand(1).item())
    seeds.seed_everything(7)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_default_seed_is_zero(monkeypatch):
    monkeypatch.delenv("LESSONS_SEED", raising=False)
    assert seeds.get_seed() == 0


def test_bad_seed_names_the_fix(monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", "abc")
    with pytest.raises(ValueError, match="LESSONS_SEED=0"):
        seeds.get_seed()


def test_streams_are_independent_and_reproducible():
    assert seeds.numpy_rng(1, 0).random() == seeds.numpy_rng(1, 0).random()
    assert seeds.numpy_rng(1, 0).random() != seeds.numpy_rng(1, 1).random()
    assert seeds.numpy_rng(1, 0).random() != seeds.numpy_rng(2, 0).random()


def test_replicate_seeds_are_distinct_and_follow_the_course_seed(monkeypatch):
    from lessons_lib.seeds import replicate_seeds

    monkeypatch.setenv("LESSONS_SEED", "0")
    a = replicate_seeds(8)
    assert len(set(a)) == 8 and a == replicate_seeds(8) and a[:3] == replicate_seeds(3)
    assert replicate_seeds(8, stream=1) != a
    monkeypatch.setenv("LESSONS_SEED", "1")
    assert not set(replicate_seeds(8)) & set(a), "another course seed repeats no run"
    import pytest

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="number of runs"):
            replicate_seeds(bad)
