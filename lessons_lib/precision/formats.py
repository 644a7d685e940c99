"""Lesson 07 apparatus: the four float formats, which of them this machine runs, and how fast.

* names: :data:`DTYPES` ("fp64", "fp32", "bf16", "fp16"), :func:`dtype_name`, :func:`to_dtype`, bytes per parameter;
* support: :func:`supported_dtypes` / :func:`require_dtype` probe a Linear forward + backward per device and
  mode ("pure", "autocast", "stored"), and say what runs there when something does not;
* speed: :func:`dtype_table`: per device and dtype, matmul GFLOP/s (timed round-robin with
  :func:`~lessons_lib.timing.time_interleaved`), the speed relative to fp32 as the median and range of the
  per-round ratios (:func:`speed_ratios`), bytes per parameter, the hardware units present (``/proc/cpuinfo``
  flags, CUDA compute capability) and a verdict from the *measured* speed against fp32 (a 16-bit type without
  units is emulated).

Timings default to ``threads=1`` (one intra-op thread): on a shared or 1-core machine, two BLAS threads
that wait for each other make every matmul cost a scheduler time slice, which hides the arithmetic.
Pass ``threads=None`` to keep torch's setting.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..device import available_devices, gpu_unavailable_reason, pick_device
from ..seeds import get_seed
from ..stats import Spread, median_range
from ..timing import Timing, time_interleaved, time_it
from ..timing import threads as threads_ctx
from ..validate import BadArgument, check_choice, check_int

DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
LOW = ("bf16", "fp16")
MODES = ("pure", "autocast", "stored")
ROUNDINGS = ("nearest", "stochastic")
FAST_RATIO = 1.2  # a dtype counts as "natively fast" when its matmul beats fp32 by this factor


class UnsupportedDtypeError(ValueError):
    """A dtype (or dtype + mode) was asked for that this device or this torch cannot run."""


# --- arguments shared by the lesson's apparatus (one rule: lessons_lib.validate) --------------------------
def check_threads(threads: int | None) -> int | None:
    """None (torch's own setting) or a whole number of intra-op threads >= 1."""
    return None if threads is None else check_int(threads, "threads", low=1,
                                                  fix="1 for one thread, None for torch's own setting")


def check_seeds(seeds, name: str = "seeds", at_least: int = 1) -> list[int]:  # noqa: ANN001
    """A sequence of at least ``at_least`` seeds (whole numbers >= 0; numpy integers count, bools do not)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or not hasattr(seeds, "__iter__"):
        raise BadArgument(f"{name}={seeds!r}: must be a list of seeds, e.g. replicate_seeds(8) or [0, 1, 2]")
    out = [check_int(s, f"{name}[{i}]", low=0, high=2**32 - 1) for i, s in enumerate(seeds)]
    if len(out) < at_least:
        raise BadArgument(f"{name}={list(out)}: needs at least {at_least} seed(s) (an interval needs 2 runs)")
    return out


def check_rounded(out, x: torch.Tensor, dtype: torch.dtype, who: str = "stochastic") -> torch.Tensor:  # noqa: ANN001
    """The result of a rounding function: a tensor of ``dtype`` with ``x``'s shape, else a clear error."""
    if not isinstance(out, torch.Tensor) or out.dtype != dtype or out.shape != x.shape:
        got = f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else \
            type(out).__name__
        raise BadArgument(f"{who}: the rounding function must return a {dtype} tensor of the input's shape "
                          f"{tuple(x.shape)}, got {got}")
    return out


def check_rounding(rounding: str, mode: str) -> str:
    """``rounding`` ("nearest" or "stochastic"); stochastic rounding applies to stored weights only."""
    if rounding not in ROUNDINGS:
        raise BadArgument(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if rounding == "stochastic" and mode != "stored":
        raise BadArgument("stochastic rounding is applied to stored weights: use mode='stored'")
    return rounding


def check_callable(fn, name: str, signature: str):  # noqa: ANN001, ANN201
    """``fn`` if it can be called (a function), else a clear error naming the expected signature."""
    if not callable(fn) or isinstance(fn, type):
        raise BadArgument(f"{name}={fn!r:.60}: must be a function {signature}")
    return fn


# --- names and formats ---------------------------------------------------------------------------
def dtype_name(dtype: str | torch.dtype) -> str:
    """The course name ("fp64", "fp32", "bf16", "fp16") of a name or torch dtype; BadArgument otherwise."""
    if isinstance(dtype, torch.dtype):
        for k, v in DTYPES.items():
            if v == dtype:
                return k
        raise BadArgument(f"dtype {dtype} is not one of this lesson's float types: use one of {', '.join(DTYPES)}")
    if not isinstance(dtype, str):
        raise BadArgument(f"dtype={dtype!r}: unknown dtype, use one of {', '.join(DTYPES)} (or a torch float dtype)")
    key = dtype.strip().lower()
    aliases = {"float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32", "bfloat16": "bf16",
               "float16": "fp16", "half": "fp16"}
    key = aliases.get(key, key)
    if key not in DTYPES:
        raise BadArgument(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return key


def to_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a course name or torch dtype ("bf16" -> torch.bfloat16)."""
    return DTYPES[dtype_name(dtype)]


def bytes_per_param(dtype: str | torch.dtype) -> int:
    """Bytes one number of the format takes (8, 4, 2, 2)."""
    return torch.empty((), dtype=to_dtype(dtype)).element_size()


def spacing_at_one(dtype: str | torch.dtype) -> float:
    """Gap between 1.0 and the next larger number of the format (machine epsilon)."""
    return float(torch.finfo(to_dtype(dtype)).eps)


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
    """The device as a string, resolved with :func:`~lessons_lib.device.pick_device`: "gpu"/"auto" pick one, a GPU
    that is not there raises :class:`~lessons_lib.device.DeviceUnavailableError` saying how to get one."""
    if not isinstance(device, (str, torch.device)):
        raise BadArgument(f"device={device!r}: use 'cpu', 'gpu', 'auto', 'cuda', 'cuda:N' or 'mps'")
    return str(pick_device(device))


def supported_dtypes(device: str | torch.device = "cpu", mode: str = "pure") -> list[str]:
    """The dtype names that run on ``device`` in ``mode`` ("pure", "autocast", "stored")."""
    dev = _device_str(device)
    check_choice(mode, "mode", MODES)
    if mode == "stored":
        return list(LOW) if _probe_cached("fp32", dev, False) is None else []
    return [k for k in DTYPES if _probe_cached(k, dev, mode == "autocast") is None]


def require_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu", mode: str = "pure") -> str:
    """Return the dtype's name if it runs on ``device`` in ``mode``; else raise :class:`UnsupportedDtypeError`
    saying why and what is supported there."""
    check_choice(mode, "mode", MODES)
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
    dev = torch.device(_device_str(device))
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


# --- the dtype table --------------------------------------------------------------------------
def matmul_gflops(dtype: str | torch.dtype, device: str | torch.device = "cpu", n: int = 512,
                  repeats: int = 10, threads: int | None = 1) -> float:
    """Throughput of an ``n x n`` by ``n x n`` matmul in ``dtype`` on ``device``: 2 n^3 / median seconds / 1e9."""
    name = require_dtype(dtype, device)
    dev = torch.device(_device_str(device))
    n = check_int(n, "n", low=1, fix="the matrix size, e.g. 512")
    repeats = check_int(repeats, "repeats", low=1, fix="timing repeats, e.g. 10")
    threads = check_threads(threads)
    g = torch.Generator().manual_seed(get_seed())
    a = torch.randn(n, n, generator=g).to(device=dev, dtype=DTYPES[name])
    b = torch.randn(n, n, generator=g).to(device=dev, dtype=DTYPES[name])
    with threads_ctx(threads if dev.type == "cpu" else None):
        t = time_it(lambda: a @ b, device=dev, warmup=2, repeats=repeats)
    return 2 * n**3 / t.median / 1e9


def speed_ratios(timings: dict[str, Timing], fast: str, slow: str) -> Spread:
    """How many times faster ``fast`` ran than ``slow``, round by round (``slow``'s time / ``fast``'s time in the
    same round of :func:`~lessons_lib.timing.time_interleaved`): median and range over the rounds."""
    return median_range([b / a for a, b in zip(timings[fast].times, timings[slow].times)])


def matmul_timings(names: Sequence[str], device: str | torch.device = "cpu", n: int = 512, rounds: int = 9,
                   block_s: float = 0.04, threads: int | None = 1) -> dict[str, Timing]:
    """Seconds per ``n x n`` matmul of each dtype, timed round-robin: each round times one block of calls of each
    dtype (enough calls to last about ``block_s``, so that one time slice lost to another program is a small part
    of it), so that a busy machine affects all of them alike. All must be supported."""
    dev = torch.device(_device_str(device))
    if isinstance(names, str):
        raise BadArgument(f"names={names!r}: must be a list of dtype names, e.g. ['fp32', 'bf16']")
    n = check_int(n, "n", low=1, fix="the matrix size, e.g. 512")
    rounds = check_int(rounds, "rounds", low=1, fix="timing rounds, e.g. 9")
    threads = check_threads(threads)
    g = torch.Generator().manual_seed(get_seed())
    a0, b0 = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    ops, calls = {}, {}
    with threads_ctx(threads if dev.type == "cpu" else None):
        for name in names:
            dt = DTYPES[require_dtype(name, dev)]
            a, b = a0.to(device=dev, dtype=dt), b0.to(device=dev, dtype=dt)
            one = time_it(lambda a=a, b=b: a @ b, device=dev, warmup=1, repeats=3).min
            k = calls[name] = max(1, round(block_s / max(one, 1e-7)))
            ops[name] = (lambda a=a, b=b, k=k: [a @ b for _ in range(k)])
        blocks = time_interleaved(ops, device=dev, rounds=rounds, warmup=1, number=1)
    return {k: Timing(times=[x / calls[k] for x in t.times], warmup_times=[x / calls[k] for x in t.warmup_times],
                      device=t.device) for k, t in blocks.items()}


def matmul_gflops_interleaved(names: Sequence[str], device: str | torch.device = "cpu", n: int = 512,
                              rounds: int = 9, threads: int | None = 1) -> dict[str, float]:
    """Like :func:`matmul_gflops` for several dtypes at once (:func:`matmul_timings`); each dtype's throughput is
    from its fastest round, because other programs can only ever add time."""
    timings = matmul_timings(names, device, n=n, rounds=rounds, threads=threads)
    return {k: 2 * n**3 / t.min / 1e9 for k, t in timings.items()}


@dataclass
class DtypeRow:
    device: str
    dtype: str
    bytes_per_param: int
    eps: float
    max: float
    gflops: float | None  # from the fastest round
    vs_fp32: Spread | None  # speed relative to fp32, round by round: median and range
    units: str
    verdict: str


class DtypeTable:
    """Rows of :func:`dtype_table`; displays as an HTML table in Jupyter and as text in print."""

    heads = ("device", "dtype", "bytes/param", "eps (gap at 1.0)", "largest", "matmul GFLOP/s",
             "× fp32: median (range)", "hardware units", "verdict")

    def __init__(self, rows: list[DtypeRow], n: int, threads: int | None, rounds: int = 0,
                 timings: dict[str, dict[str, Timing]] | None = None):
        self.rows, self.n, self.threads, self.rounds = rows, n, threads, rounds
        self.timings = timings or {}  # device -> dtype -> Timing (seconds per matmul, one per round)

    def ratio(self, device: str, fast: str, slow: str) -> Spread:
        """How many times faster ``fast`` multiplied than ``slow`` on ``device``: median and range over rounds."""
        return speed_ratios(self.timings[device], fast, slow)

    def get(self, device: str, dtype: str) -> DtypeRow:
        dtype = dtype_name(dtype)
        for r in self.rows:
            if r.device == device and r.dtype == dtype:
                return r
        raise BadArgument(f"device={device!r}: the table has no row for {dtype} on it; its devices: "
                          f"{', '.join(dict.fromkeys(r.device for r in self.rows))}")

    def _cells(self, r: DtypeRow) -> list[str]:
        return [r.device, r.dtype, str(r.bytes_per_param), f"{r.eps:.3g}", f"{r.max:.3g}",
                "—" if r.gflops is None else f"{r.gflops:.1f}",
                "—" if r.vs_fp32 is None else f"{r.vs_fp32.median:.2f} ({r.vs_fp32.low:.2f}–{r.vs_fp32.high:.2f})",
                r.units, r.verdict]

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in self.heads)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in self._cells(r))
                       + "</tr>" for r in self.rows)
        return (f"<b>{self.n}×{self.n} matmul, {self.rounds} interleaved rounds (GFLOP/s: the fastest; × fp32: "
                f"per round), threads={self.threads}</b>"
                f"<table><tr>{head}</tr>{body}</table>")

    def __str__(self) -> str:
        rows = [list(self.heads)] + [self._cells(r) for r in self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(self.heads))]
        return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows)

    __repr__ = __str__


def _verdict(name: str, ratio: Spread) -> str:
    """A label from the whole range of the per-round ratios ("unclear" when the range spans two labels)."""
    if name == "fp32":
        return "reference"
    if name == "fp64":
        return f"fp32 is {1 / ratio.median:.1f}× faster" if ratio.high < 1 else \
            "as fast as fp32 or faster" if ratio.low >= 1 else "unclear: the rounds disagree"
    if ratio.low >= FAST_RATIO:
        return f"natively fast: {ratio.median:.1f}× fp32"
    if ratio.low >= 0.75 and ratio.high < FAST_RATIO:
        return "about fp32 speed (16-bit units unused or absent)"
    if ratio.high < 0.75:
        return f"emulated / slow: {1 / ratio.median:.1f}× slower than fp32"
    return "unclear: the rounds disagree"


def dtype_table(devices: Sequence[str] | None = None, n: int = 512, repeats: int = 9,
                threads: int | None = 1) -> DtypeTable:
    """One row per (device, dtype): bytes/param, eps, largest value, matmul GFLOP/s (fastest of ``repeats``
    interleaved rounds, :func:`matmul_timings`), speed relative to fp32 (median and range of the per-round ratios),
    hardware units, verdict. ``devices`` defaults to :func:`~lessons_lib.device.available_devices`."""
    if isinstance(devices, (str, torch.device)):
        raise BadArgument(f"devices={devices!r}: must be a list of devices, e.g. ['cpu'] (None: every device here)")
    n = check_int(n, "n", low=1, fix="the matrix size, e.g. 512")
    repeats = check_int(repeats, "repeats", low=2, fix="interleaved timing rounds (a range needs 2), e.g. 9")
    threads = check_threads(threads)
    rows = []
    all_timings: dict[str, dict[str, Timing]] = {}
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
        timings = matmul_timings(ok, dev, n=n, rounds=repeats, threads=threads) if ok else {}
        all_timings[dev] = timings
        speeds.update({k: 2 * n**3 / t.min / 1e9 for k, t in timings.items()})
        for name, dt in DTYPES.items():
            fi = torch.finfo(dt)
            s = speeds[name]
            ratio = None if s is None or "fp32" not in timings else speed_ratios(timings, name, "fp32")
            rows.append(DtypeRow(dev, name, bytes_per_param(name), float(fi.eps), float(fi.max), s, ratio,
                                 native_units(name, dev) if s is not None else "—",
                                 _verdict(name, ratio) if ratio is not None else f"unsupported: {reasons[name]}"))
    return DtypeTable(rows, n, threads, repeats, all_timings)
