"""Lesson 08, the apparatus: streaming vs in-memory training, a memory-capped run, the panel, the claims table.

Seed 001 (first half): a learner downloads notMNIST (about 500k 28x28 images; 3.3 GB as a text file),
converts it, reloads the arrays to split them into train and test sets, and the 8 GB machine runs out of
memory. "The standard solution is a batch generator you write yourself."

* :func:`make_loaders`: (train, validation) ``DataLoader`` s over a letters set (training fonts / held-out fonts),
  from memory (the whole set as float32 tensors) or from disk (a memory-mapped ``Dataset``: the learner's, or
  :class:`reference.MemmapImages`), with the same :class:`reference.BlockShuffleSampler`, so both paths see
  identical batches.
* :func:`run_capped` / :func:`capped_demo`: the naive path and streaming in a child process whose data memory is
  capped (:mod:`lessons_lib.memcap`).
* :func:`experiment` / :func:`make_panel`: the live panel; :func:`claims`: the claims table.

The formats study and the naive path are in :mod:`.formats`; the repeated measurements (rounds of throughput and
memory, warm and cold page cache, seeds of the samplers, the naive path at full size) in :mod:`.measure`, with
the page-cache tools in :mod:`.pagecache`; the figures in :mod:`.plots`.
"""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..callbacks import Callback
from ..device import pick_device
from ..letters import CHUNK, VAL_PER_CHUNK, LettersSet, get_letters, load_letters
from ..memcap import ChildRun, cap_supported
from ..memcap import run_capped as run_capped_child
from ..models import mlp
from ..seeds import check_seed, get_seed, seed_everything, torch_generator
from ..training import History, evaluate_batches, train_loop
from ..validate import BadArgument, check_choice, check_float, check_int
from .formats import FULL_N, MB, SEED_MACHINE_BYTES, FormatStudy, fmt_bytes
from .reference import PIXELS, BlockShuffleSampler, MemmapImages, SequentialBatches

if TYPE_CHECKING:  # imported where used: the capped child imports this module and needs no claims (nor scipy)
    from ..claims import Claims
    from .measure import NaivePeak, PathRepeats, SamplerStudy

DEFAULT_N = 50_000  # the notebook's default set; the size knob goes to FULL_N = letters.MAX_IMAGES (500k)
SOURCES = ("memory", "disk")
MIN_IMAGES = CHUNK - VAL_PER_CHUNK + 1  # the smallest set with a validation image (held-out fonts)


# --- the two data paths ------------------------------------------------------------------------------
class TensorBatches(Dataset):
    """In-memory counterpart of a memory-mapped Dataset: float32 tensors, indexed a whole batch at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return self.x[i], self.y[i]


def memmaps(obj: object) -> list[np.memmap]:
    """The ``np.memmap`` arrays an object holds in its attributes (also inside a tuple, list or dict)."""
    found = []
    for v in getattr(obj, "__dict__", {}).values():
        for a in (v.values() if isinstance(v, dict) else v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(a, np.memmap) and isinstance(getattr(a, "_mmap", None), mmap.mmap):
                found.append(a)
    return found


def release_mapped_pages(obj: object) -> int:
    """Drop this process's pages of every file mapping ``obj`` holds (``madvise(MADV_DONTNEED)``; the data stays
    in the operating system's file cache and is read again on the next touch). Returns how many mappings.
    Where madvise is not available it does nothing (RSS then keeps every page touched)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return 0
    maps = memmaps(obj)
    for a in maps:
        a._mmap.madvise(mmap.MADV_DONTNEED)
    return len(maps)


class ReleasingPages(Dataset):
    """A memory-mapped Dataset, unchanged, except that every ``every`` lookups this process's mapped pages are
    released (:func:`release_mapped_pages`): resident memory then holds the recent batches' pages, not the file.
    Mappings are also advised ``MADV_RANDOM`` (map only the pages read, not their neighbours). This only makes
    peak RSS measure what streaming needs; it changes no data. ``every=0`` never releases."""

    def __init__(self, dataset: Dataset, every: int = 1):
        self.dataset, self._count = dataset, 0
        self.every = check_int(every, "every", low=0, fix="lookups between releases (0 = never)")
        self._advised: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        out = self.dataset[idx]
        self._count += 1
        if not self.every:
            return out
        for a in memmaps(self.dataset) if hasattr(mmap, "MADV_RANDOM") else ():
            if id(a._mmap) not in self._advised:
                a._mmap.madvise(mmap.MADV_RANDOM)
                self._advised.add(id(a._mmap))
        if self._count % self.every == 0:
            release_mapped_pages(self.dataset)
        return out


