"""Locality-sensitive hashing of weight vectors (SimHash tables), shared by lessons 09 and 10.

:class:`LshIndex` hashes the mean-pooled rows of a weight matrix (row j = unit j's input weights) into L
tables of K-bit signed-random-projection codes (:class:`SimHash`), stored in one CSR structure
(:class:`BucketTables`); queried with pooled inputs, it counts each unit's collisions, and
:func:`topk_by_counts` keeps the units that collide most. Tables are rebuilt on a :class:`RebuildSchedule`.

``active_fraction`` is the fraction of units KEPT (computed), in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .device import pick_device
from .seeds import get_seed, torch_generator
from .validate import check_float, check_int

# how many code bits each bucket-index dtype can hold (the sign bit stays clear)
INDEX_BITS = {torch.int16: 15, torch.int32: 31, torch.int64: 63}
MAX_TABLE_ENTRIES = 1 << 26  # L * 2**K bucket offsets (8 bytes each): 512 MB at most


# --- validation ------------------------------------------------------------------------------------
def check_active_fraction(active_fraction: float) -> float:
    """Return ``active_fraction`` as a float; ValueError unless it is in (0, 1]."""
    return check_float(active_fraction, "active_fraction", low=0.0, high=1.0, low_open=True,
                       fix="it is the fraction of units KEPT (e.g. 0.05 keeps 5% of the units)")


def check_k_l(K: int, L: int, index_dtype: torch.dtype = torch.int32) -> None:
    """ValueError for K or L <= 0, a K whose codes do not fit ``index_dtype``, or tables too large."""
    for name, v in (("K (bits per table)", K), ("L (number of tables)", L)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r} (the released code used K=6, L=100)")
    if index_dtype not in INDEX_BITS:
        raise ValueError(f"index_dtype must be one of {[str(d) for d in INDEX_BITS]}, got {index_dtype}")
    if K > INDEX_BITS[index_dtype]:
        raise ValueError(f"K={K} bits do not fit the bucket index type {index_dtype} (at most "
                         f"{INDEX_BITS[index_dtype]} bits): use a smaller K or a wider index_dtype")
    if L * 2**K > MAX_TABLE_ENTRIES:
        raise ValueError(f"L * 2**K = {L} * 2**{K} bucket offsets is too many (limit {MAX_TABLE_ENTRIES:,}): "
                         "use a smaller K (each extra bit doubles the buckets and halves their occupancy)")


def units_kept(n_units: int, active_fraction: float) -> int:
    """How many of ``n_units`` a fraction keeps: ``max(1, round(f * n))``."""
    n_units = check_int(n_units, "n_units", low=1, fix="the number of units in the layer")
    return max(1, min(n_units, int(round(check_active_fraction(active_fraction) * n_units))))


# --- pooling and SimHash ---------------------------------------------------------------------------
def pooling_matrix(n_in: int, pool_dim: int) -> torch.Tensor:
    """(n_in, pool_dim) matrix averaging ``pool_dim`` consecutive, nearly equal blocks of the input
    (the released code's ``Pooling.compress``); ``x @ P`` is the pooled vector."""
    n_in = check_int(n_in, "n_in", low=1, fix="the input width")
    pool_dim = check_int(pool_dim, "pool_dim", low=1, high=n_in, fix=f"at most n_in={n_in} pooled coordinates")
    p = torch.zeros(n_in, pool_dim)
    for j, block in enumerate(torch.tensor_split(torch.arange(n_in), pool_dim)):
        p[block, j] = 1.0 / len(block)
    return p


class SimHash:
    """Signed random projections: L tables of K bits each; bit = [r . x >= 0] for a Gaussian r.

    ``codes(x)`` maps (n, dim) to (n, L) bucket indices in [0, 2**K) of dtype ``index_dtype``. Two
    vectors at angle theta agree on one bit with probability 1 - theta/pi, so on a whole K-bit code
    with probability (1 - theta/pi)**K. Hashing one vector costs ``dim * K * L`` multiplications.
    """

    def __init__(self, dim: int, K: int = 6, L: int = 100, *, seed: int | None = None, stream: int = 90,
                 device: torch.device | str = "cpu", index_dtype: torch.dtype = torch.int32):
        check_k_l(K, L, index_dtype)
        dim = check_int(dim, "dim", low=1, fix="the width of the vectors to hash")
        device = pick_device(device)
        self.dim, self.K, self.L, self.index_dtype = dim, int(K), int(L), index_dtype
        g = torch_generator(seed, stream=stream)
        self.planes = torch.randn(self.dim, self.L * self.K, generator=g).to(device)
        self.powers = (2 ** torch.arange(self.K, dtype=torch.int64)).to(device)

    @property
    def mults_per_vector(self) -> int:
        return self.dim * self.K * self.L

    def to(self, device: torch.device | str) -> SimHash:
        device = pick_device(device)
        self.planes, self.powers = self.planes.to(device), self.powers.to(device)
        return self

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, L, K) bool: the sign bits."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"SimHash expects (n, {self.dim}) inputs, got {tuple(x.shape)}")
        return (x.to(self.planes.dtype) @ self.planes >= 0).view(len(x), self.L, self.K)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(n, L) bucket indices."""
        return (self.bits(x).to(torch.int64) * self.powers).sum(-1).to(self.index_dtype)


# --- bucket tables (CSR) and queries ---------------------------------------------------------------
class BucketTables:
    """L hash tables stored as one CSR structure, built with argsort + bincount.

    Bucket ``c`` of table ``t`` has key ``t * 2**K + c``; its items are
    ``items[offsets[key] : offsets[key + 1]]``. Built from item codes of shape (n_items, L).
    """

    def __init__(self, K: int, L: int):
        check_k_l(K, L, torch.int32)
        self.K, self.L = int(K), int(L)
        self.n_items = 0
        self.items = torch.empty(0, dtype=torch.int32)
        self.offsets = torch.zeros(L * 2**K + 1, dtype=torch.int32)
        self.table_base = torch.arange(L, dtype=torch.int32) * 2**K

    def build(self, codes: torch.Tensor) -> BucketTables:
        """(Re)build from ``codes`` (n_items, L) in [0, 2**K)."""
        if codes.dim() != 2 or codes.shape[1] != self.L:
            raise ValueError(f"codes must be (n_items, L={self.L}), got {tuple(codes.shape)}")
        n_items = int(codes.shape[0])
        if n_items * self.L >= 2**31:
            raise ValueError(f"{n_items} items x {self.L} tables exceed the int32 positions of the tables")
        dev = codes.device
        keys = (codes.to(torch.int64) + self.table_base.to(dev, torch.int64)).reshape(-1)  # position p = i * L + t
        order = torch.argsort(keys, stable=True)
        counts = torch.bincount(keys, minlength=self.L * 2**self.K)
        # int32 from here on: half the memory traffic of int64 in every query
        self.items = (order // self.L).to(torch.int32)
        self.offsets = torch.zeros(self.L * 2**self.K + 1, dtype=torch.int32, device=dev)
        self.offsets[1:] = torch.cumsum(counts, 0)
        self.table_base = self.table_base.to(dev, torch.int32)
        self.n_items = n_items
        return self

    def bucket(self, table: int, code: int) -> torch.Tensor:
        """Items in bucket ``code`` of table ``table`` (ascending item index)."""
        key = table * 2**self.K + int(code)
        return self.items[self.offsets[key]: self.offsets[key + 1]]

    def query_counts(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n_items) int64: for each query, in how many of the L tables each item shares its bucket."""
        if codes.dim() != 2 or codes.shape[1] != self.L:
            raise ValueError(f"query codes must be (B, L={self.L}), got {tuple(codes.shape)}")
        B, dev, n = codes.shape[0], codes.device, self.n_items
        if B * n >= 2**31:
            raise ValueError(f"query batch too large: {B} queries x {n} items must stay below 2**31; split the batch")
        keys = (codes.to(torch.int32) + self.table_base).reshape(-1)  # (B * L,)
        starts = self.offsets[keys]
        lengths = self.offsets[keys + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return torch.zeros(B, n, dtype=torch.int64, device=dev)
        # position of every retrieved member in `items`: its bucket's start + its rank inside the bucket
        first = torch.cumsum(lengths, 0, dtype=torch.int32) - lengths
        shift = torch.repeat_interleave(starts - first, lengths, output_size=total)
        members = self.items[torch.arange(total, dtype=torch.int32, device=dev) + shift]
        row_start = torch.arange(0, B * n, n, dtype=torch.int32, device=dev)  # example b's counts start at b * n
        flat = torch.repeat_interleave(row_start, lengths.view(B, self.L).sum(1), output_size=total) + members
        counts = torch.bincount(flat, minlength=B * n)
        return counts.view(B, self.n_items)

    def members(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(query, item)``: int64 index pairs, one per item in each of a query's L buckets, grouped by query
        (ascending), then by table; an item sharing m of the query's buckets appears m times. The work is
        proportional to the number of pairs (no (B, n_items) array): the sparse counterpart of :meth:`query_counts`."""
        if codes.dim() != 2 or codes.shape[1] != self.L:
            raise ValueError(f"query codes must be (B, L={self.L}), got {tuple(codes.shape)}")
        B, dev = codes.shape[0], codes.device
        keys = (codes.to(torch.int64) + self.table_base.to(dev, torch.int64)).reshape(-1)  # (B * L,)
        starts = self.offsets[keys].to(torch.int64)
        lengths = self.offsets[keys + 1].to(torch.int64) - starts
        total = int(lengths.sum())
        shift = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths, output_size=total)
        items = self.items[torch.arange(total, device=dev) + shift].to(torch.int64)
        query = torch.repeat_interleave(torch.arange(B, device=dev), lengths.view(B, self.L).sum(1),
                                        output_size=total)
        return query, items


def collision_counts_bruteforce(query_codes: torch.Tensor, item_codes: torch.Tensor) -> torch.Tensor:
    """Reference for :meth:`BucketTables.query_counts`: compare all codes, (B, L) x (n, L) -> (B, n)."""
    return (query_codes[:, None, :].to(torch.int64) == item_codes[None, :, :].to(torch.int64)).sum(-1)


def topk_by_counts(counts: torch.Tensor, k: int, *, tie_break: str = "random",
                   generator: torch.Generator | None = None, sorted: bool = True) -> torch.Tensor:
    """(B, k) indices of the k items with the most collisions per row, most first (any order if not ``sorted``).

    Ties are broken at random (``tie_break="random"``, with ``generator``) or by the lower index
    (``"index"``). Items with zero collisions fill up the set when fewer than k were found, so the set
    size (and the work) is exactly k.
    """
    if counts.dim() != 2:
        raise ValueError(f"counts must be (B, n_items), got {tuple(counts.shape)}")
    n = counts.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if tie_break == "random":
        jitter = torch.rand(counts.shape, generator=generator, device=counts.device) * 0.5
    elif tie_break == "index":
        jitter = -torch.arange(n, device=counts.device, dtype=torch.float32) / (2.0 * n)
    else:
        raise ValueError(f"tie_break must be 'random' or 'index', got {tie_break!r}")
    score = counts.to(torch.float32) + jitter  # exact: counts <= L << 2**24
    return torch.topk(score, k, dim=1, sorted=sorted).indices




# --- rebuild schedule and counters -----------------------------------------------------------------
@dataclass
class RebuildSchedule:
    """Rebuild the tables at step 0, then after ``first`` steps, with gaps growing by ``growth`` each time
    (SLIDE 2020: initially every 50 gradient updates, with exponentially decaying frequency)."""

    first: int = 10
    growth: float = 1.3

    def __post_init__(self) -> None:
        self.first = check_int(self.first, "first", low=1, fix="steps before the first rebuild, e.g. 50")
        self.growth = check_float(self.growth, "growth", low=1.0, fix="1 rebuilds at a fixed gap, 1.3 spaces them out")

    def steps(self, until: int) -> list[int]:
        """Training steps (0-based) at which the tables are rebuilt, below ``until``."""
        out, s, gap = [], 0, float(self.first)
        while s < until:
            out.append(s)
            s += max(1, int(round(gap)))
            gap *= self.growth
        return out



class LshIndex:
    """SimHash tables over the mean-pooled rows of a weight matrix (row j = unit j's input weights), rebuilt
    on a :class:`RebuildSchedule`; queried with the pooled inputs, it counts each unit's collisions.

    Shared by :class:`SampledHidden` (lesson 09) and the sparse networks of lesson 10. The weight is passed
    in on every call, so the index never holds a stale copy of the parameters."""

    def __init__(self, n_in: int, n_units: int, *, K: int = 6, L: int = 50, pool_dim: int = 8,
                 schedule: RebuildSchedule | None = None, seed: int | None = None):
        check_k_l(K, L)
        self.n_units = check_int(n_units, "n_units", low=1, fix="the number of units the index covers")
        self.pool = pooling_matrix(n_in, pool_dim)
        self.hash = SimHash(pool_dim, K, L, seed=get_seed() if seed is None else int(seed))
        self.tables = BucketTables(K, L)
        self.schedule = schedule or RebuildSchedule()
        self._next_rebuild = 0
        self._rebuild_gap = float(self.schedule.first)

    @property
    def mults_per_query(self) -> int:
        """Multiplications to hash one input: pooling plus the projections."""
        return self.hash.dim + self.hash.mults_per_vector

    def _to(self, device: torch.device) -> None:
        if self.pool.device != device:
            self.pool = self.pool.to(device)
        self.hash.to(device)

    @torch.no_grad()
    def rebuild(self, weight: torch.Tensor) -> int:
        """Hash every pooled row of ``weight`` (n_units, n_in) into the tables; returns the multiplications."""
        self._to(weight.device)
        self.tables.build(self.hash.codes(weight @ self.pool))
        return self.n_units * self.mults_per_query

    def stale(self, weight: torch.Tensor) -> bool:
        """True if the tables are empty or live on another device than ``weight``."""
        return self.tables.n_items == 0 or self.tables.items.device != weight.device

    def due(self, weight: torch.Tensor, step: int | None) -> bool:
        """Should the tables be rebuilt now? ``step`` is the training step (None in evaluation: rebuild only
        when stale). Advances the schedule when it answers True for a training step."""
        if step is None:
            return self.stale(weight)
        if step >= self._next_rebuild or self.stale(weight):
            self._next_rebuild = step + max(1, int(round(self._rebuild_gap)))
            self._rebuild_gap *= self.schedule.growth
            return True
        return False

    @torch.no_grad()
    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_units) collision counts of each unit with the inputs ``x`` (B, n_in)."""
        self._to(x.device)
        return self.tables.query_counts(self.hash.codes(x @ self.pool))
