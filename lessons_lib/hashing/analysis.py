"""Lesson 09 · what the trained sampled layers do: overlap with the exact top-k, the batch union's size, and the
wall time of one training step against the dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..device import pick_device
from ..seeds import check_seed, get_seed, torch_generator
from ..stats import Spread, median_range
from ..timing import Timing, time_interleaved
from .layer import DEFAULTS, SampledHidden, _mean_half, _size, hashed_mlp, sampled_layer


@dataclass
class Overlap:
    """How well a layer's pick matches the exact top-k pre-activations, averaged over examples:
    ``overlap`` = |picked ∩ top-k| / k, ``chance`` = k / n (a random pick's expectation),
    ``activation_captured`` = the picked units' share of the top-k's total positive activation."""

    overlap: float
    chance: float
    activation_captured: float


@torch.no_grad()
def overlap_with_topk(model: nn.Module, x: torch.Tensor) -> Overlap:
    """How many of the units the model's sampled layer picks for ``x`` are among the exact top-k pre-activations."""
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
    return Overlap(hit.float().mean().item(), layer.k / layer.n_out, captured)


@dataclass
class PoolOverlap:
    """:class:`Overlap` of the LSH pick when inputs and weights are pooled to ``pool_dim`` numbers, and what one
    query's hashing costs as a fraction of the dense layer's forward multiplications."""

    pool_dim: int
    overlap: Overlap
    hash_cost: float


def overlap_vs_pool(model: nn.Module, x: torch.Tensor,
                    pool_dims: Sequence[int] = (2, 4, 8, 20, 40)) -> list[PoolOverlap]:
    """Re-hash the model's trained hidden weights with other pooling sizes; the hashing cost per query is
    ``(p + p*K*L) / (n_in * n_out)``."""
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
        hash_cost = (p + p * layer.K * layer.L) / (layer.n_in * layer.n_out)
        rows.append(PoolOverlap(p, overlap_with_topk(tmp, x), hash_cost))
    return rows


def pool_table(models: Sequence[nn.Module], x: torch.Tensor, pool_dims: Sequence[int] = (2, 4, 8, 20, 40)) -> str:
    """:func:`overlap_vs_pool` of every model (one per seed): overlap with the exact top-k, mean ± 95% half-width
    over the models, and the hashing cost per query."""
    per_model = [overlap_vs_pool(m, x, pool_dims) for m in models]
    lines = [f"pool dims   overlap with top-k ({len(models)} models)   hashing cost per query (share of the dense "
             "layer's forward)"]
    for i, row in enumerate(per_model[0]):
        m, h = _mean_half([pm[i].overlap.overlap for pm in per_model])
        lines.append(f"{row.pool_dim:9d}   {m:12.1%} ± {h:5.1%}              {row.hash_cost:7.1%}")
    return "\n".join(lines)


@dataclass
class UnionSizes:
    """Mean size of the union of a batch's active sets, as a fraction of the layer's units, per batch size;
    ``kept`` = k / n, the fraction each example asks for."""

    kept: float
    batch_sizes: tuple[int, ...]
    fractions: tuple[float, ...]

    def at(self, batch_size: int) -> float:
        return self.fractions[self.batch_sizes.index(batch_size)]


@torch.no_grad()
def union_fractions(model: nn.Module, x: torch.Tensor, batch_sizes: Sequence[int] = (1, 8, 32, 128)) -> UnionSizes:
    """Mean fraction of the hidden units in the union of a batch's active sets, per batch size."""
    layer = sampled_layer(model)
    if layer is None:
        raise ValueError("union_fractions needs a model with a sampled hidden layer")
    was = layer.training
    layer.eval()
    try:
        idx = layer.select(x.to(layer.weight.device))
        fractions = tuple(float(np.mean([len(torch.unique(idx[i: i + b])) for i in range(0, len(idx) - b + 1, b)]))
                          / layer.n_out for b in batch_sizes)
    finally:
        layer.train(was)
    return UnionSizes(layer.k / layer.n_out, tuple(int(b) for b in batch_sizes), fractions)


def union_table(unions: dict[str, Sequence[UnionSizes]]) -> str:
    """Batch size against the union's share of the units for each picker (mean ± 95% half-width over its
    models, one per seed)."""
    sizes = next(iter(unions.values()))[0].batch_sizes
    n = len(next(iter(unions.values())))
    lines = ["batch size" + "".join(f"   union of {name} sets ({n} models)" for name in unions)]
    for b in sizes:
        cells = [_mean_half([u.at(b) for u in us]) for us in unions.values()]
        lines.append((f"{b:10d}" + "".join(f"   {m:>17.1%} ± {h:4.1%}      " for m, h in cells)).rstrip())
    return "\n".join(lines)


@dataclass
class StepTimings:
    """Wall time of one training step: the dense layer, LSH per example, LSH on the batch union, timed round-robin
    (round i of each was measured back to back, so ratios are taken round by round)."""

    dense: Timing
    per_example: Timing
    union: Timing

    def rows(self) -> list[tuple[str, Timing]]:
        return [("dense", self.dense), ("lsh per-example", self.per_example), ("lsh batch union", self.union)]

    def ratio(self, which: str = "per_example") -> Spread:
        """Step time of ``which`` ("per_example" or "union") over the dense step, per round: median and range."""
        t = getattr(self, which)
        return median_range([a / b for a, b in zip(t.times, self.dense.times)])


def step_timings(*, width: int = 1000, n_in: int = 40, batch_size: int = 64, active_fraction: float = 0.05,
                 device: str = "cpu", rounds: int = 15, seed: int | None = None, K: int = DEFAULTS.K,
                 L: int = DEFAULTS.L, pool_dim: int = DEFAULTS.pool_dim) -> StepTimings:
    """Wall time of one training step (forward, backward, Adam step) of ``n_in -> width -> 10``:
    the dense layer vs LSH per-example vs LSH batch union, same random batch, interleaved over ``rounds``
    (:func:`lessons_lib.timing.time_interleaved`; device synchronized)."""
    dev = pick_device(device)
    width, n_in = _size(width, "width"), _size(n_in, "n_in")
    batch_size, rounds = _size(batch_size, "batch_size", 10**6), _size(rounds, "rounds", 10_000, "e.g. 15")
    seed = get_seed() if seed is None else check_seed(seed)
    g = torch_generator(seed, stream=93)
    x = torch.randn(batch_size, n_in, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    steps = {}
    for name, sel, mode in (("dense", "dense", "per_example"), ("per_example", "lsh", "per_example"),
                            ("union", "lsh", "union")):
        model = hashed_mlp(n_in, width, 10, selector=sel, active_fraction=active_fraction, mode=mode, K=K, L=L,
                           pool_dim=min(pool_dim, n_in), seed=seed).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
    t = time_interleaved(steps, device=dev, rounds=rounds, warmup=3)
    return StepTimings(t["dense"], t["per_example"], t["union"])
