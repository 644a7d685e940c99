"""Lesson 08, the evidence: each number that noise can move, measured several times, with its spread and control.

* :func:`measure_paths`: ``rounds`` rounds; each round trains one epoch from memory, one from disk with the file
  in the page cache ("warm") and, where the page cache can be emptied (:mod:`.pagecache`), one from disk right
  after dropping the file from it ("cold", from a private copy that nothing else maps); warm and memory alternate
  their order. Per epoch: throughput and peak
  RSS growth (opening / loading the data included). All three paths see the same batches, so their models stay
  bit-identical: a control that the disk path delivers the file's exact bytes.
* :func:`sampler_study`: the accuracy question, over seeds. Streaming reads blocks of consecutive images
  (block shuffle); in memory one shuffles fully. Does the block shuffle cost accuracy? ``M`` seeds of the same
  MLP are trained both ways (paired: seed ``s`` gives the same initial weights to both), all seeds at once as
  one stacked model (:class:`lessons_lib.multiseed.StackedMLP`), each seed with its own batch order. The control
  that shows the test can see a difference: the block shuffle over a file sorted by class (notMNIST comes as one
  folder per letter), where a window of blocks holds only a few letters.
* :func:`naive_peak`: the seed's naive path (the whole set as float64, then a shuffled split that copies it)
  measured at the set's own size in a fresh process.
* :func:`within`: a three-valued verdict for "the difference is within +-margin" (an equivalence test).

Timings are summarized as median and range (:func:`lessons_lib.stats.median_range`), accuracies as mean and 95%
Student-t interval over seeds (:func:`lessons_lib.stats.mean_interval`, :func:`~lessons_lib.stats.paired_interval`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..letters import LetterPaths, LettersSet, split_indices
from ..memcap import PeakRSS, run_child
from ..models import mlp
from ..multiseed import StackedMLP, train_stacked_epoch
from ..seeds import check_seed, get_seed, replicate_seeds, seed_everything, torch_generator
from ..stats import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    Interval,
    Spread,
    mean_interval,
    median_range,
    paired_interval,
    verdict,
)
from ..validate import BadArgument, check_float, check_int
from .formats import MB, fmt_bytes
from .lab import (
    DEFAULT_N,
    ReleasingPages,
    Rows,
    check_dataset_class,
    fit_stream,
    in_memory,
    make_loaders,
    primed_adam,
    warmup,
)
from .pagecache import cold_cache_supported, drop_from_page_cache, resident_fraction
from .reference import PIXELS, BlockShuffleSampler, MemmapImages, SequentialBatches

WARM, COLD, MEMORY = "disk", "disk, cold cache", "memory"


def _check_set(ls) -> None:
    if not isinstance(ls, LettersSet):
        raise BadArgument(f"ls: expected a LettersSet (from letters.get_letters), got {type(ls).__name__}")


def within(interval: Interval, margin: float) -> str:
    """"holds" when the whole interval lies inside (-margin, +margin), "does not hold" when it lies wholly
    outside, else "inconclusive" (e.g. a paired difference of accuracies, margin 0.01 = one point)."""
    check_float(margin, "margin", low=0, low_open=True, fix="e.g. 0.01 for one point of accuracy")
    sides = (verdict(interval, -margin, "above"), verdict(interval, margin, "below"))
    if all(v == HOLDS for v in sides):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in sides else INCONCLUSIVE


# --- throughput and memory, repeated; warm and cold page cache -------------------------------------------------
@dataclass
class EpochRun:
    """One epoch of one path in one round."""

    source: str  # MEMORY, WARM or COLD
    round: int
    samples_per_s: float
    growth: int  # peak RSS growth: loaders (the whole load for MEMORY) + one epoch (bytes)
    val_acc: float
    cache_before: float | None = None  # fraction of the image file cached at the start (COLD: after the drop)
    cache_after: float | None = None


@dataclass
class PathRepeats:
    """:func:`measure_paths`' epochs, and what they add up to."""

    runs: list[EpochRun]
    n_images: int
    set_bytes: int  # the uint8 images of the whole set
    dataset: str
    cold_skipped: str | None = None  # why there are no cold epochs (None: there are)
    identical: bool = False  # control: every path's model has the same weights at the end
    rounds: int = field(init=False)

    def __post_init__(self) -> None:
        self.rounds = len({r.round for r in self.runs})

    def of(self, source: str) -> list[EpochRun]:
        return [r for r in self.runs if r.source == source]

    def ratio(self, source: str = WARM) -> Spread | None:
        """``source`` / memory throughput, one ratio per round (memory's epoch of the same round): median, range."""
        mem = {r.round: r.samples_per_s for r in self.of(MEMORY)}
        vals = [r.samples_per_s / mem[r.round] for r in self.of(source) if r.round in mem]
        return median_range(vals) if vals else None

    def growth(self, source: str = WARM) -> Spread:
        return median_range([r.growth for r in self.of(source)])

    def fraction(self, source: str = WARM) -> Spread:
        """Peak RSS growth as a fraction of the set's uint8 images, per epoch: median and range."""
        return median_range([r.growth / self.set_bytes for r in self.of(source)])

    @property
    def cold_ok(self) -> bool:
        """There are cold epochs and each started with at most 2% of the image file cached."""
        cold = self.of(COLD)
        return bool(cold) and all(r.cache_before is not None and r.cache_before <= 0.02 for r in cold)

    def table(self) -> str:
        def mr(sp: Spread, fmt: str, scale: float = 1.0) -> str:
            return f"{sp.median * scale:{fmt}} ({sp.low * scale:{fmt}}–{sp.high * scale:{fmt}})"

        lines = [f"{self.n_images:,} images ({fmt_bytes(self.set_bytes)} as uint8), {self.rounds} rounds of one epoch "
                 "per path: median (min–max)",
                 f"{'path':18}{'samples/s':>26}{'/ memory, per round':>24}{'peak RSS + (MB)':>24}"]
        for src in (MEMORY, WARM, COLD):
            runs = self.of(src)
            if not runs:
                continue
            sps = median_range([r.samples_per_s for r in runs])
            ratio = "" if src == MEMORY else mr(self.ratio(src), ".2f")
            lines.append(f"{src:18}{mr(sps, ',.0f'):>26}{ratio:>24}{mr(self.growth(src), '.3g', 1 / MB):>24}")
        for r in self.of(COLD):
            lines.append(f"  cold round {r.round}: {100 * r.cache_before:.1f}% of the image file in the page cache at "
                         f"the start (after dropping it), {100 * r.cache_after:.0f}% after the epoch")
        if self.cold_skipped:
            lines.append(f"no cold-cache epochs: {self.cold_skipped}")
        paths = "memory, disk and cold disk" if self.of(COLD) else "memory and disk"
        lines.append(f"control: the models trained from {paths} end with "
                     f"{'identical' if self.identical else 'DIFFERENT'} weights (same batches in the same order)")
        return "\n".join(lines)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@contextlib.contextmanager
