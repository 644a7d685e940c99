"""Lesson 04's exercise checks: the learner's fast mask generators and their reading of a profile.

References that are not a copy of the solution:

* masks: a stand-in generator that hands out a *known* byte stream (every byte value equally often, or whole
  0x00 / 0xFF bytes), so the number of kept units is known exactly by counting; exact binomial bounds on a real
  generator; shape, dtype; independence between units (neighbours, rows) and between calls.
* ``mask_share``: synthetic profiles built from a call tree whose every second is known, so the share is exact
  arithmetic on the tree (not on the records the learner reads).

Every check is deterministic and returns an :class:`exercises.CheckResult`.
"""

from __future__ import annotations

import math
import pstats
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

from ..exercises import CheckResult, Mistake, check_answer, check_code, expect
from . import reference
from .lab import MASK_NAMES, Profile

ALPHA = 1e-9  # a right answer falls outside a bound with probability below this
_DRAW = "rng.integers(0, 256, size=..., dtype=np.uint8) (or np.frombuffer(rng.bytes(n), np.uint8))"


class ByteStream:
    """Stands in for ``rng``: hands out ``pattern`` (uint8), cyclically, through ``rng.integers(0, 256, ...)`` and
    ``rng.bytes(n)``; anything else raises :class:`Mistake` naming the calls to use."""

    def __init__(self, pattern: np.ndarray):
        self.pattern, self.drawn = np.asarray(pattern, dtype=np.uint8), 0

    def _take(self, n: int) -> np.ndarray:
        out = self.pattern[(self.drawn + np.arange(n)) % len(self.pattern)]
        self.drawn += n
        return out

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        low, high = (0, low) if high is None else (low, high)
        top = high + 1 if endpoint else high  # exclusive
        if (low, top) != (0, 256):
            raise Mistake(f"rng.integers({low}, {high}) gives the values {low}..{top - 1}: a random byte is 0..255, "
                          "rng.integers(0, 256, ...): the high end is exclusive." if (low, top) == (0, 255) else
                          f"one random byte per unit is {_DRAW}; you asked for integers in [{low}, {top}).")
        n = 1 if size is None else math.prod((size,) if isinstance(size, int) else size)
        out = self._take(n).astype(dtype)
        return out[0] if size is None else out.reshape(size)

    def bytes(self, length: int) -> bytes:
        return self._take(int(length)).tobytes()

    def __getattr__(self, name: str):
        if name.startswith("__"):  # numpy and copy probe for these: not a draw
            raise AttributeError(name)
        raise Mistake(f"draw the random bytes with {_DRAW}; your function called rng.{name}, which spends more "
                      "random bits per unit than the byte this exercise is about.")


