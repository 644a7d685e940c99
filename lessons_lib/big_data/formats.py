"""Lesson 08, sections 2-3: one set of images in seven storage formats, the seed's naive path, the foil.

* :func:`study_formats`: the same images as text (floats, ints), float64 / float32 / uint8 ``.npy``, compressed
  ``.npz`` and ``.mat``: bytes on disk and in memory, load time and peak memory growth of each.
* :func:`naive_text_path`: the seed's path, small: the whole text file as float64, then a shuffled train/test
  split (copies), measured in a fresh process.
* :func:`handwritten_batches`: the batch generator the seed expected to write (in file order only).

This module imports numpy (and scipy when studying .mat) only, so the naive path's child process starts fast.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import data_dir
from ..memcap import PeakRSS, run_child
from ..validate import BadArgument, check_int

IMAGE_BYTES = 28 * 28  # one uint8 image of the letters set (letters.IMAGE_SIZE ** 2; tests check they agree)
FULL_N = 500_000  # the seed's set size (letters.MAX_IMAGES)
SEED_MACHINE_BYTES = 8e9  # "This virtual environment has 8GB of ram" (seed 001)
SEED_TEXT_BYTES = 3.3e9  # "Stored in a text file, the text file is 3.3 GB" (seed 001)
MB = 1e6


def fmt_bytes(b: float) -> str:
    """``1.57 MB``, ``392 MB``, ``3.14 GB`` (powers of ten)."""
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= s:
            return f"{b / s:.3g} {unit}"
    return f"{b:.0f} B"


@dataclass
class FormatRow:
    """One storage format of the same ``n`` images: bytes on disk, bytes of the loaded array, load cost."""

    name: str
    disk_bytes: int
    memory_bytes: int
    memory_dtype: str
    load_seconds: float
    load_growth: int  # peak RSS growth while loading (bytes)
    n: int

    def at(self, n: int, what: str = "disk_bytes") -> float:
        """Bytes scaled linearly to a set of ``n`` images."""
        return getattr(self, what) / self.n * n


@dataclass
class NaiveResult:
    """The seed's path, small: a text file -> np.loadtxt (float64) -> a shuffled train/test split (copies)."""

    n: int
    seconds: float
    growth: int  # peak RSS growth (bytes)
    array_bytes: int  # the float64 array alone

    def extrapolate(self, n: int = FULL_N) -> float:
        return self.growth / self.n * n


@dataclass
class FormatStudy:
    rows: list[FormatRow]
    naive: NaiveResult
    n: int

    def row(self, prefix: str) -> FormatRow:
        for r in self.rows:
            if r.name.startswith(prefix):
                return r
        raise KeyError(f"no format starting with {prefix!r}: {[r.name for r in self.rows]}")

    def table(self, n_full: int = FULL_N) -> str:
        head = (f"{'format':34}{'on disk':>11}{'in memory':>11}{'as':>9}{'load':>9}"
                f"{f'disk @{n_full // 1000}k':>13}{f'memory @{n_full // 1000}k':>14}")
        lines = [f"{self.n:,} images of 28x28 in each format; the last two columns scale them to {n_full:,} images",
                 head]
        for r in self.rows:
            lines.append(f"{r.name:34}{fmt_bytes(r.disk_bytes):>11}{fmt_bytes(r.memory_bytes):>11}"
                         f"{r.memory_dtype:>9}{r.load_seconds * 1e3:>7.0f}ms"
                         f"{fmt_bytes(r.at(n_full)):>13}{fmt_bytes(r.at(n_full, 'memory_bytes')):>14}")
        return "\n".join(lines)


def _measure_load(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, int]:
    with PeakRSS(children=False) as m:
        t0 = time.perf_counter()
        a = fn()
        sec = time.perf_counter() - t0
    return a, sec, m.growth


