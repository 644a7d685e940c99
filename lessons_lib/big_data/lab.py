"""Lesson 08 — data bigger than memory: storage formats, memory-mapped streaming, a memory-capped run.

Seed 001 (first half): a learner downloads notMNIST (about 500k 28x28 images; 3.3 GB as a text file),
converts it, reloads the arrays to split them into train and test sets, and the 8 GB machine runs out of
memory. "The standard solution is a batch generator you write yourself."

This module measures each step on the course's own notMNIST-like set (:mod:`lessons_lib.letters`):

* :func:`study_formats`: one set in each format (text, float64, float32, uint8, compressed npz, .mat): bytes on
  disk and in memory, and the naive path (text -> float64 -> split) with its peak memory.
* :func:`handwritten_batches`: the foil, the batch generator the seed expected to write.
* :class:`MemmapImages` + :class:`BlockShuffleSampler` + a torch ``DataLoader``: the library path,
  ``np.load(..., mmap_mode="r")`` streamed in shuffled batches whose reads stay mostly sequential.
* :func:`fit_stream` trains from any such loader; :func:`compare_paths` trains the same model from memory and
  from disk; :class:`PeakRSS` measures peak resident memory (psutil) around each path.
* :func:`run_capped`: the same paths in a child process whose data memory is capped (``RLIMIT_DATA``).
* :func:`download`: optional real data for online learners (https only, pinned sha256, atomic write).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..cache import data_dir
from ..callbacks import Callback
from ..claims import Claims
from ..device import pick_device
from ..exercises import check
from ..letters import IMAGE_SIZE, MAX_IMAGES, LettersSet, get_letters, load_letters
from ..models import mlp
from ..seeds import get_seed, seed_everything, torch_generator
from ..training import History, evaluate_batches, train_loop

DEFAULT_N = 50_000  # the notebook's default set; the size knob goes to letters.MAX_IMAGES (500k)
FULL_N = MAX_IMAGES
PIXELS = IMAGE_SIZE * IMAGE_SIZE
SEED_MACHINE_BYTES = 8e9  # "This virtual environment has 8GB of ram" (seed 001)
SEED_TEXT_BYTES = 3.3e9  # "Stored in a text file, the text file is 3.3 GB" (seed 001)
MB = 1e6


# --- measuring memory ----------------------------------------------------------------------------
def _status_bytes(key: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; True if that worked (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmHWM") is not None
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.growth`` (bytes): peak resident memory minus the value on entry.

    Resident memory (RSS, via psutil) of this process plus its children (DataLoader workers). A thread
    samples it every ``interval`` seconds; on Linux the kernel's own peak mark (VmHWM, reset on entry) is used
    too, so short spikes between two samples are not missed. Note: RSS counts the pages of a memory-mapped
    file this process has touched (until they are released), not only its heap.
    """

    def __init__(self, interval: float = 0.005, children: bool = True):
        self.interval = interval
        self.children = children
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def _rss(self) -> int:
        total = self._proc.memory_info().rss
        if self.children:
            for c in self._proc.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self._hwm = _reset_peak_rss()
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())
        if self._hwm:
            self.peak = max(self.peak, _status_bytes("VmHWM") or 0)

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


# --- formats and their sizes ---------------------------------------------------------------------
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
            lines.append(f"{r.name:34}{_fmt_bytes(r.disk_bytes):>11}{_fmt_bytes(r.memory_bytes):>11}"
                         f"{r.memory_dtype:>9}{r.load_seconds * 1e3:>7.0f}ms"
                         f"{_fmt_bytes(r.at(n_full)):>13}{_fmt_bytes(r.at(n_full, 'memory_bytes')):>14}")
        return "\n".join(lines)


def _fmt_bytes(b: float) -> str:
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= s:
            return f"{b / s:.3g} {unit}"
    return f"{b:.0f} B"


def _measure_load(fn) -> tuple[np.ndarray, float, int]:
    with PeakRSS(children=False) as m:
        t0 = time.perf_counter()
        a = fn()
        sec = time.perf_counter() - t0
    return a, sec, m.growth


def study_formats(images: np.ndarray, n: int = 2000, folder: str | os.PathLike | None = None) -> FormatStudy:
    """Write the first ``n`` images in each format, measure the file, load it back and measure that.

    Floats are pixel/255. The text formats are what ``np.savetxt`` writes by default (floats as ``%.18e``)
    and with ``fmt="%d"`` (ints); loading them with ``np.loadtxt`` gives float64, or int64 with
    ``dtype=int``. Temporary files go to a folder under :func:`data_dir` and are deleted afterwards.
    """
    import scipy.io

    if not 1 <= n <= len(images):
        raise ValueError(f"study_formats needs 1 <= n <= {len(images)}, got {n}")
    x = np.ascontiguousarray(images[:n]).reshape(n, PIXELS)
    rows: list[FormatRow] = []
    with tempfile.TemporaryDirectory(dir=folder or data_dir(), prefix=".formats-") as tmp:
        d = Path(tmp)

        def add(name, path, writer, loader):
            writer(path)
            a, sec, growth = _measure_load(loader)
            rows.append(FormatRow(name, path.stat().st_size, int(a.nbytes), str(a.dtype), sec, growth, n))
            return a

        add("text, floats (np.savetxt default)", d / "f.txt", lambda p: np.savetxt(p, x / 255.0),
            lambda: np.loadtxt(d / "f.txt"))
        add("text, ints (loaded as int)", d / "i.txt", lambda p: np.savetxt(p, x, fmt="%d"),
            lambda: np.loadtxt(d / "i.txt", dtype=int))
        add("float64 .npy", d / "f64.npy", lambda p: np.save(p, x / 255.0), lambda: np.load(d / "f64.npy"))
        add("float32 .npy", d / "f32.npy", lambda p: np.save(p, (x / 255.0).astype(np.float32)),
            lambda: np.load(d / "f32.npy"))
        add("uint8 .npy", d / "u8.npy", lambda p: np.save(p, x), lambda: np.load(d / "u8.npy"))
        add("uint8 .npz (compressed)", d / "u8.npz", lambda p: np.savez_compressed(p, images=x),
            lambda: np.load(d / "u8.npz")["images"])
        add(".mat (scipy, uint8)", d / "u8.mat", lambda p: scipy.io.savemat(p, {"images": x}),
            lambda: scipy.io.loadmat(d / "u8.mat")["images"])
        naive = naive_text_path(d / "f.txt")
    return FormatStudy(rows, naive, n)


