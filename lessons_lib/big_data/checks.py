"""Lesson 08 checks: the learner's memory-mapped ``Dataset``, and three answers read off the learner's own run.

``check_memmap_images(cls)`` builds the learner's class on two small ``.npy`` files of random images and labels
written for the check, and compares it with references that are not a copy of any solution: the same files
read whole by a plain ``np.load``, converted by numpy (``uint8 -> float32``, ``/ 255``); ``tracemalloc`` (what
numpy allocates on the heap: a memory map allocates nothing there); a real ``DataLoader`` with two worker
processes; ``pickle`` (what a worker started with "spawn" receives). Typical mistakes are recognized by
recomputing what the buggy version returns.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import pickle
import tempfile
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect
from ..letters import IMAGE_SIZE, LettersSet
from ..seeds import numpy_rng
from .formats import FormatStudy, fmt_bytes

PIXELS = IMAGE_SIZE * IMAGE_SIZE
N_CHECK = 3001  # images in the check's files (2.4 MB): odd, so no batch size divides it


# --- the check's own files and the independent reference ----------------------------------------------------
@dataclass
class _Files:
    images: Path
    labels: Path
    x: np.ndarray  # uint8 (n, 28, 28), read back whole by a plain np.load
    y: np.ndarray  # uint8 (n,)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def file_bytes(self) -> int:
        return self.images.stat().st_size

    def item(self, i) -> tuple[np.ndarray, np.ndarray]:
        """The stated conversion, by numpy: x float32 (..., 784) = pixels / 255; y int64."""
        return self.x[i].reshape(*np.shape(i), PIXELS).astype(np.float32) / np.float32(255), self.y[i].astype(np.int64)


def _write_files(folder: Path) -> _Files:
    rng = numpy_rng(stream=808)
    x = rng.integers(0, 256, (N_CHECK, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = 255, 0  # every image spans the whole range
    y = rng.integers(0, 10, N_CHECK, dtype=np.uint8)
    np.save(folder / "images.npy", x)
    np.save(folder / "labels.npy", y)
    return _Files(folder / "images.npy", folder / "labels.npy", np.load(folder / "images.npy"),
                  np.load(folder / "labels.npy"))


@contextlib.contextmanager
def _heap_peak() -> Iterator[list[int]]:
    """``with _heap_peak() as peak:`` then ``peak[0]``: the most bytes Python and numpy held on the heap at once
    above the start (tracemalloc; a memory map's pages are not heap allocations)."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    out = [0]
    try:
        yield out
    finally:
        out[0] = tracemalloc.get_traced_memory()[1] - start
        if not was:
            tracemalloc.stop()


def _held_arrays(ds: Any) -> Iterator[tuple[str, Any]]:
    """(attribute name, array) for every numpy array or torch tensor the dataset holds (also in a tuple/list/dict)."""
    for name, v in getattr(ds, "__dict__", {}).items():
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, (tuple, list)) else [(None, v)]
        for k, a in items:
            if isinstance(a, (np.ndarray, torch.Tensor)):
                yield (name if k is None else f"{name}[{k!r}]"), a


# --- the parts of the check -------------------------------------------------------------------------------
def _size(a: Any) -> int:
    return a.numel() if isinstance(a, torch.Tensor) else a.size


def _mapped(a: Any) -> bool:
    """Whether a numpy array's memory is a file mapping (an np.memmap, or a view of one)."""
    while isinstance(a, np.ndarray):
        if isinstance(getattr(a, "_mmap", None), mmap.mmap):  # not a copy (memmap.astype keeps the class)
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def _not_loaded_whole(ds: Any, heap: int, f: _Files, when: str) -> None:
    whole = [(name, a) for name, a in _held_arrays(ds) if _size(a) >= f.x.size and not _mapped(a)]
    for name, a in whole:
        if (a.is_floating_point() if isinstance(a, torch.Tensor) else np.issubdtype(a.dtype, np.floating)):
            raise Mistake(f"{when} converted the whole set to {a.dtype} (self.{name}): "
                          f"{fmt_bytes(a.nbytes if isinstance(a, np.ndarray) else a.element_size() * a.numel())} "
                          f"in memory for a {fmt_bytes(f.file_bytes)} file. Keep the np.memmap and convert only the "
                          "rows asked for, in __getitem__.")
    if whole or heap >= 0.5 * f.x.nbytes:
        what = f"self.{whole[0][0]} holds all of it" if whole else f"{fmt_bytes(heap)} were allocated"
        raise Mistake(f"{when} loaded the whole file into memory (np.load without mmap_mode='r'): {what}, for a "
                      f"{fmt_bytes(f.file_bytes)} file. Open it with np.load(path, mmap_mode='r'), which reads "
                      "only the header; the rows are read when indexed.")


