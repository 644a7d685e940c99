"""Lesson 09 · the PyTorch sampled hidden layer and its multiplication counts.

:class:`SampledHidden` computes, for each example, only the units its selector picks ("lsh": SimHash tables of core
:mod:`lessons_lib.lsh` over the mean-pooled weight rows; "random"; "topk", an oracle; "dense"); inactive units output
0 and get no gradient. :class:`Counters` counts every multiplication, hashing and table rebuilds included.

Units: "multiplications" are scalar multiplications (a dot product of length d costs d).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..lsh import LshIndex, RebuildSchedule, check_active_fraction, check_k_l, topk_by_counts, units_kept
from ..seeds import check_seed, get_seed
from ..stats import Interval, mean_interval
from ..validate import check_choice, check_int

SELECTORS = ("lsh", "random", "topk", "dense", "dropout")
MAX_UNITS = 1_000_000  # layer sizes: a million units of 40 inputs is ~160 MB of weights


def _size(value: object, name: str, high: int = MAX_UNITS, fix: str = "") -> int:
    """A whole number in [1, ``high``] (numpy integers accepted; bools, fractions, NaN refused): BadArgument."""
    return check_int(value, name, low=1, high=high, fix=fix)


def _seed(seed: object) -> int | None:
    return None if seed is None else check_seed(seed)
MODES = ("per_example", "union")


# --- multiplication counts -----------------------------------------------------------------------------
@dataclass
class MultFractions:
    """A layer's multiplications as fractions of the dense layer's: the layer itself, the selection (hashing
    queries, or all pre-activations for the top-k oracle), the table rebuilds, and their total."""

    layer: float
    selection: float
    rebuild: float

    @property
    def total(self) -> float:
        return self.layer + self.selection + self.rebuild

    @property
    def hashing(self) -> float:
        """Selection plus rebuilds: everything spent on choosing the units."""
        return self.selection + self.rebuild


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

    def fractions(self) -> MultFractions:
        """Each count as a fraction of the dense layer's multiplications."""
        d = max(self.dense, 1)
        return MultFractions(self.layer / d, self.selection / d, self.rebuild / d)


@dataclass
class Counters:
    """A layer's multiplication counters in training and in evaluation."""

    train: MultCounter = field(default_factory=MultCounter)
    eval: MultCounter = field(default_factory=MultCounter)

    def mode(self, training: bool) -> MultCounter:
        return self.train if training else self.eval


# --- the PyTorch sampled layer (fast: the CSR tables of core lsh.py) ------------------------------------
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
        selector = check_choice(selector, "selector", ("lsh", "random", "topk", "dense"))
        mode = check_choice(mode, "mode", MODES)
        n_in, n_out = _size(n_in, "n_in", fix="input features, e.g. 40"), _size(n_out, "n_out", fix="e.g. 1000")
        if selector == "lsh":
            check_k_l(K, L)
            pool_dim = _size(pool_dim, "pool_dim", n_in, f"numbers each input is pooled to, 1 to n_in={n_in}")
        self.n_in, self.n_out, self.selector, self.mode = n_in, n_out, selector, mode
        self.active_fraction = 1.0 if selector == "dense" else check_active_fraction(active_fraction)
        self.k = units_kept(n_out, self.active_fraction)
        lin = nn.Linear(n_in, n_out)  # PyTorch's default initialisation
        self.weight, self.bias = nn.Parameter(lin.weight.detach().clone()), nn.Parameter(lin.bias.detach().clone())
        self.seed = get_seed() if seed is None else check_seed(seed)
        self.schedule = schedule or RebuildSchedule()
        self.K, self.L = int(K), int(L)
        self.index = LshIndex(n_in, n_out, K=K, L=L, pool_dim=pool_dim, schedule=self.schedule, seed=self.seed) \
            if selector == "lsh" else None
        self.counters = Counters()
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
        """Hash every (pooled) weight row into the tables; counted in ``counters.train.rebuild`` (or ``.eval``)."""
        c = self.counters.mode(self.training)
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
        counter = self.counters.mode(self.training)
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
    selector = check_choice(selector, "selector", SELECTORS)
    n_in, n_out = _size(n_in, "n_in"), _size(n_out, "n_out")
    width = _size(width, "width", fix="hidden units, e.g. 1000")
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


@dataclass(frozen=True)
class Defaults:
    """The lesson's default run: MNIST-1D, 40 -> 1000 (sampled) -> 10, Adam, K = 6 bits, L = 50 tables. Every
    comparison is repeated over ``runs`` seeds (the from-scratch numpy run, slower, over ``scratch_runs``)."""

    dataset: str = "mnist1d"
    width: int = 1000
    epochs: int = 3
    lr: float = 5e-3
    batch_size: int = 128
    K: int = 6
    L: int = 50
    pool_dim: int = 8
    runs: int = 5
    scratch_runs: int = 3
    fractions: tuple[float, ...] = (0.02, 0.05, 0.25)


DEFAULTS = Defaults()


def _mean_half(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width (0 for a single run)."""
    if len(values) < 2:
        return float(values[0]), 0.0
    iv = mean_interval(values)
    return iv.mean, iv.half_width


def _points(iv: Interval, what: str = "paired runs") -> str:
    """A difference of two fractions in points: ``+17.4 ± 1.2 points (95% CI, 5 paired runs)``."""
    return f"{100 * iv.mean:+.1f} ± {100 * iv.half_width:.1f} points ({iv.level:.0%} CI, {iv.n} {what})"
