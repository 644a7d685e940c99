"""Lesson 09 — randomized hashing: let locality-sensitive hashing (LSH) pick the neurons likely to fire.

Seed 003 (Spring & Shrivastava, "Scalable and Sustainable Deep Learning via Randomized Hashing"): hash
every neuron's weight vector into L tables of K-bit signed-random-projection codes (SimHash); for an
input, look up its own bucket in each table, rank the neurons by how many tables returned them, and
compute only the top fraction. The claim: about 5% of the multiplications, no loss of accuracy.

What this module follows from the authors' released code (github.com/rdspring1/LSH_DeepLearning):
SimHash with K = 6 bits and L = 100 tables, hidden width 1000, inputs and weights mean-pooled to a few
dimensions before hashing, nodes ranked by collision counts ("histogram") and the top fraction kept,
inactive nodes with zero activation and zero gradient, tables rebuilt on a schedule that thins out,
a dense output layer.

Units: "multiplications" are scalar multiplications (a dot product of length d costs d). A layer
``n_in -> n_out`` costs ``n_in * n_out`` per example forward and as much again for its weight gradient.
``active_fraction`` is the fraction of hidden units KEPT (computed), in (0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..callbacks import Callback
from ..claims import Claims
from ..data import Splits, load
from ..device import pick_device
from ..exercises import check
from ..lsh import (
    LshIndex,
    RebuildSchedule,
    SimHash,
    check_active_fraction,
    topk_by_counts,
    units_kept,
)
from ..seeds import get_seed, seed_everything, torch_generator
from ..timing import Timing, time_it
from ..training import History, evaluate, fit

SELECTORS = ("lsh", "random", "topk", "dense", "dropout")
MODES = ("per_example", "union")


# --- SimHash statistics ----------------------------------------------------------------------------
def simhash_collision_rates(angles: Sequence[float], *, dim: int = 32, n_pairs: int = 2000, n_bits: int = 64,
                            seed: int | None = None) -> np.ndarray:
    """Measured per-bit collision rate of SimHash for random vector pairs at each angle (radians).

    For each angle: ``n_pairs`` random unit vectors x, a y at exactly that angle to x, and ``n_bits``
    random hyperplanes; returns the fraction of (pair, bit) whose sign bits agree. Theory: 1 - angle/pi.
    """
    g = torch_generator(seed, stream=91)
    out = []
    h = SimHash(dim, K=1, L=n_bits, seed=seed, stream=92)  # n_bits independent one-bit hashes
    for a in angles:
        x = torch.randn(n_pairs, dim, generator=g)
        x = x / x.norm(dim=1, keepdim=True)
        u = torch.randn(n_pairs, dim, generator=g)
        u = u - (u * x).sum(1, keepdim=True) * x
        u = u / u.norm(dim=1, keepdim=True)
        y = math.cos(a) * x + math.sin(a) * u
        out.append((h.bits(x) == h.bits(y)).float().mean().item())
    return np.asarray(out)


@dataclass
class MultCounter:
    """Scalar multiplications, kept apart: the layer itself, the selection (hashing queries, or all
    pre-activations for the exact top-k oracle), the table rebuilds; and what the dense layer would
    have cost for the same examples."""

    layer: int = 0
    selection: int = 0
    rebuild: int = 0
    dense: int = 0
    examples: int = 0
    rebuilds: int = 0

    def reset(self) -> None:
        self.layer = self.selection = self.rebuild = self.dense = self.examples = self.rebuilds = 0

    @property
    def total(self) -> int:
        return self.layer + self.selection + self.rebuild

    def fractions(self) -> dict[str, float]:
        """Each count as a fraction of the dense layer's multiplications."""
        d = max(self.dense, 1)
        return {"layer": self.layer / d, "selection": self.selection / d, "rebuild": self.rebuild / d,
                "total": self.total / d}

