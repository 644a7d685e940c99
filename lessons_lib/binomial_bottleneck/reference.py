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
:class:`FastDropout` is ``nn.Dropout`` with these masks on the CPU. :func:`mask_share` reads a ``pstats`` profile.
"""

from __future__ import annotations

import math
import pstats
import sys
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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
# A torch layer with these masks
# --------------------------------------------------------------------------------------------------
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
_BIT_ROWS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # byte -> its 8 bits, as unpackbits


def _torch_seeded(gen: np.random.Generator) -> np.random.Generator:
    """Re-seed ``gen`` (SFC64) from torch's global CPU generator, so masks follow ``torch.manual_seed``."""
    words = np.array(torch.empty(4, dtype=torch.int64).random_().tolist(), dtype=np.uint64)  # 4 draws < 2^63
    gen.bit_generator.state = {"bit_generator": "SFC64", "state": {"state": words}, "has_uint32": 0, "uinteger": 0}
    return gen


class _Pool:
    """Numpy buffers per (shape, dtype), handed out again only when nothing but the pool holds them (reference
    count): an output or gradient the caller keeps is never overwritten, and reused buffers are warm in cache."""

    def __init__(self, size: int = 4):
        self.size, self.free = size, {}

    def get(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        arrays = self.free.setdefault((shape, np.dtype(dtype)), [])
        for a in arrays:
            if sys.getrefcount(a) <= 3:  # the list, the loop variable, getrefcount's argument
                return a
        arrays.append(np.empty(shape, dtype))  # all busy: a new one (the pool keeps at most ``size``)
        return arrays.pop() if len(arrays) > self.size else arrays[-1]


def _keep_into(keep: np.ndarray, p: float, method: str, rng: np.random.Generator) -> np.ndarray:
    """Fill the flat bool ``keep`` by ``method`` (a key of :data:`MASKS`): FastDropout's loop, no checks."""
    n = keep.size
    if method == "uint16" and round(65536 * p) < 65536:
        return np.greater_equal(random_bytes(rng, 2 * n).view(np.uint16), round(65536 * p), out=keep)
    if method == "uint8" and round(256 * p) < 256:
        return np.greater_equal(random_bytes(rng, n), round(256 * p), out=keep)
    keep[...] = MASKS[method]((n,), p, rng)
    return keep


def scaled_mask(shape: Shape, p: float, method: str, rng: np.random.Generator, dtype=np.float32,
                out: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray:
    """The mask FastDropout multiplies by: ``keep / (1 - p)`` as floats of ``dtype`` (into ``out`` if given; ``keep``:
    a flat bool buffer to use), from :func:`bernoulli_mask`'s generators. At p = 0.5 with "auto" / "bits" one
    random byte gives 8 units at once: a row of a 256 x 8 table of scaled bits (the bits :func:`bits_mask` draws)."""
    shp, p = _shape(shape), check_p(p)
    method = auto_method(p) if method == "auto" else check_choice(method, "method", MASKS)
    return _scaled_into(np.empty(shp, dtype) if out is None else out, p, method, rng,
                        np.empty(math.prod(shp), bool) if keep is None else keep)


def _scaled_into(out: np.ndarray, p: float, method: str, rng: np.random.Generator, keep: np.ndarray) -> np.ndarray:
    scale, n = out.dtype.type(1.0 / (1.0 - p)), out.size
    if method == "bits" and n % 8 == 0:
        np.take(_BIT_ROWS.astype(out.dtype) * scale, random_bytes(rng, n // 8), axis=0, out=out.reshape(n // 8, 8))
        return out
    np.multiply(_keep_into(keep, p, method, rng).view(np.uint8).reshape(out.shape), scale, out=out)
    return out


class _MaskMul(torch.autograd.Function):
    """``x * m`` with a mask that needs no gradient; both passes are one numpy multiply on the CPU into a pooled
    buffer (no OpenMP threads to wake for an elementwise product, no autograd node for ``m``, warm memory). A
    backward that itself needs a graph (``create_graph=True``) or gets another dtype falls back to torch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: np.ndarray, pool: _Pool) -> torch.Tensor:
        ctx.m, ctx.pool, ctx.dtype = m, pool, x.dtype
        return torch.from_numpy(np.multiply(x.detach().numpy(), m, out=pool.get(m.shape, m.dtype)))

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        m = ctx.m
        if torch.is_grad_enabled() or dout.dtype != ctx.dtype or dout.is_conj() or dout.is_neg():
            return dout * torch.from_numpy(m), None, None
        return torch.from_numpy(np.multiply(dout.numpy(), m, out=ctx.pool.get(m.shape, m.dtype))), None, None


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
        self.method = check_choice(method, "method", ("auto", *MASKS))
        if method == "bits" and self.p not in (0.0, 0.5):
            raise BadArgument(f"method 'bits' is exact only at p = 0.5, got p={p!r}: use 'auto' or 'exact'")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise BadArgument(f"rng must be a numpy Generator or None, got {type(rng).__name__}: use "
                              "np.random.default_rng(seed), or None to follow torch.manual_seed")
        self.rng = rng
        self._method = auto_method(self.p) if method == "auto" and self.p > 0 else method
        self._own = np.random.Generator(np.random.SFC64(0))
        self._pool = _Pool()

    def extra_repr(self) -> str:
        return f"p={self.p}, method={self.method!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise BadArgument(f"FastDropout takes a torch.Tensor, got {type(x).__name__}: use torch.as_tensor(x)")
        if not self.training or self.p == 0.0:
            return x
        if not x.is_floating_point():
            raise BadArgument(f"FastDropout needs a floating-point tensor, got dtype {x.dtype}: use x.float()")
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        gen = self.rng if self.rng is not None else _torch_seeded(self._own)
        np_dtype, shape = _NUMPY_FLOATS.get(x.dtype), tuple(x.shape)
        if np_dtype is None or x.is_conj() or x.is_neg():  # e.g. bfloat16, which numpy lacks: multiplied in torch
            return x * torch.from_numpy(scaled_mask(shape, self.p, self.method, gen)).to(x.dtype)
        m = _scaled_into(self._pool.get(shape, np_dtype), self.p, self._method, gen,
                         self._pool.get((x.numel(),), bool))
        return _MaskMul.apply(x, m, self._pool)


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
