"""Lesson 09 · the wall-time crossover: from which layer width is an LSH-sampled layer faster than dense BLAS?

It also holds the two sparse kernels of :mod:`.wide_output`: :func:`sampled_softmax` (the candidates' logits as
one sampled product, the gradient as one sparse product) and :func:`top_by_count` (each query's most frequent
bucket members, from the (query, item) pairs of :meth:`lessons_lib.lsh.BucketTables.members`).

One training step (forward, backward, plain SGD update) of a wide output layer ``dim -> width`` on a batch, timed
on this machine for the dense layer (two BLAS matrix products over all ``width`` classes) and for the LSH layer on
the batch's union of candidates (SLIDE's idea with a GPU-style batch): hash the batch (SimHash, L tables of K bits),
collect the classes in its buckets (the union, true labels added), gather their rows, the two matrix products on
the union only, and scatter the update back. K grows with the width (``K = round(log2(width * L / k))``) so that
each example retrieves about ``k`` classes, as SLIDE grows its K with the output layer. Each part is also timed
alone, so the table says where the LSH step's time goes; what is left of the step is the Python/dispatch overhead.
Table rebuilds (hashing all ``width`` rows) are amortized over ``rebuild_every`` steps and included.

Time is measured with interleaved rounds (:func:`lessons_lib.timing.time_interleaved`: device synchronized, each
round times every function once) and ratios are taken round by round (median and range).

What SLIDE needed to win (Chen et al., MLSys 2020): many CPU cores running HOGWILD-style asynchronous updates over
examples, hand-written C++ with AVX-512 and huge pages, against TensorFlow on a GPU for a 670k-class output
layer. A later study (Daghaghi et al., "Accelerating SLIDE Deep Learning on Modern CPUs", MLSys 2021) found that
much of the remaining gap came from vectorization and memory layout (AVX-512, BF16, cache-friendly weight
storage), not from the hashing itself: the win is as much engineering as algorithm. Here, on a few cores through
PyTorch, each part is a separate kernel call with its own pass over memory; the table below measures that.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

import torch

from ..device import pick_device
from ..lsh import BucketTables, SimHash, check_k_l
from ..seeds import check_seed, torch_generator
from ..stats import Spread, median_range
from ..svgplot import PALETTE
from ..timing import Timing, threads, time_interleaved
from ..validate import BadArgument, check_int

PARTS = ("hash", "lookup", "gather", "matmul", "update")
TALLY_CELLS = 2**24  # top_by_count tallies (B, n_items) in int16 up to this many cells, else sorts the pairs


# --- the sparse kernels of the wide output layer (lessons_lib.hashing.wide_output) -------------------------------
def sampled_softmax(x: torch.Tensor, weight: torch.Tensor, candidates: torch.Tensor | None,
                    targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean cross-entropy of the softmax over each example's ``candidates`` (B, k) class indices (-1: an empty
    slot; None: all classes) and its gradient with respect to ``weight`` (C, d); ``targets`` (B,) must be among
    the candidates. Returns ``(loss, grad, rows)``: ``grad`` holds the gradient of the sorted ``rows`` it touches
    (None: all rows, ``grad`` is (C, d)). The candidates' logits are a sampled product (SDDMM) and the gradient a
    sparse-times-dense product, so the work is proportional to B * k * d, as the multiplication count says."""
    B = len(x)
    if candidates is None:
        g = torch.softmax(x @ weight.T, 1)
        loss = -g[torch.arange(B), targets].clamp_min(1e-30).log().mean()
        g[torch.arange(B), targets] -= 1
        return loss, g.T @ x / B, None
    hit = candidates == targets[:, None]
    if not bool(hit.any(1).all()):
        raise BadArgument("targets: a true label is missing from its example's candidates; force it in (the "
                          "sampled softmax needs the true class)")
    k, valid, dev = candidates.shape[1], candidates >= 0, x.device
    col = candidates.clamp_min(0).reshape(-1)
    with warnings.catch_warnings():  # torch's one-time notice that sparse CSR is a beta feature
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(torch.arange(0, B * k + 1, k, device=dev), col,
                                          torch.zeros(B * k, device=dev), (B, len(weight)))
        logits = torch.sparse.sampled_addmm(pattern, x, weight.T, beta=0.0).values().view(B, k)
        p = torch.softmax(logits.masked_fill(~valid, float("-inf")), 1)
        pos = hit.float().argmax(1)
        loss = -p[torch.arange(B), pos].clamp_min(1e-30).log().mean()
        p[torch.arange(B), pos] -= 1
        keep = valid.reshape(-1)
        cls, order = torch.sort(col[keep], stable=True)
        rows, per_row = torch.unique_consecutive(cls, return_counts=True)
        crow = torch.cat([per_row.new_zeros(1), torch.cumsum(per_row, 0)])
        example = torch.arange(B, device=dev).repeat_interleave(k)[keep][order]
        grad = torch.sparse_csr_tensor(crow, example, (p.reshape(-1)[keep] / B)[order], (len(rows), B)) @ x
    return loss, grad, rows


