"""Offline datasets as train / val / test tensors, split by the course seed.

* ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images, 64 features, 10 classes).
* ``"mnist1d"``: MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.data.make_dataset`` (never
  its downloader): 4,000 + 1,000 signals of length 40, 10 classes. Cached under ``data/`` with a
  checksum; a corrupt cache is detected and regenerated.

Run ``python -m lessons_lib.data`` to prepare the cache (``make lab`` does).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .cache import CorruptCacheError, data_dir, load_arrays, save_arrays
from .device import pick_device
from .seeds import get_seed, numpy_rng
from .validate import check_choice, check_float, check_int

DATASETS = ("digits", "mnist1d")
MNIST1D_DATA_SEED = 42  # the canonical MNIST-1D; the course seed only chooses the train/val split


@dataclass
class Splits:
    """Tensors of one dataset: ``x_*`` float32 of shape (n, n_features), ``y_*`` int64 of shape (n,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def to(self, device: torch.device | str) -> Splits:
        """A copy with every tensor on ``device``."""
        device = pick_device(device)  # a missing GPU: the course's message
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Splits(name=self.name, n_classes=self.n_classes, **moved)

    def with_random_labels(self, seed: int | None = None) -> Splits:
        """The same inputs with every label (train, val, test) replaced by a uniformly random class."""
        rng = numpy_rng(seed, stream=7)
        rand = {
            k: torch.as_tensor(rng.integers(0, self.n_classes, size=len(getattr(self, k))), dtype=torch.int64)
            for k in ("y_train", "y_val", "y_test")
        }
        return Splits(self.name + "+random-labels", self.x_train, rand["y_train"], self.x_val, rand["y_val"],
                      self.x_test, rand["y_test"], self.n_classes)

    def subset_train(self, n: int) -> Splits:
        """Keep only the first ``n`` training examples (the split is already shuffled)."""
        n = check_int(n, "n", low=1, high=len(self.x_train),
                      fix=f"keep between 1 and the {len(self.x_train)} training examples this split has")
        return Splits(self.name, self.x_train[:n], self.y_train[:n], self.x_val, self.y_val,
                      self.x_test, self.y_test, self.n_classes)

    def __repr__(self) -> str:
        return (f"Splits({self.name!r}: train {tuple(self.x_train.shape)}, val {tuple(self.x_val.shape)}, "
                f"test {tuple(self.x_test.shape)}, {self.n_classes} classes)")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)


def mnist1d_path():
    return data_dir() / "mnist1d.npz"


def _make_mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = MNIST1D_DATA_SEED
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; put it back afterwards
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    path = mnist1d_path()
    try:
        return load_arrays(path)
    except FileNotFoundError:
        pass
    except CorruptCacheError as e:
        warnings.warn(f"{e} Regenerating it now.", stacklevel=3)
    arrays = _make_mnist1d()
    save_arrays(path, **arrays)
    return arrays


def prepare() -> list[str]:
    """Generate (or verify) every cached dataset; return a line per dataset."""
    out = []
    a = _mnist1d_arrays()
    out.append(f"mnist1d: {len(a['y'])} + {len(a['y_test'])} signals of length {a['x'].shape[1]} at {mnist1d_path()}")
    x, _ = _digits_arrays()
    out.append(f"digits: {len(x)} images bundled with scikit-learn (nothing to cache)")
    return out


def load(name: str, seed: int | None = None, val_fraction: float = 0.2) -> Splits:
    """Load dataset ``name`` ("digits" or "mnist1d") as :class:`Splits`.

    The train/val split (and for digits the test split, 20%) is a permutation drawn from ``seed``
    (default: the course seed). Features are scaled to roughly unit range.
    """
    name = check_choice(name, "name", DATASETS)
    val_fraction = check_float(val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True,
                               fix="the share of the training data held out for validation, e.g. 0.2")
    seed = get_seed() if seed is None else seed
    rng = numpy_rng(seed, stream=1)
    if name == "digits":
        x, y = _digits_arrays()
        perm = rng.permutation(len(y))
        n_test = int(round(0.2 * len(y)))
        x_test, y_test = x[perm[:n_test]], y[perm[:n_test]]
        x, y = x[perm[n_test:]], y[perm[n_test:]]
    else:
        a = _mnist1d_arrays()
        x, y, x_test, y_test = a["x"], a["y"], a["x_test"], a["y_test"]
        perm = rng.permutation(len(y))
        x, y = x[perm], y[perm]
    n_val = int(round(val_fraction * len(y)))
    t = torch.as_tensor
    return Splits(
        name=name,
        x_train=t(x[n_val:]), y_train=t(y[n_val:]),
        x_val=t(x[:n_val]), y_val=t(y[:n_val]),
        x_test=t(x_test), y_test=t(y_test),
        n_classes=10,
    )


if __name__ == "__main__":
    for line in prepare():
        print(line)
