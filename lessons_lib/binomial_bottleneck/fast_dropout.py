"""Lesson 04 · FastDropout: ``nn.Dropout`` with the lesson's masks on the CPU.

The numpy path: the mask is a pooled numpy buffer of ``keep / (1 - p)`` that torch sees without a copy, and the
layer is one ``x * mask``: PyTorch's own multiply and its own backward. With "bits" (p = 0.5) and "table" (every
other p), what ``"auto"`` picks, a byte of keep bits becomes 8 mask values at once: a row of a 256 x 8 table of
scaled bits.

The compiled path (``fused_dropout.cpp``; float32, "bits" or "table", a size divisible by 8): the same pattern
bytes and rows, drawn, looked up and multiplied in one C++ pass, so the float mask is never written, and the
backward reads one byte per 8 units. :func:`compiled` says whether it runs here (and if not, why).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import native
from ..validate import BadArgument, check_choice, check_p
from .reference import _BIT_ROWS, MASKS, Shape, _shape, _table_bytes, auto_method, pattern_table, random_bytes

_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
KERNEL = Path(__file__).with_name("fused_dropout.cpp")
_NO_BYTES = torch.empty(0, dtype=torch.uint8)  # the kernel draws its own random bits


def compiled() -> str | None:
    """None when FastDropout's compiled kernel runs here, else why not (the numpy path runs instead)."""
    return None if native.load(KERNEL) is not None else native.why_not(KERNEL.stem) or "not loaded"


