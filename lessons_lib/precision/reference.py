"""Lesson 07 from scratch: rounding to a 16-bit format, the updates rounding loses, and loss scaling.

A float is ``sign × 1.fraction × 2^exponent``. bf16 keeps float32's 8 exponent bits but only 7 fraction bits;
fp16 has 5 exponent bits and 10 fraction bits. Between 1 and 2 the bf16 numbers are therefore 2^-7 apart,
between 2 and 4 they are 2^-6 apart: the gap between neighbours (one "ulp") doubles at every power of two.

* :func:`neighbours` — the two numbers of a format around ``x`` (``lo <= x < hi``);
* :func:`stochastic_round` — round ``x`` up to ``hi`` with probability ``(x - lo) / (hi - lo)``, else down to
  ``lo``: every result is a number of the format, and the *expected* result is exactly ``x``;
* :func:`count_lost_updates` — how many updates ``w + u`` round back to ``w`` (the step is lost);
* :class:`LossScaler` — dynamic loss scaling: multiply the loss by a large ``scale`` so that fp16 gradients
  do not underflow to zero, divide the gradients by it before the step, and adjust the scale.

Everything here works on torch tensors and torch dtypes (``torch.bfloat16``, ``torch.float16``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validate import BadArgument, check_float, check_int


def _float_dtype(dtype: torch.dtype, name: str = "dtype") -> torch.dtype:
    """``dtype`` if it is a torch floating-point dtype, else a clear error (a course name is not a torch dtype)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise BadArgument(f"{name}={dtype!r}: must be a torch float dtype, e.g. torch.bfloat16 or torch.float16 "
                          "(formats.to_dtype('bf16') converts a course name)")
    return dtype


