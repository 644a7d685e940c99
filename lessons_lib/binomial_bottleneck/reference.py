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
* :func:`bernoulli_mask` picks by name; ``"auto"`` is the fastest that is within 2^-16 of ``p``.

:class:`FastDropout` is ``nn.Dropout`` with these masks on the CPU. :func:`mask_share` reads a ``pstats`` profile:
the share of the run's time spent generating masks.
"""

from __future__ import annotations

import math
import pstats
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..validate import check_p

Shape = int | tuple[int, ...]
RNG = np.random.Generator | np.random.RandomState | int | None
_FAST_BITGENS = (np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox)


def _shape(shape: Shape) -> tuple[int, ...]:
    shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shp):
        raise ValueError(f"mask shape must have sizes >= 0, got {shape}")
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


def _bits(shape: Shape, p: float, rng: np.random.Generator) -> np.ndarray:
    if p != 0.5:
        raise ValueError(f"method 'bits' makes one fair bit per unit, so it is exact only at p = 0.5 (got {p}); use "
                         "'exact', 'uint8' (1/256 steps) or 'auto' for other p")
    return bits_mask(shape, rng)


MASKS = {"binomial": binomial_mask, "uniform": uniform_mask, "uint16": uint16_mask, "uint8": uint8_mask,
         "exact": exact_mask, "bits": _bits}  # name -> mask(shape, p, rng), slowest first


def auto_method(p: float) -> str:
    """The fastest method within 2^-16 of ``p``: bits at 0.5, uint8 at multiples of 1/256, else uint16."""
    p = check_p(p)
    if p == 0.5:
        return "bits"
    return "uint8" if (256 * p).is_integer() else "uint16"


def as_generator(rng: RNG) -> np.random.Generator:
    """A Generator for ``rng``: itself; a RandomState's bit generator; an int seed; None -> numpy's global bit
    generator (the one ``np.random.seed`` and :func:`lessons_lib.seeds.seed_everything` seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.Generator(np.random.get_bit_generator())
    if isinstance(rng, np.random.RandomState):
        return np.random.Generator(rng._bit_generator)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, RandomState, int seed or None, got {type(rng).__name__}")


def bernoulli_mask(shape: Shape, p: float, method: str = "auto", rng: RNG = None) -> np.ndarray:
    """A bool mask of ``shape``, True (keep) with probability ``1 - p`` per unit, by ``method`` ("auto" or a key of
    :data:`MASKS`). ``p = 0``: all True, no random number drawn. Raises ValueError for p outside [0, 1), an
    unknown method, or "bits" at p != 0.5."""
    p = check_p(p)
    if method != "auto" and method not in MASKS:
        raise ValueError(f"unknown mask method {method!r}: choose 'auto' or one of {', '.join(MASKS)}")
    if p == 0.0:
        return np.ones(_shape(shape), dtype=bool)
    method = auto_method(p) if method == "auto" else method
    if method == "binomial" and (rng is None or isinstance(rng, np.random.RandomState)):
        return binomial_mask(shape, p, rng)  # exactly the seed's call on that RandomState (None: numpy's global)
    return MASKS[method](shape, p, as_generator(rng))


# --------------------------------------------------------------------------------------------------
# A torch layer with these masks
# --------------------------------------------------------------------------------------------------
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _torch_seeded(gen: np.random.Generator) -> np.random.Generator:
    """Re-seed ``gen`` (PCG64) from torch's global CPU generator, so masks follow ``torch.manual_seed``."""
    a, b = (int(v) for v in torch.empty(2, dtype=torch.int64).random_().tolist())  # two draws in [0, 2^63)
    gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": (a << 64) | b, "inc": (b << 1) | 1},
                               "has_uint32": 0, "uinteger": 0}
    return gen


class FastDropout(nn.Module):
    """Inverted dropout with ``nn.Dropout``'s semantics (training: zero with probability ``p``, scale the rest by
    1/(1-p); eval: identity) and a fast CPU mask.

    ``method``: the CPU mask generator (default "auto", see :func:`bernoulli_mask`). ``rng``: a numpy Generator
    for the masks; None draws a fresh stream state from torch's global generator at every call, so
    ``torch.manual_seed`` makes runs reproducible exactly as with ``nn.Dropout``. CUDA / MPS: ``F.dropout``.
    """

    def __init__(self, p: float = 0.5, method: str = "auto", rng: np.random.Generator | None = None):
        super().__init__()
        self.p = check_p(p)
        if method != "auto" and method not in MASKS:
            raise ValueError(f"unknown mask method {method!r}: choose 'auto' or one of {', '.join(MASKS)}")
        self.method, self.rng = method, rng
        self._own = np.random.Generator(np.random.PCG64(0))

    def extra_repr(self) -> str:
        return f"p={self.p}, method={self.method!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        gen = self.rng if self.rng is not None else _torch_seeded(self._own)
        keep = bernoulli_mask(tuple(x.shape), self.p, method=self.method, rng=gen)
        scale = 1.0 / (1.0 - self.p)
        np_dtype = _NUMPY_FLOATS.get(x.dtype)
        if np_dtype is not None:  # one numpy pass writes the scaled mask: less memory traffic than two in torch
            m = torch.from_numpy(np.multiply(keep, np_dtype(scale), dtype=np_dtype))
        else:  # e.g. bfloat16, which numpy lacks: uint8 -> float is vectorized in torch (bool -> float is not)
            m = torch.from_numpy(keep.view(np.uint8)).to(x.dtype).mul_(scale)
        # plain autograd: mul saves only m for the backward (dx = dout * m), measured faster than a custom Function
        return x * m


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