_NAIVE_CHILD = """
import json, sys, time
import numpy as np
def hwm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
path, frac, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
np.loadtxt(path, max_rows=2)  # warm up the parser
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
base = hwm("VmRSS")
t0 = time.perf_counter()
x = np.loadtxt(path)
perm = rng.permutation(len(x))
k = int(round(frac * len(x)))
x_test, x_train = x[perm[:k]], x[perm[k:]]
sec = time.perf_counter() - t0
print(json.dumps({"n": len(x), "seconds": sec, "growth": hwm("VmHWM") - base, "array_bytes": int(x.nbytes)}))
"""


def naive_text_path(txt_path: str | os.PathLike, test_fraction: float = 0.2, seed: int | None = None) -> NaiveResult:
    """The seed's path, measured: load the whole text file as float64, then split it into shuffled train and
    test sets (fancy indexing copies them). Run in a fresh Python process (numpy only), so memory freed earlier
    by this one cannot hide its cost; returns its time and peak RSS growth (the kernel's VmHWM, Linux)."""
    seed = get_seed() if seed is None else seed
    if sys.platform.startswith("linux"):
        p = subprocess.run([sys.executable, "-c", _NAIVE_CHILD, str(txt_path), str(test_fraction), str(seed)],
                           capture_output=True, text=True, timeout=300)
        if p.returncode == 0:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            return NaiveResult(r["n"], r["seconds"], max(0, r["growth"]), r["array_bytes"])
    rng = np.random.default_rng(seed)  # elsewhere: in this process (may under-count reused memory)
    with PeakRSS(children=False) as m:
        t0 = time.perf_counter()
        x = np.loadtxt(txt_path)
        perm = rng.permutation(len(x))
        k = int(round(test_fraction * len(x)))
        x_test, x_train = x[perm[:k]], x[perm[k:]]
        sec = time.perf_counter() - t0
    out = NaiveResult(len(x), sec, m.growth, int(x.nbytes))
    del x, x_test, x_train
    return out


