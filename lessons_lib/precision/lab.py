"""Lesson 07 — precision: fp64, fp32, bf16, fp16; speed, memory, accuracy, and the updates that vanish.

Seed 001 (second half) wonders whether cheaper, less precise numbers would help deep learning, and
lists three reasons they might not: (1) linear-algebra libraries may be tuned for 64-bit floats, so 32
or 16 bits would not be faster; (2) small gradient steps that round away may stall training; (3)
training may depend chaotically on tiny differences in the middle of the network. This module turns
each into a measurement:

* :func:`dtype_table`: per device and dtype, matmul GFLOP/s (timed with :func:`~lessons_lib.timing.time_it`),
  bytes per parameter, the hardware units present (``/proc/cpuinfo`` flags, CUDA compute capability)
  and a verdict from the *measured* speed against fp32 (a 16-bit type without units is emulated).
* :func:`train_precision`: the same MLP trained in ``mode`` "pure" (everything in the dtype),
  "autocast" (fp32 weights, 16-bit matmuls via ``torch.autocast``; with loss scaling for fp16 on CUDA),
  or "stored" (weights stored in the dtype, arithmetic in fp32, ``rounding`` "nearest" or "stochastic").
  It counts, per layer, the updates lost to rounding (``w + delta == w``: :class:`LostUpdateMeter`).
* :func:`gradient_underflow`: the share of gradients that become exactly zero in fp16, with and without
  loss scaling (:class:`DynamicLossScaler`, written from scratch, equivalent to ``torch.amp.GradScaler``).
* :func:`stochastic_round`: unbiased rounding from scratch, and :func:`sr_recovery`, where it rescues
  training that round-to-nearest stalls.
* :func:`perturbation_spread`: flip the lowest mantissa bit of every weight, train again, and compare the
  final-accuracy difference with the seed-to-seed spread.

Timings default to ``threads=1`` (one intra-op thread): on a shared or 1-core machine, two BLAS threads
that wait for each other make every matmul cost a scheduler time slice, which hides the arithmetic.
Pass ``threads=None`` to keep torch's setting.
"""

from __future__ import annotations

import copy
import functools
import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import Splits, load
from ..device import available_devices, gpu_unavailable_reason, pick_device
from ..exercises import check
from ..models import mlp
from ..seeds import get_seed, seed_everything
from ..timing import threads as threads_ctx
from ..timing import time_interleaved, time_it
from ..training import History, fit

DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
LOW = ("bf16", "fp16")
MODES = ("pure", "autocast", "stored")
ROUNDINGS = ("nearest", "stochastic")
MANTISSA_BITS = {"fp64": 52, "fp32": 23, "bf16": 7, "fp16": 10}  # stored fraction bits
FAST_RATIO = 1.2  # a dtype counts as "natively fast" when its matmul beats fp32 by this factor


class UnsupportedDtypeError(ValueError):
    """A dtype (or dtype + mode) was asked for that this device or this torch cannot run."""


# --- names and formats ---------------------------------------------------------------------------
def dtype_name(dtype: str | torch.dtype) -> str:
    """The course name ("fp64", "fp32", "bf16", "fp16") of a name or torch dtype; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        for k, v in DTYPES.items():
            if v == dtype:
                return k
        raise ValueError(f"dtype {dtype} is not one of this lesson's float types: use one of {', '.join(DTYPES)}")
    key = str(dtype).strip().lower()
    aliases = {"float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32", "bfloat16": "bf16",
               "float16": "fp16", "half": "fp16"}
    key = aliases.get(key, key)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return key


def to_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return DTYPES[dtype_name(dtype)]


def bytes_per_param(dtype: str | torch.dtype) -> int:
    return torch.empty((), dtype=to_dtype(dtype)).element_size()


def spacing_at_one(dtype: str | torch.dtype) -> float:
    """Gap between 1.0 and the next larger number of the format (machine epsilon)."""
    return float(torch.finfo(to_dtype(dtype)).eps)


def lost_update(w: float, delta: float, dtype: str | torch.dtype) -> bool:
    """True when ``w + delta == w`` after storing the sum in ``dtype`` (round to nearest even)."""
    dt = to_dtype(dtype)
    a = torch.tensor(w, dtype=dt)
    return bool((a + torch.tensor(delta, dtype=dt)) == a) and delta != 0


# --- what this device supports -------------------------------------------------------------------
def _probe(dtype: torch.dtype, device: str, autocast: bool) -> str | None:
    """None if a Linear forward + backward runs in ``dtype`` on ``device`` (under autocast if asked)."""
    try:
        dev = torch.device(device)
        if autocast:
            lin = nn.Linear(8, 4).to(dev)
            x = torch.randn(3, 8, device=dev)
            with torch.autocast(device_type=dev.type, dtype=dtype):
                y = lin(x)
            if y.dtype != dtype:
                return f"autocast on {dev.type} ran the matmul in {y.dtype}, not {dtype}"
        else:
            lin = nn.Linear(8, 4).to(device=dev, dtype=dtype)
            y = lin(torch.randn(3, 8, device=dev, dtype=dtype))
        y.float().sum().backward()
        return None
    except Exception as e:  # any failure means "not supported here"; the message says which
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


@functools.cache
def _probe_cached(dtype_key: str, device: str, autocast: bool) -> str | None:
    kind = torch.device(device).type
    if kind in ("cuda", "mps") and kind not in available_devices():
        return f"no {kind.upper()} device here: {gpu_unavailable_reason()}"
    if torch.device(device).type == "cuda" and dtype_key == "bf16" and not torch.cuda.is_bf16_supported():
        return "this CUDA GPU has no bf16 support (needs compute capability 8.0+)"
    if torch.device(device).type == "mps" and dtype_key == "fp64":
        return "MPS has no float64"
    if autocast and dtype_key not in LOW:
        return "autocast runs matmuls in a 16-bit type: choose bf16 or fp16"
    return _probe(DTYPES[dtype_key], device, autocast)


def _device_str(device: str | torch.device) -> str:
    """"gpu"/"auto" resolved with pick_device; other strings checked by torch, with a clear error."""
    if str(device).strip().lower() in ("gpu", "auto"):
        return str(pick_device(device))
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'gpu', 'auto', 'cuda', 'cuda:N' or 'mps'") from None


def supported_dtypes(device: str | torch.device = "cpu", mode: str = "pure") -> list[str]:
    """The dtype names that run on ``device`` in ``mode`` ("pure", "autocast", "stored")."""
    dev = _device_str(device)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "stored":
        return list(LOW) if _probe_cached("fp32", dev, False) is None else []
    return [k for k in DTYPES if _probe_cached(k, dev, mode == "autocast") is None]


def require_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu", mode: str = "pure") -> str:
    """Return the dtype's name if it runs on ``device`` in ``mode``; else raise :class:`UnsupportedDtypeError`
    saying why and what is supported there."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    name = dtype_name(dtype)
    dev = _device_str(device)
    if mode == "stored":
        reason = None if name in LOW else "'stored' keeps weights in a 16-bit format: choose bf16 or fp16"
    else:
        reason = _probe_cached(name, dev, mode == "autocast")
    if reason is None:
        return name
    ok = supported_dtypes(dev, mode)
    raise UnsupportedDtypeError(
        f"{name} in mode '{mode}' is not supported on {dev} ({reason}). Supported there in mode '{mode}': "
        f"{', '.join(ok) or 'none'}."
    )