# --- the sampled layer ---------------------------------------------------------------------------
class SampledHidden(nn.Module):
    """A ReLU hidden layer ``n_in -> n_out`` that computes only an active set of units per example.

    ``selector``: "lsh" (SimHash tables over the mean-pooled weight rows, queried with the mean-pooled
    input; top units by collision count), "random" (a uniform random subset), "topk" (the exact
    top-k pre-activations: an oracle that needs them all), "dense" (every unit).
    ``mode``: "per_example" (each example gathers its own rows: the algorithm of the paper) or "union"
    (the batch computes the union of its examples' sets with one matrix product, as a GPU would).
    Inactive units output 0 and get zero gradient: only the active rows of ``weight`` and ``bias`` are
    gathered, so autograd never touches the others.
    """

    def __init__(self, n_in: int, n_out: int, *, selector: str = "lsh", active_fraction: float = 0.05,
                 K: int = 6, L: int = 50, pool_dim: int = 8, mode: str = "per_example",
                 schedule: RebuildSchedule | None = None, seed: int | None = None):
        super().__init__()
        if selector not in ("lsh", "random", "topk", "dense"):
            raise ValueError(f"selector must be one of lsh, random, topk, dense; got {selector!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if n_in < 1 or n_out < 1:
            raise ValueError(f"layer sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
        self.n_in, self.n_out, self.selector, self.mode = n_in, n_out, selector, mode
        self.active_fraction = 1.0 if selector == "dense" else check_active_fraction(active_fraction)
        self.k = units_kept(n_out, self.active_fraction)
        lin = nn.Linear(n_in, n_out)  # PyTorch's default initialisation
        self.weight, self.bias = nn.Parameter(lin.weight.detach().clone()), nn.Parameter(lin.bias.detach().clone())
        self.seed = get_seed() if seed is None else int(seed)
        self.schedule = schedule or RebuildSchedule()
        self.K, self.L = int(K), int(L)
        self.index = LshIndex(n_in, n_out, K=K, L=L, pool_dim=pool_dim, schedule=self.schedule, seed=self.seed) \
            if selector == "lsh" else None
        self.counters = {"train": MultCounter(), "eval": MultCounter()}
        self.step = 0
        self._gen: torch.Generator | None = None
        self.last_active: torch.Tensor | None = None

    def extra_repr(self) -> str:
        s = f"{self.n_in} -> {self.n_out}, selector={self.selector}, keeps {self.k} ({self.active_fraction:.0%})"
        return s + (f", K={self.K}, L={self.L}, pool={self.index.pool.shape[1]}" if self.index is not None else "")

    # -- randomness on the layer's device, reproducible from the seed
    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed * 7919 + 13)
        return self._gen

    # -- tables
    def rebuild_tables(self) -> None:
        """Hash every (pooled) weight row into the tables; counted in ``counters[...].rebuild``."""
        c = self.counters["train" if self.training else "eval"]
        c.rebuild += self.index.rebuild(self.weight)
        c.rebuilds += 1

    def _maybe_rebuild(self) -> None:
        if self.index.due(self.weight, self.step if self.training else None):
            self.rebuild_tables()

    # -- selection
    @torch.no_grad()
    def lsh_counts(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_out) collision counts of each unit with the inputs (tables as they are now)."""
        if self.index.stale(self.weight):
            self.rebuild_tables()
        return self.index.counts(x)

    @torch.no_grad()
    def select(self, x: torch.Tensor, counter: MultCounter | None = None) -> torch.Tensor:
        """(B, k) indices of the active units for each example of ``x``."""
        B, dev = x.shape[0], x.device
        if self.selector == "lsh":
            self._maybe_rebuild()
            idx = topk_by_counts(self.lsh_counts(x), self.k, generator=self._generator(dev), sorted=False)
            if counter is not None:
                counter.selection += B * self.index.mults_per_query
            return idx
        if self.selector == "random":
            scores = torch.rand(B, self.n_out, generator=self._generator(dev), device=dev)
            return scores.topk(self.k, dim=1, sorted=False).indices
        if self.selector == "topk":
            if counter is not None:
                counter.selection += B * self.n_in * self.n_out
            return torch.topk(x @ self.weight.T + self.bias, self.k, dim=1, sorted=False).indices
        return torch.arange(self.n_out, device=dev).expand(B, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"SampledHidden expects (batch, {self.n_in}) inputs, got {tuple(x.shape)}")
        B = x.shape[0]
        counter = self.counters["train" if self.training else "eval"]
        passes = 2 if (self.training and torch.is_grad_enabled()) else 1  # forward (+ weight gradient)
        counter.dense += passes * B * self.n_in * self.n_out
        counter.examples += B
        if self.selector == "dense":
            counter.layer += passes * B * self.n_in * self.n_out
            return torch.relu(x @ self.weight.T + self.bias)
        idx = self.select(x, counter)
        self.last_active = idx
        if self.training:
            self.step += 1
        if self.mode == "per_example":
            w = self.weight[idx]  # (B, k, n_in): only the active rows
            pre = torch.bmm(w, x.unsqueeze(2)).squeeze(2) + self.bias[idx]
            counter.layer += passes * B * self.k * self.n_in
            return x.new_zeros(B, self.n_out).scatter(1, idx, torch.relu(pre))
        union = torch.unique(idx)
        pre = x @ self.weight[union].T + self.bias[union]  # (B, |union|): every example computes the union
        counter.layer += passes * B * len(union) * self.n_in
        out = x.new_zeros(B, self.n_out)
        out[:, union] = torch.relu(pre)
        return out


def hashed_mlp(n_in: int, width: int, n_out: int, *, selector: str = "lsh", active_fraction: float = 0.05,
               K: int = 6, L: int = 50, pool_dim: int = 8, mode: str = "per_example",
               schedule: RebuildSchedule | None = None, seed: int | None = None) -> nn.Sequential:
    """``n_in -> width (sampled, ReLU) -> n_out`` (dense output layer, logits).

    ``selector="dropout"`` gives the standard baseline instead: a dense hidden layer followed by
    ``torch.nn.Dropout(p = 1 - active_fraction)`` (it computes every unit, then zeros most of them).
    """
    if selector == "dropout":
        p = 1.0 - check_active_fraction(active_fraction)
        return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(p), nn.Linear(width, n_out))
    return nn.Sequential(
        SampledHidden(n_in, width, selector=selector, active_fraction=active_fraction, K=K, L=L, pool_dim=pool_dim,
                      mode=mode, schedule=schedule, seed=seed),
        nn.Linear(width, n_out),
    )


def sampled_layer(model: nn.Module) -> SampledHidden | None:
    """The model's :class:`SampledHidden`, or None (dropout baseline)."""
    return next((m for m in model.modules() if isinstance(m, SampledHidden)), None)


# --- experiments ---------------------------------------------------------------------------------
DEFAULTS = {"dataset": "mnist1d", "width": 1000, "epochs": 3, "lr": 5e-3, "batch_size": 128, "K": 6, "L": 50,
            "pool_dim": 8}


@dataclass
class RunResult:
    """One training run. ``mults`` are the hidden layer's counts over training (fractions of dense)."""

    method: str
    active_fraction: float
    val_acc: float
    test_acc: float
    seconds: float
    step_ms: float
    mults: dict[str, float]
    history: History
    model: nn.Module = field(repr=False)


def hashing_experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), method: str = "lsh",
                       active_fraction: float = 0.05, width: int = DEFAULTS["width"],
                       epochs: int = DEFAULTS["epochs"], lr: float = DEFAULTS["lr"],
                       batch_size: int = DEFAULTS["batch_size"], K: int = DEFAULTS["K"], L: int = DEFAULTS["L"],
                       pool_dim: int = DEFAULTS["pool_dim"], dataset: str = DEFAULTS["dataset"],
                       seed: int | None = None, data: Splits | None = None) -> History:
    """Panel experiment: train ``hashed_mlp`` with ``method`` ("lsh", "random", "topk", "dense", "dropout")
    keeping ``active_fraction`` of the hidden units; returns the History (the model is in ``.config``)."""
    if method not in SELECTORS:
        raise ValueError(f"method must be one of {', '.join(SELECTORS)}, got {method!r}")
    seed = seed_everything(seed)
    data = data if data is not None else load(dataset, seed=seed)
    model = hashed_mlp(data.n_features, width, data.n_classes, selector=method, active_fraction=active_fraction,
                       K=K, L=L, pool_dim=pool_dim, seed=seed)
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, device=device, callbacks=callbacks, seed=seed,
            config={"method": method, "active_fraction": active_fraction, "width": width})
    h.config["model"] = model
    return h


