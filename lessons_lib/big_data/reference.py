"""Training from a file that never enters memory as a whole (lesson 08; seed 001, the notMNIST story).

Three small pieces make PyTorch's ``DataLoader`` stream a set of uint8 images from disk::

    ds = MemmapImages("letters_images.npy", "letters_labels.npy")     # nothing is read yet
    train = DataLoader(ds, sampler=BlockShuffleSampler(len(ds), 256), batch_size=None)
    for x, y in train:    # x float32 (256, 784) in [0, 1], y int64 (256,)
        ...

* :class:`MemmapImages`: a ``Dataset`` over ``np.load(path, mmap_mode="r")``. The operating system maps the file
  into memory *lazily*: a page is read when it is touched, and the pages stay in its file cache, not in the
  process's own heap. Indexing copies out only the rows asked for and converts them to float32.
* :class:`BlockShuffleSampler`: shuffled minibatches whose reads stay mostly sequential (one index array per
  batch, so the Dataset reads a whole batch in one lookup).
* :class:`SequentialBatches`: batches in file order, for evaluation.

The file format is numpy's ``.npy``: a short header (dtype, shape), then the raw bytes, one byte per pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..letters import IMAGE_SIZE
from ..seeds import torch_generator
from ..validate import check_int

PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 784: the lesson's model is an MLP on flat images


class MemmapImages(Dataset):
    """The images (n, 28, 28) uint8 and labels (n,) uint8 of two ``.npy`` files, as a torch ``Dataset``.

    ``ds[i]`` -> ``(x, y)``: ``x`` float32 tensor (784,) = pixels / 255, in [0, 1]; ``y`` int64 tensor () = the
    class (0..9 for A..J). ``ds[idx]`` with an integer array ``idx`` of shape (b,) -> ``x`` (b, 784) and ``y``
    (b,): a whole batch in one lookup, rows in the order asked for. Negative indices count from the end.

    Both files are opened with ``np.load(mmap_mode="r")``: opening reads only their headers (and the labels,
    ``n`` bytes, to check they are classes 0..9). Pickling (what a DataLoader does to start worker processes with
    "spawn", on macOS and Windows) sends the two paths, never the arrays; each process maps the files again on
    first use. Files that do not belong together (other lengths, float pixels, labels outside 0..9, a truncated
    or foreign file) raise ``ValueError`` naming the file; an index that is not a whole number (or an array of
    them) or is out of range raises ``IndexError`` naming the valid range.
    """

    def __init__(self, images_path: str | os.PathLike, labels_path: str | os.PathLike):
        self.images_path, self.labels_path = str(images_path), str(labels_path)
        self._open()
        n_images, n_labels = len(self.images), len(self.labels)
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{self.images_path} holds {self.images.dtype} {self.images.shape}; expected uint8 "
                             f"(n, {IMAGE_SIZE}, {IMAGE_SIZE}) pixels 0..255 (float pixels would be divided by 255 "
                             "a second time)")
        if self.labels.ndim != 1 or not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"{self.labels_path} holds {self.labels.dtype} {self.labels.shape}; expected integer "
                             "class labels of shape (n,)")
        if n_images != n_labels:
            raise ValueError(f"{n_images} images but {n_labels} labels: the two files do not belong together")
        if n_labels and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < 10:
            raise ValueError(f"{self.labels_path} holds labels {int(self.labels.min())}..{int(self.labels.max())}; "
                             "expected classes 0..9 (A..J)")
        self.n = n_images

    def _open(self) -> None:
        for key, path in (("images", self.images_path), ("labels", self.labels_path)):
            try:  # np.memmap: the bytes stay in the file
                setattr(self, key, np.load(path, mmap_mode="r", allow_pickle=False))
            except (ValueError, EOFError, OSError) as e:
                if isinstance(e, FileNotFoundError):
                    raise
                raise ValueError(f"{path} is not a readable .npy file ({e}): it is truncated, corrupt or not an "
                                 "array file. Write it again (for a letters set: generate_letters(..., "
                                 "overwrite=True))") from None

    def __len__(self) -> int:
        return self.n  # images, not pixels or bytes

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is None:  # unpickled in a worker process: map the files here
            self._open()
        index = _as_index(index, self.n)
        shape = np.shape(index)  # () for one index, (b,) for a batch
        rows = np.asarray(self.images[index], dtype=np.float32)  # copies out these rows only, as float32
        x = torch.from_numpy(rows.reshape(*shape, PIXELS)) / 255
        y = torch.from_numpy(np.asarray(self.labels[index], dtype=np.int64))  # cross_entropy wants int64
        return x, y

    def __getstate__(self) -> dict:
        return {**self.__dict__, "images": None, "labels": None}  # the paths travel, not the data


def _as_index(index, n: int):
    """``index`` as an int or an int64 array (a torch tensor, list or slice converted), every entry in [-n, n)."""
    if isinstance(index, slice):
        return np.arange(n, dtype=np.int64)[index]
    if isinstance(index, torch.Tensor):
        index = index.numpy(force=True)
    a = np.asarray(index)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or (a.size == 0 and a.ndim == 1)):
        raise IndexError(f"index {repr(index)[:60]} ({a.dtype}): expected a whole number or an array of them (not "
                         "booleans, not floats)")
    if a.size and (int(a.min()) < -n or int(a.max()) >= n):
        bad = int(a.min()) if int(a.min()) < -n else int(a.max())
        raise IndexError(f"index {bad} is out of range for {n} images (valid: {-n}..{n - 1})")
    return int(a) if a.ndim == 0 else a.astype(np.int64, copy=False)


class BlockShuffleSampler(Sampler):
    """Shuffled minibatches whose reads stay mostly sequential. Yields one sorted int64 index array per batch.

    Each epoch: cut ``range(n)`` into blocks of ``block`` consecutive indices and put the blocks in a random
    order; take ``window`` blocks at a time, shuffle their indices together and cut them into batches
    (leftovers carry into the next window). So every index appears once per epoch, a batch mixes samples from
    up to ``window`` distant places, and each batch reads from at most ``window`` contiguous regions (twice that
    for the one batch that straddles two windows). ``block=1`` is a plain random permutation.
    """

    def __init__(self, n: int, batch_size: int, *, block: int = 512, window: int = 8,
                 generator: torch.Generator | None = None, drop_last: bool = False):
        self.n, self.batch_size = check_int(n, "n", low=1), check_int(batch_size, "batch_size", low=1)
        self.block, self.window = check_int(block, "block", low=1), check_int(window, "window", low=1)
        self.generator = generator if generator is not None else torch_generator(stream=31)
        self.drop_last = drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def _permutation(self, k: int) -> np.ndarray:
        return torch.randperm(k, generator=self.generator).numpy()

    def __iter__(self) -> Iterator[np.ndarray]:
        n_blocks = math.ceil(self.n / self.block)
        order = self._permutation(n_blocks)
        carry = np.empty(0, dtype=np.int64)
        for w in range(0, n_blocks, self.window):
            pool = np.concatenate([np.arange(b * self.block, min((b + 1) * self.block, self.n), dtype=np.int64)
                                   for b in order[w: w + self.window]])
            pool = np.concatenate([carry, pool[self._permutation(len(pool))]])
            full = len(pool) // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                yield np.sort(pool[s: s + self.batch_size])  # sorted: the reads go forward through the file
            carry = pool[full:]
        if len(carry) and not self.drop_last:
            yield np.sort(carry)


class SequentialBatches(Sampler):
    """Index arrays ``[start, start + b), [start + b, start + 2b), ...`` up to ``stop`` (evaluation order)."""

    def __init__(self, start: int, stop: int, batch_size: int = 1024):
        self.start = check_int(start, "start", low=0)
        self.stop = check_int(stop, "stop", low=self.start + 1, fix="stop must be greater than start")
        self.batch_size = check_int(batch_size, "batch_size", low=1)

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in range(self.start, self.stop, self.batch_size):
            yield np.arange(s, min(s + self.batch_size, self.stop), dtype=np.int64)
