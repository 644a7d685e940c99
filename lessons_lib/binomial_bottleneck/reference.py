"""Lesson 04 · fast dropout masks from scratch, a torch layer that uses them, and reading a profile.

A dropout mask is a bool array, True = KEEP, each unit kept with probability ``1 - p`` (``p`` is the probability
to DROP, everywhere in this course). Seed 000's numpy loop drew it with ``RandomState.binomial(1, 1 - p, size)``:
a general sampler run once per unit, ~70% of the training time. A mask needs far fewer random bits:

* :func:`uint8_mask`: one random byte ``b`` per unit, kept if ``b >= t`` with ``t = round(256 p)``. The drop
  probability is ``t / 256``: exactly ``p`` when ``p`` is a multiple of 1/256 (0.5, 0.25, ...), else rounded to the
  nearest one (at p = 0.1: 26/256 = 0.1016).
* :func:`uint16_mask`: the same with 16-bit words: p rounded to a multiple of 1/65536.
* :func:`bits_mask`: one random *bit* per unit (random bytes unpacked): exact, and only possible, at p = 0.5.
* :func:`exact_mask`: the byte threshold, with the units whose byte equals the threshold decided by further bytes:
  exact for every p, at about one byte per unit.
* :func:`table_mask`: fewer bits still. A unit kept with probability 0.9 carries only 0.47 bits of information, so
  one byte per unit wastes most of it: here 16 random bits pick the keep pattern of a *group of 8 units* through a
  65,536-entry table (:func:`pattern_table`), 2 bits per unit at every p, each unit kept with probability within
  2^-17 of ``1 - p`` (as uint16).
* :func:`bernoulli_mask` picks by name; ``"auto"`` is the fastest within 2^-16 of ``p``: bits at 0.5, else table.
:func:`mask_share` reads a ``pstats`` profile; ``nn.Dropout`` with these masks: :mod:`.fast_dropout`.
"""

from __future__ import annotations

import functools
import math
import pstats
from collections.abc import Iterable

import numpy as np

from ..validate import BadArgument, check_choice, check_int, check_p, check_shape

Shape = int | tuple[int, ...]
RNG = np.random.Generator | np.random.RandomState | int | None
_FAST_BITGENS = (np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox)


MAX_UNITS = 2**31  # a mask larger than this (2 GiB of bools) is refused rather than attempted


def _shape(shape: Shape) -> tuple[int, ...]:
    """``shape`` as a tuple of whole numbers >= 0 (2.5 is refused, not truncated), at most MAX_UNITS units."""
    ok = type(shape) is tuple and all(type(s) is int and s >= 0 for s in shape)  # the common case, checked fast
    shp = shape if ok else check_shape(shape)
    if math.prod(shp) > MAX_UNITS:
        raise BadArgument(f"shape={shape!r}: {math.prod(shp):,} units is more than a mask of this lesson should "
                          f"hold ({MAX_UNITS:,}); draw it in pieces")
    return shp


def random_bytes(rng, n: int) -> np.ndarray:
    """``n`` uniformly random bytes (uint8). A Generator on a 64-bit bit generator (PCG64, numpy's default) hands
    out its raw 64-bit words, 8 bytes per draw at memory speed; any other generator is asked for ``rng.bytes(n)``."""
    if isinstance(rng, np.random.Generator) and isinstance(rng.bit_generator, _FAST_BITGENS):
        return rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]
    return np.frombuffer(rng.bytes(n), dtype=np.uint8)


def binomial_mask(shape: Shape, p: float, rng: RNG = None) -> np.ndarray:
    """Seed 000's call, ``RandomState.binomial(1, 1 - p, size)``, as a bool mask: one general binomial variate
    per unit. A Generator's bits are drawn through a RandomState wrapped around its bit generator."""
    if isinstance(rng, np.random.Generator):
        rng = np.random.RandomState(rng.bit_generator)
    rs = rng if isinstance(rng, np.random.RandomState) else np.random.mtrand._rand  # None: numpy's global one
    return rs.binomial(1, 1.0 - p, size=_shape(shape)).astype(bool)