def run_one(method: str, active_fraction: float, *, data: Splits, device: str = "cpu", seed: int | None = None,
            **kw) -> RunResult:
    """Train one model and measure it: val/test accuracy, time, the layer's multiplication fractions."""
    h = hashing_experiment(method=method, active_fraction=active_fraction, device=device, seed=seed, data=data, **kw)
    model = h.config["model"]
    dev = next(model.parameters()).device
    _, test_acc = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    layer = sampled_layer(model)
    if layer is not None:
        mults = layer.counters["train"].fractions()
    else:  # dropout: the dense layer is computed in full, then masked
        mults = {"layer": 1.0, "selection": 0.0, "rebuild": 0.0, "total": 1.0}
    s = h.summary()
    return RunResult(method, active_fraction, h.val_acc[-1], test_acc, h.total_seconds, s["step_ms"], mults, h, model)


def fraction_sweep(fractions: Sequence[float] = (0.02, 0.05, 0.1, 0.25), methods: Sequence[str] = ("lsh", "random"),
                   *, data: Splits | None = None, device: str = "cpu", seed: int | None = None,
                   include_dense: bool = True, **kw) -> list[RunResult]:
    """Every method at every fraction (plus one dense run): the accuracy-vs-work table of the lesson."""
    for f in fractions:
        check_active_fraction(f)
    seed = get_seed() if seed is None else seed
    data = data if data is not None else load(kw.pop("dataset", DEFAULTS["dataset"]), seed=seed)
    rows = [run_one("dense", 1.0, data=data, device=device, seed=seed, **kw)] if include_dense else []
    for m in methods:
        for f in fractions:
            rows.append(run_one(m, f, data=data, device=device, seed=seed, **kw))
    return rows


