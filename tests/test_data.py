import numpy as np
import pytest
import torch

from lessons_lib import cache, data


@pytest.fixture
def tmp_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DATA_DIR_ENV, str(tmp_path))
    return tmp_path


def test_shapes_and_dtypes():
    d = data.load("digits")
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    assert d.n_features == 64 and d.n_classes == 10
    m = data.load("mnist1d")
    assert (len(m.x_train), len(m.x_val), len(m.x_test)) == (3200, 800, 1000)
    assert m.n_features == 40 and set(m.y_train.unique().tolist()) == set(range(10))


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = data.load("digits", seed=0), data.load("digits", seed=0), data.load("digits", seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)


def test_splits_are_disjoint():
    d = data.load("digits", seed=3)
    rows = lambda x: {tuple(r) for r in x.numpy().round(4)}  # noqa: E731
    # the digits set has a few duplicate images; the overlap must be tiny, not a leak
    assert len(rows(d.x_train) & rows(d.x_test)) < 5


def test_random_labels_keep_inputs_change_labels():
    d = data.load("digits")
    r = d.with_random_labels()
    assert torch.equal(d.x_train, r.x_train)
    assert (r.y_train == d.y_train).float().mean() < 0.2


def test_unknown_dataset():
    with pytest.raises(ValueError, match="name='cifar': must be one of 'digits', 'mnist1d'"):
        data.load("cifar")


@pytest.mark.parametrize("bad", [0, 1.0, float("nan"), True, "0.2"])
def test_bad_val_fraction_is_named(bad):
    with pytest.raises(ValueError, match="val_fraction="):
        data.load("digits", val_fraction=bad)


def test_numpy_val_fraction_is_a_number():
    assert len(data.load("digits", val_fraction=np.float32(0.25)).x_val) > 0


def test_mnist1d_cache_written_atomically_with_checksum(tmp_data_dir):
    d = data.load("mnist1d")
    files = sorted(p.name for p in tmp_data_dir.iterdir())
    assert files == ["mnist1d.npz", "mnist1d.npz.sha256"]  # no temporary file left behind
    recorded = (tmp_data_dir / "mnist1d.npz.sha256").read_text().split()[0]
    assert cache.sha256_file(tmp_data_dir / "mnist1d.npz") == recorded
    assert len(d.x_train) == 3200


def test_corrupt_cache_is_detected_and_regenerated(tmp_data_dir):
    first = data.load("mnist1d")
    path = tmp_data_dir / "mnist1d.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(cache.CorruptCacheError, match="corrupt"):
        cache.load_arrays(path)
    with pytest.warns(UserWarning, match="Regenerating"):
        again = data.load("mnist1d")
    assert torch.equal(first.x_train, again.x_train)
    cache.load_arrays(path)  # valid again


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    cache.atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_save_and_load_arrays_roundtrip(tmp_path):
    a = np.arange(12).reshape(3, 4)
    cache.save_arrays(tmp_path / "a.npz", a=a)
    assert np.array_equal(cache.load_arrays(tmp_path / "a.npz")["a"], a)
