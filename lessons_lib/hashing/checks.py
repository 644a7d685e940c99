"""Lesson 09's checks: the learner's ``simhash`` and ``active_units`` against independent references (the signs
of projections computed here, SimHash's collision law 1 - θ/π within a binomial bound, brute-force collision
counts that compare codes directly, a sort by (-count, index)), and the answers to the questions, from the run.

Each check returns an :class:`~lessons_lib.exercises.CheckResult`; a wrong function gets a hint naming the
likely mistake (the typical buggy versions are recomputed here and compared).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..exercises import CheckResult, Mistake, check_answer, check_code, diagnose, expect, expect_shape
from .lab import CollisionRates, RunResult, UnionSizes, agreeing_bits, pairs_at_angle

# --- simhash -------------------------------------------------------------------------------------------------
H_REVERSED = ("bits packed in the reverse order: bit b (hyperplane planes[t, b]) is worth 2**b, so bit 0 is the "
              "least significant; you gave it 2**(K-1-b)")
H_STRICT = ("used > 0 where the rule is >= 0: a projection of exactly zero must give bit 1. Zero projections do "
            "happen: a blank input, or ±1 hyperplanes (as in the authors' code) on integer inputs; this check has both")
H_INVERTED = "bits inverted: a bit is 1 when the projection planes[t, b] · x is >= 0, not when it is negative"
H_SHARED = ("all tables share one set of hyperplanes (every table's code is the one planes[0] gives): table t must "
            "use its own K hyperplanes planes[t], otherwise the L tables are L copies of one")
H_SHIFT = ("K bits per table packed with the wrong shift ({how}): each table's code is sum_b bit_b * 2**b with "
           "shifts 0..K-1, starting again in every table, so codes lie in [0, 2**K); yours leave it and the "
           "tables' codes collide")
H_SUMMED = ("summed the bits instead of packing them: the code is the K-bit number sum_b bit_b * 2**b, not the "
            "count of ones (which puts bits 0011 and 0101 in one bucket)")
H_GROUPED = ("bits grouped into tables wrongly: with the projections flattened to (n, L*K), table t's bits are the "
             "K columns t*K ... t*K+K-1 (reshape to (n, L, K)), not every L-th column")


def _projections(x: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(n, L, K) dot products planes[t, b] · x[i], in float64, by an explicit broadcast (not a matmul)."""
    return (x[:, None, None, :].astype(np.float64) * planes[None].astype(np.float64)).sum(-1)