# --- hardware units ------------------------------------------------------------------------------
def cpu_flags() -> set[str]:
    """Floating-point feature flags of this CPU (Linux /proc/cpuinfo; macOS sysctl; else empty)."""
    wanted = {"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile",
              "avx_vnni", "fphp", "asimdhp", "bf16", "sve"}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split()) & wanted
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        for key, flag in (("hw.optional.arm.FEAT_BF16", "bf16"), ("hw.optional.arm.FEAT_FP16", "fphp")):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=2).stdout
                if out.strip() == "1":
                    flags.add(flag)
            except Exception:  # no sysctl: leave the flag unknown
                pass
    return flags


def native_units(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> str:
    """Which hardware units for ``dtype`` the device has, as text ("none: emulated in fp32" when absent)."""
    name = dtype_name(dtype)
    dev = torch.device(device)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        cc = f"sm_{major}{minor}"
        if name == "bf16":
            return f"tensor cores ({cc})" if major >= 8 else f"none ({cc} < sm_80)"
        if name == "fp16":
            return f"tensor cores ({cc})" if major >= 7 else f"fp16 ALUs ({cc})"
        return f"yes ({cc}; fp64 rate depends on the GPU model)"
    if dev.type == "mps":
        return {"fp16": "yes (Apple GPU)", "bf16": "macOS 14+ GPUs", "fp32": "yes", "fp64": "none"}[name]
    if name in ("fp64", "fp32"):
        return "yes (FPU/SIMD)"
    flags = cpu_flags()
    have = sorted(flags & ({"avx512_bf16", "amx_bf16", "bf16"} if name == "bf16"
                           else {"avx512_fp16", "amx_fp16", "fphp", "asimdhp"}))
    return ", ".join(have) if have else "none: emulated via fp32"


# --- 1. the dtype table --------------------------------------------------------------------------
def matmul_gflops(dtype: str | torch.dtype, device: str | torch.device = "cpu", n: int = 512,
                  repeats: int = 10, threads: int | None = 1) -> float:
    """Throughput of an ``n x n`` by ``n x n`` matmul in ``dtype`` on ``device``: 2 n^3 / median seconds / 1e9."""
    name = require_dtype(dtype, device)
    dev = torch.device(_device_str(device))
    g = torch.Generator().manual_seed(get_seed())
    a = torch.randn(n, n, generator=g).to(device=dev, dtype=DTYPES[name])
    b = torch.randn(n, n, generator=g).to(device=dev, dtype=DTYPES[name])
    with threads_ctx(threads if dev.type == "cpu" else None):
        t = time_it(lambda: a @ b, device=dev, warmup=2, repeats=repeats)
    return 2 * n**3 / t.median / 1e9


def matmul_gflops_interleaved(names: Sequence[str], device: str | torch.device = "cpu", n: int = 512,
                              rounds: int = 9, number: int = 3, threads: int | None = 1) -> dict[str, float]:
    """Like :func:`matmul_gflops` for several dtypes at once, timed round-robin (one timing of ``number`` calls
    of each dtype per round) so that a busy machine affects all of them alike; each dtype's throughput is
    from its fastest round, because other programs can only ever add time. All must be supported."""
    dev = torch.device(_device_str(device))
    g = torch.Generator().manual_seed(get_seed())
    a0, b0 = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    ops = {}
    for name in names:
        dt = DTYPES[require_dtype(name, dev)]
        a, b = a0.to(device=dev, dtype=dt), b0.to(device=dev, dtype=dt)
        ops[name] = (lambda a=a, b=b: a @ b)
    with threads_ctx(threads if dev.type == "cpu" else None):
        timings = time_interleaved(ops, device=dev, rounds=rounds, warmup=2, number=number)
    return {k: 2 * n**3 / t.min / 1e9 for k, t in timings.items()}


@dataclass
class DtypeRow:
    device: str
    dtype: str
    bytes_per_param: int
    eps: float
    max: float
    gflops: float | None
    vs_fp32: float | None
    units: str
    verdict: str


class DtypeTable:
    """Rows of :func:`dtype_table`; displays as an HTML table in Jupyter and as text in print."""

    heads = ("device", "dtype", "bytes/param", "eps (gap at 1.0)", "largest", "matmul GFLOP/s", "× fp32",
             "hardware units", "verdict")

    def __init__(self, rows: list[DtypeRow], n: int, threads: int | None):
        self.rows, self.n, self.threads = rows, n, threads

    def get(self, device: str, dtype: str) -> DtypeRow:
        for r in self.rows:
            if r.device == device and r.dtype == dtype:
                return r
        raise KeyError(f"no row for {dtype} on {device}")

    def _cells(self, r: DtypeRow) -> list[str]:
        return [r.device, r.dtype, str(r.bytes_per_param), f"{r.eps:.3g}", f"{r.max:.3g}",
                "—" if r.gflops is None else f"{r.gflops:.1f}", "—" if r.vs_fp32 is None else f"{r.vs_fp32:.2f}",
                r.units, r.verdict]

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in self.heads)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in self._cells(r))
                       + "</tr>" for r in self.rows)
        return (f"<b>{self.n}×{self.n} matmul, fastest of interleaved rounds, threads={self.threads}</b>"
                f"<table><tr>{head}</tr>{body}</table>")

    def __str__(self) -> str:
        rows = [list(self.heads)] + [self._cells(r) for r in self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(self.heads))]
        return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows)

    __repr__ = __str__


def _verdict(name: str, ratio: float) -> str:
    if name == "fp32":
        return "reference"
    if name == "fp64":
        return f"fp32 is {1 / ratio:.1f}× faster" if ratio < 1 else "as fast as fp32 or faster"
    if ratio >= FAST_RATIO:
        return f"natively fast: {ratio:.1f}× fp32"
    if ratio >= 0.75:
        return "about fp32 speed (16-bit units unused or absent)"
    return f"emulated / slow: {1 / ratio:.1f}× slower than fp32"