def uniform_mask(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    """One float32 uniform per unit, kept if ``u >= p``: p rounded to a multiple of 2^-24."""
    return rng.random(_shape(shape), dtype=np.float32) >= np.float32(p)


def uint8_mask(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    """One random byte ``b`` per unit, kept if ``b >= t`` with ``t = round(256 p)``: keep probability (256 - t)/256."""
    shp = _shape(shape)
    t = round(256 * p)
    if t >= 256:  # p > 255.5/256: no byte is that large
        return np.zeros(shp, dtype=bool)
    return (random_bytes(rng, math.prod(shp)) >= t).reshape(shp)


def uint16_mask(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    """One random 16-bit word ``w`` per unit, kept if ``w >= round(65536 p)``: p rounded to a multiple of 2^-16."""
    shp = _shape(shape)
    t = round(65536 * p)
    if t >= 65536:
        return np.zeros(shp, dtype=bool)
    return (random_bytes(rng, 2 * math.prod(shp)).view(np.uint16) >= t).reshape(shp)


def _drop_exact(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Flat bool array, each True (drop) with probability exactly p: byte < 256 p, the ties refined recursively
    on the fraction of 256 p (8 more bits of p per level; at most ~7 levels in float64)."""
    b = random_bytes(rng, n)
    t, frac = int(256 * p), 256 * p - int(256 * p)
    drop = b < t
    ties = np.flatnonzero(b == t) if frac > 0 else np.empty(0, dtype=np.intp)
    if ties.size:
        drop[ties] = _drop_exact(rng, ties.size, frac)
    return drop


def exact_mask(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    """Kept with probability exactly ``1 - p`` (to float64 precision) at about one random byte per unit."""
    shp = _shape(shape)
    return ~_drop_exact(rng, math.prod(shp), p).reshape(shp)


def bits_mask(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """p = 0.5 only: one random bit per unit, n/8 random bytes unpacked, trimmed to ``shape``, viewed as bool."""
    shp = _shape(shape)
    n = math.prod(shp)
    return np.unpackbits(random_bytes(rng, (n + 7) // 8), count=n).view(bool).reshape(shp)


_BIT_ROWS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # byte -> its 8 bits, as unpackbits
_LEVELS = 65536  # a table entry per 16-bit random word


@functools.lru_cache(maxsize=64)
def pattern_table(p: float) -> np.ndarray:
    """65,536 bytes, read-only: entry ``w`` is the keep pattern (bit 1 = keep, first unit in the high bit, as
    ``np.unpackbits``) of a group of 8 units for the 16-bit random word ``w``.

    A pattern with k units kept has probability q^k (1-q)^(8-k) (q = 1 - p) when units are independent; each is
    given round-down(65536 x that) entries, the leftover entries go to the largest remainders, and then single
    entries move between two patterns that differ in one unit only until every unit is kept in exactly
    round(65536 q) entries: a keep probability within 2^-17 of q. Units of a group are independent up to this
    rounding (every pair's covariance is off by less than 2e-4; see the tests)."""
    p = check_p(p)
    kept = _BIT_ROWS.sum(axis=1)
    ideal = (1.0 - p) ** kept * p ** (8 - kept) * _LEVELS
    counts = np.floor(ideal).astype(np.int64)
    counts[np.argsort(counts - ideal, kind="stable")[: _LEVELS - counts.sum()]] += 1
    target = round(_LEVELS * (1.0 - p))
    for unit in range(8):
        off = np.flatnonzero(_BIT_ROWS[:, unit] == 0)  # patterns without this unit; ``on`` the same with it
        on = off | (0x80 >> unit)
        while (short := target - int(counts[on].sum())) != 0:
            src, dst = (off, on) if short > 0 else (on, off)
            gain = np.where(counts[src] > 0, (counts[src] - ideal[src]) - (counts[dst] - ideal[dst]), -np.inf)
            i = int(np.argmax(gain))  # move from the most over-served pattern to its partner
            counts[src[i]] -= 1
            counts[dst[i]] += 1
    table = np.repeat(np.arange(256, dtype=np.uint8), counts)
    table.flags.writeable = False
    return table


def _table_bytes(groups: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """``groups`` bytes, each the keep pattern of 8 units: a table entry per 16-bit random word."""
    return pattern_table(p).take(random_bytes(rng, 2 * groups).view(np.uint16), mode="clip")  # clip: never hit


def table_mask(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    """16 random bits per group of 8 units, through :func:`pattern_table`: keep probability within 2^-17 of 1 - p."""
    shp = _shape(shape)
    n = math.prod(shp)
    return np.unpackbits(_table_bytes((n + 7) // 8, p, rng), count=n).view(bool).reshape(shp)


def _bits(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    if p != 0.5:
        raise ValueError(f"method 'bits' makes one fair bit per unit, so it is exact only at p = 0.5 (got {p}); use "
                         "'exact', 'uint8' (1/256 steps) or 'auto' for other p")
    return bits_mask(shape, rng)


MASKS = {"binomial": binomial_mask, "uniform": uniform_mask, "uint16": uint16_mask, "uint8": uint8_mask,
         "exact": exact_mask, "table": table_mask, "bits": _bits}  # name -> mask(shape, p, rng), slowest first


def auto_method(p: float) -> str:
    """The fastest method within 2^-16 of ``p``: bits at 0.5 (exact), else table (within 2^-17)."""
    return "bits" if check_p(p) == 0.5 else "table"


def as_generator(rng: RNG) -> np.random.Generator:
    """A Generator for ``rng``: itself; a RandomState's bit generator; an int seed; None -> numpy's global bit
    generator (the one ``np.random.seed`` and :func:`lessons_lib.seeds.seed_everything` seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.Generator(np.random.get_bit_generator())
    if isinstance(rng, np.random.RandomState):
        return np.random.Generator(rng._bit_generator)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):  # a bool is not a seed
        return np.random.default_rng(check_int(rng, "rng", low=0, fix="a seed is a whole number >= 0"))
    raise TypeError(f"rng must be a numpy Generator, RandomState, int seed or None, got {type(rng).__name__}")


def bernoulli_mask(shape: Shape, p: float, method: str = "auto", rng: RNG = None) -> np.ndarray:
    """A bool mask of ``shape``, True (keep) with probability ``1 - p`` per unit, by ``method`` ("auto" or a key of
    :data:`MASKS`). ``p = 0``: all True, no random number drawn. Raises ValueError for p outside [0, 1), an
    unknown method, or "bits" at p != 0.5."""
    p, shape, method = check_p(p), _shape(shape), check_choice(method, "method", ("auto", *MASKS))
    if p == 0.0:
        return np.ones(shape, dtype=bool)
    method = auto_method(p) if method == "auto" else method
    if method == "binomial" and (rng is None or isinstance(rng, np.random.RandomState)):
        return binomial_mask(shape, p, rng)  # exactly the seed's call on that RandomState (None: numpy's global)
    return MASKS[method](shape, p, as_generator(rng))


# --------------------------------------------------------------------------------------------------
# Reading a profile
# --------------------------------------------------------------------------------------------------
def mask_share(stats: pstats.Stats, names: Iterable[str]) -> float:
    """Share of the profiled time (``stats.total_tt``, the sum of every function's own time) spent inside the
    functions called exactly ``names``, including what they call, each second counted once.

    A record is ``stats.stats[(file, line, function)] = (cc, nc, tottime, cumtime, callers)``, ``callers[key] =
    (cc, nc, tottime, cumtime)`` per caller. A named function's cumulative time counts, less the part spent
    when another named function called it: that part is inside its caller's cumulative time already.
    """
    names = set(names)
    seconds = 0.0
    for (_, _, func), (_, _, _, cumtime, callers) in stats.stats.items():
        if func in names:
            seconds += cumtime - sum(c[3] for caller, c in callers.items() if caller[2] in names)
    return seconds / stats.total_tt