class Rows(Dataset):
    """Rows ``indices`` of a Dataset that answers a whole batch of indices in one lookup: ``Rows(ds, idx)[j]`` is
    ``ds[idx[j]]`` (``j`` an int or an int array). The samplers count 0..len-1 over the training (or validation)
    images; this maps their positions to the images' places in the file. ``indices`` sorted keeps reads in file
    order."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j):
        return self.dataset[self.indices[j]]


def in_memory(ls: LettersSet) -> TensorBatches:
    """The whole set loaded (plain ``np.load``) and converted to float32 tensors: x (n, 784) = pixels / 255."""
    x = np.load(ls.paths.images)
    xf = torch.from_numpy(x.reshape(len(x), PIXELS)).float().div_(255)
    return TensorBatches(xf, torch.from_numpy(np.load(ls.paths.labels).astype(np.int64)))


def make_loaders(
    ls: LettersSet, source: str = "disk", *, dataset: type = MemmapImages, batch_size: int = 256, workers: int = 0,
    seed: int | None = None, device: torch.device | str = "cpu", block: int = 512, window: int = 8,
    release_every: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """(train loader, validation loader) over a letters set, from ``source`` "memory" (the whole set loaded as
    float32 tensors) or "disk" (``dataset(images_path, labels_path)``, a memory-mapped Dataset that answers a
    batch of indices in one lookup). Training images are the set's training fonts, validation its held-out fonts
    (:meth:`LettersSet.split`). Both sources use the same samplers with the same seed, so they yield identical
    batches in identical order. ``block=1`` shuffles the training images fully (a plain random permutation) instead
    of by blocks of ``block`` consecutive images."""
    source = check_choice(source, "source", SOURCES)
    batch_size = check_int(batch_size, "batch_size", low=1)
    workers = check_int(workers, "workers", low=0, high=64, fix="DataLoader worker processes, e.g. 0 or 2")
    block, window = check_int(block, "block", low=1), check_int(window, "window", low=1)
    seed = get_seed() if seed is None else check_seed(seed)
    check_dataset_class(dataset)
    if not isinstance(ls, LettersSet):
        raise BadArgument(f"ls: expected a LettersSet (from letters.get_letters), got {type(ls).__name__}")
    tr, va = ls.split()
    if release_every is None:  # twice per window of blocks: few re-faults, resident pages ~ one window
        release_every = max(1, block * window // batch_size // 2)
    if source == "memory":
        train_ds = val_ds = in_memory(ls)
    else:
        data = dataset(ls.paths.images, ls.paths.labels)
        train_ds, val_ds = ReleasingPages(data, release_every), ReleasingPages(data, 1)
    pin = (pick_device(device) if isinstance(device, str) else torch.device(device)).type == "cuda"
    sampler = BlockShuffleSampler(len(tr), batch_size, block=block, window=window,
                                  generator=torch_generator(seed, stream=32))
    kw = {"batch_size": None, "num_workers": workers, "pin_memory": pin}
    if workers:
        kw["prefetch_factor"] = 4
    return (DataLoader(Rows(train_ds, tr), sampler=sampler, **kw),
            DataLoader(Rows(val_ds, va), sampler=SequentialBatches(0, len(va), 256), **kw))


def check_dataset_class(dataset) -> type:
    """``dataset`` must be a class (called as ``dataset(images_path, labels_path)``), e.g. ``MemmapImages``."""
    if not isinstance(dataset, type):
        what = "an instance" if isinstance(dataset, Dataset) else "a " + type(dataset).__name__
        raise BadArgument(f"dataset={dataset!r}: pass the Dataset class itself (e.g. reference.MemmapImages or your "
                          f"MemmapImages), not {what}")
    return dataset


def fit_stream(
    model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, *, epochs: int = 2, lr: float = 1e-3,
    device: torch.device | str = "cpu", callbacks: Sequence[Callback] = (), seed: int | None = None,
    config: dict | None = None, optimizer: torch.optim.Optimizer | None = None,
) -> History:
    """Train ``model`` (Adam, cross-entropy) from a loader of ``(x, y)`` batches; evaluate each epoch.

    The loader counterpart of :func:`lessons_lib.training.fit`: the same loop (:func:`~lessons_lib.training.
    train_loop`), History and callback contract. ``optimizer``: one already built for ``model`` on ``device``
    (default: a fresh Adam with ``lr``). Gradients are zeroed in place (steadier memory)."""
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


def warmup(width: int, batch_size: int) -> None:
    """One training step on zeros: thread pools, allocator and autograd set up before memory is measured."""
    m = mlp(PIXELS, [width], 10)
    opt = torch.optim.Adam(m.parameters())
    loss = nn.functional.cross_entropy(m(torch.zeros(batch_size, PIXELS)), torch.zeros(batch_size, dtype=torch.int64))
    loss.backward()
    opt.step()


def experiment(
    *, device: str = "cpu", callbacks: Sequence[Callback] = (), source: str = "disk", n_images: int = DEFAULT_N,
    epochs: int = 2, batch_size: int = 256, width: int = 256, workers: int = 0, lr: float = 1e-3,
    seed: int | None = None, folder: str | os.PathLike | None = None, progress: bool = False,
    dataset: type = MemmapImages,
) -> History:
    """The panel's experiment: an MLP 784-``width``-10 trained on the letters set of ``n_images`` from ``source``
    "memory" or "disk" (through ``dataset``). Generates the set first if it is not on disk yet (about a minute
    for 500k images on one core)."""
    source = check_choice(source, "source", SOURCES)
    n_images = check_int(n_images, "n_images", low=MIN_IMAGES, high=FULL_N,
                         fix=f"a set of {MIN_IMAGES:,} to {FULL_N:,} images (validation is the last {VAL_PER_CHUNK} "
                             f"of every {CHUNK:,})")
    epochs = check_int(epochs, "epochs", low=1, high=1000)
    width = check_int(width, "width", low=1)
    lr = check_float(lr, "lr", low=0, low_open=True)
    check_dataset_class(dataset)
    seed = seed_everything(seed)
    ls, _ = get_letters(n_images, seed, folder=folder, progress=progress)  # reuse checks the sha256 once per process
    model = mlp(PIXELS, [width], 10)
    train, val = make_loaders(ls, source, dataset=dataset, batch_size=batch_size, workers=workers, seed=seed,
                              device=device)
    return fit_stream(model, train, val, epochs=epochs, lr=lr, device=device, callbacks=callbacks, seed=seed,
                      config={"source": source, "n_images": n_images, "batch_size": batch_size, "workers": workers})


def make_panel(dataset: type = MemmapImages, n_choices: Sequence[int] = (DEFAULT_N, 100_000, 200_000, FULL_N)):
    """The lesson's live panel over ``dataset`` (yours once it passes its check): source (memory / disk), set
    size, epochs, batch size, DataLoader workers."""
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
    return LivePanel(functools.partial(experiment, dataset=dataset), knobs,
                     title=f"Streaming the letters set through {dataset.__name__}: memory vs disk")


# --- the memory-capped child ----------------------------------------------------------------------------
@dataclass
class TrainedInChild:
    """What a capped child reports after training."""

    val_acc: float
    steps: int
    samples_per_s: float


def capped_path(mode: str, n: int, seed: int, folder: str | None, width: int, batch_size: int,
                epochs: int) -> TrainedInChild | None:
    """What the capped child runs (in its own process, so through the library's MemmapImages). Every mode first
    opens the set and takes one warm-up step; "prepare" stops there (the baseline); "naive" loads the whole set
    as float64, splits it (copies) and trains; "stream" trains from the memory-mapped files."""
    torch.set_num_threads(1)
    ls = load_letters(n, seed, folder=folder, verify=False)  # the parent (run_capped) verified the sha256 just before
    warmup(width, batch_size)
    if mode == "prepare":
        return None
    seed_everything(seed)
    model = mlp(PIXELS, [width], 10)
    if mode == "naive":
        x = np.load(ls.paths.images).reshape(ls.n, -1).astype(np.float64)  # the whole set as floats
        x /= 255.0
        perm = np.random.default_rng(seed).permutation(ls.n)
        k = ls.n // 10
        x_test, x_train = x[perm[:k]], x[perm[k:]]  # the split copies
        del x
        y = np.load(ls.paths.labels).astype(np.int64)
        xt = torch.from_numpy(x_train).float()
        del x_train
        train = DataLoader(TensorBatches(xt, torch.from_numpy(y[perm[k:]])), batch_size=None,
                           sampler=BlockShuffleSampler(len(xt), batch_size))
        val = DataLoader(TensorBatches(torch.from_numpy(x_test).float(), torch.from_numpy(y[perm[:k]])),
                         batch_size=None, sampler=SequentialBatches(0, k))
    elif mode == "stream":
        train, val = make_loaders(ls, "disk", batch_size=batch_size, seed=seed)
    else:
        raise ValueError(f"mode must be 'prepare', 'naive' or 'stream', got {mode!r}")
    h = fit_stream(model, train, val, epochs=epochs, seed=seed)
    return TrainedInChild(h.val_acc[-1], h.steps, float(np.median(h.samples_per_s)))


@dataclass
class CappedRun:
    """One path run in a child process capped at its baseline + ``budget_bytes`` of data memory. ``message``
    says what happened and what to do; ``child`` is the raw report (cap, baseline, stderr)."""

    mode: str
    ok: bool
    memory_error: bool
    error: str | None
    message: str
    budget_bytes: int
    child: ChildRun | None = None
    trained: TrainedInChild | None = None

    def __str__(self) -> str:
        return self.message


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
    memory-mapped files) in a child process capped at its baseline + ``budget_mb`` MB of data memory
    (:func:`lessons_lib.memcap.run_capped`; the baseline is an uncapped child that only prepares). Never raises
    for a failure inside the child: the returned :class:`CappedRun` says what happened and what to do."""
    mode = check_choice(mode, "mode", ("naive", "stream"))
    budget_mb = check_float(budget_mb, "budget_mb", low=0, low_open=True,
                            fix="MB of data memory above the child's baseline, e.g. 128")
    timeout = check_float(timeout, "timeout", low=0, low_open=True, fix="seconds, e.g. 180")
    n_images = check_int(n_images, "n_images", low=MIN_IMAGES, high=FULL_N)
    epochs, batch_size = check_int(epochs, "epochs", low=1), check_int(batch_size, "batch_size", low=1)
    width = check_int(width, "width", low=1)
    why = cap_supported()
    if why:
        raise RuntimeError(f"a memory cap cannot be enforced here: {why}")
    seed = get_seed() if seed is None else int(seed)
    get_letters(n_images, seed, folder=folder)  # generated (or verified) by the parent, not under the cap
    kwargs = {"mode": mode, "n": n_images, "seed": seed, "folder": None if folder is None else str(folder),
              "width": width, "batch_size": batch_size, "epochs": epochs}
    budget = int(budget_mb * MB)
    child = run_capped_child(f"{__name__}:capped_path", kwargs, budget_bytes=budget,
                             baseline_kwargs={**kwargs, "mode": "prepare"}, timeout=timeout)
    run = CappedRun(mode, child.ok, child.memory_error, child.error, "", budget, child)
    cap_txt = f"a cap of {budget / MB:.0f} MB above the child's baseline of {child.baseline_bytes / MB:.0f} MB"
    need = f"{streaming_need_bytes(width, batch_size) / MB:.0f} MB plus allocator slack"
    if child.timed_out:
        run.message = (f"{mode}: the child did not finish within {timeout:.0f} s under {cap_txt} and was stopped "
                       "(a process starved of memory can crawl). Raise budget_mb, or timeout for a slow machine.")
    elif not child.reported:
        run.message = (f"{mode}: the child could not even start under {cap_txt} (exit code {child.returncode}: "
                       f"{child.error}). The cap is below what Python, torch and this path need; raise budget_mb "
                       f"(streaming needs roughly {need}).")
    elif run.ok:
        run.trained = TrainedInChild(**child.value)
        run.message = (f"{mode}: trained {epochs} epoch(s) of {n_images:,} images under {cap_txt}: validation "
                       f"accuracy {run.trained.val_acc:.3f}, {run.trained.samples_per_s:,.0f} samples/s.")
    elif mode == "naive" and run.memory_error:
        run.message = (f"naive: died with {run.error} The float64 copy of {n_images:,} images alone needs "
                       f"{n_images * PIXELS * 8 / MB:.0f} MB (and the split copies as much again), more than "
                       f"{cap_txt}.")
    elif run.memory_error:
        run.message = (f"stream: ran out of memory under {cap_txt} ({run.error}). That cap is below what even "
                       f"streaming needs (one batch, the model, its gradients and Adam's moments: about {need}): "
                       "raise budget_mb.")
    else:
        run.message = f"{mode}: failed with {run.error} (not a memory error; see the child's stderr)."
    return run


@dataclass
class CappedDemo:
    """Both paths under the same cap."""

    naive: CappedRun
    stream: CappedRun
    n_images: int = DEFAULT_N


def capped_demo(n_images: int = DEFAULT_N, budget_mb: float = 128, seed: int | None = None,
                folder: str | os.PathLike | None = None, timeout: float = 180) -> CappedDemo | str:
    """Both paths under the same cap; or, where a cap cannot be enforced, why not."""
    check_float(budget_mb, "budget_mb", low=0, low_open=True, fix="MB of data memory above the child's baseline")
    check_float(timeout, "timeout", low=0, low_open=True, fix="seconds, e.g. 180")
    why = cap_supported()
    if why:
        return why
    naive, stream = (run_capped(mode, n_images=n_images, budget_mb=budget_mb, seed=seed, folder=folder,
                                timeout=timeout) for mode in ("naive", "stream"))
    return CappedDemo(naive, stream, n_images)


# --- the claims table ------------------------------------------------------------------------------------
ACC_MARGIN = 0.02  # "the same accuracy": the paired difference's 95% interval inside +-2 points (6 seeds
# resolve about +-1 point here; a tighter margin needs more seeds)
SORTED_LOSS = 0.05  # the class-sorted control "loses accuracy": its paired difference's interval below -5 points
CURVE_GAIN = 0.01  # "the task is not solved in one epoch": validation accuracy gains > 1 point after epoch 1


def claims(study: FormatStudy, paths: PathRepeats, samplers: SamplerStudy, capped: CappedDemo | str | None,
           naive: NaivePeak | None = None) -> Claims:
    """The claims table of lesson 08, each verdict computed from this run's measurements: the format study,
    :func:`.measure.measure_paths` (``paths``: rounds of throughput and memory, warm and cold), the seeds of
    :func:`.measure.sampler_study`, both capped runs (or why they could not run) and the naive path measured at
    the seed's 500k images (``naive``; None or smaller: not measured at that size in this run)."""
    from ..claims import Claims
    from ..stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, verdict
    from .measure import COLD, MEMORY, WARM, within

    c = Claims("08 data bigger than memory")
    n_runs = f"{len(samplers.seeds)} seeds"
    if naive is not None and naive.n >= FULL_N and naive.growth is not None:
        c.add("~500k 28x28 images loaded the naive way (text -> float arrays -> train/test split) do not fit in 8 GB",
              "seed 001", f"float64 array of {naive.n:,} images + its shuffled split, measured in a fresh process: "
              f"peak RSS +{fmt_bytes(naive.growth)} (the text parsing left out)", naive.growth > SEED_MACHINE_BYTES)
    else:
        why = naive.skipped if naive is not None and naive.skipped else f"this run used {paths.n_images:,} images"
        c.add("~500k 28x28 images loaded the naive way (text -> float arrays -> train/test split) do not fit in 8 GB",
              "seed 001", f"not measured at {FULL_N:,} images ({why}; set N_IMAGES = {FULL_N:_}). Scaled from "
              f"{study.naive.n:,} images it would be {fmt_bytes(study.naive.extrapolate(FULL_N))}: a guess, not a "
              "measurement", None)
    text, mat, u8 = study.row("text, floats"), study.row(".mat"), study.row("uint8 .npy")
    ints = study.row("text, ints")
    ratio = text.disk_bytes / mat.disk_bytes
    c.add("The text file is over ten times as big as the scipy (.mat) data", "seed 001",
          f"np.savetxt floats / .mat uint8 = {ratio:.1f}x (ints as text: {ints.disk_bytes / mat.disk_bytes:.1f}x); "
          f"bytes of {study.n:,} images, exact", ratio > 10)
    f64 = study.row("float64")
    r_int = ints.memory_bytes / f64.memory_bytes
    c.add("Forcing the data to be ints does not help memory", "seed 001",
          f"loaded as int: {ints.memory_dtype}, {r_int:.2f}x the float64 bytes; as uint8: "
          f"{u8.memory_bytes / f64.memory_bytes:.3f}x", r_int >= 0.99)

    same = samplers.difference("block")
    same_v = within(same, ACC_MARGIN)
    g_disk, g_mem = paths.growth(WARM), paths.growth(MEMORY)
    less_memory = g_disk.high < g_mem.low / 2
    if same_v == HOLDS and less_memory:
        std_v = DOES_NOT_HOLD  # the standard tools did the job
    elif same_v == DOES_NOT_HOLD or not less_memory:
        std_v = HOLDS
    else:
        std_v = INCONCLUSIVE
    c.add("The standard solution is a batch generator you write yourself", "seed 001",
          f"np.load(mmap_mode='r') in a small Dataset ({paths.dataset}) + torch's DataLoader: validation accuracy "
          f"block - full shuffle {_pm(same)} ({n_runs}); peak RSS +{_spread(g_disk, MB, ' MB')} from disk vs "
          f"+{_spread(g_mem, MB, ' MB')} from memory", std_v)
    c.add(f"Streaming with block-shuffled reads trains to the accuracy of a full in-memory shuffle (within "
          f"±{100 * ACC_MARGIN:g} points)", "lesson",
          f"block (disk) - full (memory) after {samplers.epochs} epochs: {_pm(same)} (95% CI, {n_runs}, paired)",
          same_v)
    srt = samplers.difference("sorted_block")
    c.add(f"...but not from a file sorted by class: there the block shuffle loses over {100 * SORTED_LOSS:g} "
          "points", "lesson (control)",
          f"sorted file, block - full after {samplers.epochs} epochs: {_pm(srt)} (95% CI, "
          f"{len(samplers.sorted_block)} seeds, paired)", verdict(srt, -SORTED_LOSS, "below"))
    gain = samplers.gain("block")
    c.add(f"The letters set is not solved in one epoch: validation accuracy still gains over {100 * CURVE_GAIN:g} "
          f"point after it", "lesson",
          f"gain from epoch 1 to {samplers.epochs} (MLP 784-{samplers.width}-10): {_pm(gain)} (95% CI, {n_runs}, "
          "paired)", verdict(gain, CURVE_GAIN, "above"))

    frac = paths.fraction(WARM)
    claim = "Streaming 500k images keeps peak RSS growth <= 10% of the set (the lesson's target)"
    if paths.n_images >= FULL_N:
        c.add(claim, "lesson",
              f"+{_spread(g_disk, MB, ' MB')} = {_spread(frac, fmt='.1%')} of the {paths.n_images:,}-image set "
              f"({fmt_bytes(paths.set_bytes)})", verdict(frac, 0.10, "below"))
    else:
        c.add(claim, "lesson",
              f"not measured at {FULL_N:,} images (set N_IMAGES = {FULL_N:_}). At this run's {paths.n_images:,}: "
              f"+{_spread(g_disk, MB, ' MB')} = {_spread(frac, fmt='.1%')} of {fmt_bytes(paths.set_bytes)}; "
              "bench_streaming.py measures the 500k set", None)
    warm = paths.ratio(WARM)
    c.add("Streaming reaches >= 80% of in-memory throughput (the lesson's target)", "lesson",
          f"disk / memory samples/s, one ratio per round: {_spread(warm, fmt='.2f', what='rounds')} "
          f"({paths.n_images:,} images, file in the page cache)", verdict(warm, 0.8, "above"))
    claim = "...also when every byte comes from the disk (a cold page cache)"
    if paths.cold_ok:
        cold = paths.ratio(COLD)
        c.add(claim, "lesson (control)",
              f"cold disk / memory: {_spread(cold, fmt='.2f', what='rounds')}; at most "
              f"{100 * max(r.cache_before for r in paths.of(COLD)):.1f}% of the image file was cached at the start of "
              "a cold epoch (mincore)", verdict(cold, 0.8, "above"))
    else:
        why = paths.cold_skipped or "the page cache could not be emptied (mincore still saw the file cached)"
        c.add(claim, "lesson (control)", f"not measured: {why}", None)

    claim = "Under the same memory cap the naive path dies with MemoryError and streaming trains"
    if isinstance(capped, CappedDemo):
        nv, st = capped.naive, capped.stream
        c.add(claim, "seed 001; lesson",
              f"cap +{nv.budget_bytes / MB:.0f} MB, {capped.n_images:,} images: naive "
              f"{'MemoryError' if nv.memory_error else nv.error or 'ran'}; stream {'trained' if st.ok else st.error}",
              nv.memory_error and st.ok)
    else:
        c.add(claim, "seed 001; lesson", capped or "not run", None)
    return c


def _pm(iv, fmt: str = "+.4f") -> str:
    return f"{iv.mean:{fmt}} ± {iv.half_width:{fmt.lstrip('+')}}"


def _spread(sp, unit: float = 1.0, suffix: str = "", fmt: str = ".3g", what: str = "epochs") -> str:
    """``6.39 MB (range 6.34–6.41 MB, 4 epochs)``."""
    return sp.format(fmt, 1 / unit, suffix).replace(" repeats)", f" {what})")
