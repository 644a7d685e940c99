"""Lesson 09 from scratch (numpy): SimHash signatures, the bucket lookup that picks a layer's active units, and
a ReLU hidden layer that computes and updates only those units.

The idea (Spring & Shrivastava 2016, seed 003): hash every unit's weight vector into L tables of K-bit SimHash
codes; for an input, look up its own bucket in each table, count in how many tables each unit shares it, and
compute only the k units that collide most. The fast version of the same lookup (CSR tables built with argsort
and bincount, in PyTorch) is :class:`lessons_lib.lsh.BucketTables`; the lesson's sweeps use that one.

Shapes: ``x`` (B, n_in); a layer's weight ``w`` (n_units, n_in), row j = unit j's input weights; hyperplanes
``planes`` (L, K, dim); codes (n, L) integers in [0, 2**K). ``k`` is the number of units KEPT per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..lsh import RebuildSchedule, pooling_matrix
from ..validate import BadArgument, check_int


def simhash(x: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """SimHash codes of the rows of ``x`` (n, dim) with ``planes`` (L, K, dim): (n, L) int64 in [0, 2**K).

    Bit b of table t is 1 when ``planes[t, b] . x >= 0`` (a zero projection gives 1) and is worth ``2**b``:
    bit 0 is the least significant. Costs ``dim * K * L`` multiplications per row.
    """
    x, planes = np.asarray(x, dtype=float), np.asarray(planes, dtype=float)
    if planes.ndim != 3 or not 1 <= planes.shape[1] <= 62:
        raise BadArgument(f"planes of shape {planes.shape}: need (L, K, dim) with 1 <= K <= 62 (a code is an int64)")
    L, K, dim = planes.shape
    if x.ndim != 2 or x.shape[1] != dim:
        raise BadArgument(f"x of shape {x.shape}: simhash needs (n, {dim}) for planes {planes.shape}")
    if not (np.isfinite(x).all() and np.isfinite(planes).all()):
        raise BadArgument("x or planes holds NaN or inf: a sign of NaN is no bit; clean the input first")
    bits = np.einsum("nd,tbd->ntb", x, planes) >= 0  # (n, L, K)
    return bits.astype(np.int64) @ (1 << np.arange(K, dtype=np.int64))


def active_units(unit_codes: np.ndarray, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick each query's k active units from L hash tables.

    ``unit_codes`` (n_units, L) and ``query_codes`` (B, L): codes per table. Returns ``counts`` (B, n_units), in
    how many tables unit j sits in query b's bucket, and ``active`` (B, k), the k units with the most collisions
    (ties: the lower unit index wins), most first. Units with no collision fill up the set, so it always has k.
    """
    unit_codes, query_codes = np.asarray(unit_codes), np.asarray(query_codes)
    if unit_codes.ndim != 2 or unit_codes.dtype.kind not in "iu" or query_codes.dtype.kind not in "iu":
        raise BadArgument(f"codes of dtypes {unit_codes.dtype}, {query_codes.dtype} and unit codes of shape "
                          f"{unit_codes.shape}: need integer codes, units (n_units, L) and queries (B, L)")
    n_units, L = unit_codes.shape
    k = check_int(k, "k", low=1, high=n_units, fix=f"the number of active units, 1 to n_units={n_units}")
    if query_codes.ndim != 2 or query_codes.shape[1] != L:
        raise BadArgument(f"query codes of shape {query_codes.shape}: need (B, {L}), one code per table")
    counts = np.zeros((len(query_codes), n_units), dtype=np.int64)
    for t in range(L):  # table t: the units sorted by their code, and where each code's bucket starts and ends
        order = np.argsort(unit_codes[:, t], kind="stable")
        sorted_codes = unit_codes[order, t]
        start = np.searchsorted(sorted_codes, query_codes[:, t], side="left")
        stop = np.searchsorted(sorted_codes, query_codes[:, t], side="right")
        for b in range(len(query_codes)):
            counts[b, order[start[b]:stop[b]]] += 1
    active = np.argsort(-counts, axis=1, kind="stable")[:, :k]  # stable: equal counts keep index order
    return counts, active


