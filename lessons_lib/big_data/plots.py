"""Lesson 08, the figures: the letters set, sizes per format, where batches read in the file, the paths measured
over rounds (throughput, memory), and the samplers over seeds (learning curves with 95% bands)."""

from __future__ import annotations

import numpy as np

from ..letters import CLASSES
from ..seeds import check_seed, get_seed, torch_generator
from ..validate import check_int
from .formats import FULL_N, IMAGE_BYTES, MB, SEED_MACHINE_BYTES, SEED_TEXT_BYTES, FormatStudy
from .lab import ACC_MARGIN, SORTED_LOSS
from .measure import COLD, MEMORY, WARM, PathRepeats, SamplerStudy
from .reference import BlockShuffleSampler


def plot_examples(images: np.ndarray, labels: np.ndarray, per_class: int = 6):
    """A grid: one row per letter A..J, ``per_class`` examples each."""
    import matplotlib.pyplot as plt

    per_class = check_int(per_class, "per_class", low=1, high=50)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: pass the set's images and labels together")
    fig, axes = plt.subplots(len(CLASSES), per_class, squeeze=False, figsize=(per_class * 0.75, len(CLASSES) * 0.75))
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

    seed = get_seed() if seed is None else check_seed(seed)
    n, batch_size = check_int(n, "n", low=1), check_int(batch_size, "batch_size", low=1)
    batches = check_int(batches, "batches", low=1, high=1000)
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


def plot_paths(paths: PathRepeats):
    """Left: samples/s of each epoch, per path (one dot per round, a bar at the median). Right: peak RSS growth
    of each epoch (log scale), with the set's size and 10% of it."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    sources = [s for s in (MEMORY, WARM, COLD) if paths.of(s)]
    rng = np.random.default_rng(0)  # horizontal jitter only
    for i, src in enumerate(sources):
        runs = paths.of(src)
        for ax, vals in ((a, [r.samples_per_s for r in runs]), (b, [r.growth / MB for r in runs])):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, "o", color=f"C{i}", alpha=0.7, ms=5)
            ax.hlines(np.median(vals), i - 0.3, i + 0.3, color=f"C{i}", lw=2)
    labels = [s.replace(", ", "\n") for s in sources]
    a.set_xticks(range(len(sources)), labels)
    a.set(ylabel="samples / s (one epoch)", title=f"throughput, {paths.rounds} rounds (bar: median)")
    a.set_ylim(0, None)
    b.set_xticks(range(len(sources)), labels)
    b.set_yscale("log")
    b.axhline(paths.set_bytes / MB, color="gray", ls=":", label="the set as uint8")
    b.axhline(0.1 * paths.set_bytes / MB, color="C3", ls="--", label="10% of it")
    b.set(ylabel="peak RSS growth (MB, log)", title=f"memory while loading + training ({paths.n_images:,} images)")
    b.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


def plot_samplers(st: SamplerStudy):
    """Left: validation accuracy per epoch, mean and 95% band over seeds, block shuffle (disk) and full shuffle
    (memory). Middle: each seed's paired difference block - full per epoch (dots), its mean and 95% interval, and
    the margin of "the same accuracy". Right: the same for the control, the block shuffle over a class-sorted
    file, with the loss it is expected to show."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ep = np.arange(1, st.epochs + 1)
    a = axes[0]
    for which, label, color in (("block", "block shuffle, from disk", "C2"), ("full", "full shuffle, in memory", "C0")):
        ivs = [st.interval(which, e) for e in range(st.epochs)]
        a.plot(ep, [iv.mean for iv in ivs], "o-", color=color, label=label)
        a.fill_between(ep, [iv.low for iv in ivs], [iv.high for iv in ivs], color=color, alpha=0.2)
    a.set(xlabel="epoch", ylabel="validation accuracy (held-out fonts)",
          title=f"learning curves, {len(st.seeds)} seeds (95% band)")
    a.set_xticks(ep)
    a.legend(fontsize=8, loc="lower right")
    for ax, which, color, title in ((axes[1], "block", "C2", "block - full, paired by seed\n(dots: seeds; square: "
                                                             "mean, 95% CI)"),
                                    (axes[2], "sorted_block", "C3", "control: a class-sorted file,\nblock - full")):
        runs = getattr(st, which)
        for e in range(st.epochs):
            d = 100 * (runs[:, e] - st.full[: len(runs), e])
            iv = st.difference(which, e)
            ax.plot(e + 1 + np.linspace(-0.15, 0.15, len(d)) - 0.1, d, "o", color=color, alpha=0.5, ms=4)
            ax.errorbar(e + 1 + 0.15, 100 * iv.mean, yerr=100 * iv.half_width, fmt="s", color="k", capsize=4, ms=4)
        m = 100 * ACC_MARGIN
        ax.axhspan(-m, m, color="gray", alpha=0.25, label=f"±{m:g} points")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set(xlabel="epoch", ylabel="difference (points)", title=title)
        ax.set_xticks(ep)
    axes[2].axhline(-100 * SORTED_LOSS, color="C3", ls="--", lw=1, label=f"-{100 * SORTED_LOSS:g} points")
    lo, hi = axes[1].get_ylim()
    axes[1].set_ylim(min(-2 * m, lo) - 0.8 * m, max(2 * m, hi))  # room for the legend below the margin
    axes[1].legend(fontsize=8, loc="lower right")
    axes[2].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