def top_by_count(query: torch.Tensor, item: torch.Tensor, B: int, n_items: int, k: int,
                 generator: torch.Generator, min_count: int = 1) -> torch.Tensor:
    """(B, k) items per query: of the items that occur at least ``min_count`` times among its (query, item) pairs,
    the k that occur most often (ties at random); -1 in the slots left empty. Work proportional to the pairs plus
    a (B, n_items) int16 tally when that is small (else a sort of the pairs): no (B, n_items) draw or top-k."""
    dev, key = item.device, query * n_items + item
    if B * n_items <= TALLY_CELLS:
        tally = torch.zeros(B * n_items, dtype=torch.int16, device=dev).index_add_(
            0, key, torch.ones(len(key), dtype=torch.int16, device=dev))
        uniq = (tally >= min_count).nonzero().squeeze(1) if min_count > 1 else tally.nonzero().squeeze(1)
        count = tally[uniq]
    else:
        uniq, count = torch.unique(key, sorted=True, return_counts=True)
        uniq, count = uniq[count >= min_count], count[count >= min_count]
    ex = uniq // n_items
    per_query = torch.bincount(ex, minlength=B)
    rank = torch.arange(len(uniq), device=dev) - (torch.cumsum(per_query, 0) - per_query)[ex]
    width = max(int(per_query.max()) if len(uniq) else 0, 1)
    items = torch.full((B, width), -1, dtype=torch.int64, device=dev)
    items[ex, rank] = uniq - ex * n_items
    if width <= k:
        return torch.cat([items, items.new_full((B, k - width), -1)], 1)
    score = torch.full((B, width), -1.0, device=dev)
    score[ex, rank] = count.float() + 0.5 * torch.rand(len(uniq), generator=generator, device=dev)
    top = torch.topk(score, k, 1, sorted=False)
    return items.gather(1, top.indices).masked_fill(top.values < 0, -1)


# --- the wall-time sweep --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    """``widths``: output-layer widths (classes); ``k``: classes each example retrieves (about); ``L`` tables;
    ``rounds`` interleaved rounds per width; ``threads``: torch threads (None: leave as is)."""

    widths: tuple[int, ...] = (2_000, 8_000, 32_000, 64_000)
    dim: int = 64
    batch_size: int = 128
    k: int = 64
    L: int = 8
    rebuild_every: int = 50
    rounds: int = 3
    threads: int | None = 1
    lr: float = 0.1

    def __post_init__(self) -> None:
        if not self.widths or isinstance(self.widths, (str, int)):
            raise BadArgument(f"widths={self.widths!r}: give a tuple of layer widths, e.g. (2000, 8000, 32000)")
        for i, w in enumerate(self.widths):
            check_int(w, f"widths[{i}]", low=max(2, self.k), high=2_000_000, fix=f"at least k={self.k} classes")
        for name in ("dim", "batch_size", "k", "L", "rebuild_every", "rounds"):
            check_int(getattr(self, name), name, low=1, fix="a positive whole number")


DEFAULT_SWEEP = SweepConfig()
LARGE_SWEEP = SweepConfig(widths=(2_000, 8_000, 32_000, 128_000, 256_000), rounds=9)


def bits_for(width: int, L: int, k: int) -> int:
    """K such that an example's L buckets hold about ``k`` classes: ``round(log2(width * L / k))``, at least 1."""
    return max(1, min(24, round(math.log2(max(width * L / k, 2)))))


