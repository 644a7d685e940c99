"""Lesson 10's figure: where a parallel run's time goes (compute vs gradient synchronization) and how many bytes
each step sends to the other processes. Reads :class:`lab.ParallelResult` runs (with a sweep's rounds: medians, and
the range as error bars); draws only."""

from __future__ import annotations

from collections.abc import Sequence

from .lab import ParallelResult, check_runs, spread


def sends_bytes(r: ParallelResult) -> bool:
    """Does the run move gradient bytes to other processes? DDP and the hand-made run all-reduce them, Hogwild writes
    them into parameters the others read; a single process has nobody to send to and the independent control
    shares nothing."""
    return r.config.processes > 1 and r.config.mode in ("ddp", "manual", "hogwild") and r.sync_bytes_per_step > 0


def plot_scaling(rows: Sequence[ParallelResult]):
    """Left: time of each run split into compute and gradient synchronization — per step for synchronous runs (the
    same global batch whatever the processes), per epoch otherwise — median over the sweep's rounds, the range as an
    error bar. Right: gradient bytes per step of the runs that send some (:func:`sends_bytes`): all-reduced (ddp) or
    written into the shared parameters (hogwild)."""
    import matplotlib.pyplot as plt

    rows = check_runs(rows)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    labels = [f"{r.config.mode}\n{r.config.update}\n{r.config.processes}p, b{r.config.batch_size}" for r in rows]
    sync = all(r.config.synchronous for r in rows)
    # synchronous steps process the same global batch whatever the processes: compare time per step;
    # asynchronous processes step side by side: compare time per epoch (examples / summed throughput)
    total = [spread(r, (lambda x: 1e3 * x.step_seconds) if sync else (lambda x: x.epoch_seconds)) for r in rows]
    share = [spread(r, lambda x: x.comm_fraction).median for r in rows]
    comp = [t.median * (1 - f) for t, f in zip(total, share)]
    comm = [t.median * f for t, f in zip(total, share)]
    xs = list(range(len(rows)))
    ax.bar(xs, comp, color="#4c72b0", label="compute")
    if any(comm):
        ax.bar(xs, comm, bottom=comp, color="#dd8452", label="gradient sync (all-reduce)")
    runs = max(t.n for t in total)
    if runs > 1:
        ax.errorbar(xs, [t.median for t in total], yerr=[[t.median - t.low for t in total],
                                                         [t.high - t.median for t in total]],
                    fmt="none", ecolor="black", capsize=4, lw=1, label=f"range over {runs} runs")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("ms per step (global batch)" if sync else "seconds per epoch")
    ax.set_title(("time per step" if sync else "time per epoch") + (f" (median of {runs} runs)" if runs > 1 else ""))
    ax.legend(fontsize=8)
    shown = [r for r in rows if sends_bytes(r)]
    kb = [spread(r, lambda x: x.sync_bytes_per_step / 1e3) for r in shown]
    bx.bar(range(len(kb)), [k.median for k in kb], color=["#4c72b0" if r.config.update == "dense" else "#55a868"
                                                           for r in shown])
    if any(k.high > k.low for k in kb):
        bx.errorbar(range(len(kb)), [k.median for k in kb], yerr=[[k.median - k.low for k in kb],
                                                                  [k.high - k.median for k in kb]],
                    fmt="none", ecolor="black", capsize=4, lw=1)
    bx.set_xticks(list(range(len(kb))), [f"{r.config.mode}\n{r.config.update}\n{r.config.processes}p, b"
                                         f"{r.config.batch_size}" for r in shown], fontsize=8)
    modes = {r.config.mode for r in shown}
    bx.set_ylabel("KB per step" + (" (median)" if runs > 1 else ""))
    bx.set_title("gradient bytes " + ("written into the\nshared parameters" if modes == {"hogwild"}
                                      else "all-reduced" if modes <= {"ddp", "manual"} else "sent")
                 + " per step", fontsize=10)
    for i, k in enumerate(kb):
        bx.text(i, k.high, f"{k.median:.1f} KB", ha="center", va="bottom", fontsize=8)
    silent = [r for r in rows if not sends_bytes(r) and r.config.mode == "independent"]
    if silent:
        bx.text(0.98, 0.97, "independent: nothing shared, no bytes", transform=bx.transAxes, ha="right", va="top",
                fontsize=8, color="#555")
    bx.set_ylim(0, 1.2 * max((k.high for k in kb), default=1))
    fig.tight_layout()
    return fig