# --- the foil: a batch generator written by hand -------------------------------------------------
def handwritten_batches(images_path: str | os.PathLike, labels_path: str | os.PathLike, batch_size: int = 256,
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """What the seed expected to write: open the .npy files, skip their headers, read ``batch_size`` rows at a
    time. Yields (uint8 images (b, 28, 28), uint8 labels (b,)). In file order only: shuffling, prefetching,
    worker processes, pinned memory and a device transfer would each be more code of your own."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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


# --- the library path: a sampler, a Dataset over np.load(mmap_mode="r"), a DataLoader ----------------
class BlockShuffleSampler(Sampler):
    """Shuffled minibatches whose reads stay mostly sequential. Yields one sorted int64 index array per batch.

    Each epoch: cut ``range(n)`` into blocks of ``block`` consecutive indices and put the blocks in a random
    order; take ``window`` blocks at a time, shuffle their indices together and cut them into batches
    (leftovers carry into the next window). So every index appears once per epoch, a batch mixes samples from
    up to ``window`` distant places, and each batch reads from at most ``window`` contiguous regions (twice that
    for the one batch that straddles two windows).
    ``block=1`` is a plain random permutation.
    """

    def __init__(self, n: int, batch_size: int, *, block: int = 512, window: int = 8,
                 generator: torch.Generator | None = None, drop_last: bool = False):
        if n < 1 or batch_size < 1 or block < 1 or window < 1:
            raise ValueError(f"BlockShuffleSampler needs n, batch_size, block, window >= 1; got {n}, {batch_size}, "
                             f"{block}, {window}")
        self.n, self.batch_size, self.block, self.window = int(n), int(batch_size), int(block), int(window)
        self.generator = generator if generator is not None else torch_generator(stream=31)
        self.drop_last = drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        n_blocks = math.ceil(self.n / self.block)
        order = torch.randperm(n_blocks, generator=self.generator).numpy()
        carry = np.empty(0, dtype=np.int64)
        for w in range(0, n_blocks, self.window):
            idx = [np.arange(b * self.block, min((b + 1) * self.block, self.n), dtype=np.int64)
                   for b in order[w: w + self.window]]
            pool = np.concatenate(idx)
            pool = pool[torch.randperm(len(pool), generator=self.generator).numpy()]
            pool = np.concatenate([carry, pool])
            full = len(pool) // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                yield np.sort(pool[s: s + self.batch_size])
            carry = pool[full:]
        if len(carry) and not self.drop_last:
            yield np.sort(carry)


class SequentialBatches(Sampler):
    """Batches ``[0, b), [b, 2b), ...`` of ``range(n)`` (for evaluation)."""

    def __init__(self, n: int, batch_size: int = 1024):
        self.n, self.batch_size = int(n), int(batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in range(0, self.n, self.batch_size):
            yield np.arange(s, min(s + self.batch_size, self.n), dtype=np.int64)


def to_float(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images (b, 28, 28) or (b, 784) -> float32 tensor (b, 784) in [0, 1] (the one conversion used by
    every path, so memory and disk give bit-identical inputs)."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8).reshape(len(x_uint8), -1)).float().div_(255.0)


class MemmapImages(Dataset):
    """A ``Dataset`` over the letters ``.npy`` files opened with ``np.load(mmap_mode="r")``: nothing is read
    until a batch asks for it. Index it with an array of indices (a whole batch per lookup, as the samplers
    above yield): returns ``(x float32 (b, 784) in [0, 1], y int64 (b,))``, rows in the order asked for.

    ``indices`` restricts it to a range of the file (train or validation). ``release_every``: after that many
    batches the pages of the mapping this process has touched are released (``madvise(MADV_DONTNEED)``; where
    that is not available the file is re-opened), so resident memory holds about the recent batches' pages,
    not the file; the data stays in the operating system's page cache. 0 never releases: then every page
    touched stays resident (and counts in RSS) until the mapping is closed.
    """

    def __init__(self, images_path: str | os.PathLike, labels_path: str | os.PathLike, indices: range | None = None,
                 *, release_every: int = 1):
        self.images_path, self.labels_path = str(images_path), str(labels_path)
        if release_every < 0:
            raise ValueError(f"release_every must be >= 0 (0 = never), got {release_every}")
        self.release_every = int(release_every)
        self._x = self._y = None
        self._open()
        n = len(self._y)
        self.indices = range(n) if indices is None else indices
        if len(self.indices) and (self.indices.start < 0 or self.indices.stop > n or self.indices.step != 1):
            raise ValueError(f"indices must be a contiguous range inside 0..{n}, got {self.indices}")
        self._batches = 0

    def _open(self) -> None:
        self._x = np.load(self.images_path, mmap_mode="r")
        self._y = np.load(self.labels_path, mmap_mode="r")
        mm = self._mmap(self._x)
        if self.release_every and mm is not None and hasattr(mmap, "MADV_RANDOM"):
            mm.madvise(mmap.MADV_RANDOM)  # map only the pages read, not their neighbours (less resident memory)

    @staticmethod
    def _mmap(a) -> mmap.mmap | None:
        mm = getattr(a, "_mmap", None)
        ok = isinstance(mm, mmap.mmap) and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED")
        return mm if ok else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        if self._x is None:
            self._open()
        i = np.asarray(idx, dtype=np.int64) + self.indices.start
        x = self._x[i]  # fancy indexing copies the rows out of the mapping (sorted indices: sequential reads)
        y = torch.from_numpy(self._y[i].astype(np.int64))
        self._batches += 1
        if self.release_every and self._batches % self.release_every == 0:
            self.release()
        return to_float(x), y

    def release(self) -> None:
        """Drop all of this process's mapped pages of both files (they stay in the OS page cache)."""
        mx, my = self._mmap(self._x), self._mmap(self._y)
        if mx is None or my is None:
            self._x = self._y = None  # re-open lazily: unmapping drops the pages
            return
        mx.madvise(mmap.MADV_DONTNEED)
        my.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict:  # worker processes re-open the files themselves
        d = dict(self.__dict__)
        d["_x"] = d["_y"] = None
        return d


class TensorBatches(Dataset):
    """In-memory counterpart of :class:`MemmapImages`: float32 tensors, indexed a whole batch at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return self.x[i], self.y[i]


SOURCES = ("memory", "disk")


def make_loaders(
    ls: LettersSet, source: str = "disk", *, batch_size: int = 256, workers: int = 0, seed: int | None = None,
    device: torch.device | str = "cpu", block: int = 512, window: int = 8, release_every: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """(train loader, validation loader) over a letters set, from ``source`` "memory" (the whole set loaded as
    float32 tensors) or "disk" (streamed from the memory-mapped files). Both use the same sampler with the same
    seed, so they yield identical batches in identical order."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    seed = get_seed() if seed is None else seed
    tr, va = ls.split()
    if release_every is None:  # twice per window of blocks: few re-faults, resident pages ~ one window
        release_every = max(1, block * window // batch_size // 2)
    if source == "memory":
        x = np.load(ls.paths.images)  # the whole set in memory, then float32
        y = np.load(ls.paths.labels).astype(np.int64)
        train_ds = TensorBatches(to_float(x[tr.start: tr.stop]), torch.from_numpy(y[tr.start: tr.stop]))
        val_ds = TensorBatches(to_float(x[va.start: va.stop]), torch.from_numpy(y[va.start: va.stop]))
        del x
    else:
        train_ds = MemmapImages(ls.paths.images, ls.paths.labels, tr, release_every=release_every)
        val_ds = MemmapImages(ls.paths.images, ls.paths.labels, va, release_every=1)
    pin = (pick_device(device) if isinstance(device, str) else torch.device(device)).type == "cuda"
    sampler = BlockShuffleSampler(len(train_ds), batch_size, block=block, window=window,
                                  generator=torch_generator(seed, stream=32))
    kw = {"batch_size": None, "num_workers": workers, "pin_memory": pin}
    if workers:
        kw["prefetch_factor"] = 4
    return (DataLoader(train_ds, sampler=sampler, **kw),
            DataLoader(val_ds, sampler=SequentialBatches(len(val_ds), 256), **kw))


def fit_stream(
    model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, *, epochs: int = 2, lr: float = 1e-3,
    device: torch.device | str = "cpu", callbacks: Sequence[Callback] = (), seed: int | None = None,
    config: dict | None = None, optimizer: torch.optim.Optimizer | None = None,
) -> History:
    """Train ``model`` (Adam, cross-entropy) from a loader of ``(x, y)`` batches; evaluate each epoch.

    The loader counterpart of :func:`lessons_lib.training.fit`: the same loop (:func:`~lessons_lib.training.
    train_loop`), History and callback contract; the batches are moved to ``device`` one at a time
    (non-blocking from pinned memory on CUDA). ``optimizer``: an optimizer already built for ``model`` on
    ``device`` (default: a fresh Adam with ``lr``). Gradients are zeroed in place (steadier memory)."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev)
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    return train_loop(model, train_loader, optimizer=opt, device=dev, epochs=epochs, callbacks=callbacks,
                      seed=seed, validate=lambda: evaluate_batches(model, val_loader, dev), keep_grads=True,
                      config=config)


def primed_adam(model: nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam with its state and the gradients allocated up front (one step on zero gradients, which moves no
    weight), so that memory measured afterwards is the data path's, not the optimizer's."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return opt


def _warmup(width: int, batch_size: int) -> None:
    """One training step on zeros: thread pools, allocator and autograd set up before memory is measured."""
    m = mlp(PIXELS, [width], 10)
    opt = torch.optim.Adam(m.parameters())
    loss = nn.functional.cross_entropy(m(torch.zeros(batch_size, PIXELS)), torch.zeros(batch_size, dtype=torch.int64))
    loss.backward()
    opt.step()


def streaming_experiment(
    *, device: str = "cpu", callbacks: Sequence[Callback] = (), source: str = "disk", n_images: int = DEFAULT_N,
    epochs: int = 2, batch_size: int = 256, width: int = 256, workers: int = 0, lr: float = 1e-3,
    seed: int | None = None, folder: str | os.PathLike | None = None, progress: bool = False,
) -> History:
    """Train an MLP 784-``width``-10 on the letters set of ``n_images`` from ``source`` "memory" or "disk".

    Generates the set first if it is not on disk yet (about a minute for 500k images on one core)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    seed = seed_everything(seed)
    ls, _ = get_letters(int(n_images), seed, folder=folder, progress=progress, verify=False)
    model = mlp(PIXELS, [width], 10)
    train, val = make_loaders(ls, source, batch_size=batch_size, workers=workers, seed=seed, device=device)
    return fit_stream(model, train, val, epochs=epochs, lr=lr, device=device, callbacks=callbacks, seed=seed,
                      config={"source": source, "n_images": n_images, "batch_size": batch_size, "workers": workers})


@dataclass
class PathRun:
    source: str
    history: History
    growth: int  # peak RSS growth of loading + training (bytes)

    @property
    def samples_per_s(self) -> float:
        return float(np.median(self.history.samples_per_s))


@dataclass
class Comparison:
    """The same model trained from memory and from disk (same batches, same order)."""

    memory: PathRun
    disk: PathRun
    set_bytes: int  # the uint8 images of the whole set

    @property
    def throughput_ratio(self) -> float:
        """disk samples/s / memory samples/s (median over epochs)."""
        return self.disk.samples_per_s / self.memory.samples_per_s

    @property
    def acc_gap(self) -> float:
        return abs(self.disk.history.val_acc[-1] - self.memory.history.val_acc[-1])

    def table(self) -> str:
        lines = [f"{'path':8}{'val acc':>9}{'samples/s':>11}{'peak RSS +':>12}{'% of set':>10}"]
        for r in (self.memory, self.disk):
            lines.append(f"{r.source:8}{r.history.val_acc[-1]:>9.4f}{r.samples_per_s:>11,.0f}"
                         f"{_fmt_bytes(r.growth):>12}{100 * r.growth / self.set_bytes:>9.1f}%")
        lines.append(f"disk / memory throughput: {self.throughput_ratio:.2f}; |val acc difference|: {self.acc_gap:.4f}")
        return "\n".join(lines)


def compare_paths(
    n_images: int = DEFAULT_N, *, epochs: int = 2, batch_size: int = 256, width: int = 256, workers: int = 0,
    device: str = "cpu", seed: int | None = None, folder: str | os.PathLike | None = None,
) -> Comparison:
    """Train the same MLP from disk (streaming) and then from memory; measure peak RSS growth around each path
    (opening / loading the data included; the model and its optimizer state are allocated before) and
    throughput. Same seed, same batches, so on the CPU the accuracies are equal."""
    seed = get_seed() if seed is None else seed
    ls, _ = get_letters(int(n_images), seed, folder=folder, verify=False)
    _warmup(width, batch_size)
    runs = {}
    for source in ("disk", "memory"):
        seed_everything(seed)
        dev = pick_device(device)
        model = mlp(PIXELS, [width], 10).to(dev)
        opt = primed_adam(model)
        with PeakRSS() as m:
            train, val = make_loaders(ls, source, batch_size=batch_size, workers=workers, seed=seed, device=device)
            h = fit_stream(model, train, val, epochs=epochs, device=dev, seed=seed, config={"source": source},
                           optimizer=opt)
            del train, val
        runs[source] = PathRun(source, h, m.growth)
    return Comparison(runs["memory"], runs["disk"], ls.nbytes)


# --- the memory-capped child ------------------------------------------------------------------------
RESULT_TAG = "@@LESSONS_RESULT@@"
MODES = ("baseline", "naive", "stream")


def cap_supported() -> str | None:
    """None if a data-memory cap (RLIMIT_DATA, which counts heap and anonymous memory but not read-only
    file mappings) can be enforced here; else why not."""
    if not sys.platform.startswith("linux"):
        return f"RLIMIT_DATA is only enforced for all allocations on Linux (this is {sys.platform})"
    try:
        major, minor = (int(v) for v in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (4, 7):
        return f"Linux {major}.{minor} does not count mmap allocations in RLIMIT_DATA (needs 4.7+)"
    return None


def _child_main(argv: Sequence[str] | None = None) -> None:
    """Entry of the capped child: ``python -c "from lessons_lib.big_data.lab import _child_main; _child_main()" A``."""
    args = json.loads((argv if argv is not None else sys.argv[1:])[0])
    torch.set_num_threads(1)
    out: dict = {"mode": args["mode"], "ok": False}
    try:
        ls = load_letters(args["n"], args["seed"], folder=args.get("folder"), verify=False)
        _warmup(args["width"], args["batch_size"])
        out["vmdata_start"] = _status_bytes("VmData")
        if args["mode"] == "naive":
            x = np.load(ls.paths.images).reshape(ls.n, -1).astype(np.float64)  # the whole set as floats
            x /= 255.0
            perm = np.random.default_rng(args["seed"]).permutation(ls.n)
            k = ls.n // 10
            x_test, x_train = x[perm[:k]], x[perm[k:]]  # the split copies
            del x
            y = np.load(ls.paths.labels).astype(np.int64)
            seed_everything(args["seed"])
            model = mlp(PIXELS, [args["width"]], 10)
            xt = torch.from_numpy(x_train).float()
            del x_train
            train = DataLoader(TensorBatches(xt, torch.from_numpy(y[perm[k:]])), batch_size=None,
                               sampler=BlockShuffleSampler(len(xt), args["batch_size"]))
            val = DataLoader(TensorBatches(torch.from_numpy(x_test).float(), torch.from_numpy(y[perm[:k]])),
                             batch_size=None, sampler=SequentialBatches(k))
            h = fit_stream(model, train, val, epochs=args["epochs"], seed=args["seed"])
        elif args["mode"] == "stream":
            seed_everything(args["seed"])
            model = mlp(PIXELS, [args["width"]], 10)
            train, val = make_loaders(ls, "disk", batch_size=args["batch_size"], seed=args["seed"])
            h = fit_stream(model, train, val, epochs=args["epochs"], seed=args["seed"])
        else:
            h = None
        if h is not None:
            out.update(val_acc=h.val_acc[-1], steps=h.steps, samples_per_s=float(np.median(h.samples_per_s)))
        out["ok"] = True
    except MemoryError as e:
        out.update(memory_error=True, error=f"{type(e).__name__}: {e}")
    except RuntimeError as e:
        msg = str(e)
        out.update(memory_error=any(s in msg for s in ("allocate memory", "not enough memory", "out of memory")),
                   error=f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}")
    out.update(vmdata=_status_bytes("VmData"), vmhwm=_status_bytes("VmHWM"))
    print(RESULT_TAG + json.dumps(out), flush=True)


@dataclass
class CappedRun:
    """One run of a path in a child process whose data memory (heap + anonymous mappings) is capped."""

    mode: str
    ok: bool
    memory_error: bool
    error: str | None
    message: str
    cap_bytes: int | None
    budget_bytes: int | None
    baseline_bytes: int | None
    seconds: float
    returncode: int | None
    result: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def _run_child(args: dict, cap: int | None, timeout: float) -> tuple[dict | None, int | None, str, float, bool]:
    """(result dict or None, return code, stderr tail, seconds, timed out)."""
    import resource

    def preexec() -> None:
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from lessons_lib.big_data.lab import _child_main; _child_main()", json.dumps(args)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec, env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, None, err[-2000:], time.perf_counter() - t0, True
    sec = time.perf_counter() - t0
    res = None
    for line in p.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
    return res, p.returncode, p.stderr[-2000:], sec, False


_BASELINES: dict[tuple, int] = {}


def child_baseline(n: int, seed: int, folder=None, *, width: int = 256, batch_size: int = 256,
                   timeout: float = 120) -> int:
    """Data memory (VmData, bytes) of an uncapped child after its imports, opening the set and one warm-up
    training step: the baseline a cap is measured from. Cached per process."""
    key = (n, seed, str(folder), width, batch_size)
    if key not in _BASELINES:
        args = {"mode": "baseline", "n": n, "seed": seed, "folder": None if folder is None else str(folder),
                "width": width, "batch_size": batch_size, "epochs": 1}
        res, code, err, _, timed_out = _run_child(args, None, timeout)
        if res is None or not res.get("ok") or not res.get("vmdata"):
            raise RuntimeError(f"the baseline child failed (exit code {code}, timed out: {timed_out}): {err[-500:]}")
        _BASELINES[key] = int(res["vmdata"])
    return _BASELINES[key]


def streaming_need_bytes(width: int = 256, batch_size: int = 256) -> int:
    """A rough lower bound of what streaming needs on top of the baseline: parameters, gradients and two Adam
    moments in float32, and a few copies of one batch."""
    params = PIXELS * width + width + width * 10 + 10
    return 4 * params * 4 + 6 * batch_size * PIXELS * 4


def run_capped(
    mode: str, *, n_images: int = DEFAULT_N, budget_mb: float = 128, seed: int | None = None,
    folder: str | os.PathLike | None = None, epochs: int = 1, batch_size: int = 256, width: int = 256,
    timeout: float = 180,
) -> CappedRun:
    """Run ``mode`` ("naive": the whole set as float64 in memory, split, then train; "stream": train from the
    memory-mapped files) in a child process capped at its baseline + ``budget_mb`` MB of data memory.

    The cap is ``RLIMIT_DATA`` set in the child before it starts (``preexec_fn``); the baseline is measured by
    an uncapped child doing the same imports and warm-up (:func:`child_baseline`). The child is stopped after
    ``timeout`` seconds. Never raises for a failure inside the child: the returned :class:`CappedRun` says what
    happened and what to do.
    """
    if mode not in ("naive", "stream"):
        raise ValueError(f"mode must be 'naive' or 'stream', got {mode!r}")
    if not budget_mb > 0:
        raise ValueError(f"budget_mb must be > 0 (MB of data memory above the child's baseline), got {budget_mb}")
    why = cap_supported()
    if why:
        raise RuntimeError(f"a memory cap cannot be enforced here: {why}")
    seed = get_seed() if seed is None else int(seed)
    get_letters(n_images, seed, folder=folder, verify=False)  # generated by the parent, not under the cap
    base = child_baseline(n_images, seed, folder, width=width, batch_size=batch_size)
    budget = int(budget_mb * MB)
    cap = base + budget
    args = {"mode": mode, "n": n_images, "seed": seed, "folder": None if folder is None else str(folder),
            "width": width, "batch_size": batch_size, "epochs": epochs}
    res, code, err, sec, timed_out = _run_child(args, cap, timeout)
    run = CappedRun(mode, False, False, None, "", cap, budget, base, sec, code, res or {})
    cap_txt = f"a cap of {budget / MB:.0f} MB above the child's baseline of {base / MB:.0f} MB"
    float64_mb = n_images * PIXELS * 8 / MB
    if timed_out:
        run.error = "timeout"
        run.message = (f"{mode}: the child did not finish within {timeout:.0f} s under {cap_txt} and was stopped "
                       "(a process starved of memory can crawl). Raise budget_mb, or timeout for a slow machine.")
        return run
    if res is None:
        tail = err.strip().splitlines()[-1] if err.strip() else "no output"
        run.error = tail
        run.memory_error = "MemoryError" in err or "allocate" in err
        run.message = (f"{mode}: the child could not even start under {cap_txt} (exit code {code}: {tail}). The cap "
                       f"is below what Python, torch and this path need; raise budget_mb (streaming needs roughly "
                       f"{streaming_need_bytes(width, batch_size) / MB:.0f} MB plus allocator slack).")
        return run
    run.ok, run.memory_error, run.error = bool(res.get("ok")), bool(res.get("memory_error")), res.get("error")
    if run.ok:
        run.message = (f"{mode}: trained {epochs} epoch(s) of {n_images:,} images under {cap_txt}: "
                       f"validation accuracy {res['val_acc']:.3f}, {res['samples_per_s']:,.0f} samples/s.")
    elif mode == "naive" and run.memory_error:
        run.message = (f"naive: died with {run.error} The float64 copy of {n_images:,} images alone needs "
                       f"{float64_mb:.0f} MB (and the split copies as much again), more than {cap_txt}.")
    elif run.memory_error:
        run.message = (f"stream: ran out of memory under {cap_txt} ({run.error}). That cap is below what even "
                       f"streaming needs (one batch, the model, its gradients and Adam's moments: about "
                       f"{streaming_need_bytes(width, batch_size) / MB:.0f} MB plus allocator slack): raise budget_mb.")
    else:
        run.message = f"{mode}: failed with {run.error} (not a memory error; see the traceback in the child's stderr)."
    return run


def capped_demo(n_images: int = DEFAULT_N, budget_mb: float = 128, seed: int | None = None,
                folder: str | os.PathLike | None = None, timeout: float = 180) -> dict[str, CappedRun] | str:
    """Both paths under the same cap: {"naive": run, "stream": run}; or why a cap cannot be enforced here."""
    why = cap_supported()
    if why:
        return why
    return {mode: run_capped(mode, n_images=n_images, budget_mb=budget_mb, seed=seed, folder=folder,
                             timeout=timeout) for mode in ("naive", "stream")}


# --- optional real data (online learners) ------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None  # None: this course has no pinned checksum; download() refuses unless one is given
    bytes: int | None = None

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


_FASHION = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
REMOTES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (RemoteFile("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                         "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1", 11_490_434),),
    "fashion-mnist": (
        RemoteFile(_FASHION + "train-images-idx3-ubyte.gz",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        RemoteFile(_FASHION + "train-labels-idx1-ubyte.gz",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        RemoteFile(_FASHION + "t10k-images-idx3-ubyte.gz",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        RemoteFile(_FASHION + "t10k-labels-idx1-ubyte.gz",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
    "notmnist-small": (RemoteFile("https://commondatastorage.googleapis.com/books1000/notMNIST_small.tar.gz", None,
                                  8_458_043),),
}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, cut-off transfer, refused URL); nothing was cached."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the pinned sha256; nothing was cached."""


def _check_url(url: str) -> None:
    u = urllib.parse.urlparse(url)
    if u.scheme == "https" or (u.scheme == "http" and u.hostname in _LOOPBACK):
        return
    raise DownloadError(f"refusing {url!r}: the course downloads over https only (plain http is accepted from "
                        "this machine's loopback address, which the tests use)")


def fetch(url: str, sha256: str, dest: str | os.PathLike, *, expected_bytes: int | None = None,
          timeout: float = 60, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` through a temporary file; keep it only if its sha256 is ``sha256``.

    An existing ``dest`` with the right checksum is kept without downloading. Raises :class:`DownloadError`
    (offline, HTTP error, cut-off transfer, non-https URL) or :class:`ChecksumError`; in every failure no file
    is left at ``dest`` and no temporary file is left beside it.
    """
    from tqdm.auto import tqdm

    from ..cache import atomic_open, sha256_file

    _check_url(url)
    if not (isinstance(sha256, str) and len(sha256) == 64):
        raise DownloadError(f"no pinned sha256 for {url}: pass the 64-hex-digit checksum of a file you trust")
    dest = Path(dest)
    if dest.exists() and sha256_file(dest) == sha256.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    host = urllib.parse.urlparse(url).hostname
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "lessons_lib"}),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}; nothing was cached") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not reach {host} ({reason}). Are you offline? Nothing was cached. The course "
                            "itself never needs the network: lesson 08 generates its letters set locally.") from None
    h = hashlib.sha256()
    got = 0
    with resp, atomic_open(dest) as f:  # any error below leaves neither dest nor a temporary file
        _check_url(resp.geturl())  # a redirect must not leave https
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_bytes
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                  leave=False) as bar:
            while True:
                try:
                    block = resp.read(1 << 16)
                except (http.client.IncompleteRead, OSError) as e:
                    raise DownloadError(f"{url}: the transfer was cut off after {got:,} bytes ({e}); "
                                        "nothing was cached. Try again.") from None
                if not block:
                    break
                f.write(block)
                h.update(block)
                got += len(block)
                bar.update(len(block))
        for want, what in ((length and length.isdigit() and int(length), "the server announced"),
                           (expected_bytes, "the course expects")):
            if want and got != want:
                raise DownloadError(f"{url}: the transfer was cut off: {got:,} of {want:,} bytes ({what}); "
                                    "nothing was cached. Try again.")
        if h.hexdigest() != sha256.lower():
            raise ChecksumError(f"{url}: sha256 {h.hexdigest()} does not match the pinned {sha256.lower()}; the "
                                "file was not kept. The server may serve a different file: do not use it.")
    return dest


def download(name: str, *, folder: str | os.PathLike | None = None, mirror: str | None = None,
             sha256: str | None = None, timeout: float = 60, progress: bool = True) -> list[Path]:
    """Download a real data set (``"mnist"``, ``"fashion-mnist"``, ``"notmnist-small"``) into ``folder``
    (default ``data/downloads``). Never called at import or by the notebooks' default path.

    ``mirror`` replaces the directory part of each URL (same file names, same pinned checksums). ``sha256`` is
    only for a single-file set without a pinned checksum (notMNIST-small): the checksum of a copy you trust.
    """
    if name not in REMOTES:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(REMOTES)}")
    files = REMOTES[name]
    folder = Path(folder) if folder is not None else data_dir() / "downloads"
    out = []
    for rf in files:
        pin = rf.sha256 or (sha256 if len(files) == 1 else None)
        if pin is None:
            raise DownloadError(f"{name}: this course has no pinned sha256 for {rf.url}, so it is not downloaded "
                                f"automatically. If you have verified a copy, pass download({name!r}, sha256=...).")
        url = rf.url if mirror is None else mirror.rstrip("/") + "/" + rf.filename
        out.append(fetch(url, pin, folder / rf.filename, expected_bytes=rf.bytes if mirror is None else None,
                         timeout=timeout, progress=progress))
    return out


# --- claims, exercises, figures, panel -----------------------------------------------------------
def claims(study: FormatStudy, comparison: Comparison, capped: dict[str, CappedRun] | str | None) -> Claims:
    """The claims table of lesson 08, each verdict computed from this run's measurements.

    ``capped``: {"naive": run, "stream": run}, or a string saying why the capped run could not happen here."""
    c = Claims("08 data bigger than memory")
    naive_full = study.naive.extrapolate(FULL_N)
    c.add("~500k 28x28 images loaded the naive way (text -> float arrays -> train/test split) do not fit in 8 GB",
          "seed 001",
          f"naive path on {study.naive.n:,} images: peak RSS +{_fmt_bytes(study.naive.growth)}; scaled to "
          f"{FULL_N:,} images: {_fmt_bytes(naive_full)}", naive_full > SEED_MACHINE_BYTES)
    text, mat, u8 = study.row("text, floats"), study.row(".mat"), study.row("uint8 .npy")
    ints = study.row("text, ints")
    ratio = text.disk_bytes / mat.disk_bytes
    c.add("The text file is over ten times as big as the scipy (.mat) data", "seed 001",
          f"np.savetxt floats / .mat uint8 = {ratio:.1f}x (ints as text: {ints.disk_bytes / mat.disk_bytes:.1f}x); "
          f"floats as text for {FULL_N // 1000}k images: {_fmt_bytes(text.at(FULL_N))}", ratio > 10)
    f64 = study.row("float64")
    r_int = ints.memory_bytes / f64.memory_bytes
    c.add("Forcing the data to be ints does not help memory", "seed 001",
          f"loaded as int: {ints.memory_dtype}, {r_int:.2f}x the float64 bytes; as uint8: "
          f"{u8.memory_bytes / f64.memory_bytes:.3f}x", r_int >= 0.99)
    m, d = comparison.memory, comparison.disk
    streams = comparison.acc_gap <= 0.005 and d.growth < m.growth / 2
    c.add("The standard solution is a batch generator you write yourself", "seed 001",
          f"np.load(mmap_mode='r') + torch DataLoader: val acc {d.history.val_acc[-1]:.4f} from disk vs "
          f"{m.history.val_acc[-1]:.4f} from memory; peak RSS +{_fmt_bytes(d.growth)} vs +{_fmt_bytes(m.growth)}",
          not streams)
    c.add("Training from disk reaches the same accuracy as from memory", "lesson",
          f"|difference| = {comparison.acc_gap:.4f} (same batches in the same order)", comparison.acc_gap <= 0.005)
    frac = d.growth / comparison.set_bytes
    c.add("Streaming keeps peak RSS growth <= 10% of the set", "course target (500k set)",
          f"+{_fmt_bytes(d.growth)} = {100 * frac:.1f}% of this {comparison.set_bytes // PIXELS:,}-image set "
          f"({_fmt_bytes(comparison.set_bytes)}); benchmarks/bench_streaming.py measures the 500k set", frac <= 0.10)
    c.add("Streaming reaches >= 80% of in-memory throughput", "course target",
          f"{d.samples_per_s:,.0f} vs {m.samples_per_s:,.0f} samples/s = {100 * comparison.throughput_ratio:.0f}%",
          comparison.throughput_ratio >= 0.8)
    if isinstance(capped, dict):
        nv, st = capped["naive"], capped["stream"]
        c.add("Under the same memory cap the naive path dies with MemoryError and streaming trains",
              "seed 001; lesson",
              f"cap +{nv.budget_bytes / MB:.0f} MB: naive {'MemoryError' if nv.memory_error else nv.error or 'ran'}; "
              f"stream {'trained' if st.ok else st.error}", nv.memory_error and st.ok)
    else:
        c.add("Under the same memory cap the naive path dies with MemoryError and streaming trains",
              "seed 001; lesson", capped or "not run", None)
    return c


def check_uint8_megabytes(answer: float) -> bool:
    """Exercise 1: megabytes (10^6 bytes) of 500,000 images of 28x28 stored as uint8."""
    return check(answer, FULL_N * PIXELS / MB, rel_tol=0.02,
                 praise="One byte per pixel: 500,000 x 784 bytes = 392 MB, a twentieth of the seed's 8 GB machine.",
                 hint="Multiply images x pixels per image x bytes per pixel (1 for uint8), then divide by 1e6.")


def check_float64_factor(answer: float) -> bool:
    """Exercise 2: how many times more memory float64 (or int64) takes than uint8."""
    return check(answer, 8, rel_tol=0.01,
                 praise="8 bytes against 1; np.loadtxt(dtype=int) gives int64, 8 bytes too: 'ints' did not help.",
                 hint="How many bytes does one float64 take? And one uint8?")


def check_batch_bytes(answer: float) -> bool:
    """Exercise 3: bytes of one streamed batch of 256 images as float32 (b x 784 x 4)."""
    return check(answer, 256 * PIXELS * 4, rel_tol=0.01,
                 praise="About 0.8 MB: what streaming holds at a time, whatever the size of the set.",
                 hint="256 images x 784 pixels x 4 bytes per float32.")


def plot_examples(images: np.ndarray, labels: np.ndarray, per_class: int = 6):
    """A grid: one row per letter A..J, ``per_class`` examples each."""
    import matplotlib.pyplot as plt

    from ..letters import CLASSES

    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(per_class * 0.75, len(CLASSES) * 0.75))
    for j, ch in enumerate(CLASSES):
        idx = np.flatnonzero(np.asarray(labels) == j)[:per_class]
        for k in range(per_class):
            ax = axes[j, k]
            ax.axis("off")
            if k < len(idx):
                ax.imshow(images[idx[k]], cmap="gray", vmin=0, vmax=255)
        axes[j, 0].text(-8, 14, ch, fontsize=11, va="center", ha="right")
    fig.suptitle("the letters set: A–J, 28x28", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.02, wspace=0.05, hspace=0.05)
    return fig


def plot_sizes(study: FormatStudy):
    """Bytes on disk and in memory per format, scaled to 500k images, with the seed's 8 GB machine."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    names = [r.name for r in study.rows]
    y = np.arange(len(names))
    ax.barh(y - 0.2, [r.at(FULL_N) / 1e9 for r in study.rows], 0.4, label="on disk")
    ax.barh(y + 0.2, [r.at(FULL_N, "memory_bytes") / 1e9 for r in study.rows], 0.4, label="in memory once loaded")
    ax.axvline(SEED_MACHINE_BYTES / 1e9, color="C3", ls="--", label="the seed's 8 GB of RAM")
    ax.axvline(SEED_TEXT_BYTES / 1e9, color="gray", ls=":", label="the seed's 3.3 GB text file")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set(xlabel=f"GB for {FULL_N:,} images (measured on {study.n:,}, scaled)",
           title="one set, seven formats")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_read_pattern(n: int = 20_000, batch_size: int = 256, batches: int = 12, seed: int | None = None):
    """Where the first batches read in the file: a plain random permutation vs the block-shuffle sampler."""
    import matplotlib.pyplot as plt

    seed = get_seed() if seed is None else seed
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, (title, block) in zip(axes, (("random permutation (block=1)", 1), ("block shuffle (block=512, window=8)",
                                                                               512))):
        s = BlockShuffleSampler(n, batch_size, block=block, generator=torch_generator(seed, stream=33))
        for b, idx in zip(range(batches), s):
            ax.plot(idx * PIXELS / MB, np.full(len(idx), b), "|", ms=6, color="C0" if block == 1 else "C2")
        ax.set(xlabel="position in the image file (MB)", title=title, xlim=(0, n * PIXELS / MB))
    axes[0].set_ylabel("batch")
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


def plot_comparison(cmp: Comparison):
    """Left: validation accuracy per epoch from memory and from disk. Right: peak RSS growth per path."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for r, style in ((cmp.memory, "o-"), (cmp.disk, "x--")):
        a.plot(np.array(r.history.epoch) + 1, r.history.val_acc, style, label=f"from {r.source}")
    a.set(xlabel="epoch", ylabel="validation accuracy", title="same model, same batches")
    a.set_xticks(np.array(cmp.memory.history.epoch) + 1)
    a.legend()
    vals = [cmp.memory.growth / MB, cmp.disk.growth / MB]
    b.bar(["memory", "disk (streaming)"], vals, color=["C0", "C2"])
    b.axhline(cmp.set_bytes / MB, color="gray", ls=":", label="the set as uint8")
    b.axhline(0.1 * cmp.set_bytes / MB, color="C3", ls="--", label="10% of it (target)")
    b.set(ylabel="peak RSS growth (MB)", title="memory while loading + training")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_panel(n_choices: Sequence[int] = (DEFAULT_N, 100_000, 200_000, FULL_N)):
    """The lesson's live panel: source (memory / disk), set size, epochs, batch size, DataLoader workers."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "source": w.ToggleButtons(options=list(SOURCES), value="disk", description="source", style=style),
        "n_images": w.SelectionSlider(options=list(n_choices), value=n_choices[0], description="images",
                                      style=style),
        "epochs": w.IntSlider(value=2, min=1, max=10, description="epochs", style=style),
        "batch_size": w.SelectionSlider(options=[64, 128, 256, 512, 1024], value=256, description="batch",
                                        style=style),
        "workers": w.IntSlider(value=0, min=0, max=4, description="workers", style=style),
    }
    return LivePanel(streaming_experiment, knobs, title="Streaming the letters set: memory vs disk")