@dataclass
class WidthTiming:
    """One width: the timings of the dense step, the LSH step, its parts and a rebuild, the K used and the mean
    union of candidates as a fraction of the width."""

    width: int
    K: int
    union_fraction: float
    t: dict[str, Timing]
    rebuild_every: int

    def lsh_times(self) -> list[float]:
        """LSH step seconds per round, with the rebuild amortized."""
        return [s + r / self.rebuild_every for s, r in zip(self.t["lsh"].times, self.t["rebuild"].times)]

    def ratio(self) -> Spread:
        """LSH step time over dense step time, round by round: median and range (< 1: LSH is faster)."""
        return median_range([a / b for a, b in zip(self.lsh_times(), self.t["dense"].times)])

    def parts_ms(self) -> dict[str, float]:
        """Median milliseconds of each part, the amortized rebuild, and the overhead (step minus parts)."""
        out = {p: 1e3 * self.t[p].median for p in PARTS}
        out["rebuild"] = 1e3 * self.t["rebuild"].median / self.rebuild_every
        out["overhead"] = max(0.0, 1e3 * self.t["lsh"].median - sum(out[p] for p in PARTS))
        return out


@dataclass
class Crossover:
    cfg: SweepConfig
    points: list[WidthTiming]

    @property
    def width(self) -> int | None:
        """The smallest swept width from which LSH's median ratio stays below 1 (None: no crossover)."""
        for i, p in enumerate(self.points):
            if all(q.ratio().median < 1 for q in self.points[i:]):
                return p.width
        return None

    def table(self) -> str:
        c = self.cfg
        lines = [f"one step (forward, backward, SGD) of {c.dim} -> width, batch {c.batch_size}, ~{c.k} classes per "
                 f"example from L={c.L} tables, {torch.get_num_threads() if c.threads is None else c.threads} "
                 f"thread(s), {c.rounds} interleaved rounds; ms: medians",
                 f"{'width':>8}{'K':>4}{'union':>7}{'dense ms':>10}{'LSH ms':>9}   {'LSH/dense (range)':<22}"
                 + "".join(f"{p:>9}" for p in (*PARTS, "rebuild", "overhead"))]
        for p in self.points:
            r, parts = p.ratio(), p.parts_ms()
            lines.append(f"{p.width:>8,}{p.K:>4}{p.union_fraction:>7.1%}{1e3 * p.t['dense'].median:>10.2f}"
                         f"{1e3 * statistics.median(p.lsh_times()):>9.2f}   "
                         f"{f'{r.median:.2f}x ({r.low:.2f}-{r.high:.2f})':<22}"
                         + "".join(f"{parts[q]:>9.2f}" for q in (*PARTS, "rebuild", "overhead")))
        w = self.width
        lines.append(f"crossover: LSH faster from width {w:,} on" if w else
                     f"no crossover up to width {self.points[-1].width:,}: the LSH step is slower at every width swept")
        return "\n".join(lines)

    def claims(self) -> list[tuple[str, str, str, str]]:
        """Rows ``(claim, source, measured, verdict)`` for :meth:`lessons_lib.claims.Claims.add`."""
        last = self.points[-1]
        r = last.ratio()
        verdict = "holds" if r.high < 1 else "does not hold" if r.low > 1 else "inconclusive"
        where = f"crossover at width {self.width:,}" if self.width else "no crossover in the sweep"
        return [("A wide enough LSH-sampled output layer trains faster per step than dense BLAS (SLIDE)",
                 "Chen et al. 2020 (SLIDE)", f"{where}; at {last.width:,} classes LSH/dense = "
                 f"{r.format('.2f', unit='x')} per round", verdict)]