def _private_copy(ls: LettersSet) -> Iterator[LettersSet]:
    """The set's two files copied beside them (same disk), as a LettersSet; deleted afterwards. Nothing else maps
    the copy, so the kernel can drop all of its pages (a page some object in the notebook still maps, e.g. of
    ``ls.images``, cannot be dropped)."""
    folder = Path(tempfile.mkdtemp(prefix=".cold-", dir=ls.paths.images.parent))
    try:
        img, lab = folder / ls.paths.images.name, folder / ls.paths.labels.name
        shutil.copyfile(ls.paths.images, img)
        shutil.copyfile(ls.paths.labels, lab)
        yield dataclasses.replace(ls, paths=LetterPaths(img, lab, ls.paths.manifest))
    finally:
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)


def measure_paths(
    ls: LettersSet, *, dataset: type = MemmapImages, rounds: int = 4, cold: bool = True, width: int = 256,
    batch_size: int = 256, seed: int | None = None, progress: bool = False,
) -> PathRepeats:
    """``rounds`` rounds of one epoch per path (see the module docstring): memory, warm disk (through
    ``dataset``) and, if ``cold`` and supported, cold disk (from a private copy of the files, dropped from the page
    cache before each cold epoch). One model per path (same seed), trained on from round to round."""
    rounds = check_int(rounds, "rounds", low=1, high=100)
    width, batch_size = check_int(width, "width", low=1), check_int(batch_size, "batch_size", low=1)
    _check_set(ls)
    check_dataset_class(dataset)
    seed = get_seed() if seed is None else check_seed(seed)
    why_not = cold_cache_supported() if cold else "switched off (cold=False)"
    sources = [MEMORY, WARM] + ([COLD] if why_not is None else [])
    warmup(width, batch_size)
    models, opts = {}, {}
    for s in sources:
        seed_everything(seed)
        models[s] = mlp(PIXELS, [width], 10)
        opts[s] = primed_adam(models[s])
    runs: list[EpochRun] = []

    def epoch(source: str, r: int, data: LettersSet) -> None:
        before = after = None
        if source == COLD:
            gc.collect()  # no mapping of the copy may survive from an earlier epoch (a mapped page stays cached)
            before = drop_from_page_cache(data.paths.images, data.paths.labels)[0].after
        with PeakRSS() as m:
            train, val = make_loaders(data, MEMORY if source == MEMORY else "disk", dataset=dataset,
                                      batch_size=batch_size, seed=seed)
            h = fit_stream(models[source], train, val, epochs=1, seed=seed + r, optimizer=opts[source])
            del train, val
        if source == COLD:
            gc.collect()
            after = resident_fraction(data.paths.images)
        runs.append(EpochRun(source, r, float(h.samples_per_s[0]), m.growth, float(h.val_acc[0]), before, after))
        if progress:
            print(f"round {r}: {source:16} {h.samples_per_s[0]:>9,.0f} samples/s, peak RSS +{m.growth / MB:.1f} MB")

    with _private_copy(ls) if COLD in sources else contextlib.nullcontext(ls) as copy:
        for r in range(rounds):
            if COLD in sources:
                epoch(COLD, r, copy)
            for s in ((WARM, MEMORY) if r % 2 == 0 else (MEMORY, WARM)):
                epoch(s, r, ls)
    ref = _weights(models[MEMORY])
    same = all(all(torch.equal(a, b) for a, b in zip(ref, _weights(models[s]))) for s in sources)
    return PathRepeats(runs, ls.n, ls.nbytes, dataset.__name__, why_not, same)