def results_table(rows: Sequence[RunResult]) -> str:
    """A fixed-width text table of a sweep."""
    head = f"{'method':<8} {'active':>7} {'val acc':>8} {'test acc':>9} {'layer':>7} {'hashing':>8} {'total':>7} " \
           f"{'ms/step':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        sel = r.mults["selection"] + r.mults["rebuild"]
        lines.append(f"{r.method:<8} {r.active_fraction:>7.0%} {r.val_acc:>8.3f} {r.test_acc:>9.3f} "
                     f"{r.mults['layer']:>7.1%} {sel:>8.1%} {r.mults['total']:>7.1%} {r.step_ms:>8.2f}")
    lines.append("layer / hashing / total: multiplications of the hidden layer during training, as a fraction of the "
                 "dense layer's (hashing = queries + table rebuilds; for topk: all pre-activations)")
    return "\n".join(lines)


@torch.no_grad()
def overlap_with_topk(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """How many of the units the layer picks for ``x`` are among the exact top-k pre-activations.

    Returns the mean overlap |picked ∩ top-k| / k, the chance level k / n of a random pick, and the
    share of the top-k's total positive activation that the picked set captures."""
    layer = sampled_layer(model)
    if layer is None or layer.selector == "dense":
        raise ValueError("overlap_with_topk needs a model with a sampled (non-dense) hidden layer")
    was = layer.training
    layer.eval()
    try:
        x = x.to(layer.weight.device)
        pre = x @ layer.weight.T + layer.bias
        top = torch.topk(pre, layer.k, dim=1).indices
        picked = layer.select(x)
        hit = torch.zeros_like(pre, dtype=torch.bool).scatter(1, top, True).gather(1, picked)
        act = torch.relu(pre)
        mass_top = act.gather(1, top).sum(1)
        mass_picked = act.gather(1, picked).sum(1)
        captured = (mass_picked / mass_top.clamp_min(1e-12)).mean().item()
    finally:
        layer.train(was)
    return {"overlap": hit.float().mean().item(), "chance": layer.k / layer.n_out, "activation_captured": captured}


def overlap_vs_pool(model: nn.Module, x: torch.Tensor, pool_dims: Sequence[int] = (2, 4, 8, 20, 40)) -> list[dict]:
    """For the model's trained hidden weights, re-hash with other pooling sizes and measure the overlap of
    the LSH pick with the exact top-k, and what one query's hashing costs as a fraction of the dense
    layer's forward multiplications (``(p + p*K*L) / (n_in * n_out)``)."""
    layer = sampled_layer(model)
    if layer is None or layer.selector != "lsh":
        raise ValueError("overlap_vs_pool needs a model whose hidden layer uses selector='lsh'")
    rows = []
    for p in pool_dims:
        if not 1 <= p <= layer.n_in:
            continue
        tmp = SampledHidden(layer.n_in, layer.n_out, selector="lsh", active_fraction=layer.active_fraction,
                            K=layer.K, L=layer.L, pool_dim=p, seed=layer.seed).to(layer.weight.device)
        with torch.no_grad():
            tmp.weight.copy_(layer.weight)
            tmp.bias.copy_(layer.bias)
        ov = overlap_with_topk(tmp, x)
        rows.append({"pool_dim": p, **ov, "hash_cost": (p + p * layer.K * layer.L) / (layer.n_in * layer.n_out)})
    return rows


@torch.no_grad()
def union_fractions(model: nn.Module, x: torch.Tensor,
                    batch_sizes: Sequence[int] = (1, 8, 32, 128)) -> dict[int, float]:
    """Mean fraction of the hidden units in the union of a batch's active sets, per batch size."""
    layer = sampled_layer(model)
    if layer is None:
        raise ValueError("union_fractions needs a model with a sampled hidden layer")
    was = layer.training
    layer.eval()
    try:
        x = x.to(layer.weight.device)
        idx = layer.select(x)
        out = {}
        for b in batch_sizes:
            sizes = [len(torch.unique(idx[i: i + b])) for i in range(0, len(idx) - b + 1, b)]
            out[int(b)] = float(np.mean(sizes)) / layer.n_out
    finally:
        layer.train(was)
    return out


def step_timings(*, width: int = 1000, n_in: int = 40, batch_size: int = 64, active_fraction: float = 0.05,
                 device: str = "cpu", repeats: int = 15, seed: int | None = None, K: int = DEFAULTS["K"],
                 L: int = DEFAULTS["L"], pool_dim: int = DEFAULTS["pool_dim"]) -> dict[str, Timing]:
    """Wall time of one training step (forward, backward, Adam step) of ``n_in -> width -> 10``:
    the dense layer vs LSH per-example vs LSH batch union, same random batch. Device synchronized."""
    dev = pick_device(device)
    seed = get_seed() if seed is None else seed
    g = torch_generator(seed, stream=93)
    x = torch.randn(batch_size, n_in, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    out = {}
    for name, sel, mode in (("dense", "dense", "per_example"), ("lsh per-example", "lsh", "per_example"),
                            ("lsh batch union", "lsh", "union")):
        model = hashed_mlp(n_in, width, 10, selector=sel, active_fraction=active_fraction, mode=mode, K=K, L=L,
                           pool_dim=min(pool_dim, n_in), seed=seed).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = time_it(step, device=dev, warmup=3, repeats=repeats)
    return out


# --- figures -------------------------------------------------------------------------------------
COLORS = {"lsh": "#1f77b4", "random": "#d62728", "topk": "#2ca02c", "dense": "#555555", "dropout": "#9467bd"}


def plot_collisions(angles: np.ndarray, measured: np.ndarray, K: int = 6):
    """Measured per-bit collision rate vs the theory 1 - theta/pi, and the whole-code rate (·)^K."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    deg = np.degrees(angles)
    th = np.linspace(0, np.pi, 200)
    ax[0].plot(np.degrees(th), 1 - th / np.pi, color="#999", label="theory 1 - θ/π")
    ax[0].plot(deg, measured, "o", color=COLORS["lsh"], label="measured")
    ax[0].set(xlabel="angle between the vectors (degrees)", ylabel="P(one bit agrees)", title="one SimHash bit")
    ax[1].plot(np.degrees(th), (1 - th / np.pi) ** K, color="#999", label=f"theory (1 - θ/π)^{K}")
    ax[1].plot(deg, measured**K, "o", color=COLORS["lsh"], label=f"measured^{K}")
    ax[1].set(xlabel="angle between the vectors (degrees)", ylabel="P(same bucket)", title=f"one table of K={K} bits")
    for a in ax:
        a.legend(frameon=False)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_sweep(rows: Sequence[RunResult]):
    """Test accuracy vs active fraction per method (dense as a line, one-fraction baselines as markers), and
    the hidden layer's multiplications (hashing counted) vs fraction."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    dense = [r for r in rows if r.method == "dense"]
    for m in dict.fromkeys(r.method for r in rows if r.method != "dense"):
        rs = sorted((r for r in rows if r.method == m), key=lambda r: r.active_fraction)
        fr = [100 * r.active_fraction for r in rs]
        style = "o-" if len(rs) > 1 else "*"
        ms = 6 if len(rs) > 1 else 13
        ax[0].plot(fr, [r.test_acc for r in rs], style, ms=ms, color=COLORS.get(m), label=m)
        note = {"lsh": " (hashing counted)", "topk": " (selection counted)"}.get(m, "")
        ax[1].plot(fr, [100 * r.mults["total"] for r in rs], style, ms=ms, color=COLORS.get(m), label=m + note)
        if m == "lsh":
            ax[1].plot(fr, [100 * r.mults["layer"] for r in rs], "s:", ms=4, color=COLORS[m], alpha=0.6,
                       label="lsh (layer only, = random)")
    if dense:
        ax[0].axhline(dense[0].test_acc, color=COLORS["dense"], ls="--", label="dense")
        ax[1].axhline(100, color=COLORS["dense"], ls="--", label="dense (and dropout)")
    ax[0].axhline(0.1, color="#bbb", ls=":", label="chance")
    ax[0].set(xscale="log", xlabel="active hidden units (%)", ylabel="test accuracy", ylim=(0, None),
              title="accuracy vs active fraction")
    ax[1].set(xscale="log", yscale="log", ylim=(0.5, 150), xlabel="active hidden units (%)",
              ylabel="% of dense multiplications",
              title="hidden-layer multiplications, training")
    for a in ax:
        a.xaxis.set_major_locator(FixedLocator([2, 5, 10, 25]))
        a.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        a.xaxis.set_minor_locator(NullLocator())
        a.xaxis.set_minor_formatter(NullFormatter())
        a.grid(alpha=0.3)
    ax[1].yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 25, 50, 100]))
    ax[1].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax[1].yaxis.set_minor_formatter(NullFormatter())
    ax[0].legend(frameon=False, fontsize=8, loc="lower right", ncol=2)
    ax[1].legend(frameon=False, fontsize=7.5, loc="lower right")
    fig.tight_layout()
    return fig