def dtype_table(devices: Sequence[str] | None = None, n: int = 512, repeats: int = 9,
                threads: int | None = 1) -> DtypeTable:
    """One row per (device, dtype): bytes/param, eps, largest value, matmul GFLOP/s (``repeats`` interleaved
    rounds, see :func:`matmul_gflops_interleaved`), ratio to fp32, hardware units, verdict. ``devices``
    defaults to :func:`~lessons_lib.device.available_devices`."""
    rows = []
    for dev in devices or available_devices():
        dev = _device_str(dev)
        speeds: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        for name in DTYPES:
            try:
                require_dtype(name, dev)
            except UnsupportedDtypeError as e:
                speeds[name], reasons[name] = None, str(e).split(" (", 1)[1].rsplit(")", 1)[0]
        ok = [k for k in DTYPES if k not in reasons]
        speeds.update(matmul_gflops_interleaved(ok, dev, n=n, rounds=repeats, threads=threads) if ok else {})
        ref = speeds.get("fp32")
        for name, dt in DTYPES.items():
            fi = torch.finfo(dt)
            s = speeds[name]
            ratio = None if s is None or not ref else s / ref
            rows.append(DtypeRow(dev, name, bytes_per_param(name), float(fi.eps), float(fi.max), s, ratio,
                                 native_units(name, dev) if s is not None else "—",
                                 _verdict(name, ratio) if ratio is not None else f"unsupported: {reasons[name]}"))
    return DtypeTable(rows, n, threads)


# --- rounding from scratch ----------------------------------------------------------------------
def _format(dtype: str | torch.dtype) -> tuple[int, int]:
    """(stored fraction bits, exponent of the smallest normal) of a low-precision format."""
    name = dtype_name(dtype)
    tiny = torch.finfo(DTYPES[name]).tiny
    return MANTISSA_BITS[name], int(round(math.log2(tiny)))


def neighbours(x: torch.Tensor, dtype: str | torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi): the two numbers of ``dtype`` around each element of ``x`` (lo <= x < hi; hi = lo + ulp),
    computed in x's precision (float32 or float64). Values already representable have lo == x."""
    bits, emin = _format(dtype)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xw = x.to(work)
    _, e = torch.frexp(xw)  # |x| = m 2^e with m in [0.5, 1): the leading bit has exponent e - 1
    e = torch.clamp(e.to(torch.int32) - 1, min=emin)  # below the normal range, subnormals share emin's ulp
    ulp = torch.ldexp(torch.ones_like(xw), e - bits)
    lo = torch.floor(xw / ulp) * ulp
    return lo, lo + ulp


def stochastic_round(x: torch.Tensor, dtype: str | torch.dtype = "bf16",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Round each element of ``x`` (float32/64) to one of its two ``dtype`` neighbours, up with probability
    ``(x - lo) / (hi - lo)``: unbiased, E[result] = x. Returns a tensor of ``dtype``. Non-finite values and
    values beyond the format's range are rounded to nearest (inf stays inf)."""
    dt = to_dtype(dtype)
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"stochastic_round rounds float32/float64 values, got {x.dtype}: convert with .float()")
    lo, hi = neighbours(x, dtype)
    p_up = (x.to(lo.dtype) - lo) / (hi - lo)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=lo.dtype) if generator is None or \
        generator.device == x.device else torch.rand(x.shape, generator=generator, dtype=lo.dtype).to(x.device)
    out = torch.where(u < p_up, hi, lo)
    finite = torch.isfinite(x) & (x.abs() <= torch.finfo(dt).max)
    return torch.where(finite, out, x.to(lo.dtype)).to(dt)


def round_nearest(x: torch.Tensor, dtype: str | torch.dtype = "bf16") -> torch.Tensor:
    """Round to nearest, ties to even (what a cast does)."""
    return x.to(to_dtype(dtype))


@dataclass
class UnbiasedCheck:
    """Mean of many roundings of the same values, against the values: ``z`` is the largest |error| in
    standard errors (unbiased: |z| < ~4), ``nearest_bias`` the error of round-to-nearest for comparison."""

    values: list[float]
    sr_mean: list[float]
    z: float
    nearest_bias: float
    draws: int


def check_unbiased(values: Sequence[float] = (1.001, 1.003, 0.1 + 1e-4, -2.7182818), dtype: str = "bf16",
                   draws: int = 20000, seed: int | None = None) -> UnbiasedCheck:
    """Round each value ``draws`` times with :func:`stochastic_round`; compare the mean with the value."""
    g = torch.Generator().manual_seed(get_seed() if seed is None else seed)
    x = torch.tensor(values, dtype=torch.float64)
    reps = x.repeat(draws, 1)
    r = stochastic_round(reps, dtype, generator=g).to(torch.float64)
    mean = r.mean(0)
    lo, hi = neighbours(x, dtype)
    p = (x - lo) / (hi - lo)
    se = (hi - lo) * torch.sqrt(p * (1 - p) / draws)
    err = (mean - x).abs()
    z = torch.where(se > 0, err / se.clamp_min(1e-300), torch.where(err > 0, torch.inf, 0.0))
    nearest = (round_nearest(x, dtype).to(torch.float64) - x).abs().max()
    return UnbiasedCheck(list(values), mean.tolist(), float(z.max()), float(nearest), draws)


# --- training helpers (callbacks and wrappers) ---------------------------------------------------
class LostUpdateMeter(Callback):
    """Counts, per parameter tensor and per step, the elements whose gradient was non-zero but whose stored
    value did not change (``w + delta == w`` in the storage format). Put it after any callback that rounds
    weights. ``shares()`` -> {layer: lost / attempted}; ``total_share()`` over all layers; ``per_step`` the
    overall share of each step."""

    def __init__(self):
        self.lost: dict[str, int] = {}
        self.tried: dict[str, int] = {}
        self.per_step: list[float] = []
        self._steps: list[torch.Tensor] = []

    @staticmethod
    def _name(n: str) -> str:
        return n.removeprefix("inner.")

    def on_train_begin(self, state: TrainState) -> None:
        named = list(state.model.named_parameters())
        self._names = [self._name(n) for n, _ in named]
        sizes = torch.tensor([p.numel() for _, p in named])
        dev = named[0][1].device
        self._segment = torch.repeat_interleave(torch.arange(len(named)), sizes).to(dev)  # element -> layer
        self._prev = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self.lost = {n: 0 for n in self._names}
        self.tried = {n: 0 for n in self._names}
        self.per_step = []
        self._steps = []

    @torch.no_grad()
    def on_batch_end(self, state: TrainState) -> None:
        params = list(state.model.parameters())
        w = torch.cat([p.detach().reshape(-1) for p in params])
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        moved = g != 0
        lost = (w == self._prev) & moved
        self._prev = w
        counts = torch.zeros(2, len(params), dtype=torch.int64, device=w.device)
        counts[0].index_add_(0, self._segment, lost.to(torch.int64))
        counts[1].index_add_(0, self._segment, moved.to(torch.int64))
        self._steps.append(counts)  # kept on the device; read once at the end (no synchronization per step)

    def on_train_end(self, state: TrainState) -> None:
        if not self._steps:
            return
        c = torch.stack(self._steps).cpu()  # (steps, 2, layers)
        for i, n in enumerate(self._names):
            self.lost[n] += int(c[:, 0, i].sum())
            self.tried[n] += int(c[:, 1, i].sum())
        per = c.sum(2)
        self.per_step = (per[:, 0] / per[:, 1].clamp_min(1)).tolist()
        self._steps = []

    def shares(self) -> dict[str, float]:
        return {n: self.lost[n] / self.tried[n] for n in self.lost if self.tried[n]}

    def total_share(self) -> float:
        t = sum(self.tried.values())
        return sum(self.lost.values()) / t if t else float("nan")