def _expect_mask(m, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``m`` must be a bool array of ``shape``; hints for untrimmed bits and 0/1 or 0/255 integer masks."""
    expect(isinstance(m, np.ndarray), f"{name} must return a numpy array, got {type(m).__name__}.")
    n = math.prod(shape)
    if m.shape != shape:
        expect(not (m.size == 8 * math.ceil(n / 8) and m.size != n),
               f"bits not trimmed to the shape: {n} units need ceil({n}/8) = {math.ceil(n / 8)} bytes, whose "
               f"{m.size} bits np.unpackbits returns; keep the first {n} (np.unpackbits(b, count=n)) and reshape.")
        raise Mistake(f"{name} returned shape {m.shape}, expected {shape}: reshape the flat mask to the shape.")
    if m.dtype != bool:
        values = set(np.unique(m).tolist())
        expect(not (m.dtype == np.uint8 and values <= {0, 255}),
               "returned uint8 0/255 instead of bool: a mask is a bool array (True = keep). A comparison such as "
               "b >= t gives one; np.unpackbits's 0/1 bytes become one with .view(bool).")
        expect(not values <= {0, 1}, f"returned {m.dtype} 0/1 instead of bool: .view(bool) turns np.unpackbits's "
                                     "uint8 0/1 into a bool mask without a copy (or .astype(bool)).")
        raise Mistake(f"{name} must return a bool array (True = keep), got dtype {m.dtype}.")
    return m


def _check_fresh_and_independent(call, name: str, q: float, shape: tuple[int, int] = (256, 512)) -> None:
    """On a real Generator: the kept count within exact binomial bounds of keep probability ``q``, a new mask per
    call, the rng argument used, no structure between units (rows, neighbours)."""
    g = np.random.default_rng(200)
    m = _expect_mask(call(shape, g), shape, name)
    expect(not np.array_equal(m, _expect_mask(call(shape, g), shape, name)),
           "same mask every call (rng re-created): draw from the rng you are given; a generator re-created with a "
           "fixed seed inside the function hands out the same bytes every time.")
    expect(np.array_equal(call(shape, np.random.default_rng(7)), call(shape, np.random.default_rng(7))),
           "two generators seeded alike gave different masks: draw from the rng argument, not from np.random.")
    expect(not (m == m[:1]).all(), "every row has the same mask: draw one byte per unit (size = the whole shape), "
                                   "not one per column.")
    lo, hi = binom.interval(1 - ALPHA, m.size, q)
    expect(lo <= m.sum() <= hi, f"kept {m.sum()} of {m.size} units: {m.mean():.4f} instead of the keep probability "
                                f"{q:.6f} (exact binomial bounds {int(lo)}..{int(hi)}).")
    f = m - q
    sd = q * (1 - q) / math.sqrt(m.size)  # of the mean product of two independent centred units
    for axis, what in ((1, "neighbouring units in a row"), (0, "units above each other")):
        a, b = (f[:, 1:], f[:, :-1]) if axis == 1 else (f[1:], f[:-1])
        expect(abs((a * b).mean()) <= 7 * sd, f"{what} are not independent (they agree too often): each unit needs "
                                              "its own random byte / bit.")


def check_uint8_mask(fn) -> CheckResult:
    """Check ``uint8_mask(shape, p, rng) -> bool``: one byte b per unit, kept if b >= t, t = round(256 p)."""
    ps = (0.5, 0.1, 0.2, 0.3, 0.75, 0.05)

    def body(mask) -> None:
        _check_fresh_and_independent(lambda shape, g: mask(shape, 0.5, g), "uint8_mask", 0.5)
        pattern = np.random.default_rng(201).permutation(256)
        kept = []
        for p in ps:  # 1024 units, each byte value exactly 4 times: exactly 4 (256 - t) are kept
            stream = ByteStream(pattern)
            m = _expect_mask(mask((16, 64), p, stream), (16, 64), "uint8_mask")
            expect(stream.drawn > 0, "your function did not draw from rng: use the rng argument.")
            kept.append(int(m.sum()))
        ts = [round(256 * p) for p in ps]
        if kept != [4 * (256 - t) for t in ts]:
            for hint, counts in {
                "threshold off by one (keeps with probability (255 − t)/256): keep where b >= t (b > t also drops "
                "the byte value t itself).": [4 * (255 - t) for t in ts],
                "keeps where byte < threshold (p and 1 − p swapped): the bytes below t = round(256 p) are the DROPPED "
                "ones; keep b >= t.": [4 * t for t in ts],
                "threshold truncated: int(256 p) rounds down; the rule is t = round(256 p), so at p = 0.1 "
                "t = 26 (drop probability 26/256).": [4 * (256 - int(256 * p)) for p in ps],
                "threshold not rounded to a whole byte: b >= 256 p keeps b >= ceil(256 p); the rule is "
                "t = round(256 p) (at p = 0.2: t = 51, not 52).": [4 * (256 - math.ceil(256 * p)) for p in ps],
            }.items():
                expect(kept != counts, hint)
            raise Mistake(f"on 1,024 units whose bytes hold each value 0..255 exactly 4 times, keeping b >= round(256 "
                          f"p) keeps exactly {[4 * (256 - t) for t in ts]} at p = {list(ps)}; yours kept {kept}.")
        _check_fresh_and_independent(lambda shape, g: mask(shape, 0.1, g), "uint8_mask", (256 - 26) / 256)

    return check_code("uint8_mask", fn, body,
                      praise="exact keep counts on a known byte stream (keep probability (256 − t)/256, "
                             "t = round(256 p)), within binomial bounds on a real generator, a bool mask of the "
                             "shape, independent units, a new mask each call.",
                      not_written="It is checked on a byte stream whose every value is known, so the keep counts "
                                  "are exact.")


def check_bits_mask(fn) -> CheckResult:
    """Check ``bits_mask(shape, rng) -> bool``: p = 0.5, ceil(n/8) random bytes unpacked, trimmed, as bool."""
    def body(mask) -> None:
        _check_fresh_and_independent(mask, "bits_mask", 0.5)
        whole = np.array([255, 0, 255, 255, 0, 0, 255, 0, 0, 255], dtype=np.uint8)  # whole bytes: bit order is moot
        stream = ByteStream(whole)
        try:
            m = mask((7, 9), stream)
        except ValueError as e:
            raise Mistake(f"bits not trimmed to the shape: 63 units need 8 bytes = 64 bits; keep the first 63 "
                          f"(np.unpackbits(b, count=n)) before reshaping (numpy said: {e}).") from None
        m = _expect_mask(m, (7, 9), "bits_mask")
        expect(stream.drawn == 8, f"63 units need ceil(63/8) = 8 random bytes (8 units per byte); you drew "
                                  f"{stream.drawn}.")
        expect(np.array_equal(m.ravel(), np.repeat(whole[:8] == 255, 8)[:63]),
               "the units must take the bits in the order the bytes came: unpack, trim to n, reshape.")
        stream = ByteStream(np.arange(256))  # 2,048 bits with exactly 1,024 ones
        expect(int(_expect_mask(mask((32, 64), stream), (32, 64), "bits_mask").sum()) == 1024,
               "256 bytes holding each value 0..255 once carry exactly 1,024 one-bits, so exactly 1,024 of these "
               "2,048 units must be kept: unpack every bit of every byte.")

    return check_code("bits_mask", fn, body,
                      praise="exact on known bytes (8 units per byte, trimmed to the shape), exactly half kept on a "
                             "balanced stream, within binomial bounds on a real generator, independent units.",
                      not_written="It is checked on known bytes (exact counts), then on real masks (binomial bounds, "
                                  "independence).")


# --------------------------------------------------------------------------------------------------
# mask_share: synthetic profiles whose every second is known
# --------------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One node of a call tree: a function (pstats key), its own seconds, and what it calls."""

    key: tuple[str, int, str]
    own: float
    calls: list[Call] = field(default_factory=list)


def _fn(name: str, file: str = "/course/lab.py", line: int = 1) -> tuple[str, int, str]:
    return (file, line, name)


def _builtin(name: str) -> tuple[str, int, str]:
    return ("~", 0, name)


def profile_of(*roots: Call) -> pstats.Stats:
    """The pstats.Stats cProfile would record for the call trees ``roots`` (no recursion)."""
    records: dict = {}

    def visit(node: Call, caller: tuple | None) -> float:
        cum = node.own + sum(visit(c, node.key) for c in node.calls)
        cc, nc, tt, ct, callers = records.get(node.key, (0, 0, 0.0, 0.0, {}))
        if caller is not None:
            c = callers.get(caller, (0, 0, 0.0, 0.0))
            callers[caller] = (c[0] + 1, c[1] + 1, c[2] + node.own, c[3] + cum)
        records[node.key] = (cc + 1, nc + 1, tt + node.own, ct + cum, callers)
        return cum

    for root in roots:
        visit(root, None)
    stats = pstats.Stats()
    stats.stats = records
    stats.get_top_level_stats()
    return stats


def tree_share(roots: list[Call], names: set[str]) -> float:
    """Exact share of the trees' seconds spent at or below a call to one of ``names``, from the trees themselves."""
    def inside(node: Call, under: bool) -> tuple[float, float]:  # (all seconds, seconds under a named call)
        under = under or node.key[2] in names
        parts = [inside(c, under) for c in node.calls]
        return node.own + sum(a for a, _ in parts), (node.own if under else 0.0) + sum(b for _, b in parts)

    sums = [inside(root, False) for root in roots]
    return sum(m for _, m in sums) / sum(t for t, _ in sums)


def _step(mask: Call, extra: list[Call] | None = None) -> Call:
    """One training step: two matrix products around a mask function, numpy reductions, and ``extra`` calls."""
    return Call(_fn("train_step", line=85), 0.011, [
        Call(_fn("linear_forward", "/course/numpy_layers.py", 16), 0.023, [Call(_builtin("<built-in method dot>"),
                                                                                 0.0)]),
        mask,
        Call(_fn("linear_backward", "/course/numpy_layers.py", 24), 0.029, [Call(_builtin("<method 'sum'>"), 0.004)]),
        *(extra or []),
    ])


def share_cases() -> list[tuple[str, pstats.Stats, tuple[str, ...], float]]:
    """(what it tests, stats, names, exact share) for the check of ``mask_share``."""
    binomial = Call(_fn("binomial_mask", "/course/reference.py", 53), 0.006, [
        Call(_builtin("<method 'binomial' of 'numpy.random.mtrand.RandomState' objects>"), 0.31),
        Call(_builtin("<method 'astype' of 'numpy.ndarray' objects>"), 0.012)])
    plain = Call(_fn("train_epoch", line=99), 0.004, [_step(binomial) for _ in range(3)])

    def bits(own: float) -> Call:
        return Call(_fn("bits_mask", "<ipython-input-7>"), own, [
            Call(_builtin("<method 'integers' of 'numpy.random._generator.Generator' objects>"), 0.0021),
            Call(_builtin("<built-in method numpy.unpackbits>"), 0.0013)])

    dispatch = Call(_fn("dropout_mask", line=60), 0.0004, [bits(0.0003)])  # dropout_mask -> bits_mask
    nested = Call(_fn("train_epoch", line=99), 0.004, [_step(dispatch), _step(dispatch, [bits(0.0005)])])
    uint8 = Call(_fn("uint8_mask", "<ipython-input-5>"), 0.0007,
                 [Call(_builtin("<method 'integers' of 'numpy.random._generator.Generator' objects>"), 0.0052)])
    decoys = [Call(_fn("uint8_mask_table", "/course/lab.py", 300), 0.017),  # its name contains a mask's name
              Call(_fn("forward", "/course/masks.py", 12), 0.021)]  # its file name contains "mask"
    loose = Call(_fn("train_epoch", line=99), 0.004, [_step(uint8, decoys), _step(uint8)])
    disable = Call(_builtin("<method 'disable' of '_lsprof.Profiler' objects>"), 0.00002)  # a second top level
    cases = [("one mask function", plain), ("a mask function that calls another", nested),
             ("names that other functions contain", loose)]
    return [(what, profile_of(tree, disable), MASK_NAMES, tree_share([tree, disable], set(MASK_NAMES)))
            for what, tree in cases]


def _share_mistakes(stats: pstats.Stats, names: set[str]) -> dict[str, float]:
    """What the typical wrong readings of ``stats`` give (hint -> value)."""
    recs = stats.stats.items()
    named = [(k, v) for k, v in recs if k[2] in names]
    total, cum_named = stats.total_tt, sum(v[3] for _, v in named)
    right = reference.mask_share(stats, names)
    loose_name = [v for k, v in recs if any(n in k[2] for n in names)]
    loose_key = [v for k, v in recs if any(n in str(k) for n in (*names, "mask"))]
    return {
        "used cumulative time of a caller (double counts): when one named function calls another (dropout_mask -> "
        "bits_mask), the callee's time is already in the caller's cumtime; subtract what a record's callers dict "
        "says it spent under a named caller.": cum_named / total,
        "used tottime, a function's own time only: the mask's time is mostly inside the numpy calls it makes "
        "(binomial, integers, unpackbits); count cumulative time.": sum(v[2] for _, v in named) / total,
        "matched the function name too loosely: compare the record's function name (key[2]) with the names exactly; "
        "'uint8_mask' in 'uint8_mask_table' is True, and a file called masks.py is not a mask "
        "function.": sum(v[3] for v in loose_name) / total,
        "matched the function name too loosely: match key[2], the function's name, exactly (not the file, not a "
        "substring).": sum(v[3] for v in loose_key) / total,
        "divided by the wrong total: the profiled time is stats.total_tt (every function's own time, summed); "
        "cumulative times overlap, so their sum or maximum is no total.": right * total / sum(v[3] for _, v in recs),
        "divided by the wrong total: use stats.total_tt, the sum of every function's own time (the top function's "
        "cumtime leaves out the other top-level records, e.g. the profiler's own calls).":
        right * total / max(v[3] for _, v in recs),
        "return a fraction in [0, 1], not a percentage.": 100 * right,
        "upside down: the share is mask seconds / total seconds.": 1 / right,
    }


def check_mask_share(fn) -> CheckResult:
    """Check ``mask_share(stats, names) -> float`` on synthetic profiles with a known share."""
    def body(share) -> None:
        for what, stats, names, exact in share_cases():
            got = share(stats, names)
            expect(isinstance(got, (float, int, np.floating)), f"mask_share must return a number, got "
                                                               f"{type(got).__name__}.")
            if math.isclose(got, exact, rel_tol=1e-9):
                continue
            for hint, value in _share_mistakes(stats, set(names)).items():
                expect(not math.isclose(got, value, rel_tol=1e-9), hint)
            raise Mistake(f"on a profile with {what}, the mask functions take {exact:.6f} of the time (counted on the "
                          f"call tree itself); yours says {got:.6f}.")

    return check_code("mask_share", fn, body,
                      praise="exact on three profiles whose every second is known: one mask function, one that calls "
                             "another (each second counted once), and look-alike names that are not masks.",
                      not_written="Sum the cumtime of the records whose function name is in names (minus what they "
                                  "spent under a named caller) and divide by stats.total_tt.")


def check_amdahl_bound(answer, before: Profile) -> CheckResult:
    """Question: with the 'before' profile's mask share s, what is the largest speedup of an epoch if masks
    became free? (Amdahl: 1 / (1 - s))"""
    s = reference.mask_share(before.stats, MASK_NAMES)
    return check_answer(answer, 1 / (1 - s), exercise="amdahl_bound", rel_tol=0.02,
                        mistakes={1 / s: "that is 1 / s: the time that remains is the part that is NOT masks, 1 − s.",
                                  1 - s: "1 − s is the time that remains; the speedup is total / remaining.",
                                  s / (1 - s): "s / (1 − s) is the time saved over the time left: add the 1 back."},
                        praise="Amdahl: the rest of the epoch remains, 1 / (1 − s), however fast the masks get.",
                        hint="the epoch's time after the fix is at least the non-mask part, (1 − s) of it.")