# --- claims ---------------------------------------------------------------------------------------
def claims_table(rows: Sequence[RunResult], overlap: dict[str, float], timings: dict[str, Timing],
                 fraction: float = 0.05) -> Claims:
    """The lesson's claims, each measured from this run's sweep, overlap and timings."""
    c = Claims("09 randomized hashing")
    src = "seed 003 (Spring & Shrivastava)"
    dense = next(r for r in rows if r.method == "dense")
    lsh = min((r for r in rows if r.method == "lsh"), key=lambda r: abs(r.active_fraction - fraction))
    rnd = [r for r in rows if r.method == "random" and r.active_fraction == lsh.active_fraction]
    m = lsh.mults
    c.add("LSH needs ~5% of the multiplications (criterion here: ≤ 10% with hashing and rebuilds counted)", src,
          f"at {lsh.active_fraction:.0%} active: layer {m['layer']:.1%} + hashing {m['selection']:.1%} + rebuilds "
          f"{m['rebuild']:.1%} = {m['total']:.1%} of dense", m["total"] <= 0.10)
    gap = dense.test_acc - lsh.test_acc
    c.add("…without any loss in accuracy (criterion: within 1 point of dense)", src,
          f"test accuracy LSH {lsh.test_acc:.3f} vs dense {dense.test_acc:.3f} "
          f"({abs(100 * gap):.1f} points {'lost' if gap > 0 else 'gained'})",
          gap <= 0.01)
    if rnd:
        c.add("LSH picks better units than a random subset of the same size", "the lesson",
              f"test accuracy LSH {lsh.test_acc:.3f} vs random {rnd[0].test_acc:.3f}",
              lsh.test_acc > rnd[0].test_acc)
    c.add("Hashing finds the units with the highest activations (criterion: overlap ≥ 2 × chance)", src,
          f"{overlap['overlap']:.1%} of the picked units are in the exact top-k (chance {overlap['chance']:.1%})",
          overlap["overlap"] >= 2 * overlap["chance"])
    td, tl = timings["dense"].median, timings["lsh per-example"].median
    c.add("Fewer multiplications make training faster (wall time per step)", "implied by seed 003",
          f"LSH per-example step {1e3 * tl:.2f} ms vs dense {1e3 * td:.2f} ms ({tl / td:.1f}× dense)", tl < td)
    c.add("Sparse updates suit asynchronous (HOGWILD) training with near-linear speedup", src,
          "not measured in this lesson (one process): see lesson 10", None)
    return c