class StoredWeights(Callback):
    """Keep every weight on the grid of a 16-bit ``dtype`` while computing in fp32: round the weights at the
    start and after every optimizer step, to nearest or stochastically. The optimizer's state stays fp32."""

    def __init__(self, dtype: str = "bf16", rounding: str = "nearest", seed: int | None = None):
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        self.name = dtype_name(dtype)
        if self.name not in LOW:
            raise UnsupportedDtypeError(f"stored weights are 16-bit: choose one of {', '.join(LOW)}, not {self.name}")
        self.rounding = rounding
        self.seed = get_seed() if seed is None else seed
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def _round(self, model: nn.Module) -> None:
        for p in model.parameters():
            if self.rounding == "nearest":
                p.copy_(round_nearest(p, self.name).to(p.dtype))
            else:
                p.copy_(stochastic_round(p, self.name, self.generator).to(p.dtype))

    def on_train_begin(self, state: TrainState) -> None:
        dev = torch.device(state.device)
        self.generator = torch.Generator(device=dev) if dev.type in ("cpu", "cuda") else torch.Generator()
        self.generator.manual_seed(self.seed * 7919 + 5)
        self._round(state.model)

    def on_batch_end(self, state: TrainState) -> None:
        self._round(state.model)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by the scaler's current scale (= scaling the loss)."""

    @staticmethod
    def forward(ctx, x, scaler):  # noqa: ANN001
        ctx.scaler = scaler
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001
        return g * ctx.scaler.scale, None


class DynamicLossScaler(Callback):
    """Dynamic loss scaling from scratch, with ``torch.amp.GradScaler``'s rules: gradients are computed for
    ``scale × loss`` (see :class:`PrecisionModel`), divided by ``scale`` before the optimizer step; if any is
    inf/NaN the step is skipped and the scale multiplied by ``backoff``; after ``interval`` good steps in a
    row it is multiplied by ``growth``. The step hook is an optimizer pre-step hook, so it works inside
    :func:`~lessons_lib.training.fit`."""

    def __init__(self, init_scale: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5, interval: int = 2000):
        if init_scale <= 0 or growth <= 1 or not 0 < backoff < 1 or interval < 1:
            raise ValueError("DynamicLossScaler needs init_scale > 0, growth > 1, 0 < backoff < 1, interval >= 1")
        self.scale = float(init_scale)
        self.growth, self.backoff, self.interval = growth, backoff, interval
        self.good_steps = 0
        self.skipped = 0
        self.scales: list[float] = []
        self._handle = None

    def unscale_and_check(self, params: Sequence[torch.Tensor]) -> bool:
        """Divide gradients by the scale; update the scale; return True when the step must be skipped."""
        grads = [p.grad for p in params if p.grad is not None]
        inv = 1.0 / self.scale
        found_inf = False
        for g in grads:
            g.mul_(inv)
        if grads:
            found_inf = not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        self.scales.append(self.scale)
        if found_inf:
            self.scale *= self.backoff
            self.good_steps = 0
            self.skipped += 1
        else:
            self.good_steps += 1
            if self.good_steps == self.interval:
                self.scale *= self.growth
                self.good_steps = 0
        return found_inf

    def _pre_step(self, optimizer, args, kwargs):  # noqa: ANN001
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.unscale_and_check(params):
            for p in params:
                p.grad = None  # optimizers skip parameters without a gradient: the step is skipped
        return None

    def on_train_begin(self, state: TrainState) -> None:
        self._handle = state.optimizer.register_step_pre_hook(self._pre_step)
        model = state.model
        if isinstance(model, PrecisionModel):
            model.scaler = self

    def on_train_end(self, state: TrainState) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if isinstance(state.model, PrecisionModel):
            state.model.scaler = None


class PrecisionModel(nn.Module):
    """Wraps a model: ``autocast`` runs its forward under ``torch.autocast(dtype)`` and returns fp32 logits;
    with a :class:`DynamicLossScaler` attached (``scaler``), the backward pass is scaled."""

    def __init__(self, inner: nn.Module, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.inner = inner
        self.autocast_dtype = autocast_dtype
        self.scaler: DynamicLossScaler | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.inner(x)
            out = out.float()
        else:
            out = self.inner(x)
        if self.scaler is not None and self.training and torch.is_grad_enabled():
            out = _ScaleGrad.apply(out, self.scaler)
        return out


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held by the parameters, their gradients and the optimizer state (the training state)."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
    if optimizer is not None:
        for st in optimizer.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
    return total


class _MemoryMeter(Callback):
    def __init__(self):
        self.state_bytes = 0
        self.peak_bytes: int | None = None

    def on_train_begin(self, state: TrainState) -> None:
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)

    def on_epoch_end(self, state: TrainState) -> None:
        self.state_bytes = state_bytes(state.model, state.optimizer)

    def on_train_end(self, state: TrainState) -> None:
        self.state_bytes = max(self.state_bytes, state_bytes(state.model, state.optimizer))
        if state.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(state.device))
        elif state.device.type == "mps":
            self.peak_bytes = int(torch.mps.driver_allocated_memory())


def splits_as(data: Splits, dtype: torch.dtype) -> Splits:
    """The same splits with the inputs in ``dtype`` (labels stay int64)."""
    return Splits(data.name, data.x_train.to(dtype), data.y_train, data.x_val.to(dtype), data.y_val,
                  data.x_test.to(dtype), data.y_test, data.n_classes)