# --- accuracy over seeds: block shuffle (streaming) vs full shuffle (memory), and a class-sorted file ---------
def _pm(iv: Interval, fmt: str = ".4f", signed: bool = False) -> str:
    """``0.8244 ± 0.0090`` (``signed``: ``+0.0012 ± 0.0068``)."""
    return f"{iv.mean:{'+' if signed else ''}{fmt}} ± {iv.half_width:{fmt}}"


@dataclass
class SamplerStudy:
    """Validation accuracy per epoch, arrays of shape (runs, epochs), of paired runs (run i of every treatment
    starts from the same initial weights): ``block`` (from disk, block shuffle, the file in generation order),
    ``full`` (from memory, full shuffle) and ``sorted_block`` (block shuffle over the same images sorted by class,
    as if the file had been written letter by letter; the first ``len(sorted_block)`` seeds only)."""

    seeds: list[int]
    block: np.ndarray
    full: np.ndarray
    sorted_block: np.ndarray
    train_block: np.ndarray  # training accuracy over each epoch's batches (block), (runs, epochs)
    n_train: int
    n_val: int
    width: int
    seconds: float  # CPU time of the whole study

    @property
    def epochs(self) -> int:
        return self.block.shape[1]

    def interval(self, which: str, epoch: int = -1) -> Interval:
        return mean_interval(getattr(self, which)[:, epoch])

    def difference(self, which: str = "block", epoch: int = -1) -> Interval:
        """Paired interval of ``which`` - full validation accuracy at ``epoch`` (same seed, same initial weights)."""
        a = getattr(self, which)[:, epoch]
        return paired_interval(a, self.full[: len(a), epoch])

    def gain(self, which: str = "block") -> Interval:
        """Paired interval of the validation accuracy gained from the first epoch to the last."""
        a = getattr(self, which)
        return paired_interval(a[:, -1], a[:, 0])

    def table(self) -> str:
        k = len(self.sorted_block)
        lines = [f"MLP 784-{self.width}-10, {self.n_train:,} training images (training fonts), {self.n_val:,} "
                 f"validation images (held-out fonts). Validation accuracy, mean ± 95% CI over {len(self.seeds)} "
                 f"seeds ({k} for the class-sorted file); differences paired by seed",
                 f"{'epoch':>5}{'block (disk)':>18}{'full (memory)':>18}{'block - full':>18}"
                 f"{'sorted file, block':>21}{'sorted - full':>18}"]
        for e in range(self.epochs):
            lines.append(f"{e + 1:>5}{_pm(self.interval('block', e)):>18}{_pm(self.interval('full', e)):>18}"
                         f"{_pm(self.difference('block', e), signed=True):>18}"
                         f"{_pm(self.interval('sorted_block', e)):>21}"
                         f"{_pm(self.difference('sorted_block', e), signed=True):>18}")
        lines.append(f"training accuracy in the last epoch (block): {_pm(self.interval('train_block'))}; gain in "
                     f"validation accuracy from epoch 1 to {self.epochs} (block): {_pm(self.gain(), signed=True)}")
        return "\n".join(lines)