# --- panel -----------------------------------------------------------------------------------------
def make_panel():
    """The live panel: method, active fraction, epochs, width (the size knob for a GPU)."""
    import ipywidgets as w

    from ..panel import LivePanel

    knobs = {
        "method": w.Dropdown(options=list(SELECTORS), value="lsh", description="method"),
        "active_fraction": w.SelectionSlider(options=[0.02, 0.05, 0.1, 0.25, 0.5], value=0.05,
                                             description="active frac."),
        "epochs": w.IntSlider(value=4, min=1, max=60, description="epochs"),
        "width": w.Dropdown(options=[250, 1000, 4000], value=1000, description="width"),
    }
    return LivePanel(hashing_experiment, knobs, title="Which hidden units to compute?")


# --- exercises -------------------------------------------------------------------------------------
def check_bit_collision(answer: float) -> bool:
    """Probability that one SimHash bit agrees for two vectors at 60 degrees."""
    return check(answer, 1 - 60 / 180, rel_tol=0.01, praise="A random hyperplane separates them with probability "
                 "θ/π = 1/3, so one bit agrees with probability 2/3.",
                 hint="A random hyperplane through the origin separates two vectors at angle θ with probability θ/π.")


def check_bucket_collision(answer: float) -> bool:
    """Probability that two vectors at 60 degrees share a bucket of one K=6 table."""
    return check(answer, (2 / 3) ** 6, rel_tol=0.01, praise="All K=6 independent bits must agree: (2/3)^6 ≈ 0.088.",
                 hint="All K bits must agree, and the bits are independent: raise the one-bit probability to K.")


def check_hash_mults(answer: int) -> bool:
    """Multiplications to hash one pooled input of 8 dims into L=50 tables of K=6 bits."""
    return check(answer, 8 * 6 * 50, praise="8 × 6 × 50 = 2,400: one 8-dim dot product per bit per table.",
                 hint="Each of the K × L bits is the sign of a dot product of length pool_dim.")


def check_union_fraction(answer: float) -> bool:
    """Expected fraction of units in the union of 64 independent random 5% subsets: 1 - 0.95**64."""
    return check(answer, 1 - 0.95**64, rel_tol=0.02, praise="1 - 0.95^64 ≈ 0.96: a batch union of random sets is "
                 "nearly the whole layer, so the batch computes almost everything.",
                 hint="A unit is missed by one example's set with probability 0.95; by all 64 with 0.95^64.")