def _float_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` if it is a floating-point tensor, else a clear error."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        what = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise BadArgument(f"{name}: must be a floating-point torch tensor, got {what}; e.g. torch.tensor([...]) "
                          "or .float()")
    return x


# --- the grid of a format -----------------------------------------------------------------------
def fraction_bits(dtype: torch.dtype) -> int:
    """Stored fraction bits of a float dtype: 7 for bf16, 10 for fp16, 23 for fp32 (eps = 2^-bits)."""
    _float_dtype(dtype)
    return round(-math.log2(torch.finfo(dtype).eps))


def neighbours(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)``: the two numbers of ``dtype`` around each element of ``x`` (float32 or float64), with
    ``lo <= x < hi`` and ``hi - lo`` = the gap (ulp) there. Both come back in x's precision; where x is already
    a number of ``dtype``, ``lo == x``. Exact: only powers of two are multiplied and divided. NaN and
    infinities have no neighbours: they come back as ``lo = hi = x``."""
    _float_tensor(x, "x")
    bits = fraction_bits(dtype)
    emin = round(math.log2(torch.finfo(dtype).tiny))  # exponent of the smallest normal number
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xw = x.to(work)
    m, e = torch.frexp(xw)  # x = m * 2^e with |m| in [0.5, 1): the leading bit has weight 2^(e - 1)
    e = e.to(torch.int32) - 1
    e = torch.where(m == -0.5, e - 1, e)  # x = -2^k: the next number up (toward 0) is below 2^k, where gaps are half
    e = torch.clamp(torch.where(xw == 0, emin, e), min=emin)  # 0 and subnormals: the smallest normal's gap
    ulp = torch.ldexp(torch.ones_like(xw), e - bits)
    lo = torch.floor(xw / ulp) * ulp  # x / ulp and back are exact: ulp is a power of two
    finite = torch.isfinite(xw)
    return torch.where(finite, lo, xw), torch.where(finite, lo + ulp, xw)


# --- rounding -----------------------------------------------------------------------------------
def round_nearest(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round to the nearest number of ``dtype``, ties to the even one: what a cast does."""
    return _float_tensor(x, "x").to(_float_dtype(dtype))


def stochastic_round(x: torch.Tensor, dtype: torch.dtype, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round each element of ``x`` (float32/float64) to one of its two ``dtype`` neighbours: up to ``hi`` with
    probability ``p = (x - lo) / (hi - lo)``, down to ``lo`` otherwise, so that ``E[result] = x``.

    Random numbers come from ``generator`` (torch's global one when None). Returns a tensor of ``dtype`` with
    x's shape. Infinities, NaN and values beyond the format's largest number are rounded to nearest.
    """
    _float_dtype(dtype)
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float64):
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise BadArgument(f"x: stochastic_round rounds float32/float64 tensors, got {got}: convert with .float()")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise BadArgument(f"generator={generator!r}: must be a torch.Generator (e.g. "
                          "torch.Generator().manual_seed(0)) or None")
    lo, hi = neighbours(x, dtype)
    p_up = (x.to(lo.dtype) - lo) / (hi - lo)  # exact: the distance to lo, in units of the gap
    where = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, dtype=lo.dtype, device=where).to(x.device)  # uniform in [0, 1)
    out = torch.where(u < p_up, hi, lo)  # P(u < p) = p: up with probability p
    inside = torch.isfinite(x) & (x.abs() <= torch.finfo(dtype).max)
    return torch.where(inside, out, x.to(lo.dtype)).to(dtype)


def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The notebook's exercise, as the library writes it: float32 ``x`` -> bfloat16, stochastically, with the two
    neighbours found explicitly (:func:`stochastic_round`). The notebook's worked answer uses the bit trick
    instead: add 16 random bits to the low half of x's float32 pattern, then cut that half off."""
    return stochastic_round(x, torch.bfloat16, generator)


# --- updates that vanish -----------------------------------------------------------------------
def count_lost_updates(w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> int:
    """How many of the updates ``u`` leave the stored weights ``w`` unchanged: ``(w + u)``, rounded back to
    ``dtype``, equals ``w`` although ``u != 0``.

    ``w``: the weights as stored (a tensor of ``dtype``, or holding only numbers of it); ``u``: the updates the
    optimizer wants to add (float32, or w's dtype), same shape. The sum is taken in the wider of the two types
    (float32 for bf16/fp16 weights and float32 updates) and then rounded to ``dtype``, as a training step that
    stores its weights in ``dtype`` does. Zero updates are not counted: they had nothing to lose.
    """
    _float_tensor(w, "w"), _float_tensor(u, "u"), _float_dtype(dtype)
    if w.shape != u.shape:
        raise BadArgument(f"w and u must have the same shape, got {tuple(w.shape)} and {tuple(u.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise BadArgument("u: an update is inf or NaN (a diverged step): it is not lost, it breaks the weight; "
                          "count lost updates on finite updates")
    stored = (w + u).to(dtype)
    unchanged = stored == w
    return int((unchanged & (u != 0)).sum())


def lost_share(w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> float:
    """:func:`count_lost_updates` as a share of the non-zero updates (NaN when every update is zero)."""
    lost = count_lost_updates(w, u, dtype)
    tried = int((u != 0).sum())
    return lost / tried if tried else float("nan")


# --- loss scaling ---------------------------------------------------------------------------------
class LossScaler:
    """Dynamic loss scaling with the rules of ``torch.amp.GradScaler``.

    fp16 flushes numbers below 2^-24 to zero, and the backward signals of a trained network are often that
    small. So the backward pass is run on ``scale × loss`` (every gradient is ``scale`` times larger, out of the
    underflow zone), and before the optimizer step :meth:`unscale_and_check` divides the gradients by ``scale``.
    If any gradient is inf/NaN (the scale was too large: fp16 overflows above 65504) the step must be skipped
    and the scale is multiplied by ``backoff``; after ``interval`` good steps in a row it is multiplied by
    ``growth``, so it stays as large as the gradients allow.
    """

    def __init__(self, init_scale: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5, interval: int = 2000):
        self.scale = check_float(init_scale, "init_scale", low=0, low_open=True, fix="e.g. 2.0**16")
        self.growth = check_float(growth, "growth", low=1, low_open=True, fix="e.g. 2.0")
        self.backoff = check_float(backoff, "backoff", low=0, high=1, low_open=True, high_open=True, fix="e.g. 0.5")
        self.interval = check_int(interval, "interval", low=1, fix="good steps before the scale grows, e.g. 2000")
        self.good_steps = 0  # good steps in a row since the scale last changed
        self.skipped = 0  # steps skipped because a gradient overflowed
        self.scales: list[float] = []  # the scale used at each step

    def unscale_and_check(self, grads: Sequence[torch.Tensor]) -> bool:
        """Divide ``grads`` (a list of tensors; None entries are skipped) by the scale in place, update the scale;
        True when the step must be skipped."""
        if isinstance(grads, torch.Tensor) or not all(isinstance(g, torch.Tensor) or g is None for g in grads):
            raise BadArgument("grads: must be a list of gradient tensors, e.g. [p.grad for p in model.parameters()]")
        grads = [g for g in grads if g is not None]
        for g in grads:
            g.mul_(1.0 / self.scale)
        overflow = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        self.scales.append(self.scale)
        if overflow:
            self.scale *= self.backoff
            self.good_steps = 0
            self.skipped += 1
        else:
            self.good_steps += 1
            if self.good_steps == self.interval:
                self.scale *= self.growth
                self.good_steps = 0
        return overflow
