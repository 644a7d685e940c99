"""Lesson 08, the figures: the letters set, sizes per format, where batches read in the file, memory vs disk."""

from __future__ import annotations

import numpy as np

from ..letters import CLASSES
from ..seeds import get_seed, torch_generator
from .formats import FULL_N, IMAGE_BYTES, MB, SEED_MACHINE_BYTES, SEED_TEXT_BYTES, FormatStudy
from .lab import Comparison
from .reference import BlockShuffleSampler


def plot_examples(images: np.ndarray, labels: np.ndarray, per_class: int = 6):
    """A grid: one row per letter A..J, ``per_class`` examples each."""
    import matplotlib.pyplot as plt

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
            ax.plot(idx * IMAGE_BYTES / MB, np.full(len(idx), b), "|", ms=6, color="C0" if block == 1 else "C2")
        ax.set(xlabel="position in the image file (MB)", title=title, xlim=(0, n * IMAGE_BYTES / MB))
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
    b.bar(["memory", f"disk ({cmp.dataset})"], vals, color=["C0", "C2"])
    b.axhline(cmp.set_bytes / MB, color="gray", ls=":", label="the set as uint8")
    b.axhline(0.1 * cmp.set_bytes / MB, color="C3", ls="--", label="10% of it (target)")
    b.set(ylabel="peak RSS growth (MB)", title="memory while loading + training")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig
