"""Dropout masks: ``bernoulli_mask(shape, p, method=...)`` -> bool array, True = KEEP (probability 1 - p).

``p`` is the probability to DROP, everywhere in this course. Methods (``MASK_METHODS``), slowest first:

* ``"binomial"``: ``RandomState.binomial(1, 1 - p, size)``, the call of seed 000 (one variate per element,
  each a small algorithm of its own). Exact.
* ``"uniform"``: ``Generator.random(dtype=float32) < 1 - p``. Keep probability quantized to 2^-24.
* ``"uint16"``: random 16-bit words ``w``, keep if ``w < round(65536 (1 - p))``. Quantized to 2^-16.
* ``"uint8"``: random bytes ``b``, keep if ``b < round(256 (1 - p))``. Quantized to 1/256: at p = 0.1 the
  keep probability is 230/256 = 0.8984, not 0.9.
* ``"refine"``: the uint8 threshold, but the elements whose byte *equals* the threshold byte (1 in 256) are
  decided by further random bytes, recursively: exact to float64 precision, at ~one byte per element.
* ``"bits"``: one random bit per element (random 64-bit words unpacked). Exact, and only possible, at p = 0.5.
* ``"torch"``: ``torch.rand(shape, device=...) < 1 - p`` on the current device (CUDA/MPS if present).
  Quantized to 2^-24.

``"auto"`` picks the fastest method that is within 2^-16 of 1 - p for every p: ``bits`` at p = 0.5,
``uint8`` where 256 (1 - p) is a whole number (then it is exact), ``uint16`` elsewhere (within 2^-17; measured
faster than ``refine``, whose search for the tied bytes costs a pass of its own).
``p = 0`` returns all-True without drawing any random number.

Random bits: ``rng`` is a ``numpy.random.Generator`` (fast paths for 64-bit bit generators such as PCG64),
a ``RandomState``, an int seed, or None: numpy's global generator (the one ``np.random.seed`` and
:func:`lessons_lib.seeds.seed_everything` seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .validate import check_p

Shape = int | tuple[int, ...]
RNG = np.random.Generator | np.random.RandomState | int | None

_FAST_BITGENS = (np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox)


@dataclass(frozen=True)
class MaskMethod:
    """What a method does and how exact it is: ``resolution`` bounds |keep probability - (1 - p)|."""

    name: str
    description: str
    resolution: float  # 0.0 = exact (float64); math.nan = only defined at some p (see ``only_p``)
    only_p: float | None = None


MASK_METHODS: dict[str, MaskMethod] = {
    "binomial": MaskMethod("binomial", "RandomState.binomial(1, 1-p, size): seed 000's call", 0.0),
    "uniform": MaskMethod("uniform", "Generator.random(dtype=float32) < 1-p", 2.0**-24),
    "uint16": MaskMethod("uint16", "16-bit random words < round(65536 (1-p))", 2.0**-17),
    "uint8": MaskMethod("uint8", "random bytes < round(256 (1-p)), p quantized to 1/256", 2.0**-9),
    "refine": MaskMethod("refine", "random bytes < 256 (1-p), ties at the threshold byte refined recursively", 0.0),
    "bits": MaskMethod("bits", "one random bit per element (unpacked); p = 0.5 only", 0.0, only_p=0.5),
    "torch": MaskMethod("torch", "torch.rand(shape, device) < 1-p on the current device", 2.0**-24),
}
AUTO_TOLERANCE = 2.0**-16


def check_method(method: str) -> str:
    """Return ``method`` if it is "auto" or one of MASK_METHODS, else raise ValueError listing them."""
    if method != "auto" and method not in MASK_METHODS:
        raise ValueError(f"unknown mask method {method!r}: choose 'auto' or one of {', '.join(MASK_METHODS)}")
    return method


def auto_method(p: float) -> str:
    """The method "auto" uses at drop probability ``p``."""
    p = check_p(p)
    if p == 0.5:
        return "bits"
    return "uint8" if (256 * (1.0 - p)).is_integer() else "uint16"


def keep_probability(method: str, p: float) -> float:
    """The exact probability that ``method`` keeps an element at drop probability ``p`` (its quantization)."""
    p = check_p(p)
    method = check_method(method)
    if method == "auto":
        method = auto_method(p)
    q = 1.0 - p
    if p == 0.0:
        return 1.0
    if method in ("binomial", "refine"):
        return q
    if method == "bits":
        _bits_ok(p)
        return 0.5
    if method == "uint8":
        return min(round(256 * q), 256) / 256
    if method == "uint16":
        return min(round(65536 * q), 65536) / 65536
    # uniform / torch: u = k 2^-24 (k uniform in 0..2^24-1) compared in float32 with float32(q)
    q32 = float(np.float32(q))
    return min(math.ceil(q32 * 2**24), 2**24) / 2**24


def _bits_ok(p: float) -> None:
    if p != 0.5:
        raise ValueError(f"method 'bits' makes one fair bit per element, so it is exact only at p = 0.5 (got {p}); "
                         "use 'refine' (exact), 'uint8' (1/256 steps) or 'auto' for other p")


_GLOBAL: list = [None, None]  # (bit generator, Generator wrapping it)


def as_generator(rng: RNG) -> np.random.Generator:
    """A Generator for ``rng``: itself; a RandomState's bit generator; an int seed; None -> numpy's global one."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        bg = np.random.get_bit_generator()  # follows np.random.seed / seed_everything
        if _GLOBAL[0] is not bg:
            _GLOBAL[0], _GLOBAL[1] = bg, np.random.Generator(bg)
        return _GLOBAL[1]
    if isinstance(rng, np.random.RandomState):
        return np.random.Generator(rng._bit_generator)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, RandomState, int seed or None, got {type(rng).__name__}")


def random_bytes(rng: RNG, n: int) -> np.ndarray:
    """``n`` uniformly random bytes (uint8 array). 64-bit bit generators give them at memory speed."""
    g = as_generator(rng)
    bg = g.bit_generator
    if isinstance(bg, _FAST_BITGENS):
        return bg.random_raw((n + 7) // 8).view(np.uint8)[:n]
    return np.frombuffer(g.bytes(n), dtype=np.uint8)  # e.g. MT19937: 32 random bits per raw draw


def _size(shape: Shape) -> tuple[tuple[int, ...], int]:
    shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shp):
        raise ValueError(f"mask shape must have sizes >= 0, got {shape}")
    return shp, math.prod(shp)


def _refine(g: np.random.Generator, n: int, q: float) -> np.ndarray:
    """Flat bool array, each True with probability q (0 <= q < 1), exactly: byte b < 256 q, ties refined."""
    b = random_bytes(g, n)
    s = q * 256.0
    t = int(s)  # 0..255
    frac = s - t  # exact in binary floating point
    keep = b < t
    if frac > 0.0 and n:
        ties = np.flatnonzero(b == t)
        if ties.size:
            keep[ties] = _refine(g, ties.size, frac)  # at most ~7 levels: 8 more bits of q per level
    return keep


def _randomstate_binomial(rs: np.random.RandomState, q: float, shape: tuple[int, ...]) -> np.ndarray:
    """Seed 000's call, ``RandomState.binomial(1, 1 - p, size)``, as a bool mask (its own profile row)."""
    return rs.binomial(1, q, size=shape).astype(bool)


def _threshold(b: np.ndarray, t: int, top: int) -> np.ndarray:
    if t >= top:
        return np.ones(b.shape, dtype=bool)
    return b < t


def bernoulli_mask(shape: Shape, p: float, method: str = "auto", rng: RNG = None,
                   device: torch.device | str | None = None) -> np.ndarray:
    """A bool array of ``shape``, True (keep) with probability ``1 - p`` independently per element.

    ``method``: "auto" or a key of MASK_METHODS (see the module docstring for each one's exactness).
    ``device`` is only used by "torch" (default: a GPU if present, else the CPU).
    Raises ValueError for p outside [0, 1) or an unknown method. ``p = 0``: all True, no RNG drawn.
    """
    p = check_p(p)
    method = check_method(method)
    shp, n = _size(shape)
    if p == 0.0:
        return np.ones(shp, dtype=bool)
    if method == "auto":
        method = auto_method(p)
    q = 1.0 - p
    if method == "binomial":
        if rng is None:
            rs = np.random.mtrand._rand  # numpy's global RandomState, exactly np.random.binomial
        elif isinstance(rng, np.random.RandomState):
            rs = rng
        else:
            rs = np.random.RandomState(as_generator(rng).bit_generator)
        return _randomstate_binomial(rs, q, shp)
    g = as_generator(rng)
    if method == "uniform":
        return g.random(shp, dtype=np.float32) < np.float32(q)
    if method == "uint8":
        return _threshold(random_bytes(g, n), round(256 * q), 256).reshape(shp)
    if method == "uint16":
        words = random_bytes(g, 2 * n).view(np.uint16)
        return _threshold(words, round(65536 * q), 65536).reshape(shp)
    if method == "refine":
        return _refine(g, n, q).reshape(shp)
    if method == "bits":
        _bits_ok(p)
        return np.unpackbits(random_bytes(g, (n + 7) // 8), count=n).view(bool).reshape(shp)
    # torch
    return torch_mask(shp, p, device=device, seed=int(g.integers(0, 2**63 - 1))).cpu().numpy()


def torch_mask(shape: Shape, p: float, device: torch.device | str | None = None,
               seed: int | None = None) -> torch.Tensor:
    """A bool tensor on ``device`` (default: GPU if present, else CPU), True with probability ``1 - p``.

    ``seed`` seeds a private torch.Generator on that device; None uses torch's global generator.
    """
    from .device import pick_device

    p = check_p(p)
    shp, _ = _size(shape)
    dev = pick_device("auto") if device is None else torch.device(device)
    if p == 0.0:
        return torch.ones(shp, dtype=torch.bool, device=dev)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed))
    return torch.rand(shp, device=dev, generator=gen) < (1.0 - p)


def random_bits_floor(rng: RNG, n: int) -> np.ndarray:
    """Only the random bits a p = 0.5 mask of ``n`` elements needs (n/8 bytes), not unpacked: the floor."""
    return random_bytes(rng, (n + 7) // 8)


def memory_floor(shape: Shape) -> np.ndarray:
    """Write a bool array of ``shape`` (no randomness): the cost of producing the mask at all."""
    return np.ones(_size(shape)[0], dtype=bool)