# --- 2. training in each precision ---------------------------------------------------------------
@dataclass
class PrecisionRun:
    """One training run: its History plus what the precision lesson measures."""

    label: str
    dtype: str
    mode: str
    rounding: str
    history: History
    lost_share: float
    lost_by_layer: dict[str, float]
    lost_per_step: list[float]
    state_bytes: int
    peak_bytes: int | None
    loss_scale_skipped: int | None
    model: nn.Module = field(repr=False, default=None)

    @property
    def val_acc(self) -> float:
        return self.history.val_acc[-1]

    @property
    def epoch_seconds(self) -> float:
        """Median training seconds per epoch (the first epoch, with its warm-up, left out when there are more)."""
        s = self.history.seconds[1:] or self.history.seconds
        return statistics.median(s)


def run_label(dtype: str, mode: str, rounding: str = "nearest") -> str:
    if mode == "pure":
        return f"{dtype} pure"
    if mode == "autocast":
        return f"autocast {dtype}"
    return f"{dtype} weights, {rounding}" if rounding == "nearest" else f"{dtype} weights, stochastic"


def train_precision(
    data: Splits | None = None,
    *,
    dtype: str = "fp32",
    mode: str = "pure",
    rounding: str = "nearest",
    optimizer: str = "sgd",
    lr: float = 0.05,
    epochs: int = 6,
    width: int = 128,
    depth: int = 2,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    threads: int | None = 1,
    loss_scaling: bool | None = None,
    perturb_bits: bool = False,
    measure_lost: bool = True,
) -> PrecisionRun:
    """Train an MNIST-1D MLP (``depth`` hidden layers of ``width``) in ``dtype`` and ``mode``:

    * "pure": weights, activations, gradients, optimizer state in ``dtype`` (round to nearest everywhere);
    * "autocast": fp32 weights and optimizer, matmuls in ``dtype`` (``torch.autocast``); ``loss_scaling``
      (default: on for fp16 on CUDA, as ``GradScaler`` is used there) adds a :class:`DynamicLossScaler`;
    * "stored": weights stored in ``dtype`` (16-bit) with ``rounding`` "nearest" or "stochastic", arithmetic
      and optimizer state in fp32.

    ``perturb_bits`` flips the lowest stored bit of every initial fp32 weight (the chaos experiment);
    ``measure_lost=False`` leaves out the :class:`LostUpdateMeter` (it costs about a fifth of a step here).
    ``data`` defaults to MNIST-1D split by ``seed``.
    Unsupported combinations raise :class:`UnsupportedDtypeError` before any training.
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    name = require_dtype(dtype, dev, mode)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if rounding == "stochastic" and mode != "stored":
        raise ValueError("stochastic rounding is applied to stored weights: use mode='stored'")
    seed = seed_everything(seed)
    data = load("mnist1d", seed=seed) if data is None else data
    net = mlp(data.n_features, [width] * depth, data.n_classes)
    if perturb_bits:
        flip_lowest_bit_(net)
    cbs: list[Callback] = []
    scaler = None
    if mode == "pure":
        net = net.to(DTYPES[name])
        model: nn.Module = net
        data = splits_as(data, DTYPES[name])
    elif mode == "autocast":
        model = PrecisionModel(net, DTYPES[name])
        if loss_scaling is None:
            loss_scaling = name == "fp16" and dev.type == "cuda"
        if loss_scaling:
            scaler = DynamicLossScaler()
            cbs.append(scaler)
    else:
        model = net
        cbs.append(StoredWeights(name, rounding, seed=seed))
    meter = LostUpdateMeter()
    mem = _MemoryMeter()
    cbs += [meter, mem, *callbacks] if measure_lost else [mem, *callbacks]
    config = {"dtype": name, "mode": mode, "rounding": rounding, "optimizer": optimizer, "lr": lr, "width": width}
    with threads_ctx(threads if dev.type == "cpu" else None):
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=dev,
                callbacks=cbs, seed=seed, config=config)
    return PrecisionRun(run_label(name, mode, rounding), name, mode, rounding, h, meter.total_share(),
                        meter.shares(), meter.per_step, mem.state_bytes, mem.peak_bytes,
                        None if scaler is None else scaler.skipped, model)


def precision_experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), dtype: str = "bf16",
                         mode: str = "pure", rounding: str = "nearest", optimizer: str = "sgd", lr: float = 0.05,
                         epochs: int = 6, width: int = 128, threads: int | None = 1) -> History:
    """The live panel's experiment (see :class:`~lessons_lib.panel.LivePanel`): :func:`train_precision`'s History."""
    return train_precision(dtype=dtype, mode=mode, rounding=rounding if mode == "stored" else "nearest",
                           optimizer=optimizer, lr=lr, epochs=epochs, width=width, device=device,
                           callbacks=callbacks, threads=threads).history


DEFAULT_RECIPES: tuple[tuple[str, str], ...] = (
    ("fp64", "pure"), ("fp32", "pure"), ("bf16", "pure"), ("fp16", "pure"), ("bf16", "autocast"),
    ("fp16", "autocast"),
)


def compare_dtypes(recipes: Sequence[tuple[str, str]] = DEFAULT_RECIPES, *, device: str = "cpu",
                   skip_unsupported: bool = True, **kw) -> list[PrecisionRun]:
    """:func:`train_precision` for each (dtype, mode); unsupported ones are skipped (or raise)."""
    runs = []
    for name, mode in recipes:
        try:
            runs.append(train_precision(dtype=name, mode=mode, device=device, **kw))
        except UnsupportedDtypeError:
            if not skip_unsupported:
                raise
    return runs


def _pct(share: float) -> str:
    """A share as a percentage with two significant digits (0.004% stays visible, 0 is 0%)."""
    return "0%" if share == 0 else f"{100 * share:.2g}%"


def runs_table(runs: Sequence[PrecisionRun], reference: str = "fp32 pure") -> str:
    """A text table: final val acc, median epoch time (and ratio to the reference), training-state memory,
    lost-update share."""
    ref = next((r for r in runs if r.label == reference), runs[0])
    peak = any(r.peak_bytes is not None for r in runs)  # device peak memory: CUDA / MPS only
    lines = [f"{'run':<26}{'val acc':>8}{'s/epoch':>9}{'× ' + reference:>13}{'state KB':>10}{'lost updates':>14}"
             + (f"{'peak MB':>9}" if peak else "")]
    for r in runs:
        speed = ref.epoch_seconds / r.epoch_seconds
        extra = (f"{r.peak_bytes / 2**20:>9.1f}" if r.peak_bytes is not None else f"{'—':>9}") if peak else ""
        lines.append(f"{r.label:<26}{r.val_acc:>8.3f}{r.epoch_seconds:>9.3f}{speed:>12.2f}×"
                     f"{r.state_bytes / 1024:>10.0f}{_pct(r.lost_share):>14}{extra}")
    return "\n".join(lines)


# --- 3. gradients that underflow in fp16 ---------------------------------------------------------
@dataclass
class Underflow:
    """Backward signals (the gradient w.r.t. each Linear layer's output) that are non-zero in fp32 but exactly
    zero in fp16 under autocast: share per loss scale (``by_scale``, all layers) and per layer; ``overflow``
    is the share that became inf/NaN at each scale (the reason the scale must also come down)."""

    by_scale: dict[float, float]
    by_layer: dict[float, dict[str, float]]
    overflow: dict[float, float]
    tiny_fp32_share: float  # share of the fp32 signals below fp16's smallest subnormal (2^-24)


def _output_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None,
                  scale: float) -> dict[str, torch.Tensor]:
    grads: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            def fwd(_m, _inp, out, name=name):
                out.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
            handles.append(mod.register_forward_hook(fwd))
    try:
        wrapped = PrecisionModel(model, autocast)
        (nn.functional.cross_entropy(wrapped(x), y) * scale).backward()
    finally:
        for h in handles:
            h.remove()
    return grads


def gradient_underflow(model: nn.Module, data: Splits, scales: Sequence[float] = (1.0, 2.0**10, 2.0**16),
                       n: int = 128, threads: int | None = 1) -> Underflow:
    """One training batch (the first ``n`` examples) through ``model`` in fp32 and under fp16 autocast with
    the loss multiplied by each ``scale`` (loss scaling). Counts the backward signals (gradients w.r.t. each
    Linear layer's output) that fp16 flushes to zero although they are non-zero in fp32."""
    base = model.inner if isinstance(model, PrecisionModel) else model
    dev = next(base.parameters()).device
    x, y = data.x_train[:n].float().to(dev), data.y_train[:n].to(dev)
    with threads_ctx(threads if dev.type == "cpu" else None):
        ref = _output_grads(copy.deepcopy(base).float(), x, y, None, 1.0)
        by_scale, by_layer, overflow = {}, {}, {}
        for s in scales:
            g16 = _output_grads(copy.deepcopy(base).float(), x, y, torch.float16, float(s))
            lost = tried = bad = 0
            layer = {}
            for k, g in ref.items():
                nz = g != 0
                z = (g16[k] == 0) & nz
                layer[k] = float(z.sum()) / max(int(nz.sum()), 1)
                lost, tried = lost + int(z.sum()), tried + int(nz.sum())
                bad += int((~torch.isfinite(g16[k])).sum())
            by_scale[float(s)] = lost / max(tried, 1)
            by_layer[float(s)] = layer
            overflow[float(s)] = bad / max(sum(g.numel() for g in ref.values()), 1)
    allg = torch.cat([g.flatten() for g in ref.values()])
    nz = allg != 0
    tiny = float(((allg.abs() < 2.0**-24) & nz).sum()) / max(int(nz.sum()), 1)
    return Underflow(by_scale, by_layer, overflow, tiny)


# --- 4. stochastic rounding rescues a stalled run ------------------------------------------------
@dataclass
class SRResult:
    runs: dict[str, PrecisionRun]  # "fp32", "nearest", "stochastic"

    def loss_drop(self, key: str) -> float:
        h = self.runs[key].history
        return self.start_loss - h.train_loss[-1]

    @property
    def start_loss(self) -> float:
        return math.log(10)  # the untrained network's loss is about log(classes)

    def recovered(self) -> float:
        """Share of the fp32 run's loss decrease that stochastic rounding achieves (1 = all of it)."""
        return self.loss_drop("stochastic") / max(self.loss_drop("fp32"), 1e-9)

    def nearest_share(self) -> float:
        return self.loss_drop("nearest") / max(self.loss_drop("fp32"), 1e-9)


def sr_recovery(*, dtype: str = "bf16", lr: float = 1e-4, epochs: int = 6, optimizer: str = "adam", width: int = 128,
                device: str = "cpu", seed: int | None = None, threads: int | None = 1,
                data: Splits | None = None) -> SRResult:
    """Three runs at a small learning rate (Adam's steps are about ``lr`` per weight, so with bf16's gap of
    2^-8 relative, every weight larger than about ``lr * 2^8`` cannot move by rounding to nearest): fp32
    weights, weights stored in ``dtype`` rounded to nearest, and stored with stochastic rounding."""
    kw = dict(optimizer=optimizer, lr=lr, epochs=epochs, width=width, device=device, seed=seed, threads=threads,
              data=data)
    return SRResult({
        "fp32": train_precision(dtype="fp32", mode="pure", **kw),
        "nearest": train_precision(dtype=dtype, mode="stored", rounding="nearest", **kw),
        "stochastic": train_precision(dtype=dtype, mode="stored", rounding="stochastic", **kw),
    })


# --- 5. chaos: tiny perturbations vs a new seed --------------------------------------------------
@torch.no_grad()
def flip_lowest_bit_(model: nn.Module) -> nn.Module:
    """Flip the lowest mantissa bit of every float32 parameter in place (a relative change of ~1e-7)."""
    for p in model.parameters():
        if p.dtype != torch.float32:
            raise ValueError(f"flip_lowest_bit_ works on float32 parameters, got {p.dtype}")
        bits = p.view(torch.int32)
        bits.bitwise_xor_(1)
    return model


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


@dataclass
class ChaosResult:
    seeds: list[int]
    acc: list[float]  # final val acc per seed
    acc_perturbed: list[float]  # same seed, lowest bits flipped
    weight_distance: list[float]  # relative distance between the pair's final weights
    initial_distance: float  # relative distance right after the bit flip
    seed_weight_distance: float  # relative distance between the final weights of two different seeds

    @property
    def perturbation_gap(self) -> float:
        """Mean |acc - acc_perturbed| over seeds."""
        return statistics.fmean(abs(a - b) for a, b in zip(self.acc, self.acc_perturbed))

    @property
    def seed_gap(self) -> float:
        """Mean |acc_i - acc_j| over pairs of different seeds."""
        a = self.acc
        pairs = [abs(a[i] - a[j]) for i in range(len(a)) for j in range(i + 1, len(a))]
        return statistics.fmean(pairs)


def perturbation_spread(seeds: Sequence[int] | None = None, *, epochs: int = 4, lr: float = 0.05,
                        width: int = 128, device: str = "cpu", threads: int | None = 1,
                        optimizer: str = "sgd") -> ChaosResult:
    """For each seed: train fp32; train again from the same initial weights with their lowest bit flipped
    (same data order). Compare the accuracy differences with those between seeds (same data split, other
    initial weights and data order)."""
    base = get_seed()
    seeds = list(seeds) if seeds is not None else [base, base + 1, base + 2]
    data = load("mnist1d", seed=base)  # one split: the seeds change the initial weights and the data order
    acc, acc_p, dist, finals = [], [], [], []
    init_d = 0.0
    kw = dict(epochs=epochs, lr=lr, width=width, device=device, threads=threads, optimizer=optimizer, data=data,
              measure_lost=False)
    for s in seeds:
        a = train_precision(seed=s, **kw)
        b = train_precision(seed=s, perturb_bits=True, **kw)
        wa, wb = _flat(a.model), _flat(b.model)
        acc.append(a.val_acc)
        acc_p.append(b.val_acc)
        dist.append(float((wa - wb).norm() / wa.norm()))
        finals.append(wa)
        if not init_d:
            seed_everything(s)
            m0 = mlp(40, [width, width], 10)
            w0 = _flat(m0)
            init_d = float((w0 - _flat(flip_lowest_bit_(m0))).norm() / w0.norm())
    seed_d = float((finals[0] - finals[1]).norm() / finals[0].norm()) if len(finals) > 1 else float("nan")
    return ChaosResult(seeds, acc, acc_p, dist, init_d, seed_d)


# --- claims --------------------------------------------------------------------------------------
def claims(table: DtypeTable, runs: Sequence[PrecisionRun], under: Underflow, sr: SRResult,
           chaos: ChaosResult, unbiased: UnbiasedCheck, device: str = "cpu") -> Claims:
    """The claims table of lesson 07, every verdict computed from this run's measurements."""
    c = Claims("07 precision")
    by = {r.label: r for r in runs}
    r64, r32 = table.get(device, "fp64"), table.get(device, "fp32")
    mm = r32.gflops / r64.gflops if r64.gflops and r32.gflops else float("nan")
    ep = by["fp64 pure"].epoch_seconds / by["fp32 pure"].epoch_seconds
    c.add("Linear-algebra libraries favour 64-bit floats: 32-bit is not faster (hypothesis 1)", "seed 001",
          f"fp32 / fp64 speed: matmul {mm:.2f}×, training epoch {ep:.2f}× ({device}, threads={table.threads})",
          mm < 1.1 and ep < 1.1)
    for name in LOW:
        row = table.get(device, name)
        if row.vs_fp32 is None:
            c.add(f"{name} does not speed up matrix products either (hypothesis 1)", "seed 001",
                  f"{name} unsupported on {device}", None)
            continue
        pure = by.get(f"{name} pure")
        extra = f"; pure-{name} training epoch {by['fp32 pure'].epoch_seconds / pure.epoch_seconds:.2f}× fp32" \
            if pure else ""
        c.add(f"{name} does not speed up matrix products either (hypothesis 1)", "seed 001",
              f"{name} matmul {row.vs_fp32:.2f}× fp32 (units: {row.units}){extra}", row.vs_fp32 < FAST_RATIO)
    if "bf16 pure" in by:
        b, f = by["bf16 pure"], by["fp32 pure"]
        c.add("A less precise type needs less memory per parameter", "seed 001",
              f"training state (weights, grads, momentum): bf16 {b.state_bytes / 1024:.0f} KB vs fp32 "
              f"{f.state_bytes / 1024:.0f} KB", b.state_bytes <= 0.55 * f.state_bytes)
        gap = f.val_acc - b.val_acc
        c.add("Losing small updates hurts training at a normal learning rate (hypothesis 2)", "seed 001",
              f"pure bf16 lost {100 * b.lost_share:.1f}% of updates; val acc bf16 {b.val_acc:.3f} vs fp32 "
              f"{f.val_acc:.3f} (seed-to-seed gap {chaos.seed_gap:.3f})", gap > max(chaos.seed_gap, 0.02))
    n, s, f = sr.runs["nearest"], sr.runs["stochastic"], sr.runs["fp32"]
    c.add("…at a small learning rate, round-to-nearest loses most updates and stalls (hypothesis 2)", "seed 001",
          f"lr {f.history.config['lr']}: {100 * n.lost_share:.0f}% of updates lost; loss decrease "
          f"{100 * sr.nearest_share():.0f}% of fp32's; val acc {n.val_acc:.3f} vs fp32 {f.val_acc:.3f}",
          n.lost_share > 0.5 and sr.nearest_share() < 0.5)
    c.add("Stochastic rounding is unbiased and rescues that training", "lesson",
          f"mean of {unbiased.draws} roundings within {unbiased.z:.1f} standard errors; loss decrease "
          f"{100 * sr.recovered():.0f}% of fp32's, val acc {s.val_acc:.3f}",
          unbiased.z < 4.5 and sr.recovered() > 0.7)
    c.add("fp16 gradients underflow to zero without loss scaling", "lesson",
          f"zero in fp16 but not in fp32: {100 * under.by_scale[1.0]:.2f}% unscaled, "
          f"{100 * under.by_scale[max(under.by_scale)]:.2f}% with scale {max(under.by_scale):g}",
          under.by_scale[1.0] > 0 and under.by_scale[max(under.by_scale)] < under.by_scale[1.0])
    c.add("Training depends chaotically on tiny changes (hypothesis 3): final accuracy", "seed 001",
          f"flipping the lowest bit changes val acc by {chaos.perturbation_gap:.3f} on average; a new seed by "
          f"{chaos.seed_gap:.3f}", chaos.perturbation_gap >= 0.5 * chaos.seed_gap)
    c.add("…and the trained weights themselves", "seed 001",
          f"relative weight difference grows from {chaos.initial_distance:.1e} to "
          f"{statistics.fmean(chaos.weight_distance):.1e} (different seeds: {chaos.seed_weight_distance:.2f})",
          statistics.fmean(chaos.weight_distance) > 0.1 * chaos.seed_weight_distance)
    return c


# --- exercises -----------------------------------------------------------------------------------
def check_fp16_epsilon(answer: float) -> bool:
    """Exercise 1: the value Adam's default eps = 1e-8 takes when stored in fp16."""
    expected = float(torch.tensor(1e-8, dtype=torch.float16))
    return check(answer, expected, abs_tol=1e-12,
                 praise="1e-8 is below fp16's smallest subnormal (about 6e-8): it becomes 0, and Adam's "
                        "m / (sqrt(v) + eps) turns into 0/0 = NaN as soon as v underflows too.",
                 hint="Try torch.tensor(1e-8, dtype=torch.float16) and compare with fp16's smallest subnormal 2**-24.")


def check_bf16_spacing(answer: float) -> bool:
    """Exercise 2: the gap between 1.0 and the next bf16 number."""
    return check(answer, spacing_at_one("bf16"), rel_tol=1e-9,
                 praise="bf16 keeps 7 fraction bits, so around 1.0 its numbers are 2**-7 apart: an update smaller "
                        "than half of that (0.0039) is lost.",
                 hint="bf16 stores 7 fraction bits; torch.finfo(torch.bfloat16).eps gives it too.")


def check_round_up_probability(answer: float) -> bool:
    """Exercise 3: the probability that stochastic rounding sends 1.001 up to the next bf16 number."""
    lo, hi = neighbours(torch.tensor([1.001], dtype=torch.float64), "bf16")
    expected = float((1.001 - lo) / (hi - lo))
    return check(answer, expected, rel_tol=1e-3,
                 praise="(x - lo) / (hi - lo): the expected result is then exactly x — no update is lost on average.",
                 hint="The two bf16 neighbours of 1.001 are 1.0 and 1.0078125; round up with probability "
                      "(x - lo) / (hi - lo).")


# --- figures -------------------------------------------------------------------------------------
COLORS = {"fp64": "C0", "fp32": "C1", "bf16": "C2", "fp16": "C3"}


def plot_dtype_table(table: DtypeTable):
    """Matmul GFLOP/s per dtype (one group of bars per device), log scale."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    devices = sorted({r.device for r in table.rows}, key=lambda d: d != "cpu")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / len(DTYPES)
    for i, name in enumerate(DTYPES):
        xs, ys = [], []
        for j, d in enumerate(devices):
            r = table.get(d, name)
            if r.gflops:
                xs.append(j + (i - 1.5) * width)
                ys.append(r.gflops)
        bars = ax.bar(xs, ys, width, color=COLORS[name], label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(devices)), devices)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(ylabel="GFLOP/s (log scale)",
           title=f"{table.n}×{table.n} matmul throughput, threads={table.threads}")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.tight_layout()
    return fig


def plot_runs(runs: Sequence[PrecisionRun]):
    """Left: validation accuracy per epoch of each run. Right: lost-update share per layer (log scale)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    for r in runs:
        ls = "-" if r.mode == "pure" else "--"
        a.plot(r.history.epoch, r.history.val_acc, ls, color=COLORS[r.dtype], label=r.label, marker=".")
    a.axhline(0.1, color="gray", ls=":", lw=1, label="chance")
    a.set(xlabel="epoch", ylabel="validation accuracy", title="the same MLP in each precision", ylim=(0, None))
    a.legend(fontsize=8)
    layers = list(runs[0].lost_by_layer)
    bar_runs = [r for r in runs if r.lost_by_layer]
    w = 0.8 / max(len(bar_runs), 1)
    for i, r in enumerate(bar_runs):
        vals = [max(100 * r.lost_by_layer.get(k, 0.0), 1e-3) for k in layers]
        hatch = "" if r.mode == "pure" else "//"
        b.bar([j + (i - len(bar_runs) / 2 + 0.5) * w for j in range(len(layers))], vals, w,
              color=COLORS[r.dtype], hatch=hatch, label=r.label, edgecolor="white")
    b.set_xticks(range(len(layers)), [k.replace(".weight", " W").replace(".bias", " b") for k in layers], fontsize=8)
    b.set(yscale="log", ylim=(1e-3, 150), ylabel="% of updates lost (w + Δ == w)",
          title="updates lost to rounding, per layer (no bar: none lost)",
          xlabel="parameter tensor (layer index in the MLP)")
    b.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def plot_sr(sr: SRResult):
    """Training loss per epoch: fp32, stored bf16 round-to-nearest, stored bf16 stochastic."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = {"fp32": ("C1", "-", 4), "nearest": ("C3", "--", 1.5), "stochastic": ("C2", "-.", 1.5)}
    for k, r in sr.runs.items():
        c, ls, lw = styles[k]
        a.plot(r.history.epoch, r.history.train_loss, ls, color=c, lw=lw, alpha=0.6 if k == "fp32" else 1,
               marker=".", label=r.label)
        steps = range(1, len(r.lost_per_step) + 1)
        b.plot(steps, [100 * v for v in r.lost_per_step], ls, color=c, label=r.label)
    lr = sr.runs["fp32"].history.config["lr"]
    a.set(xlabel="epoch", ylabel="training loss", title=f"small steps ({sr.runs['fp32'].history.config['optimizer']}, "
          f"lr {lr:g}): training loss")
    a.legend(fontsize=8)
    b.set(xlabel="optimizer step", ylabel="% of updates lost", ylim=(-2, 102), title="updates lost at each step")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_chaos(chaos: ChaosResult):
    """Final validation accuracy per seed: original vs lowest-bit-flipped initial weights."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = range(len(chaos.seeds))
    ax.plot(x, chaos.acc, "o", ms=9, color="C0", label="original")
    ax.plot(x, chaos.acc_perturbed, "x", ms=10, mew=2, color="C3", label="lowest bit of every weight flipped")
    ax.set_xticks(list(x), [f"seed {s}" for s in chaos.seeds])
    lo, hi = min(chaos.acc + chaos.acc_perturbed), max(chaos.acc + chaos.acc_perturbed)
    ax.set(ylabel="final validation accuracy", ylim=(lo - 0.03, hi + 0.03), xlim=(-0.5, len(chaos.seeds) - 0.5),
           title="tiny perturbation vs a different seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_panel():
    """The live panel: device × dtype × mode (and rounding for stored weights), optimizer, learning rate."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "dtype": w.ToggleButtons(options=list(DTYPES), value="bf16", description="dtype", style=style),
        "mode": w.ToggleButtons(options=list(MODES), value="pure", description="mode", style=style),
        "rounding": w.ToggleButtons(options=list(ROUNDINGS), value="nearest", description="rounding",
                                    style=style, tooltips=["used when mode = stored"] * 2),
        "optimizer": w.ToggleButtons(options=["sgd", "adam"], value="sgd", description="optimizer", style=style),
        "lr": w.FloatLogSlider(value=0.05, base=10, min=-4, max=0, step=0.25, description="lr", style=style),
        "epochs": w.IntSlider(value=6, min=1, max=60, description="epochs", style=style),
        "width": w.SelectionSlider(options=[64, 128, 256, 512, 1024, 2048], value=128, description="width",
                                   style=style),
    }
    return LivePanel(precision_experiment, knobs, title="Precision: an MLP on MNIST-1D in fp64 / fp32 / bf16 / fp16")
