"""Lesson 07 checks: the learner's stochastic rounding and lost-update counter, each against a reference that is
not a copy of the solution, and the answers read off the learner's run.

* :func:`check_stochastic_round_bf16`: every result must be one of the two bf16 neighbours of the input, found
  here from torch's own round-to-nearest cast and ``torch.nextafter`` in bf16 (not from bit tricks or
  ``reference.neighbours``); exact values stay; the round-up frequency of each value must lie in the exact
  binomial interval around ``p = (x - lo) / (hi - lo)``; the mean of many draws must stay within a Hoeffding
  bound of ``x``; random bits must come from the generator passed in.
* :func:`check_count_lost_updates`: the count against an exact one: ``w + u`` in float64 (exact for these
  cases), rounded once to the storage dtype, to nearest with ties to even, by comparing the candidates around
  torch's cast (which goes through float32 and may round twice).

A right function fails a statistical test less than once in 10^9 runs (``DELTA``); the random cases come from
the course seed, so every check is deterministic for a given ``LESSONS_SEED``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from scipy.stats import binom

from ..exercises import CheckResult, Mistake, check_answer, check_code, expect, expect_shape
from ..seeds import get_seed
from ..timing import threads
from ..validate import BadArgument, check_float

BF16 = torch.bfloat16
INF = float("inf")
DELTA = 1e-9  # chance that a right function fails one of the statistical tests
DRAWS = 4096  # roundings of each value in the frequency test


# --- independent references -----------------------------------------------------------------------
def _toward(t: torch.Tensor, direction: float) -> torch.Tensor:
    """The next number of t's dtype from each element of ``t`` toward ``direction`` (+inf or -inf)."""
    return torch.nextafter(t, torch.full_like(t, direction))


def bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` around each float32 ``x`` (as float32): torch's round-to-nearest bf16 value and the bf16
    number next to it on x's other side. ``lo == hi == x`` where x is a bf16 number."""
    near = x.to(BF16)
    nf = near.float()
    lo = torch.where(nf > x, _toward(near, -INF).float(), nf)
    hi = torch.where(nf < x, _toward(near, INF).float(), nf)
    return lo, hi


def round_exact(s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 ``s`` rounded once to ``dtype``: the nearest number, ties to the one with an even last bit.
    torch's float64 -> bf16/fp16 cast goes through float32 and can round twice, so the three candidates around
    it are compared exactly in float64."""
    if dtype == torch.float64:
        return s
    c = s.to(dtype)
    cands = torch.stack([_toward(c, -INF), c, _toward(c, INF)])
    dist = (cands.double() - s).abs()
    best = dist == dist.min(0).values
    ints = cands.view(torch.int16 if cands.element_size() == 2 else torch.int32)
    even = (ints & 1) == 0
    pick = torch.where(best.sum(0) > 1, (best & even).to(torch.int8).argmax(0), best.to(torch.int8).argmax(0))
    return cands.gather(0, pick[None])[0]


# --- exercise 1: stochastic rounding to bf16 ---------------------------------------------------------
def _sr_values(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, q, exact): float32 values ``|x| = m + q * gap`` between two bf16 numbers (random m over many binades,
    both signs, the last gap below a power of two included) and bf16 numbers that must come back unchanged."""
    q = torch.tensor([1 / 256, 1 / 16, 3 / 16, 5 / 16, 7 / 16, 9 / 16, 11 / 16, 13 / 16, 15 / 16, 255 / 256],
                     dtype=torch.float64).repeat(2)
    k = len(q)
    e = torch.randint(-20, 21, (k,), generator=g).double()
    frac = torch.randint(0, 128, (k,), generator=g).double()
    q = torch.cat([q, torch.tensor([0.75, 0.25], dtype=torch.float64)])
    e = torch.cat([e, torch.tensor([0.0, 5.0], dtype=torch.float64)])
    frac = torch.cat([frac, torch.tensor([127.0, 127.0], dtype=torch.float64)])  # hi is the next power of two
    m = 2.0**e * (1 + frac / 128)
    sign = torch.ones(len(q), dtype=torch.float64)
    sign[k // 2:k] = -1
    sign[-1] = -1
    x = (sign * (m + q * 2.0 ** (e - 7))).float()  # exact in float32
    rnd = torch.randn(6, generator=g) * 2.0 ** torch.randint(-30, 30, (6,), generator=g).float()
    exact = torch.cat([torch.tensor([0.0, 1.0, -1.0, 0.5, -3.0, 1.0078125, 2.0**-100, -(2.0**100)]),
                       rnd.to(BF16).float()])
    return x, q, exact


def _away_models(q: torch.Tensor, positive: torch.Tensor) -> dict[str, torch.Tensor]:
    """P(the result is the neighbour farther from zero) for each value, under the right rounding and under the
    typical mistakes (keys are the hints' names)."""
    one, zero = torch.ones_like(q), torch.zeros_like(q)
    return {
        "right": q,
        "nearest": (q > 0.5).double(),
        "truncation": zero,
        "floor": torch.where(positive, zero, one),
        "ceil": torch.where(positive, one, zero),
        "reversed": 1 - q,
        "nearest_as_lo": torch.where(positive, torch.where(q < 0.5, q, one), torch.where(q > 0.5, q, zero)),
    }


def _interval(n: int, p: float, delta: float) -> tuple[int, int]:
    """Exact binomial acceptance interval [a, b] for Binomial(n, p): P(outside) <= delta."""
    if p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    return int(binom.ppf(delta / 2, n, p)), int(binom.isf(delta / 2, n, p))


def _fits(ups: torch.Tensor, p_up: torch.Tensor, n: int) -> bool:
    delta = DELTA / len(ups)
    return all(a <= k <= b for k, (a, b) in zip(ups.tolist(), (_interval(n, p, delta) for p in p_up.tolist())))


def _exponent_or_sign_changed(x: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """Where the sign differs or the exponent field moved by 2 or more: a carry out of the low 16 bits moves the
    exponent by at most 1, so only random bits added higher up the pattern do this."""
    def fields(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bits = t.float().contiguous().view(torch.int32)
        return bits < 0, (bits >> 23) & 0xFF

    sx, ex = fields(x)
    sg, eg = fields(got)
    return (sg != sx) | ((eg - ex).abs() >= 2)


def _call_sr(fn: Callable, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Call the learner's function on a copy it may not change; check type, dtype, shape, in-place changes."""
    before = x.clone()
    out = fn(x, g)
    expect(isinstance(out, torch.Tensor), f"return a tensor (of dtype torch.bfloat16), got {type(out).__name__}")
    expect(torch.equal(x, before), "your function changed its input x in place: x.view(torch.int32) shares x's "
           "memory, so `bits += r` (or add_, bitwise_and_) rewrites x. Build a new tensor: "
           "bits = x.view(torch.int32) + r.")
    expect_shape(out, tuple(x.shape), "the result")
    if out.dtype != BF16:
        extra = " Finish with .to(torch.bfloat16): once the low 16 bits are zero that conversion is exact." \
            if out.dtype == torch.float32 else ""
        raise Mistake(f"the result has dtype {out.dtype}; return a torch.bfloat16 tensor.{extra}")
    return out.float()


def _sr_membership(x: torch.Tensor, got: torch.Tensor, n: int) -> None:
    """Every result must be one of the two bf16 neighbours of its x (``got``: n draws of each x, shape (n, len(x)))."""
    lo, hi = bf16_neighbours(x)
    xs, lo, hi = x.expand_as(got), lo.expand_as(got), hi.expand_as(got)
    bad = ~((got == lo) | (got == hi))
    if not bad.any():
        return
    i = int(bad.flatten().nonzero()[0])
    xi, gi, li, hi_ = (float(t.flatten()[i]) for t in (xs, got, lo, hi))
    if _exponent_or_sign_changed(xs[bad], got[bad]).any():
        raise Mistake(f"random bits added to the wrong part of the pattern (sign/exponent changed): x = {xi:.9g} "
                      f"came back as {gi:.9g}, while its bf16 neighbours are {li:.9g} and {hi_:.9g}. Add a random "
                      "number in [0, 2^16) to the low 16 bits of the float32 pattern (the bits bf16 drops), then "
                      "clear those bits (& -65536); sign and exponent change only by a carry.")
    up = ~torch.signbit(xs)
    away = torch.where(up, hi, lo).to(BF16)  # the neighbour farther from zero (x itself when exact)
    beyond = torch.nextafter(away, torch.where(up, INF, -INF).to(BF16)).float()
    q = (xs.abs() - torch.minimum(lo.abs(), hi.abs())) / (hi - lo).where(hi > lo, torch.ones_like(hi))
    if bool((got[bad] == beyond[bad]).all()) and bool((q[bad] > 0.5).all()):  # only past the halfway point
        raise Mistake(f"the random bits were added, but .to(torch.bfloat16) then rounded the sum to nearest instead "
                      f"of cutting the low 16 bits off: x = {xi:.9g} came back as {gi:.9g}, beyond its neighbours "
                      f"{li:.9g} and {hi_:.9g}. Clear the low 16 bits (bits & -65536) before converting.")
    if li == hi_:
        k = int((bad & (xs == xi)).sum())
        raise Mistake(f"exact values must come back unchanged: x = {xi:.9g} is already a bf16 number but came back "
                      f"as {gi:.9g} ({k} of {n} draws). With two neighbours, round up only when u < p (p = 0 here); "
                      "if you add random bits, draw them from [0, 2^16): torch.randint(0, 1 << 16, ...).")
    raise Mistake(f"x = {xi:.9g} came back as {gi:.9g}, which is not one of its two bf16 neighbours {li:.9g} and "
                  f"{hi_:.9g}. Every result must be one of them: add fewer than 2^16 random units to the low 16 bits, "
                  "then clear them (or pick lo or hi).")


def _sr_hint(name: str, x: float, p: float, f: float) -> str:
    where = f"x = {x:.9g} should round up with probability p = (x − lo)/(hi − lo) = {p:.4f}, yours did in {f:.1%} " \
            "of the draws"
    return {
        "nearest": f"rounded to nearest, not stochastically (the result never goes the other way): {where}. Draw "
                   "random numbers so that x rounds up with probability p and down otherwise.",
        "truncation": f"always rounds down (truncation): the low bits are cut off, but nothing random was added "
                      f"first, so no value ever rounds away from zero ({where}). Add torch.randint(0, 1 << 16, ...) "
                      "to the bit pattern before clearing the low 16 bits.",
        "floor": f"always rounds down (truncation): every value goes to its lower neighbour lo ({where}). Round up "
                 "with probability p.",
        "ceil": f"always rounds up: every value goes to a neighbour away from x's lower one ({where}). Round up only "
                "with probability p.",
        "reversed": f"rounding probability reversed (rounds up with the probability of rounding down): {where}. "
                    "Round up when u < p, i.e. with a probability equal to the distance to lo over the gap.",
        "nearest_as_lo": f"took round-to-nearest (x.to(torch.bfloat16)) as the lower neighbour: when the cast rounds "
                         f"up, x lies below it and (x − lo)/(hi − lo) is negative ({where}). Take lo and hi on "
                         "either side of x.",
    }[name]


def _sr_frequencies(fn: Callable, x: torch.Tensor, q: torch.Tensor, g: torch.Generator) -> None:
    n = DRAWS
    got = _call_sr(fn, x.expand(n, -1).contiguous(), g)
    _sr_membership(x, got, n)
    lo, hi = bf16_neighbours(x)
    ups = (got == hi).sum(0)
    positive = x > 0
    models = _away_models(q, positive)
    p_up = torch.where(positive, models["right"], 1 - models["right"])
    if _fits(ups, p_up, n):
        return
    for name, away in models.items():
        if name != "right" and _fits(ups, torch.where(positive, away, 1 - away), n):
            i = int(((ups / n - p_up).abs()).argmax())
            raise Mistake(_sr_hint(name, float(x[i]), float(p_up[i]), float(ups[i]) / n))
    sd = torch.sqrt(p_up * (1 - p_up) / n).clamp_min(1 / n)
    i = int(((ups / n - p_up).abs() / sd).argmax())
    a, b = _interval(n, float(p_up[i]), DELTA / len(x))
    raise Mistake(f"x = {float(x[i]):.9g} lies {float(p_up[i]):.4f} of the way from its lower bf16 neighbour "
                  f"{float(lo[i]):.9g} to the upper one {float(hi[i]):.9g}, so it must round up with that "
                  f"probability; yours rounded up in {int(ups[i])} of {n} draws. A right rounding lands between {a} "
                  f"and {b} (exact binomial interval; a right function falls outside once in 10^9 runs).")


def _sr_unbiased(fn: Callable, g: torch.Generator) -> None:
    """Mean of n roundings of random values (a 2-D input) within a Hoeffding bound of each value."""
    k, n = 256, 2048
    x = torch.randn(k, generator=g) * 2.0 ** torch.randint(-20, 21, (k,), generator=g).float()
    got = _call_sr(fn, x.expand(n, -1).contiguous(), g)
    _sr_membership(x, got, n)
    lo, hi = bf16_neighbours(x)
    gap = (hi - lo).double()
    err = (got.double() - x.double()).mean(0) / gap.where(gap > 0, torch.ones_like(gap))
    bound = math.sqrt(math.log(2 * k / DELTA) / (2 * n))  # Hoeffding: each draw's error lies in a range of 1 gap
    i = int(err.abs().argmax())
    expect(float(err[i].abs()) <= bound,
           f"biased: the mean of {n} roundings of x = {float(x[i]):.9g} is off by {float(err[i]):+.3f} gaps "
           f"(gap {float(gap[i]):.3g}); an unbiased rounding stays within ±{bound:.3f} gaps (Hoeffding bound; a "
           "right function fails once in 10^9 runs). Round up with probability (x − lo)/(hi − lo) for every x.")


def _sr_generator(fn: Callable, seed: int) -> None:
    x = torch.linspace(1.0, 2.0, 257)[1:-1:2]  # 128 values, none of them a bf16 number
    first = fn(x, torch.Generator().manual_seed(seed))
    again = fn(x, torch.Generator().manual_seed(seed))
    expect(torch.equal(first, again), "your function ignores the generator it is given: two calls with generators "
           "seeded alike gave different results. Draw from it: torch.randint(..., generator=generator) or "
           "torch.rand(..., generator=generator).")
    g = torch.Generator().manual_seed(seed)
    expect(not torch.equal(fn(x, g), fn(x, g)), "every call rounds the same way: your function re-seeds (or makes) "
           "its own generator, so successive training steps would get the same random bits and their rounding "
           "errors would add up. Draw from the generator passed in, without seeding it.")


def check_stochastic_round_bf16(fn: Callable) -> CheckResult:
    """Exercise: ``stochastic_round_bf16(x, generator) -> bf16 tensor``. See the module docstring."""

    def body(fn: Callable) -> None:
        seed = get_seed()
        g = torch.Generator().manual_seed(seed * 1_000_003 + 7)
        x, q, exact = _sr_values(g)
        with threads(1):  # small tensors: on a busy machine two OpenMP threads mostly wait for each other
            _sr_frequencies(fn, x, q, g)
            _sr_membership(exact, _call_sr(fn, exact.expand(1024, -1).contiguous(), g), 1024)  # exact values stay
            _sr_unbiased(fn, g)
            _sr_generator(fn, seed)

    return check_code("stochastic_round_bf16", fn, body,
                      praise="every result is one of the two bf16 neighbours, exact values stay, each value rounds "
                             "up as often as (x − lo)/(hi − lo) says (exact binomial intervals), the means are "
                             "unbiased, and the random bits come from the generator.",
                      not_written="Round each element up to the next bf16 number with probability (x − lo)/(hi − lo).")


# --- exercise 2: counting lost updates -----------------------------------------------------------
def _count_cases(dtype: torch.dtype, g: torch.Generator, n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, u): weights of ``dtype`` and float32 updates around the gap: zeros, tiny ones, exact ties (lost when w's
    last bit is even), just above and below a tie, a quarter gap (a tie just below a power of two), larger ones.
    The first few are the hand cases of the notebook."""
    e = torch.randint(-6, 7, (n,), generator=g).double()
    frac = torch.rand(n, generator=g, dtype=torch.float64)
    frac[::8] = 0  # some exact powers of two
    w = (2.0**e * (1 + frac)).to(dtype)
    w = torch.where(torch.rand(n, generator=g) < 0.3, -w, w)
    a = w.abs()
    gap = (_toward(a, INF) - a).double()
    near = 2.0 ** -(12 if dtype == torch.float16 else 10)  # u.to(bf16 / fp16) turns (1 ± near) / 2 into a tie
    kind = torch.randint(0, 8, (n,), generator=g)
    tiny = 2.0 ** -torch.randint(3, 9, (n,), generator=g).double() * (1 + torch.randint(0, 8, (n,), generator=g) / 8)
    rand = torch.randint(1, 2**14, (n,), generator=g).double() / 2**12
    const = torch.tensor([0.0, 0.5, 0.5 + near / 2, 0.5 - near / 2, 0.25], dtype=torch.float64)[:, None].expand(5, n)
    scale = torch.cat([const[:1], tiny[None], const[1:], rand[None], rand[None]])  # one row per kind
    u = scale.gather(0, kind[None])[0] * gap
    u = torch.where(torch.rand(n, generator=g) < 0.5, -u, u).float()
    if dtype == BF16:
        hand_w = torch.tensor([1.0, 1.0, 1.0, 1.0 + 2**-7, 1.0, 1.0], dtype=BF16)
        hand_u = torch.tensor([0.003, 0.0, 2**-8, 2**-8, -0.003, 2**-7])
        w, u = torch.cat([hand_w, w]), torch.cat([hand_u, u])
    return w, u


def _exact_lost(w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per element: u != 0 and w + u (exact in float64 here) rounds once, to nearest even, back to w."""
    return (round_exact(w.double() + u.double(), dtype) == w.double()) & (u != 0)


def _as_number(value: object) -> float:
    if isinstance(value, torch.Tensor):
        expect(value.numel() == 1, f"return one number, the count of lost updates (e.g. int(lost.sum())), not a "
                                   f"tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise Mistake(f"return the number of lost updates as an int, got {type(value).__name__} {value!r:.40}")


def _explain(w: float, u: float, dtype: torch.dtype) -> str:
    """Why one update is lost or kept, in words."""
    name = str(dtype).removeprefix("torch.")
    s = torch.tensor([w], dtype=torch.float64) + u
    r = round_exact(s, dtype)
    head = f"w = {w:.9g} ({name}), u = {u:.9g}: w + u = {float(s[0]):.12g}"
    if u == 0:
        return f"{head}; u = 0 has nothing to lose, so it is not counted"
    if dtype == torch.float64:
        head = f"w = {w:.17g} (float64), u = {u:.9g}: in float64 w + u rounds to {float(s[0]):.17g}"
        where = "(computed, as every float64 sum, with one rounding)"
    elif float(r[0]) == float(s[0]):
        where = f"is itself a {name} number"
    else:
        other = _toward(r, INF if float(r[0]) < float(s[0]) else -INF)
        a, b = sorted([float(r[0]), float(other[0])])
        where = f"lies between the {name} numbers {a:.9g} and {b:.9g}; the nearest (ties to the even one) is " \
                f"{float(r[0]):.9g}"
    fate = "lost" if float(r[0]) == w else "kept"
    return f"{head} {where}, so the update is {fate}"


def _count_mistakes(w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> list[tuple[int, str]]:
    """(what a typical wrong counter returns on this case, the hint naming that mistake)."""
    name = str(dtype).removeprefix("torch.")
    lost = int(_exact_lost(w, u, dtype).sum())
    moved, zeros = int((u != 0).sum()), int((u == 0).sum())
    f32 = int((((w + u) == w) & (u != 0)).sum())
    first = int((((w + u.to(dtype)).to(dtype) == w) & (u != 0)).sum())
    narrowed = int((((w.float() + u).to(dtype) == w) & (u != 0)).sum())
    half = torch.finfo(dtype).eps * w.double().abs() / 2
    below = {int(((u.double().abs() < half) & (u != 0)).sum()), int(((u.double().abs() <= half) & (u != 0)).sum())}
    in_f32 = ("counted lost updates in float32 instead of the storage dtype: w + u is a float32 tensor, and compared "
              "with w in float32 almost nothing is lost. Round the sum back to the storage format first: "
              "(w + u).to(dtype) == w")
    no_zeros = "an update of 0 has nothing to lose, so count only where u != 0"
    return [
        (lost + zeros, f"counted zero updates as lost: {no_zeros}"),
        (f32 + zeros, f"{in_f32}; and counted zero updates as lost too: {no_zeros}"),
        (f32, in_f32),
        (first, f"rounded the update u to {name} before adding it: only the sum w + u is rounded. Near a tie that "
                f"changes the result: u = gap/2 × (1 + 2^-10) becomes exactly gap/2 in {name}"),
        (moved - lost, "counted the updates that survive (w + u != w), not the lost ones"),
        (narrowed, f"converted w to float32 before adding (w.float()): {name} weights lose their low bits, so w + u "
                   "no longer comes back to w. Add w + u directly: torch computes in the wider of the two types"),
    ] + [(t, "compared |u| with half the gap (eps·|w|/2) instead of rounding w + u: that misses ties (w + gap/2 "
             "goes to the even neighbour: lost when w's last bit is even, kept when odd) and the gap that halves "
             "just below a power of two. Round the sum: (w + u).to(dtype) == w") for t in sorted(below)]


def _count_one_case(fn: Callable, w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    each = _exact_lost(w, u, dtype)
    keep = (((w + u).to(dtype) == w) & (u != 0)) == each  # where a float32 sum would round twice, the case is
    w, u, each = w[keep], u[keep], each[keep]  # left out (there are none by construction)
    w0, u0 = w.clone(), u.clone()
    got = _as_number(fn(w, u, dtype))
    expect(torch.equal(w, w0) and torch.equal(u, u0), "your function changed w or u in place (e.g. w += u): compute "
           "the new weights in a new tensor, w + u.")
    lost = int(each.sum())
    if got == lost:
        return
    zeros = int((u == 0).sum())
    counts = f" ({name}: {len(u)} updates, {zeros} of them 0; exact count {lost}, yours {got:g})"
    for wrong, hint in _count_mistakes(w, u, dtype):
        if wrong != lost and got == wrong:
            raise Mistake(hint + counts)
    moved = int((u != 0).sum())
    if 0 < got < 1 and any(math.isclose(got, lost / d, rel_tol=1e-6) for d in (moved, len(u))):
        raise Mistake(f"return the number of lost updates (an int), not their share{counts}")
    for i in range(len(u)):
        one = _as_number(fn(w[i:i + 1], u[i:i + 1], dtype))
        if one != int(each[i]):
            raise Mistake(f"for {_explain(float(w[i]), float(u[i]), dtype)}; your function counted {one:g} "
                          f"(expected {int(each[i])}).")
    raise Mistake(f"each single update is counted right, but not all of them together{counts}: count over the "
                  "whole tensor, e.g. int(lost.sum()).")


def check_count_lost_updates(fn: Callable) -> CheckResult:
    """Exercise: ``count_lost_updates(w, u, dtype) -> int``. See the module docstring."""

    def body(fn: Callable) -> None:
        g = torch.Generator().manual_seed(get_seed() * 1_000_003 + 11)
        with threads(1):
            for dtype in (BF16, torch.float16, torch.float32, torch.float64):
                _count_one_case(fn, *_count_cases(dtype, g), dtype)

    return check_code("count_lost_updates", fn, body,
                      praise="your count matches an exact one (the sum in float64, rounded once to the storage "
                             "format, ties to even) in bf16, fp16, fp32 and fp64: ties, near-ties, powers of two and "
                             "zero updates included.",
                      not_written="Count where (w + u), rounded to dtype, equals w although u != 0.")


# --- answers read off the run ----------------------------------------------------------------------
def check_eps_in_fp16(answer: float, run) -> CheckResult:  # noqa: ANN001 (a lab.PrecisionRun)
    """Question: the value Adam's default eps = 1e-8 takes in fp16; ``run`` is the pure-fp16 Adam run."""
    expected = float(torch.tensor(1e-8, dtype=torch.float16))
    try:
        loss = float(run.history.val_loss[-1])
    except (AttributeError, IndexError, TypeError, ValueError):  # not the notebook's run: say so, don't crash
        loss = None
    seen = "run the pure-fp16 Adam cell above (adam16) to see what it does to training" if loss is None else \
        "which is why your pure-fp16 Adam run above ended with a validation loss of nan" if math.isnan(loss) \
        else f"your pure-fp16 Adam run above still ended with a validation loss of {loss:.3f}"
    return check_answer(answer, expected, exercise="eps_in_fp16", abs_tol=1e-12,
                        praise=f"1e-8 is less than half of fp16's smallest positive number 2^-24 ≈ 6e-8, so it is "
                               f"stored as {expected:g}; Adam's m / (sqrt(v) + eps) then divides by zero wherever v "
                               f"underflows too, {seen}.",
                        hint="Try torch.tensor(1e-8, dtype=torch.float16) and compare 1e-8 with fp16's smallest "
                             "positive number, 2**-24.",
                        mistakes={1e-8: "1e-8 is what eps is in fp32; fp16 cannot hold it: its smallest positive "
                                        "number is 2**-24 ≈ 6e-8. What does 1e-8 round to?",
                                  2.0**-24: "2**-24 is fp16's smallest positive number; 1e-8 is less than half of it, "
                                            "so it rounds to the other neighbour."})


def largest_lost_update(w: float, dtype: torch.dtype) -> float:
    """The largest positive u with w + u rounding back to w (exactly, ties to even): half the gap above w when w's
    last bit is even, else just below half."""
    wt = torch.tensor([w], dtype=dtype)
    half = float((_toward(wt, INF) - wt).double()[0]) / 2
    s = torch.tensor([w + half], dtype=torch.float64)
    return half if float(round_exact(s, dtype)[0]) == w else math.nextafter(half, 0.0)


def check_largest_lost_update(answer: float, w: float = 6.0) -> CheckResult:
    """Question: the largest update u > 0 that is lost when ``w`` (a positive bf16 number) is stored in bf16."""
    w = check_float(w, "w", low=0, low_open=True, fix="a positive weight stored in bf16, e.g. 6.0")
    if float(torch.tensor(w).to(BF16)) != w:
        raise BadArgument(f"w={w!r}: must be a number bf16 can hold exactly, e.g. 6.0")
    expected = largest_lost_update(w, BF16)
    e = math.floor(math.log2(w))
    gap = 2.0 ** (e - 7)
    between = f"{w:g} lies between 2^{e} = {2.0**e:g} and 2^{e + 1} = {2.0**(e + 1):g}"
    tie = "a tie, and ties go to the neighbour whose last bit is even: w itself" if expected == gap / 2 else \
        "a tie, and ties go to the neighbour whose last bit is even, here the next one: so just below it"
    return check_answer(answer, expected, exercise="largest_lost_update", rel_tol=1e-3,
                        praise=f"{between}, where bf16 numbers are 2^{e - 7} apart: u = half of that gap, {gap / 2:g}, "
                               f"puts w + u exactly halfway, {tie}. Anything larger rounds up.",
                        hint=f"Find the two bf16 numbers around {w:g} (torch.nextafter, or the gap 2^(e−7) for w in "
                             "[2^e, 2^(e+1))); an update is lost while w + u is nearer to w than to the next one.",
                        mistakes={gap: f"that is the whole gap: w + {gap:g} is the next bf16 number, so it is kept. "
                                       "How far can w + u go and still round back to w?",
                                  2.0**-8: f"2^-8 is half the gap at 1.0; the gap doubles at every power of two, and "
                                           f"{between}.",
                                  2.0**-7: f"2^-7 is bf16's eps, the whole gap at 1.0; {between}, where the gap is "
                                           f"2^{e} times larger, and half of it is lost.",
                                  w * 2.0**-8: f"eps·w/2 scales the gap with w itself, but the gap is set by the power "
                                               f"of two at or below w (2^{e} for {w:g}), not by w."})


def check_most_lost_layer(answer: str, survey, setting: str = "adam lr 0.0001",  # noqa: ANN001 (a LostSurvey)
                          dtype: str = "bf16") -> CheckResult:
    """Question: which parameter tensor loses the largest share of its updates in ``dtype`` under ``setting``
    (``survey``: the learner's :class:`~.hypotheses.LostSurvey`, counted with their own counter)."""
    if not all(hasattr(survey, k) for k in ("layers", "share", "row")):
        return check_answer(answer, object(), exercise="most_lost_layer",
                            hint=f"the survey to read the answer from is missing (got {type(survey).__name__}): run "
                                 "the survey cell of section 3 (survey = hypotheses.lost_update_survey(...)) and then "
                                 "this cell again.")
    shares = {layer: survey.share(setting, dtype, layer) for layer in survey.layers}
    top = max(shares.values())
    best = [k for k, v in shares.items() if v >= top - 1e-3]  # ties at the table's precision all count
    low = min(shares, key=shares.get)
    ratio = {k: survey.row(setting, dtype, k).median_u / max(survey.row(setting, dtype, k).median_w, 1e-30)
             for k in shares}
    said = str(answer).strip() if answer is not None and answer is not Ellipsis else answer
    expected = said if said in best else best[0]
    return check_answer(said, expected, exercise="most_lost_layer",
                        praise=f"{expected} loses {100 * shares[expected]:.1f}% of its updates in {dtype} "
                               f"({setting}); its median |u| / median |w| is {ratio[expected]:.1e}, against "
                               + ", ".join(f"{k} {v:.1e}" for k, v in ratio.items() if k != expected) + ".",
                        hint=f"Read the {dtype} column under '{setting}' in the survey table and answer with the "
                             f"layer's name as printed (one of {', '.join(shares)}).",
                        mistakes={} if low in best else {low: f"{low} loses the smallest share, not the largest."})