def _pack(bits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (bits.astype(np.int64) * weights).sum(-1)


def _simhash_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(what, x, planes): Gaussian inputs and hyperplanes (with a zero input and a negated one), and ±1/0
    hyperplanes (sparse random projections, as in the authors' code) on small integer inputs, where many
    projections are exactly zero."""
    rng = np.random.default_rng(9009)
    x = rng.standard_normal((12, 6))
    x[5] = 0.0
    x[7] = -x[3]
    gauss = ("Gaussian hyperplanes, K=4 bits, L=5 tables", x, rng.standard_normal((5, 4, 6)))
    signs = ("±1/0 hyperplanes on integer inputs, K=3, L=6", rng.integers(-1, 2, (10, 5)).astype(np.float64),
             rng.choice([-1.0, 0.0, 1.0], size=(6, 3, 5), p=[0.3, 0.4, 0.3]))
    return [gauss, signs]


def _simhash_variants(proj: np.ndarray, planes: np.ndarray) -> dict[str, np.ndarray]:
    """The codes that typical mistakes produce, from the projections ``proj`` (n, L, K)."""
    n, L, K = proj.shape
    ge = proj >= 0
    powers = 1 << np.arange(K, dtype=np.int64)
    shared = np.broadcast_to(ge[:, :1, :], ge.shape)
    grouped = proj.reshape(n, L * K).reshape(n, K, L).transpose(0, 2, 1) >= 0
    table = np.arange(L)[:, None]
    return {
        H_REVERSED: _pack(ge, powers[::-1]),
        H_STRICT: _pack(proj > 0, powers),
        H_INVERTED: _pack(proj < 0, powers),
        H_SHARED: _pack(shared, powers),
        H_SHIFT.format(how="shift t*K + b: it kept counting across tables"): _pack(ge, 1 << (table * K + np.arange(K))),
        H_SHIFT.format(how="shift t + b"): _pack(ge, 1 << (table + np.arange(K))),
        H_SUMMED: ge.sum(-1),
        H_GROUPED: _pack(grouped, powers),
    }


def _as_codes(value: object, n: int, L: int, K: int) -> np.ndarray:
    codes = np.asarray(value)
    if codes.shape == (L, n) and L != n:
        raise Mistake(f"codes have shape {codes.shape}: that is (L, n), transposed; return one row per input: (n, L)")
    expect_shape(codes, (n, L), "simhash(x, planes)")
    if codes.dtype == bool or not np.all(np.isfinite(codes.astype(np.float64))) \
            or not np.array_equal(codes, np.round(codes.astype(np.float64))):
        raise Mistake(f"codes must be whole numbers in [0, 2**K) (one K-bit integer per table), got dtype {codes.dtype}"
                      f": pack the bits with sum_b bit_b * 2**b")
    return codes.astype(np.int64)


def _simhash_exact(fn: Callable) -> None:
    for what, x, planes in _simhash_cases():
        L, K, _ = planes.shape
        proj = _projections(x, planes)
        expected = _pack(proj >= 0, 1 << np.arange(K, dtype=np.int64))
        got = _as_codes(fn(x.copy(), planes.copy()), len(x), L, K)
        if np.array_equal(got, expected):
            continue
        # a projection within rounding of zero may fall either way: compare only the bits that are sure
        sure = (proj == 0) | (np.abs(proj) > 1e-6)
        bits = ((got[..., None] >> np.arange(K)) & 1).astype(bool)
        if np.all((bits == (proj >= 0)) | ~sure) and got.min() >= 0 and got.max() < 2**K:
            continue
        variants = _simhash_variants(proj, planes)
        diagnose(got, {hint: (lambda g, v=v: np.array_equal(g, v)) for hint, v in variants.items()})
        if got.min() < 0 or got.max() >= 2**K:
            raise Mistake(f"{what}: codes must lie in [0, 2**K) = [0, {2**K}), yours go from {got.min()} to "
                          f"{got.max()}: pack each table's K bits with shifts 0..K-1")
        i, t = map(int, np.argwhere(got != expected)[0])
        raise Mistake(f"{what}: input {i}, table {t}: the signs of planes[{t}, b] · x give bits (b = 0..{K - 1}) "
                      f"{''.join(str(int(v)) for v in proj[i, t] >= 0)}, code {expected[i, t]}; yours is {got[i, t]}. "
                      "Bit b is 1 when planes[t, b] · x >= 0 and is worth 2**b")


def _simhash_statistics(fn: Callable) -> None:
    """Per-bit agreement of random pairs at 60° and 120° against 1 - θ/π, within 5 binomial standard errors."""
    rng = np.random.default_rng(9010)
    K, L, dim, n = 4, 16, 16, 400
    planes = rng.standard_normal((L, K, dim))
    for deg in (60, 120):
        x, y = pairs_at_angle(rng, n, dim, math.radians(deg))
        rate = float(agreeing_bits(np.asarray(fn(x, planes)), np.asarray(fn(y, planes)), K).mean() / K)
        p = 1 - deg / 180
        half = 5 * math.sqrt(p * (1 - p) / (n * L * K))
        expect(abs(rate - p) <= half,
               f"pairs of vectors {deg}° apart agreed on {rate:.3f} of your bits; SimHash theory says 1 - θ/π = "
               f"{p:.3f} (± {half:.3f}: 5 binomial standard errors over {n * L * K:,} bits). Hash with the planes "
               "you are given, no random numbers of your own")


def check_simhash(fn: Callable) -> CheckResult:
    """``simhash(x, planes) -> codes``: bits equal to the signs of the projections computed here (exact, bit b
    worth 2**b, a zero projection gives 1), and per-bit collisions at 60° and 120° matching 1 - θ/π."""
    def body(f: Callable) -> None:
        _simhash_exact(f)
        _simhash_statistics(f)

    return check_code("simhash", fn, body, praise="Your bits are the signs of the projections (bit b worth 2**b, "
                        "zero counts as +), and random pairs 60° apart agree on 2/3 of them, as 1 - θ/π says.",
                        not_written="Project x on each hyperplane, keep the signs (>= 0 gives 1), pack each table's "
                        "K bits into one integer.")


# --- active_units ------------------------------------------------------------------------------------------------
H_ONCE = ("counted each unit once per query (does it collide in any table?) instead of once per table it collides "
          "in: add 1 for every table where the unit sits in the query's bucket")
H_ONE_DICT = ("one dictionary for all L tables: a unit whose code in another table equals the query's code in this "
              "one was counted too (codes collide across tables); keep one dictionary per table, or key by "
              "(table, code)")
H_CARRIED = "counts carried over from one query to the next: start every query's counts at zero"
H_ONE_TABLE = "counted only one table ({which}): loop over all L tables and add up"
H_FEWEST = "kept the units with the FEWEST collisions: sort the counts in decreasing order (most collisions first)"
H_HIGH_TIES = ("ties broken toward the HIGHER index (np.argsort(counts)[::-1] reverses the order of equal counts "
               "too): among units with equal counts keep the lower indices, e.g. np.argsort(-counts, kind='stable')")
H_TIES = ("right counts, but ties at the border broken by another rule: among units with equal counts keep the lower "
          "indices. np.argsort's default sort is not stable, and [::-1] on an ascending sort reverses the order of "
          "equal counts too: use np.argsort(-counts, kind='stable'), or sort by (-count, index)")
H_VALUES = "returned the top counts themselves, not the units' indices: use argsort (which units), not sort (how many)"


def _lookup_cases() -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(what, unit_codes, query_codes, k): the notebook's hand-made example, and random codes with many ties, a
    query equal to one unit's codes (it collides in all L tables) and a query that collides nowhere."""
    hand = np.array([[0, 3, 1], [1, 3, 1], [0, 2, 2], [3, 3, 1], [0, 0, 0]])
    rng = np.random.default_rng(9011)
    units = rng.integers(0, 6, (40, 8))  # K = 3 bits, codes 6 and 7 unused by any unit
    queries = np.vstack([rng.integers(0, 8, (4, 8)), units[13], np.full(8, 7)])
    return [("the example of the notebook (5 units, L=3, k=2)", hand, np.array([[0, 3, 1]]), 2),
            ("40 units, L=8 tables, k=7", units, queries, 7),
            ("40 units, L=8 tables, k=1", units, queries, 1)]


def _brute_counts(units: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """counts[b, j] = number of tables t with units[j, t] == queries[b, t]: codes compared directly, no tables."""
    return (queries[:, None, :] == units[None, :, :]).sum(-1)


def _top(counts_row: np.ndarray, k: int, key: Callable[[int], tuple]) -> list[int]:
    return sorted(sorted(range(len(counts_row)), key=key)[:k])


def _check_counts(what: str, got: np.ndarray, units: np.ndarray, queries: np.ndarray) -> None:
    brute = _brute_counts(units, queries)
    if np.array_equal(got, brute):
        return
    L = units.shape[1]
    one_dict = sum((queries[:, None, t, None] == units[None, :, :]).sum(-1) for t in range(L))
    first, last = _brute_counts(units[:, :1], queries[:, :1]), _brute_counts(units[:, -1:], queries[:, -1:])
    diagnose(got, {
        H_ONCE: lambda g: np.array_equal(g, (brute > 0).astype(int)),
        H_ONE_DICT: lambda g: np.array_equal(g, one_dict),
        H_CARRIED: lambda g: len(queries) > 1 and np.array_equal(g, np.cumsum(brute, axis=0)),
        H_ONE_TABLE.format(which="the first"): lambda g: np.array_equal(g, first),
        H_ONE_TABLE.format(which="the last"): lambda g: np.array_equal(g, last),
    })
    b, j = map(int, np.argwhere(got != brute)[0])
    tables = [int(t) for t in np.flatnonzero(units[j] == queries[b])]
    raise Mistake(f"{what}: query {b}, unit {j} shares the query's bucket in {len(tables)} of the L={L} tables "
                  f"(tables {tables}), your count is {got[b, j]}")


def _check_pick(what: str, b: int, picked: list[int], c: np.ndarray, k: int) -> None:
    """``picked`` (sorted unit indices) must be the k units with the most collisions ``c``, ties to the lower index."""
    best = _top(c, k, key=lambda j: (-c[j], j))
    if picked == best:
        return
    fewest = _top(c, k, key=lambda j: (c[j], j))
    diagnose(picked, {
        H_FEWEST: lambda p: sorted(c[p]) == sorted(c[fewest]) != sorted(c[best]),
        H_HIGH_TIES: lambda p: p == _top(c, k, key=lambda j: (-c[j], -j)),
        H_TIES: lambda p: sorted(c[p]) == sorted(c[best]),
        H_VALUES: lambda p: p == sorted(int(v) for v in np.sort(c)[::-1][:k]),
    })
    raise Mistake(f"{what}: query {b}: the {k} units with the most collisions (ties: lower index) are {best} "
                  f"(counts {c[best].tolist()}); you picked {picked} (counts {c[picked].tolist()})")


def _lookup_body(fn: Callable) -> None:
    for what, units, queries, k in _lookup_cases():
        out = fn(units.copy(), queries.copy(), k)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mistake(f"return two arrays, (counts, active); got {type(out).__name__}")
        counts, active = np.asarray(out[0]), np.asarray(out[1])
        B, n = len(queries), len(units)
        if counts.shape == (n, B) and n != B:
            raise Mistake(f"{what}: counts have shape {counts.shape}, transposed: one row per query, (B, n_units)")
        expect_shape(counts, (B, n), f"{what}: counts")
        expect_shape(active, (B, k), f"{what}: active (k units per query)")
        expect(np.issubdtype(active.dtype, np.integer), f"active must hold unit indices (integers), got {active.dtype}")
        expect(bool(np.all((active >= 0) & (active < n))), f"{what}: active holds indices outside 0..{n - 1}")
        for b, row in enumerate(active):
            expect(len(set(row.tolist())) == k, f"{what}: query {b} picked a unit twice: {sorted(row.tolist())}")
        _check_counts(what, counts, units, queries)
        for b, (row, c) in enumerate(zip(active, counts)):
            _check_pick(what, b, sorted(int(j) for j in row), c, k)


def check_active_units(fn: Callable) -> CheckResult:
    """``active_units(unit_codes, query_codes, k) -> (counts, active)``: counts equal to brute-force counts
    (codes compared directly, no tables) and active = the top k of those counts, ties to the lower index."""
    return check_code("active_units", fn, _lookup_body,
                      praise="Your counts equal the brute-force counts (every code compared, no tables) and you "
                      "keep the k units that collide most, ties to the lower index.",
                      not_written="Build one dictionary per table (code -> units), look up each query's bucket in "
                      "every table, add 1 per table for each unit found, keep the k largest counts.")


# --- answers read off the run -------------------------------------------------------------------------------
def check_bit_collision(answer: float, rates: CollisionRates, degrees: float = 60) -> CheckResult:
    """The probability that one SimHash bit agrees for two vectors ``degrees`` apart: 1 - θ/π."""
    p = 1 - degrees / 180
    closest = float(np.degrees(rates.angles[np.argmin(np.abs(np.degrees(rates.angles) - degrees))]))
    return check_answer(answer, p, exercise="bit collision", rel_tol=0.01,
                        praise=f"A random hyperplane passes between them with probability θ/π = {degrees:g}/180, so "
                        f"one bit agrees with probability {p:.3f}: your measurement at {closest:g}° in the plot above.",
                        hint="A random hyperplane through the origin separates two vectors at angle θ with "
                        "probability θ/π; the bit agrees when it does not.",
                        mistakes={degrees / 180: "θ/π is the probability that the bit DISAGREES (the hyperplane "
                                  "passes between them); the bit agrees with the rest.",
                                  math.cos(math.radians(degrees)): "cos θ is the similarity SimHash estimates, not "
                                  "the probability that a bit agrees: that is 1 - θ/π."})


def check_bucket_collision(answer: float, rates: CollisionRates, degrees: float = 60) -> CheckResult:
    """The probability that two vectors ``degrees`` apart share the bucket of one table of ``rates.K`` bits."""
    p, K = 1 - degrees / 180, rates.K
    return check_answer(answer, p**K, exercise="bucket collision", rel_tol=0.01,
                        praise=f"All K = {K} independent bits must agree: ({p:.3f})^{K} = {p**K:.3f}, the right panel "
                        "of the plot above.",
                        hint=f"A bucket is the whole code of one table: all K = {K} bits must agree, each one "
                        "independently.",
                        mistakes={p: f"that is one bit; a bucket needs all K = {K} bits to agree.",
                                  (1 - p) ** K: "that is the probability that all K bits DISAGREE.",
                                  1 - (1 - p) ** K: "that is the probability that at least one bit agrees; a "
                                  "bucket needs all of them."})


def _plain(value: object) -> object:
    """A numpy / torch answer as Python values, so that an exact comparison of an array answer gives a verdict
    (an array's ``==`` has no single truth value; core ``check_answer`` would raise)."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic, torch.Tensor)) else value


def check_hash_mults(answer: int, run: RunResult) -> CheckResult:
    """Multiplications to hash one pooled input with the run's LSH layer (pooling left out)."""
    layer = run.layer if isinstance(run, RunResult) else None
    if layer is None or layer.index is None:
        raise ValueError("check_hash_mults needs an 'lsh' run of the sweep (its layer has the tables)")
    p, K, L = int(layer.index.pool.shape[1]), layer.K, layer.L
    return check_answer(_plain(answer), p * K * L, exercise="hashing multiplications",
                        praise=f"{p} × {K} × {L} = {p * K * L:,}: one {p}-long dot product per bit, K = {K} bits per "
                        f"table, L = {L} tables.",
                        hint="Each of the K × L bits is the sign of one dot product of length pool_dim.",
                        mistakes={K * L: f"that counts one multiplication per bit; each bit is a dot product of "
                                  f"length pool_dim = {p}.",
                                  layer.n_in * K * L: f"the input is mean-pooled to {p} numbers before hashing, so "
                                  f"each dot product has length {p}, not {layer.n_in}.",
                                  p * K * L + layer.n_in: "the question leaves the pooling out.",
                                  p * L: f"each table has K = {K} bits, one dot product each."})


def check_union_fraction(answer: float, unions: UnionSizes, batch_size: int = 32) -> CheckResult:
    """Expected fraction of the units in the union of ``batch_size`` independent random sets of the run's size."""
    f = unions.kept
    expected = 1 - (1 - f) ** batch_size
    return check_answer(answer, expected, exercise="union fraction", rel_tol=0.02,
                        praise=f"1 - (1 - {f:g})^{batch_size} = {expected:.3f}: a batch's union of random sets covers "
                        "most of the layer (compare the random column of the union table), so computing the union "
                        "gives most of the saving back.",
                        hint=f"A unit is missed by one example's set with probability 1 - {f:g}, and by all "
                        f"{batch_size} independent sets with that to the power {batch_size}.",
                        mistakes={min(1.0, f * batch_size): "the sets overlap: adding their sizes counts the shared "
                                  "units many times.",
                                  (1 - f) ** batch_size: "that is the fraction of units that NO example picks; the "
                                  "union is the rest.",
                                  f: "that is one example's set; the union of the batch is larger."})
