"""Measuring memory: peak resident memory around a block, and a child process whose data memory is capped.

* :class:`PeakRSS`: ``with PeakRSS() as m: ...`` then ``m.growth`` (bytes), the peak resident memory (RSS) of
  this process and its children above the value on entry.
* :func:`run_child`: run a function in a fresh Python process, optionally under a hard cap on its data memory
  (``RLIMIT_DATA``: heap and anonymous mappings; read-only file mappings do not count), and get back what it
  returned, whether it died of a ``MemoryError``, and its memory at the end (``VmData``, ``VmHWM``).
  The caller names what the child runs (``"package.module:function"`` plus keyword arguments); nothing here
  knows about any lesson.
* :func:`run_capped`: the same under a cap of a *baseline* plus a budget, the baseline being the data memory of
  an uncapped run of a preparing call (imports, opening files, a warm-up), so that the budget is what the
  interesting part may add.

Linux gives the exact numbers (``/proc/self/status``, the kernel's peak mark); elsewhere :class:`PeakRSS`
samples with psutil and :func:`cap_supported` says why no cap can be enforced.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .validate import check_float, check_int

RESULT_TAG = "@@LESSONS_RESULT@@"
OOM_WORDS = ("allocate memory", "not enough memory", "out of memory", "Unable to allocate")


# --- reading this process's memory ------------------------------------------------------------------
def status_bytes(key: str) -> int | None:
    """A ``Vm*`` / ``Rss*`` line of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; True if that worked (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_bytes("VmHWM") is not None
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.growth`` (bytes): peak resident memory minus the value on entry.

    Resident memory (RSS, via psutil) of this process plus its children (e.g. DataLoader workers). A thread
    samples it every ``interval`` seconds; on Linux the kernel's own peak mark (VmHWM, reset on entry) is used
    too, so short spikes between two samples are not missed. Note: RSS counts the pages of a memory-mapped
    file this process has touched (until they are released), not only its heap.
    """

    def __init__(self, interval: float = 0.005, children: bool = True):
        self.interval = interval
        self.children = children
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def _rss(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        if self.children:
            for c in self._proc.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        import psutil

        self._proc = psutil.Process()
        self._hwm = reset_peak_rss()
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())
        if self._hwm:
            self.peak = max(self.peak, status_bytes("VmHWM") or 0)

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


# --- a child process, optionally capped ---------------------------------------------------------------
def cap_supported() -> str | None:
    """None if a data-memory cap (RLIMIT_DATA, which counts heap and anonymous memory but not read-only file
    mappings) can be enforced here; else why not."""
    if not sys.platform.startswith("linux"):
        return f"RLIMIT_DATA is only enforced for all allocations on Linux (this is {sys.platform})"
    try:
        major, minor = (int(v) for v in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (4, 7):
        return f"Linux {major}.{minor} does not count mmap allocations in RLIMIT_DATA (needs 4.7+)"
    return None


@dataclass
class ChildRun:
    """What one child process did. ``value``: what the target returned (JSON; a dataclass arrives as a dict);
    ``reported``: the child got as far as reporting (False: it died, e.g. could not even start under the cap);
    ``memory_error``: it failed for lack of memory; ``vmdata`` / ``vmhwm``: its data memory and peak RSS at the
    end (bytes, Linux). ``stderr``: the tail of its error output."""

    target: str
    ok: bool
    reported: bool
    value: Any = None
    memory_error: bool = False
    error: str | None = None
    cap_bytes: int | None = None
    baseline_bytes: int | None = None
    vmdata: int | None = None
    vmhwm: int | None = None
    seconds: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    stderr: str = ""


def _resolve(target: str) -> Callable[..., Any]:
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"target must be 'package.module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _import_root(module: str) -> str | None:
    """The folder from which this process imports ``module`` (to put on the child's path), or None."""
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    return str(origin.parent.parent if spec.submodule_search_locations else origin.parent)


def _child_main(argv: list[str] | None = None) -> None:
    """Entry of the child: ``python -c "from lessons_lib.memcap import _child_main; _child_main()" SPEC``, SPEC
    being ``{"target": "pkg.mod:fn", "kwargs": {...}}`` as JSON. Prints one line: RESULT_TAG + a JSON report."""
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    out: dict[str, Any] = {"ok": False}
    try:
        out["value"] = _jsonable(_resolve(spec["target"])(**spec.get("kwargs", {})))
        out["ok"] = True
    except MemoryError as e:
        out.update(memory_error=True, error=f"MemoryError: {e}")
    except Exception as e:  # torch reports a refused allocation as a RuntimeError
        msg = str(e).splitlines()[0] if str(e) else ""
        out.update(memory_error=any(w in str(e) for w in OOM_WORDS), error=f"{type(e).__name__}: {msg}")
    out.update(vmdata=status_bytes("VmData"), vmhwm=status_bytes("VmHWM"))
    try:
        line = json.dumps(out)
    except TypeError as e:
        out.update(ok=False, value=None, error=f"the target's result cannot be sent back as JSON ({e})")
        line = json.dumps(out)
    print(RESULT_TAG + line, flush=True)


def run_child(target: str, kwargs: dict | None = None, *, cap_bytes: int | None = None, timeout: float = 120,
              threads: int = 1) -> ChildRun:
    """Run ``target(**kwargs)`` (``target`` = ``"package.module:function"``, importable; ``kwargs`` JSON) in a
    fresh Python process with ``threads`` OpenMP/BLAS threads, its data memory capped at ``cap_bytes`` (None:
    no cap). The child imports ``target`` from where this process would (its folder goes on the child's
    PYTHONPATH). Never raises for what happens inside the child; the returned :class:`ChildRun` says it."""
    if cap_bytes is not None:
        cap_bytes = check_int(cap_bytes, "cap_bytes", low=1, fix="a memory cap in bytes, or None for no cap")
    timeout = check_float(timeout, "timeout", low=0, low_open=True, fix="seconds the child may run, e.g. 120")
    threads = check_int(threads, "threads", low=1, fix="OpenMP/BLAS threads for the child, e.g. 1")
    if cap_bytes is not None and cap_supported():
        raise RuntimeError(f"a memory cap cannot be enforced here: {cap_supported()}")
    if ":" not in target:  # the name itself is resolved in the child; the form is checked here, fast
        raise ValueError(f"target must be 'package.module:function', got {target!r}")

    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (cap_bytes, cap_bytes))

    t = str(int(threads))
    env = {**os.environ, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t}
    roots = [r for r in (_import_root("lessons_lib"), _import_root(target.partition(":")[0])) if r]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *filter(None, [os.environ.get("PYTHONPATH")])]))
    spec = json.dumps({"target": target, "kwargs": kwargs or {}})
    cmd = [sys.executable, "-c", "from lessons_lib.memcap import _child_main; _child_main()", spec]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                           preexec_fn=preexec if cap_bytes is not None else None)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return ChildRun(target, False, False, error="timeout", cap_bytes=cap_bytes, timed_out=True,
                        seconds=time.perf_counter() - t0, stderr=err[-2000:])
    sec = time.perf_counter() - t0
    report = None
    for line in p.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            report = json.loads(line[len(RESULT_TAG):])
    err = p.stderr[-2000:]
    if report is None:  # died before reporting (e.g. the cap is below what the imports need)
        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {p.returncode}, no output"
        return ChildRun(target, False, False, error=last, memory_error=any(w in err for w in ("MemoryError",
                        *OOM_WORDS)), cap_bytes=cap_bytes, seconds=sec, returncode=p.returncode, stderr=err)
    return ChildRun(target, bool(report["ok"]), True, report.get("value"), bool(report.get("memory_error")),
                    report.get("error"), cap_bytes, None, report.get("vmdata"), report.get("vmhwm"), sec,
                    p.returncode, False, err)