def _check_len(ds: Any, f: _Files) -> None:
    try:
        n = len(ds)
    except TypeError as e:
        raise Mistake(f"len(ds) failed ({e}): define __len__, returning the number of images") from None
    diagnose(n, {
        f"len counts pixels or bytes instead of images: len(ds) = {n:,} = {f.n:,} images x {PIXELS} pixels. "
        "It is the number of images (the first dimension of the images array).": lambda v: v == f.n * PIXELS,
        f"len counts the file's bytes instead of images (len(ds) = {n:,}, the size of images.npy). It is the "
        "number of images.": lambda v: v == f.file_bytes,
        f"len counts rows of pixels (28 per image) instead of images (len(ds) = {n:,}).":
            lambda v: v == f.n * IMAGE_SIZE,
    })
    expect(n == f.n, f"len(ds) is {n!r}, expected {f.n:,}: the number of images in the file")


def _near(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal up to float32 rounding (x * (1/255) may differ from x / 255 in the last bit)."""
    return got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-6)


def _check_x(x: Any, want: np.ndarray, f: _Files, index: Any, what: str) -> None:
    if isinstance(x, np.ndarray):
        raise Mistake(f"{what}: x is a numpy array; return a torch tensor (torch.from_numpy(...)) of float32")
    expect(isinstance(x, torch.Tensor), f"{what}: x should be a torch tensor, got {type(x).__name__}")
    if tuple(x.shape) in ((*want.shape[:-1], IMAGE_SIZE, IMAGE_SIZE), (*want.shape[:-1], 1, IMAGE_SIZE, IMAGE_SIZE)):
        raise Mistake(f"{what}: x has shape {tuple(x.shape)}; the lesson's model (an MLP) takes flat images: "
                      f"reshape to {want.shape} (784 pixels per image)")
    expect(tuple(x.shape) == want.shape, f"{what}: x has shape {tuple(x.shape)}, expected {want.shape}")
    if x.dtype == torch.uint8:
        raise Mistake(f"{what}: returned uint8 instead of float32: convert the rows with .astype(np.float32) / 255 "
                      "(or torch's .float() / 255)")
    if x.dtype == torch.float64:
        raise Mistake(f"{what}: returned float64 instead of float32 (x / 255.0 on a numpy uint8 array gives "
                      "float64, and the model's float32 weights refuse it): convert with .astype(np.float32) first")
    expect(x.dtype == torch.float32, f"{what}: x is {x.dtype}, expected torch.float32")
    got = x.detach().cpu().numpy()
    if _near(got, want):
        return
    raw = f.x[index].reshape(want.shape).astype(np.float32)
    diagnose(got, {
        f"{what}: pixels not scaled to [0, 1] (x goes up to {got.max():g}): divide by 255": lambda g: _near(g, raw),
        f"{what}: divided by 256 instead of 255: the brightest pixel (255) must become 1.0":
            lambda g: _near(g, raw / 256),
    })
    if np.ndim(index) == 0:
        for d in (1, -1):
            if _near(got, f.item((index + d) % f.n)[0]):
                raise Mistake(f"{what}: images off by one: ds[{index}] returned image {index + d} of the file")
    bad = np.flatnonzero(np.abs(got - want).reshape(-1) > 1e-6)
    raise Mistake(f"{what}: x differs from the file's pixels / 255 at {len(bad)} of {got.size} values (first at flat "
                  f"position {bad[0]}: got {got.reshape(-1)[bad[0]]:.6g}, expected {want.reshape(-1)[bad[0]]:.6g})")


def _check_y(y: Any, want: np.ndarray, f: _Files, index: Any, what: str) -> None:
    if isinstance(y, (np.generic, np.ndarray)):
        raise Mistake(f"{what}: label is a numpy {y.dtype} {'scalar' if np.ndim(y) == 0 else 'array'}, the loss "
                      "needs int64: return torch.from_numpy(np.asarray(label, dtype=np.int64)) (a torch.int64 tensor)")
    if isinstance(y, float) or (isinstance(y, torch.Tensor) and y.is_floating_point()):
        raise Mistake(f"{what}: label is a float, the loss needs int64 class indices (torch.int64)")
    if isinstance(y, int):
        raise Mistake(f"{what}: label is a Python int; return a torch.int64 tensor, which also holds a batch of "
                      "labels: torch.from_numpy(np.asarray(label, dtype=np.int64))")
    expect(isinstance(y, torch.Tensor), f"{what}: label should be a torch.int64 tensor, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise Mistake(f"{what}: label is {y.dtype} (the file's dtype, kept by torch.from_numpy), the loss needs "
                      "int64: convert with .astype(np.int64) or .long()")
    expect(tuple(y.shape) == want.shape, f"{what}: label has shape {tuple(y.shape)}, expected {want.shape}")
    got = y.cpu().numpy()
    if np.array_equal(got, want):
        return
    for d in (1, -1):
        if np.array_equal(got, f.y[(np.asarray(index) + d) % f.n]):
            raise Mistake(f"{what}: labels misaligned with images (off by one): image i came with label i{d:+d}")
    raise Mistake(f"{what}: labels differ from the labels file: got {got.tolist()!s:.80}, expected "
                  f"{want.tolist()!s:.80}")


def _check_item(ds: Any, index: Any, f: _Files) -> None:
    what = f"ds[{index}]" if np.ndim(index) == 0 else f"ds[idx] for {len(index)} indices"
    try:
        out = ds[index]
    except NotImplementedError:
        raise
    except Exception as e:
        if np.ndim(index):
            raise Mistake(f"{what} raised {type(e).__name__}: {e}. The lesson's DataLoader asks for a whole batch in "
                          "one lookup: index the memmaps with the array itself (numpy fancy indexing), reshape x "
                          "to (len(idx), 784), and convert labels with np.asarray(..., dtype=np.int64), not "
                          "int(...)") from None
        if index < 0:
            raise Mistake(f"{what} raised {type(e).__name__}: {e}. Negative indices count from the end, as for a "
                          "list: ds[-1] is the last image (numpy indexing does this for you)") from None
        raise
    expect(isinstance(out, tuple) and len(out) == 2, f"{what} should return a pair (x, y), got {type(out).__name__}")
    want_x, want_y = f.item(index)
    _check_x(out[0], want_x, f, index, what)
    _check_y(out[1], want_y, f, index, what)


def _check_workers(ds: Any, f: _Files) -> None:
    order = numpy_rng(stream=809).permutation(f.n)[:100].tolist()
    try:
        got = list(DataLoader(ds, batch_size=50, sampler=order, num_workers=2))
    except Exception as e:
        raise Mistake(f"in a DataLoader with num_workers=2 your dataset failed: {type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}") from None
    for k, (x, y) in enumerate(got):
        want_x, want_y = f.item(np.array(order[50 * k: 50 * (k + 1)]))
        expect(isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == want_x.shape
               and _near(x.numpy(), want_x) and y.dtype == torch.int64
               and np.array_equal(y.numpy(), want_y),
               "batches read by DataLoader worker processes differ from the file. Do the workers share an open "
               "file's position? Open the file with np.load(mmap_mode='r') in each process instead.")


def _check_pickle(ds: Any, f: _Files) -> None:
    try:
        blob = pickle.dumps(ds)
    except Exception as e:
        raise Mistake(f"your dataset cannot be pickled ({type(e).__name__}: {e}); DataLoader workers started with "
                      "'spawn' (macOS, Windows) receive it pickled. Keep the paths, and drop open files or arrays "
                      "in __getstate__.") from None
    expect(len(blob) < 0.25 * f.x.nbytes,
           f"pickling your dataset copies the whole set ({fmt_bytes(len(blob))} for a {fmt_bytes(f.file_bytes)} "
           "file): an np.memmap pickles as its data, so each DataLoader worker started with 'spawn' (macOS, "
           "Windows) would get its own copy. Drop the opened arrays in __getstate__ and open the files again, "
           "lazily, in __getitem__ when they are missing.")
    again = pickle.loads(blob)
    try:
        x, y = again[f.n - 1]
    except Exception as e:
        raise Mistake(f"after pickling (as a worker receives it) ds[{f.n - 1}] raised {type(e).__name__}: {e}. "
                      "Open the files again in __getitem__ when the arrays are missing.") from None
    want_x, want_y = f.item(f.n - 1)
    expect(_near(np.asarray(x), want_x) and int(y) == int(want_y),
           "after pickling (as a worker receives it) the dataset returns other items than the file's")


def _memmap_body(cls: type) -> None:
    with tempfile.TemporaryDirectory(prefix="check-memmap-") as tmp:
        f = _write_files(Path(tmp))
        with _heap_peak() as heap:
            ds = cls(str(f.images), str(f.labels))
        _not_loaded_whole(ds, heap[0], f, "constructing the dataset")
        _check_len(ds, f)
        rng = numpy_rng(stream=810)
        singles = [0, 1, 2, *rng.integers(3, f.n - 1, 5).tolist(), f.n - 1, -1, -f.n]
        batch = np.sort(rng.choice(f.n, 64, replace=False))
        with _heap_peak() as heap:
            for i in singles:
                _check_item(ds, i, f)
            _check_item(ds, batch, f)
            _check_item(ds, np.array([5, 0, f.n - 1, 17]), f)  # rows come back in the order asked for
        _not_loaded_whole(ds, heap[0], f, "indexing")
        _check_workers(ds, f)
        _check_pickle(ds, f)
        del ds
        gc.collect()  # let go of the maps before the folder goes


def check_memmap_images(cls: type) -> CheckResult:
    """Exercise: ``class MemmapImages(Dataset)`` over two uint8 ``.npy`` files (see the module docstring)."""
    return check_code(
        "MemmapImages", cls, _memmap_body,
        praise="Every item equals the file's pixels / 255 as float32 with its int64 label (single, negative and "
               "batched indices), len counts images, nothing is read until asked, and it streams from DataLoader "
               "workers and pickles as two paths.",
        not_written="Write __init__, __len__ and __getitem__; the check builds your class on a small file of random "
                    "images and compares it item by item with a plain np.load of the same file.")


# --- answers read off the learner's run ----------------------------------------------------------------------
def check_images_megabytes(answer: float, letters: LettersSet) -> CheckResult:
    """How many MB (10^6 bytes) your images file takes on disk; the expected value is the file's actual size."""
    size = letters.paths.images.stat().st_size
    mb = size / 1e6
    return check_answer(
        answer, mb, exercise="images_megabytes", rel_tol=0.01,
        praise=f"{size:,} bytes: one byte per pixel, {letters.n:,} x 784, plus a {size - letters.nbytes}-byte "
               ".npy header.",
        hint=f"One byte per pixel: images x 28 x 28 bytes, divided by 10^6 (your set has {letters.n:,} images).",
        mistakes={8 * mb: "That is the size as float64 (8 bytes per pixel); the file holds uint8, 1 byte per pixel.",
                  4 * mb: "That is the size as float32 (4 bytes per pixel); the file holds uint8, 1 byte per pixel.",
                  size / 2**20: "That is in MiB (2^20 bytes); here a megabyte is 10^6 bytes.",
                  500_000 * PIXELS / 1e6: f"That is the seed's 500,000 images; your set has {letters.n:,}."})


def check_float64_factor(answer: float, study: FormatStudy) -> CheckResult:
    """How many times the memory of uint8 the same images take as float64 (or the int64 np.loadtxt(dtype=int)
    returns); the expected value is the ratio measured in the format study."""
    u8 = study.row("uint8 .npy")
    ratio = study.row("float64").memory_bytes / u8.memory_bytes
    text = study.row("text, floats").disk_bytes / u8.disk_bytes
    return check_answer(
        answer, ratio, exercise="float64_factor", rel_tol=0.01,
        praise=f"{ratio:g} bytes against 1; np.loadtxt(dtype=int) gives int64, {ratio:g} bytes too: 'ints' did "
               "not help.",
        hint="Read the 'in memory' column of the table: float64 .npy against uint8 .npy. How many bytes does one "
             "float64 take, and one uint8?",
        mistakes={4: "4 bytes is float32; float64 takes 8.",
                  round(text, 1): "That is the text file on disk against uint8; the question is about memory, once "
                                  "loaded."})


def check_batch_bytes(answer: float, batch: torch.Tensor) -> CheckResult:
    """Bytes of one batch of images as your DataLoader yields it (``batch``: the x of one batch)."""
    n, per = batch.nelement(), batch.element_size()
    return check_answer(
        answer, n * per, exercise="batch_bytes", rel_tol=0.01,
        praise=f"{len(batch)} images x {batch[0].nelement()} pixels x {per} bytes = {n * per / 1e6:.2f} MB: what "
               "streaming holds at a time, whatever the size of the set.",
        hint=f"The batch is {tuple(batch.shape)} of {batch.dtype}: count its values, times the bytes of one.",
        mistakes={n: "That counts one byte per pixel (the uint8 rows in the file); the batch the model gets is "
                     "float32, 4 bytes per value.",
                  n * 8: "That is float64 (8 bytes); the batch is float32, 4 bytes per value.",
                  n * per / 1e6: "That is in MB; the question asks for bytes."})