def _stacked_epochs(net: StackedMLP, opt: torch.optim.Optimizer, loaders: list[DataLoader], val: DataLoader,
                    epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Train ``net`` (M models) with loader m feeding model m; (val acc, train acc), each (M, epochs)."""
    m_models = net.n_models
    val_acc, train_acc = np.zeros((m_models, epochs)), np.zeros((m_models, epochs))
    for e in range(epochs):
        train_acc[:, e] = train_stacked_epoch(net, opt, loaders).acc.numpy()
        net.eval()
        correct, n = torch.zeros(m_models), 0
        with torch.no_grad():
            for xb, yb in val:
                correct += (net(xb.expand(m_models, -1, -1)).argmax(-1) == yb).sum(1)
                n += len(yb)
        val_acc[:, e] = (correct / n).numpy()
    return val_acc, train_acc


def sampler_study(
    ls: LettersSet, *, dataset: type = MemmapImages, n_seeds: int = 6, n_sorted: int = 6, epochs: int = 3,
    width: int = 64, batch_size: int = 256, lr: float = 1e-3, seed: int | None = None, prefix: int = DEFAULT_N,
) -> SamplerStudy:
    """Paired runs of an MLP 784-``width``-10 (Adam, ``lr``), seeds from :func:`lessons_lib.seeds.replicate_seeds`,
    each treatment's seeds trained at once as one stacked model: ``n_seeds`` from disk through ``dataset`` with the
    block shuffle (block 512, window 8, as :func:`.lab.make_loaders`), the same ``n_seeds`` from memory with a full
    shuffle, and the first ``n_sorted`` seeds with the block shuffle over the training images sorted by class.
    Only the set's first ``prefix`` images are used (by the prefix property, the set of that size), so a 500k set's
    study is the default set's study, at its cost."""
    n_seeds = check_int(n_seeds, "n_seeds", low=2, high=64, fix="an interval needs at least 2 seeds, e.g. 6")
    n_sorted = check_int(n_sorted, "n_sorted", low=2, high=n_seeds, fix=f"2 to n_seeds={n_seeds} seeds")
    epochs, width = check_int(epochs, "epochs", low=1, high=100), check_int(width, "width", low=1)
    batch_size, prefix = check_int(batch_size, "batch_size", low=1), check_int(prefix, "prefix", low=1)
    lr = check_float(lr, "lr", low=0, low_open=True)
    _check_set(ls)
    check_dataset_class(dataset)
    seed = None if seed is None else check_seed(seed)
    seeds = replicate_seeds(n_seeds, stream=8, seed=seed)
    train_idx, val_idx = split_indices(min(int(prefix), ls.n))
    labels = np.asarray(ls.labels)
    by_class = train_idx[np.argsort(labels[train_idx], kind="stable")]
    memory = in_memory(ls)
    disk = ReleasingPages(dataset(ls.paths.images, ls.paths.labels), max(1, 512 * 8 // batch_size // 2))
    val = DataLoader(Rows(memory, val_idx), batch_size=None, sampler=SequentialBatches(0, len(val_idx), 1024))
    plan = (("block", disk, train_idx, 512, seeds), ("full", memory, train_idx, 1, seeds),
            ("sorted_block", memory, by_class, 512, seeds[:n_sorted]))
    out = {}
    t0 = time.process_time()
    for name, data, idx, block, run_seeds in plan:
        models = []
        for s in run_seeds:
            torch.manual_seed(s)  # the same initial weights in every treatment: paired runs
            models.append(mlp(PIXELS, [width], 10))
        net = StackedMLP(models)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loaders = [DataLoader(Rows(data, idx), batch_size=None, sampler=BlockShuffleSampler(
            len(idx), batch_size, block=block, window=8, generator=torch_generator(s, stream=32))) for s in run_seeds]
        out[name] = _stacked_epochs(net, opt, loaders, val, epochs)
    return SamplerStudy(seeds, out["block"][0], out["full"][0], out["sorted_block"][0], out["block"][1],
                        len(train_idx), len(val_idx), width, time.process_time() - t0)


# --- the naive path at the set's own size ---------------------------------------------------------------------
@dataclass
class NaivePeak:
    """Peak RSS growth of the naive path (float64 + split copies) at ``n`` images, measured in a fresh process;
    ``skipped`` says why it was not run."""

    n: int
    growth: int | None
    array_bytes: int
    skipped: str | None = None


def naive_split_npy(images_path: str, test_fraction: float, seed: int) -> dict:
    """The naive path from the uint8 ``.npy`` (text parsing left out): the whole set as float64 / 255, then a
    shuffled train/test split (copies). Run in a fresh process by :func:`naive_peak`."""
    rng = np.random.default_rng(seed)
    with PeakRSS(children=False) as m:
        x = np.load(images_path).reshape(-1, PIXELS).astype(np.float64)
        x /= 255.0
        perm = rng.permutation(len(x))
        k = int(round(test_fraction * len(x)))
        split = x[perm[:k]], x[perm[k:]]
    del split
    return {"growth": m.growth, "array_bytes": int(x.nbytes)}


def naive_peak(ls: LettersSet, seed: int | None = None, timeout: float = 600) -> NaivePeak:
    """:func:`naive_split_npy` on the whole set in a fresh process, if this machine has the memory for it (about
    2.2x the float64 array); else a :class:`NaivePeak` that says why not."""
    import psutil

    _check_set(ls)
    seed = get_seed() if seed is None else check_seed(seed)
    timeout = check_float(timeout, "timeout", low=0, low_open=True, fix="seconds, e.g. 600")
    array = ls.n * PIXELS * 8
    need = 2.2 * array
    free = psutil.virtual_memory().available
    if free < need + 1e9:
        return NaivePeak(ls.n, None, array, f"it needs about {fmt_bytes(need)} and {fmt_bytes(free)} are available")
    run = run_child(f"{__name__}:naive_split_npy", {"images_path": str(ls.paths.images), "test_fraction": 0.2,
                                                    "seed": seed}, timeout=timeout)
    if not run.ok:
        return NaivePeak(ls.n, None, array, f"the child process failed: {run.error}")
    return NaivePeak(ls.n, int(run.value["growth"]), int(run.value["array_bytes"]))