_BASELINES: dict[str, int] = {}


def baseline_bytes(target: str, kwargs: dict | None = None, *, timeout: float = 120) -> int:
    """Data memory (VmData, bytes) at the end of an uncapped run of ``target(**kwargs)``: what a child needs for
    its imports and preparation, the baseline a cap is measured from. Cached per process and arguments."""
    key = json.dumps([target, kwargs or {}], sort_keys=True)
    if key not in _BASELINES:
        run = run_child(target, kwargs, timeout=timeout)
        if not run.ok or not run.vmdata:
            raise RuntimeError(f"the baseline child {target} failed (exit code {run.returncode}, timed out: "
                               f"{run.timed_out}): {run.error}; {run.stderr[-500:]}")
        _BASELINES[key] = int(run.vmdata)
    return _BASELINES[key]


def run_capped(target: str, kwargs: dict, *, budget_bytes: int, baseline_kwargs: dict | None = None,
               timeout: float = 120) -> ChildRun:
    """``target(**kwargs)`` in a child capped at baseline + ``budget_bytes`` of data memory, the baseline being
    :func:`baseline_bytes` of ``target(**baseline_kwargs)`` (the same call told to only prepare)."""
    if not budget_bytes > 0:
        raise ValueError(f"budget_bytes must be > 0 (data memory above the child's baseline), got {budget_bytes}")
    why = cap_supported()
    if why:
        raise RuntimeError(f"a memory cap cannot be enforced here: {why}")
    base = baseline_bytes(target, baseline_kwargs if baseline_kwargs is not None else kwargs, timeout=timeout)
    run = run_child(target, kwargs, cap_bytes=base + int(budget_bytes), timeout=timeout)
    run.baseline_bytes = base
    return run