def sampled_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, tuple]:
    """ReLU layer computed on each example's active units only: (B, n_units), zero off the active set.

    ``active`` (B, k) unit indices. Costs ``B * k * n_in`` multiplications (the dense layer: ``B * n_units *
    n_in``). The cache holds the input, the gathered rows, the active set and where the ReLU passed.
    """
    rows = w[active]  # (B, k, n_in): only the active rows are read
    pre = np.einsum("bkd,bd->bk", rows, x) + b[active]
    out = np.zeros((len(x), len(w)), dtype=x.dtype)
    np.put_along_axis(out, active, np.maximum(pre, 0.0), axis=1)
    return out, (x, rows, active, pre > 0, len(w))


def sampled_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dw, db)`` given ``dout`` (B, n_units). Only active rows of ``dw``/``db`` are nonzero:
    an inactive unit gets exactly zero gradient. Costs ``2 * B * k * n_in`` multiplications."""
    x, rows, active, passed, n_units = cache
    dpre = np.take_along_axis(dout, active, axis=1) * passed  # (B, k)
    dx = np.einsum("bk,bkd->bd", dpre, rows)
    dw = np.zeros((n_units, x.shape[1]), dtype=x.dtype)
    np.add.at(dw, active, dpre[:, :, None] * x[:, None, :])  # a unit active for several examples sums them
    db = np.zeros(n_units, dtype=x.dtype)
    np.add.at(db, active, dpre)
    return dx, dw, db


SimHashFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
LookupFn = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class LshPicker:
    """Chooses each example's k active units of a layer with SimHash tables over the units' weight rows.

    Inputs and weight rows are mean-pooled to ``pool_dim`` numbers before hashing (as in the authors' code).
    The units are re-hashed (:meth:`rehash`) on a :class:`~lessons_lib.lsh.RebuildSchedule`, since training
    moves their weights. ``simhash`` and ``lookup`` are the two functions of the lesson (yours, or this
    module's). Counts the multiplications of hashing: ``mults_query`` per example, ``mults_rehash`` per rehash.
    """

    def __init__(self, n_in: int, n_units: int, k: int, *, K: int = 6, L: int = 50, pool_dim: int = 8,
                 rng: np.random.Generator, simhash: SimHashFn = simhash, lookup: LookupFn = active_units,
                 schedule: RebuildSchedule | None = None):
        self.k, self.simhash, self.lookup = k, simhash, lookup
        self.pool = pooling_matrix(n_in, pool_dim).numpy().astype(np.float64)
        self.planes = rng.standard_normal((L, K, pool_dim))
        self.rehash_steps = set((schedule or RebuildSchedule()).steps(10**6))
        self.unit_codes: np.ndarray | None = None
        self.mults_query = pool_dim * K * L + n_in
        self.mults_rehash = n_units * self.mults_query

    def rehash(self, w: np.ndarray) -> None:
        """Hash every unit's pooled weight row (a table rebuild)."""
        self.unit_codes = np.asarray(self.simhash(w @ self.pool, self.planes))

    def __call__(self, x: np.ndarray, w: np.ndarray, step: int | None = None) -> np.ndarray:
        """(B, k) active units for ``x``; re-hashes ``w`` first at the scheduled training ``step``s."""
        if self.unit_codes is None or (step is not None and step in self.rehash_steps):
            self.rehash(w)
        _, active = self.lookup(self.unit_codes, np.asarray(self.simhash(x @ self.pool, self.planes)), self.k)
        return np.asarray(active)


class RandomPicker:
    """The baseline: each example's k active units drawn uniformly at random (no hashing)."""

    def __init__(self, n_units: int, k: int, *, rng: np.random.Generator):
        self.n_units, self.k, self.rng = n_units, k, rng
        self.mults_query = self.mults_rehash = 0

    def __call__(self, x: np.ndarray, w: np.ndarray, step: int | None = None) -> np.ndarray:
        return np.argsort(self.rng.random((len(x), self.n_units)), axis=1)[:, :self.k]