@functools.lru_cache(maxsize=64)
def _kernel_tables(p: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's pattern table (empty for "bits") and its 256 x 8 float32 rows of scaled bits."""
    table = torch.from_numpy(pattern_table(p).copy()) if method == "table" else _NO_BYTES
    return table, torch.from_numpy(_scaled_rows(np.dtype(np.float32), 1.0 / (1.0 - p)).copy())


def _torch_seeded(gen: np.random.Generator, words: torch.Tensor | None = None) -> np.random.Generator:
    """Re-seed ``gen`` (SFC64) from torch's global CPU generator, so masks follow ``torch.manual_seed``: 4 draws
    < 2^63 into ``words`` (an int64 tensor of 4, reused; a new one if None)."""
    words = (torch.empty(4, dtype=torch.int64) if words is None else words).random_()
    gen.bit_generator.state = {"bit_generator": "SFC64", "state": {"state": words.numpy().view(np.uint64)},
                               "has_uint32": 0, "uinteger": 0}
    return gen


class _Pool:
    """Numpy buffers per (shape, dtype), handed out again only when nothing but the pool holds them (reference
    count): a mask that autograd still keeps for a backward is never overwritten, and reused buffers are warm."""

    def __init__(self, size: int = 4):
        self.size, self.free = size, {}

    def get(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        arrays = self.free.setdefault((shape, np.dtype(dtype)), [])
        for a in arrays:
            if sys.getrefcount(a) <= 3:  # the list, the loop variable, getrefcount's argument
                return a
        arrays.append(np.empty(shape, dtype))  # all busy: a new one (the pool keeps at most ``size``)
        return arrays.pop() if len(arrays) > self.size else arrays[-1]


@functools.lru_cache(maxsize=64)
def _scaled_rows(dtype: np.dtype, scale: float) -> np.ndarray:
    """256 x 8: row b is byte b's 8 bits times ``scale``, in ``dtype`` (a byte of keep bits -> 8 mask values)."""
    rows = _BIT_ROWS.astype(dtype) * dtype.type(scale)
    rows.flags.writeable = False
    return rows


def scaled_mask(shape: Shape, p: float, method: str, rng: np.random.Generator, dtype=np.float32,
                out: np.ndarray | None = None) -> np.ndarray:
    """The mask FastDropout multiplies by: ``keep / (1 - p)`` as floats of ``dtype`` (into ``out`` if given), from
    :func:`bernoulli_mask`'s generators. With "bits" and "table" (what "auto" picks) a byte of keep bits becomes 8
    mask values at once, a row of a 256 x 8 table of scaled bits: no bool array, no float conversion."""
    shp, p = _shape(shape), check_p(p)
    method = auto_method(p) if method == "auto" else check_choice(method, "method", MASKS)
    return _scaled_into(np.empty(shp, dtype) if out is None else out, p, method, rng)


def _scaled_into(out: np.ndarray, p: float, method: str, rng: np.random.Generator) -> np.ndarray:
    scale, n = 1.0 / (1.0 - p), out.size
    if method in ("bits", "table"):
        groups = (n + 7) // 8
        rows = _scaled_rows(out.dtype, scale)
        packed = _table_bytes(groups, p, rng) if method == "table" else random_bytes(rng, groups)
        # mode="clip" (a byte never exceeds 255) lets numpy skip its bounds checks: twice as fast as the default
        if n % 8 == 0:
            np.take(rows, packed, axis=0, out=out.reshape(groups, 8), mode="clip")
        else:  # the last group is cut short
            out.reshape(-1)[:] = np.take(rows, packed, axis=0, mode="clip").reshape(-1)[:n]
        return out
    np.multiply(MASKS[method](out.shape, p, rng), out.dtype.type(scale), out=out)
    return out


class FastDropout(nn.Module):
    """Inverted dropout with ``nn.Dropout``'s semantics (training: zero with probability ``p``, scale the rest by
    1/(1-p); eval: identity) and a fast CPU mask.

    ``method``: the CPU mask generator (default "auto", see :func:`bernoulli_mask`). ``rng``: a numpy Generator
    for the masks; None draws a fresh seed from torch's global generator at every call, so ``torch.manual_seed``
    makes runs reproducible exactly as with ``nn.Dropout``. float32 with "auto" / "bits" / "table" and a size
    divisible by 8 runs the compiled kernel when it is built (with ``rng``: that generator's bytes, the numpy
    path's mask bit for bit; without: the kernel's own SplitMix64 stream, seeded from torch). Everything else runs
    the numpy path, ``x * mask``; ``kernel=False``: always the numpy path (to compare the two). CUDA / MPS:
    ``F.dropout``.
    """

    def __init__(self, p: float = 0.5, method: str = "auto", rng: np.random.Generator | None = None,
                 kernel: bool = True):
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
        if not isinstance(kernel, bool):
            raise BadArgument(f"kernel must be True or False, got {kernel!r}: False runs the numpy path only")
        # random bytes per group of 8 units in the kernel; 0: the numpy path
        self._bytes_per_group = {"table": 2, "bits": 1}.get(self._method, 0) if kernel else 0
        self._own, self._words = np.random.Generator(np.random.SFC64(0)), torch.empty(4, dtype=torch.int64)
        self._pool = _Pool()

    def extra_repr(self) -> str:
        return f"p={self.p}, method={self.method!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise BadArgument(f"FastDropout takes a torch.Tensor, got {type(x).__name__}: use torch.as_tensor(x)")
        if not self.training or self.p == 0.0:
            return x
        if (self._bytes_per_group and x.dtype == torch.float32 and x.is_cpu and x.numel() % 8 == 0
                and (kernel := native.load(KERNEL)) is not None):
            table, rows = _kernel_tables(self.p, self._method)
            given = _NO_BYTES if self.rng is None else torch.from_numpy(
                random_bytes(self.rng, self._bytes_per_group * (x.numel() // 8)))
            return kernel.fused_dropout(x, table, rows, given)
        if not x.is_floating_point():
            raise BadArgument(f"FastDropout needs a floating-point tensor, got dtype {x.dtype}: use x.float()")
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        gen = self.rng if self.rng is not None else _torch_seeded(self._own, self._words)
        np_dtype = _NUMPY_FLOATS.get(x.dtype)
        if np_dtype is None:  # e.g. bfloat16, which numpy lacks: a float32 mask, cast by torch
            return x * torch.from_numpy(scaled_mask(tuple(x.shape), self.p, self.method, gen)).to(x.dtype)
        return x * torch.from_numpy(_scaled_into(self._pool.get(tuple(x.shape), np_dtype), self.p, self._method, gen))
