"""Lesson 10's figure: where a parallel run's time goes (compute vs gradient synchronization) and how many bytes
each step synchronizes. Reads :class:`lab.ParallelResult` runs; draws only."""

from __future__ import annotations

from collections.abc import Sequence

from .lab import ParallelResult


def plot_scaling(rows: Sequence[ParallelResult]):
    """Left: time of each run split into compute and gradient synchronization — per step for synchronous runs (the
    same global batch whatever the processes), per epoch otherwise. Right: gradient bytes synchronized (ddp) or
    written into shared memory (hogwild) per step, with the most processes."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    labels = [f"{r.config.mode}\n{r.config.update}\n{r.config.processes}p, b{r.config.batch_size}" for r in rows]
    sync = all(r.config.synchronous for r in rows)
    # synchronous steps process the same global batch whatever the processes: compare time per step;
    # asynchronous processes step side by side: compare time per epoch (examples / summed throughput)
    total = [1e3 * r.step_seconds if sync else r.epoch_seconds for r in rows]
    comp = [t * (1 - r.comm_fraction) for t, r in zip(total, rows)]
    comm = [t * r.comm_fraction for t, r in zip(total, rows)]
    xs = list(range(len(rows)))
    ax.bar(xs, comp, color="#4c72b0", label="compute")
    if any(comm):
        ax.bar(xs, comm, bottom=comp, color="#dd8452", label="gradient sync (all-reduce)")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("ms per step (global batch)" if sync else "seconds per epoch")
    ax.set_title(("time per step" if sync else "time per epoch") + " (measured in this run)")
    ax.legend(fontsize=8)
    n = max(r.config.processes for r in rows)
    shown = {}
    for r in rows:
        key = (r.config.mode, r.config.update)
        if r.config.processes == n and r.sync_bytes_per_step > 0 and key not in shown:
            shown[key] = r
    kb = [r.sync_bytes_per_step / 1e3 for r in shown.values()]
    bx.bar(range(len(kb)), kb, color=["#4c72b0" if u == "dense" else "#55a868" for _, u in shown])
    bx.set_xticks(list(range(len(kb))), [f"{m} {u}\nbatch {r.config.batch_size}" for (m, u), r in shown.items()],
                  fontsize=8)
    bx.set_ylabel("KB per step")
    bx.set_title(f"gradient bytes per step ({n} processes)")
    for i, v in enumerate(kb):
        bx.text(i, v, f"{v:.1f} KB", ha="center", va="bottom", fontsize=8)
    bx.set_ylim(0, 1.15 * max(kb, default=1))
    fig.tight_layout()
    return fig