def _check_images(images) -> np.ndarray:
    """uint8 images of shape (n, 28, 28) with n >= 1 (a memmap stays a memmap)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (
            28, 28) or len(images) == 0:
        what = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__)
        raise BadArgument(f"images: expected a uint8 array of shape (n, 28, 28) with n >= 1 (e.g. "
                          f"letters.images), got {what}")
    return images


def study_formats(images: np.ndarray, n: int = 2000, folder: str | os.PathLike | None = None) -> FormatStudy:
    """Write the first ``n`` images in each format, measure the file, load it back and measure that.

    Floats are pixel/255. The text formats are what ``np.savetxt`` writes by default (floats as ``%.18e``)
    and with ``fmt="%d"`` (ints); loading them with ``np.loadtxt`` gives float64, or int64 with
    ``dtype=int``. Temporary files go to a folder under :func:`data_dir` and are deleted afterwards.
    """
    import scipy.io

    images = _check_images(images)
    n = check_int(n, "n", low=1, high=len(images), fix=f"at most the {len(images):,} images given, e.g. n=2000")
    x = np.ascontiguousarray(images[:n]).reshape(n, -1)
    rows: list[FormatRow] = []
    with tempfile.TemporaryDirectory(dir=folder or data_dir(), prefix=".formats-") as tmp:
        d = Path(tmp)

        def add(name: str, file: str, writer: Callable[[Path], None], loader: Callable[[Path], np.ndarray]) -> None:
            writer(d / file)
            a, sec, growth = _measure_load(lambda: loader(d / file))
            rows.append(FormatRow(name, (d / file).stat().st_size, int(a.nbytes), str(a.dtype), sec, growth, n))

        add("text, floats (np.savetxt default)", "f.txt", lambda p: np.savetxt(p, x / 255.0), np.loadtxt)
        add("text, ints (loaded as int)", "i.txt", lambda p: np.savetxt(p, x, fmt="%d"),
            lambda p: np.loadtxt(p, dtype=int))
        add("float64 .npy", "f64.npy", lambda p: np.save(p, x / 255.0), np.load)
        add("float32 .npy", "f32.npy", lambda p: np.save(p, (x / 255.0).astype(np.float32)), np.load)
        add("uint8 .npy", "u8.npy", lambda p: np.save(p, x), np.load)
        add("uint8 .npz (compressed)", "u8.npz", lambda p: np.savez_compressed(p, images=x),
            lambda p: np.load(p)["images"])
        add(".mat (scipy, uint8)", "u8.mat", lambda p: scipy.io.savemat(p, {"images": x}),
            lambda p: scipy.io.loadmat(p)["images"])
        naive = naive_text_path(d / "f.txt")
    return FormatStudy(rows, naive, n)


def naive_split(txt_path: str, test_fraction: float, seed: int) -> NaiveResult:
    """The seed's path: the whole text file as float64, then a shuffled train/test split (fancy indexing
    copies both parts). Measures its own time and peak RSS growth; run it in a fresh process."""
    rng = np.random.default_rng(seed)
    np.loadtxt(txt_path, max_rows=2)  # warm up the parser
    with PeakRSS(children=False) as m:
        t0 = time.perf_counter()
        x = np.loadtxt(txt_path)
        perm = rng.permutation(len(x))
        k = int(round(test_fraction * len(x)))
        split = x[perm[:k]], x[perm[k:]]  # (test, train): copies, held together for a moment
        sec = time.perf_counter() - t0
    del split
    return NaiveResult(len(x), sec, m.growth, int(x.nbytes))


def naive_text_path(txt_path: str | os.PathLike, test_fraction: float = 0.2, seed: int | None = None) -> NaiveResult:
    """:func:`naive_split` in a fresh Python process (numpy only), so that memory this one freed earlier
    cannot hide its cost; returns its time and peak RSS growth."""
    if seed is None:
        from ..seeds import get_seed

        seed = get_seed()
    run = run_child(f"{__name__}:naive_split",
                    {"txt_path": str(txt_path), "test_fraction": test_fraction, "seed": int(seed)}, timeout=300)
    if not run.ok:
        raise RuntimeError(f"the naive path's child process failed: {run.error}\n{run.stderr[-500:]}")
    return NaiveResult(**run.value)


def handwritten_batches(images_path: str | os.PathLike, labels_path: str | os.PathLike, batch_size: int = 256,
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """What the seed expected to write: open the .npy files, skip their headers, read ``batch_size`` rows at a
    time. Yields (uint8 images (b, 28, 28), uint8 labels (b,)). In file order only: shuffling, prefetching,
    worker processes, pinned memory and a device transfer would each be more code of your own."""
    batch_size = check_int(batch_size, "batch_size", low=1)
    with open(images_path, "rb") as fi, open(labels_path, "rb") as fl:
        shapes = []
        for f in (fi, fl):
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            if dtype != np.uint8:
                raise ValueError(f"{f.name} holds {dtype}, this generator reads uint8 only")
            shapes.append(shape)
        n, row = shapes[0][0], int(np.prod(shapes[0][1:]))
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x = np.frombuffer(fi.read(b * row), dtype=np.uint8).reshape((b, *shapes[0][1:]))
            y = np.frombuffer(fl.read(b), dtype=np.uint8)
            yield x, y