def _softmax_grad(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    g = torch.softmax(logits, 1)
    g[torch.arange(len(g), device=g.device), pos] -= 1
    return g / len(g)


def time_width(width: int, cfg: SweepConfig = DEFAULT_SWEEP, *, seed: int = 0,
               device: torch.device | str = "cpu") -> WidthTiming:
    """Time the dense step, the LSH step and its parts at one ``width``; inputs lie near their class rows, so the
    buckets return real neighbours."""
    width = check_int(width, "width", low=max(2, cfg.k), high=2_000_000, fix=f"at least k={cfg.k}")
    dev, g = pick_device(device), torch_generator(check_seed(seed), stream=95)
    K = bits_for(width, cfg.L, cfg.k)
    check_k_l(K, cfg.L)
    W = torch.nn.functional.normalize(torch.randn(width, cfg.dim, generator=g), dim=1).to(dev)
    y = torch.randint(0, width, (cfg.batch_size,), generator=g).to(dev)
    x = W[y] + 0.5 * torch.randn(cfg.batch_size, cfg.dim, generator=g).to(dev) / cfg.dim ** 0.5
    h, tables = SimHash(cfg.dim, K, cfg.L, seed=seed, device=dev), BucketTables(K, cfg.L)
    tables.build(h.codes(W))

    def lookup(codes: torch.Tensor) -> torch.Tensor:
        return torch.unique(torch.cat([tables.members(codes)[1], y]))

    def matmul(ws: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return _softmax_grad(x @ ws.T, pos).T @ x

    def lsh_step() -> None:
        union = lookup(h.codes(x))
        grad = matmul(W[union], torch.searchsorted(union, y))
        W.index_add_(0, union, grad, alpha=-cfg.lr)

    def dense_step() -> None:
        W.add_(matmul(W, y), alpha=-cfg.lr)

    codes = h.codes(x)
    union = lookup(codes)
    pos, ws = torch.searchsorted(union, y), W[union]
    grad = matmul(ws, pos)
    fns = {"dense": dense_step, "lsh": lsh_step, "hash": lambda: h.codes(x), "lookup": lambda: lookup(codes),
           "gather": lambda: W[union], "matmul": lambda: matmul(ws, pos),
           "update": lambda: W.index_add_(0, union, grad, alpha=-1e-9), "rebuild": lambda: tables.build(h.codes(W))}
    with threads(cfg.threads), torch.no_grad():
        t = time_interleaved(fns, device=dev, rounds=cfg.rounds, warmup=2)
    return WidthTiming(width, K, len(union) / width, t, cfg.rebuild_every)


def sweep(cfg: SweepConfig = DEFAULT_SWEEP, *, seed: int = 0, device: torch.device | str = "cpu") -> Crossover:
    """:func:`time_width` at every width of ``cfg``."""
    return Crossover(cfg, [time_width(w, cfg, seed=seed, device=device) for w in cfg.widths])


def plot_crossover(result: Crossover):
    """Left: ms per step vs width, dense and LSH (log-log); right: where the LSH step's time goes, per width."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    w = [p.width for p in result.points]
    ax[0].plot(w, [1e3 * p.t["dense"].median for p in result.points], "o--", color="#555555", label="dense (BLAS)")
    ax[0].plot(w, [1e3 * statistics.median(p.lsh_times()) for p in result.points], "o-", color=PALETTE[0],
               label="LSH, batch union (rebuilds amortized)")
    if result.width:
        ax[0].axvline(result.width, color="#bbb", ls=":", label=f"crossover {result.width:,}")
    ax[0].set(xscale="log", yscale="log", xlabel="output width (classes)", ylabel="ms per training step",
              title="one training step, medians of interleaved rounds")
    ax[0].xaxis.set_major_locator(FixedLocator(w))  # the widths measured, written out; no crowded minor labels
    ax[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax[0].xaxis.set_minor_formatter(NullFormatter())
    ax[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax[0].yaxis.set_minor_formatter(NullFormatter())
    bottom = [0.0] * len(w)
    for i, part in enumerate((*PARTS, "rebuild", "overhead")):
        ms = [p.parts_ms()[part] for p in result.points]
        ax[1].bar(range(len(w)), ms, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=part)
        bottom = [b + m for b, m in zip(bottom, ms)]
    ax[1].set_xticks(range(len(w)), [f"{v:,}" for v in w])
    ax[1].set(xlabel="output width (classes)", ylabel="ms (median)", title="the LSH step, part by part")
    for a in ax:
        a.legend(frameon=False, fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig
