"""Start worker processes from a notebook or a script, and never let one hang or die silently.

:func:`launch` runs an importable function ``target(link, *args)`` in N fresh processes (``torch.multiprocessing``
with :func:`start_method`) and returns what each one returned, by rank. A worker talks back through its
:class:`Link`: ``link.report(kind, payload, status=...)`` sends a :class:`Message` (progress, epoch logs...) that
the launcher hands to ``on_message``; ``link.stopping()`` says the launcher asked it to stop; ``link.init_method``
is the rendezvous (127.0.0.1, a free port) for :func:`process_group`.

Failures end the run, never hang it:

* a process that dies or raises stops the others, and :class:`WorkerError` names the root cause (the process that
  vanished, else the earliest exception reported) and what became of the others;
* a process that hangs does not exit, so the launcher also watches for silence: nothing reported for ``timeout_s``
  -> each live process writes its Python stack (faulthandler on SIGUSR1, to a file: a kernel never shows a child's
  stderr), the stacks are printed and :class:`WorkerError` says where each process was stuck;
* every collective of :func:`process_group` times out (after ``2 * timeout_s``: the silence watch fires first);
* :func:`with_restarts` starts a failed run once more and says why (``torchrun --max-restarts``).

A function defined in a notebook cell cannot be imported by a fresh process: :func:`portable` sends an importable
function by name and any other one as its source text, with the modules and constants it uses; the worker rebuilds
it with :meth:`Portable.load` (``torch``, ``dist`` = ``torch.distributed``, ``nn``, ``F``, ``math`` and ``np`` are
there too). Scripts that call :func:`launch` need ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import gc
import importlib
import inspect
import linecache
import os
import queue as queue_mod
import re
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .device import pick_device
from .validate import check_float, check_int

HOST = "127.0.0.1"
# the fork server imports these once; DDP's constructor imports torch._dynamo (~800 modules, ~2 s per process
# otherwise), so it is here even though only some workers build a DDP
PRELOAD = ("torch", "torch.distributed", "torch.nn.parallel", "torch._dynamo")
STARTUP_S = 30.0  # a process that has not said anything yet gets this much longer before it counts as hung
T = TypeVar("T")


# --- bad input: cores, ports ------------------------------------------------------------------------
class OversubscribedWarning(UserWarning):
    """More processes than cores: the run goes on, but processes take turns on the cores."""


class PortInUseError(RuntimeError):
    """The rendezvous port is taken by another program."""


class NotPortableError(ValueError):
    """A function that cannot be sent to a fresh process (see :func:`portable`)."""


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_processes(processes: int, device: str = "cpu") -> int:
    """Validate a process count. More processes than cores warns (:class:`OversubscribedWarning`) and runs;
    on CUDA each process needs its own GPU (NCCL), so more processes than GPUs is an error."""
    processes = check_int(processes, "processes", low=1, fix="start at least one process")
    if device == "cuda":
        pick_device("cuda")  # no GPU here: DeviceUnavailableError says so and how to get one
        n = torch.cuda.device_count()
        if processes > n:
            raise ValueError(f"{processes} processes need {processes} GPUs with NCCL, this machine has {n}: "
                             f"use processes <= {n}, or device='cpu' (gloo) to run more processes")
    elif device not in ("cpu", "mps"):
        raise ValueError(f"unknown device {device!r}: choose cpu, cuda or mps")
    cores = cpu_cores()
    if processes > cores:
        warnings.warn(f"{processes} processes on {cores} cores: the run goes on, but processes share cores, so "
                      f"time per epoch cannot improve past {cores} processes (use processes <= {cores} "
                      "to measure speed-up)", OversubscribedWarning, stacklevel=3)
    return processes


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_port(port: int | None, host: str = HOST) -> int:
    """``port`` if it can be bound on ``host``; a free port when ``port`` is None. A taken port raises
    :class:`PortInUseError` naming the fix (the rendezvous would otherwise fail or join a stranger's run)."""
    if port is None:
        return free_port(host)
    port = check_int(port, "port", low=1, high=65535, fix="pass port=None to let the course pick a free one")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise PortInUseError(f"port {port} on {host} is in use ({e.strerror}): pass port=None to let the "
                                 f"course pick a free one, or stop the program that holds it "
                                 f"(`ss -ltnp 'sport = :{port}'` shows which)") from None
    return int(port)


# --- the start method ----------------------------------------------------------------------------------
def start_method(preload: Sequence[str] = ()) -> str:
    """"forkserver" where the OS has it (Linux, macOS): one clean server process imports torch and what DDP needs
    (:data:`PRELOAD`, plus ``preload``) once, and every worker is forked from it in a fraction of a second.
    "spawn" elsewhere (a fresh interpreter per process, ~2 s each). Never plain "fork": it would copy the
    notebook's threads. ``preload`` counts only before the server's first start (see :func:`warm_up`)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.set_forkserver_preload(list(dict.fromkeys([*PRELOAD, *preload])))
        return "forkserver"
    return "spawn"


def warm_up(preload: Sequence[str] = ()) -> str:
    """Start the fork server now, in the background: it imports torch and DDP's dependencies (a few seconds,
    once per kernel) while the notebook goes on, so the first :func:`launch` does not wait for them."""
    method = start_method(preload)
    if method == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
    return method


# --- sending a function to a fresh process --------------------------------------------------------------
def _default_namespace() -> dict[str, Any]:
    import math

    import numpy as np
    import torch.nn as nn
    import torch.nn.functional as F  # noqa: N812 -- the usual name

    return {"torch": torch, "dist": dist, "nn": nn, "F": F, "math": math, "np": np}


def _importable(obj: Any) -> tuple[str, str] | None:
    """(module, qualname) when ``import module; module.qualname`` gives back ``obj`` (a library function)."""
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or mod in ("__main__", "__mp_main__") or "<" in qual:
        return None
    try:
        found: Any = importlib.import_module(mod)
        for part in qual.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return (mod, qual) if found is obj else None


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it: comprehensions, inner functions) reads as globals."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


_CONSTANTS = (int, float, complex, bool, str, bytes, type(None))


@dataclass(frozen=True)
class Portable:
    """A function a fresh process can rebuild (:meth:`load`): by import (``module``, ``qualname``), or from its
    ``source`` (padded with blank lines so that line numbers match the cell it came from) with the globals it
    reads: ``imports`` (name, module, attribute path or "") and ``constants`` (name, value)."""

    name: str
    module: str = ""
    qualname: str = ""
    source: str = ""
    filename: str = ""
    imports: tuple[tuple[str, str, str], ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Callable:
        """The function, rebuilt in this process."""
        if self.module:
            found: Any = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                found = getattr(found, part)
            return found
        ns: dict[str, Any] = {"__name__": "__portable__", "__builtins__": builtins, **_default_namespace()}
        for name, module, attr in self.imports:
            obj: Any = importlib.import_module(module)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
            ns[name] = obj
        ns.update(self.constants)
        if self.filename not in linecache.cache and not os.path.exists(self.filename):  # a notebook cell: let
            lines = self.source.splitlines(keepends=True)                              # tracebacks show its lines
            linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
        exec(compile(self.source, self.filename, "exec"), ns)  # noqa: S102 -- the learner's own function
        return ns[self.name]


def portable(fn: Callable, what: str | None = None) -> Portable:
    """``fn`` in a form a fresh process can rebuild (see :class:`Portable`). A library function travels by name;
    a function defined in a notebook cell travels as its source, with the modules, library objects and constants
    it reads from the notebook. :class:`NotPortableError` (naming the fix) for what cannot travel: a lambda,
    a function without source, one that reads other notebook objects or variables of an enclosing function."""
    if isinstance(fn, Portable):
        return fn
    name = what or getattr(fn, "__name__", type(fn).__name__)
    if not callable(fn):
        raise NotPortableError(f"{name} is a {type(fn).__name__}, not a function")
    ref = _importable(fn)
    if ref is not None:
        return Portable(name=fn.__name__, module=ref[0], qualname=ref[1])
    code = getattr(fn, "__code__", None)
    if code is None:
        raise NotPortableError(f"{name} is a {type(fn).__name__}: only a function written with `def` can be sent "
                               "to the worker processes")
    if code.co_name == "<lambda>":
        raise NotPortableError(f"{name} is a lambda: write it with `def {name}(...):` so that its source can be "
                               "sent to the worker processes")
    if fn.__closure__:
        raise NotPortableError(f"{name} uses {', '.join(code.co_freevars)} from the function around it; the worker "
                               f"processes receive only {name}'s own source: define it at the top level of a cell")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise NotPortableError(f"the source of {name} cannot be read ({e}): define it with `def` in a notebook "
                               "cell or a file, so that it can be sent to the worker processes") from None
    imports, constants, foreign = [], [], []
    defaults = _default_namespace()
    for g in sorted(_global_names(code)):
        if g not in fn.__globals__:
            continue  # a builtin, a name from the default namespace, or a NameError the worker will report
        value = fn.__globals__[g]
        if value is fn:
            continue  # recursion: the rebuilt source defines it
        if isinstance(value, types.ModuleType):
            imports.append((g, value.__name__, ""))
        elif (ref := _importable(value)) is not None:
            imports.append((g, ref[0], ref[1]))
        elif isinstance(value, _CONSTANTS):
            constants.append((g, value))
        elif g not in defaults:
            foreign.append(f"`{g}` ({type(value).__name__})")
    if foreign:
        raise NotPortableError(f"{name} reads {', '.join(foreign)} from your notebook; the worker processes receive "
                               f"only {name}'s own source (with torch, dist = torch.distributed, nn, F, math and np): "
                               f"define what it needs inside {name}, or pass it as an argument")
    p = Portable(name=code.co_name, source="\n" * (code.co_firstlineno - 1) + source, filename=code.co_filename,
                 imports=tuple(imports), constants=tuple(constants))
    try:
        p.load()  # the worker will do the same: fail here, with the reason, rather than in N processes
    except Exception as e:
        raise NotPortableError(f"{name} could not be rebuilt from its source: {short_error(e)}") from None
    return p


# --- inside a worker -------------------------------------------------------------------------------------
@dataclass
class Message:
    """What a worker reported: ``kind`` ("result", "error" and the worker's own kinds), its ``payload`` (pickled:
    numbers, dataclasses, numpy arrays; not tensors, whose memory dies with the process), and ``status``, the
    phrase the launcher quotes when the run hangs ("training (epoch 0, step 20)")."""

    rank: int
    kind: str
    payload: Any = None
    status: str = ""
    time: float = field(default_factory=time.time)


@dataclass
class Link:
    """A worker's line to its launcher: who it is (``rank`` of ``world_size``), where to meet the others
    (``init_method``), how long a collective may wait (``collective_timeout_s``), where to report (``sink``: the
    launcher's queue, anything with ``put(Message)``, or None) and whether to stop (``stop``: an event)."""

    rank: int = 0
    world_size: int = 1
    init_method: str = ""
    collective_timeout_s: float = 60.0
    sink: Any = None
    stop: Any = None

    def report(self, kind: str, payload: Any = None, *, status: str | None = None) -> None:
        """Send a :class:`Message` to the launcher (nothing happens without one)."""
        if self.sink is not None:
            self.sink.put(Message(self.rank, kind, payload, status if status is not None else kind))

    def stopping(self) -> bool:
        """True once the launcher asked the workers to stop (check it between steps)."""
        return self.stop is not None and self.stop.is_set()


@contextlib.contextmanager
def process_group(backend: str, init_method: str | None, rank: int, world_size: int, timeout_s: float,
                  store: Any = None) -> Iterator[None]:
    """Join a ``torch.distributed`` group for the ``with`` block (every collective gives up after ``timeout_s``)
    and leave it in the order that does not deadlock.

    Whatever holds the group (DDP's Reducer) must be freed while the group is still registered: had it been the
    last holder, freeing it would run the gloo group's destructor with the GIL held, which joins gloo's threads
    while one of them may still be freeing the last barrier's tensor, which needs the GIL — a deadlock, seen
    about once in 30 runs (pytorch/pytorch#56297). So: build such objects in a function called inside the block
    (they are freed when it returns), an exception's frames are cleared (they would keep them alive), everything
    is collected, and only then ``destroy_process_group()`` drops the group through Python, which releases the
    GIL first."""
    where = {"store": store} if store is not None else {"init_method": init_method}  # one or the other
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s), **where)
    try:
        yield
    except BaseException as e:
        _stamp(e)  # before leaving: the peers fail after this (their group is gone), not before
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        gc.collect()
        dist.destroy_process_group()


def _stamp(e: BaseException) -> float:
    """When ``e`` was first seen (set on the exception the first time): the launcher names the earliest failure."""
    if not hasattr(e, "raised_at"):
        with contextlib.suppress(AttributeError, TypeError):
            e.raised_at = time.time()  # type: ignore[attr-defined]
    return getattr(e, "raised_at", time.time())


def short_error(e: BaseException, limit: int = 140) -> str:
    """``Type: first line`` of an exception, without C++ source locations, at most ``limit`` characters."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    first = re.sub(r"\[/[^\]]*\] ", "", first)
    return f"{type(e).__name__}: {first if len(first) <= limit else first[: limit - 1] + '…'}"


def _arm_stack_dump(dump_dir: str | None, rank: int) -> None:
    """On SIGUSR1, write every thread's Python stack to ``dump_dir/rank<rank>.txt`` (the launcher asks for it
    when a run hangs, and shows it: a notebook never sees a child process's stderr)."""
    if dump_dir is None or not hasattr(signal, "SIGUSR1"):
        return
    import faulthandler

    f = open(os.path.join(dump_dir, f"rank{rank}.txt"), "w")  # noqa: SIM115 -- open for the process's life
    faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)


def _entry(rank: int, target: Portable, args: tuple, link: Link, dump_dir: str | None) -> None:
    """What each launched process runs: ``target(link, *args)``; its return value goes back as the "result"."""
    # what the fork server imported stays for the process's life: leave it out of garbage collection, so that
    # process_group's gc.collect() (in every exit path) takes milliseconds instead of a second
    gc.freeze()
    link = replace(link, rank=rank)
    _arm_stack_dump(dump_dir, rank)
    link.report("started", status="started")
    try:
        value = target.load()(link, *args)
    except BaseException as e:  # tell the launcher first (with the time it was raised), then fail as usual
        link.sink.put(Message(rank, "error", short_error(e), "raised an error", _stamp(e)))
        raise
    link.report("result", value, status="finished")


# --- launching ----------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A launched process died, raised or hung; the others were stopped (nothing is left waiting).

    ``kind``: "died", "raised", "hung", "deadline" or "missing" (exited without a result); ``rank``: the root
    cause (None when not one process); ``status``: each process's last reported status; ``where``: for a hang,
    where each live process was stuck; ``errors``: the exceptions the processes reported, by rank."""

    def __init__(self, message: str, *, kind: str, rank: int | None = None, status: dict[int, str] | None = None,
                 where: dict[int, str] | None = None, errors: dict[int, str] | None = None):
        super().__init__(message)
        self.kind, self.rank = kind, rank
        self.status, self.where, self.errors = status or {}, where or {}, errors or {}


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _failure(pc, errors: list[Message], elapsed: float, status: dict[int, str]) -> WorkerError:
    """Name the root cause, then what became of the others. A process that vanished (exit code other than
    0/1, or a signal the launcher did not send) is the cause; otherwise the earliest exception reported by a
    worker (the others typically fail after it, their peer gone)."""
    for p in pc.processes:
        p.join(timeout=5)
    n = len(pc.processes)
    codes = [p.exitcode for p in pc.processes]
    raised = {m.rank: m for m in sorted(errors, key=lambda m: m.time)}
    vanished = [i for i, c in enumerate(codes) if c not in (0, 1, None, -signal.SIGTERM) and i not in raised]
    if vanished:
        cause, what, kind = vanished[0], _describe_exit(codes[vanished[0]]), "died"
    elif raised:
        cause = min(raised.values(), key=lambda m: m.time).rank
        what, kind = f"raised {raised[cause].payload}", "raised"
    else:
        cause = next((i for i, c in enumerate(codes) if c not in (0, None)), 0)
        what, kind = _describe_exit(codes[cause]), "died"
    others = [f"process {i} then raised {raised[i].payload}" if i in raised else f"process {i} {_describe_exit(c)}"
              for i, c in enumerate(codes) if i != cause]
    message = (f"process {cause} of {n} {what} after {elapsed:.1f} s; the run was stopped"
               + (f" ({'; '.join(others)})" if others else "")
               + ". Fix the failing process (its traceback is printed above), or run with processes=1 to debug.")
    return WorkerError(message, kind=kind, rank=cause, status=status,
                       errors={r: m.payload for r, m in raised.items()})


def where_stuck(dump: str) -> str:
    """Where a faulthandler dump's current thread is: its innermost frame and, if that is not in the course's
    code, the innermost frame that is (``func (file:line)``)."""
    block = dump.split("Current thread", 1)[-1]
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', block)
    if not frames:
        return "no stack"

    def fmt(frame: tuple[str, str, str]) -> str:
        return f"{frame[2]} ({os.path.basename(frame[0])}:{frame[1]})"

    ours = next((f for f in frames if os.sep + "lessons_lib" + os.sep in f[0]), None)
    return fmt(frames[0]) + (f" called from {fmt(ours)}" if ours not in (None, frames[0]) else "")


def _hang(pc, dump_dir: str, status: dict[int, str], silent: float, elapsed: float,
          show_stacks: bool = True) -> WorkerError:
    """Ask every live process for its stack (SIGUSR1, see :func:`_arm_stack_dump`), print the stacks (unless not
    ``show_stacks``), and say which process was where."""
    alive = [i for i, p in enumerate(pc.processes) if p.is_alive()]
    if hasattr(signal, "SIGUSR1"):
        for i in alive:
            os.kill(pc.processes[i].pid, signal.SIGUSR1)
        time.sleep(0.5)
    where, said = {}, []
    for i, p in enumerate(pc.processes):
        path = os.path.join(dump_dir, f"rank{i}.txt")
        dump = open(path).read() if os.path.exists(path) else ""
        if dump and show_stacks:
            print(f"--- stack of process {i} ---\n{dump}", file=sys.stderr)
        if i in alive and dump:
            where[i] = where_stuck(dump)
        state = f"stuck in {where[i]}" if i in where else ("alive" if i in alive else _describe_exit(p.exitcode))
        said.append(f"process {i}: last said {status.get(i, 'nothing')!r}, {state}")
    message = (f"the run hung: no process reported anything for {silent:.0f} s (after {elapsed:.1f} s) and it was "
               f"stopped; {'; '.join(said)}. If it happens again, run with processes=1 to debug, or raise "
               "timeout_s if a step really takes that long.")
    return WorkerError(message, kind="hung", status=status, where=where)


def launch(target: Callable, args: Sequence = (), *, processes: int, timeout_s: float,
           deadline_s: float | None = None, on_message: Callable[[Message], None] | None = None,
           should_stop: Callable[[], bool] | None = None, port: int | None = None, device: str = "cpu",
           preload: Sequence[str] = (), show_stacks: bool = True) -> list[Any]:
    """Run ``target(link, *args)`` in ``processes`` fresh processes (rank ``link.rank``) and return their return
    values, by rank.

    ``target`` and ``args`` are pickled: ``target`` is sent with :func:`portable` (a notebook's function travels as
    its source), ``args`` must be picklable (tensors in shared memory are fine). Every :class:`Message` a worker
    reports goes to ``on_message`` (in this process, as it arrives); when ``should_stop()`` turns true the workers'
    ``link.stopping()`` does too. The processes meet at ``link.init_method`` (127.0.0.1, ``port`` or a free one).

    Raises :class:`WorkerError` when a process dies or raises (the others are stopped), when all fall silent for
    ``timeout_s`` (a hang: their stacks are printed unless ``show_stacks=False``; a process that has not reported
    yet gets ``STARTUP_S`` more), when the run outlives ``deadline_s`` (default ``10 * timeout_s``), or when a
    process exits without a result. :class:`PortInUseError` before anything starts when ``port`` is taken.
    ``preload``: modules the fork server imports once, if this launch is the one that starts it."""
    check_processes(processes, device)
    timeout_s = check_float(timeout_s, "timeout_s", low=0, low_open=True,
                            fix="seconds of silence after which the run counts as hung, e.g. 60")
    if deadline_s is not None:
        deadline_s = check_float(deadline_s, "deadline_s", low=0, low_open=True, fix="seconds, or None")
    shipped = portable(target)
    port = resolve_port(port)
    method = start_method([*preload, *([shipped.module] if shipped.module else [])])
    ctx = mp.get_context(method)
    q, stop = ctx.Queue(), ctx.Event()
    link = Link(world_size=processes, init_method=f"tcp://{HOST}:{port}", collective_timeout_s=2 * timeout_s,
                sink=q, stop=stop)
    dump_dir = tempfile.mkdtemp(prefix="lessons_processes_")  # where a hung process writes its stack
    results: dict[int, Any] = {}
    errors: list[Message] = []
    status: dict[int, str] = {}  # rank -> what it last reported
    t0 = time.perf_counter()
    deadline = t0 + (10 * timeout_s if deadline_s is None else deadline_s)
    heard_at = t0  # when a process last reported anything

    def drain() -> None:
        nonlocal heard_at
        while True:
            try:
                msg: Message = q.get_nowait()
            except queue_mod.Empty:
                return
            heard_at = time.perf_counter()
            status[msg.rank] = msg.status
            if msg.kind == "result":
                results[msg.rank] = msg.payload
            elif msg.kind == "error":
                errors.append(msg)
            elif on_message is not None:
                on_message(msg)
            if should_stop is not None and should_stop():
                stop.set()

    pc = mp.start_processes(_entry, args=(shipped, tuple(args), link, dump_dir), nprocs=processes, join=False,
                            start_method=method)
    heard_at = time.perf_counter()  # the silence watch starts now: a fork server's first start is not a hang
    try:
        while True:
            drain()
            try:
                if pc.join(timeout=0.05):
                    break
            except (mp.ProcessExitedException, mp.ProcessRaisedException):
                elapsed = time.perf_counter() - t0
                for p in pc.processes:
                    p.join(timeout=5)
                drain()
                raise _failure(pc, errors, elapsed, status) from None
            now = time.perf_counter()
            # until every process has said something, allow for starting up (a fresh interpreter imports torch)
            limit = timeout_s if len(status) == processes else timeout_s + STARTUP_S
            if now - heard_at > limit:
                drain()  # a last look: something may have arrived since the top of the loop
            if now - heard_at > limit:
                raise _hang(pc, dump_dir, status, now - heard_at, now - t0, show_stacks)
            if now > deadline:
                raise WorkerError(f"the run took longer than {deadline - t0:.0f} s and was stopped: raise "
                                  "timeout_s, or give the processes less to do", kind="deadline", status=status)
        drain()
    finally:
        for p in pc.processes:
            if p.is_alive():
                p.terminate()
        for p in pc.processes:
            p.join(timeout=5)
        shutil.rmtree(dump_dir, ignore_errors=True)
        q.close()
    if len(results) != processes:
        missing = sorted(set(range(processes)) - set(results))
        raise WorkerError(f"only {len(results)} of {processes} processes reported their results (missing: "
                          f"{missing})", kind="missing", status=status)
    return [results[r] for r in range(processes)]


def with_restarts(run: Callable[[], T], restarts: int = 1, what: str = "the run") -> T:
    """``run()``, started again (at most ``restarts`` times) when it raises :class:`WorkerError`, saying so on
    stderr — what ``torchrun --max-restarts`` does for a job whose process died or hung. A run that fails every
    time raises the last :class:`WorkerError`."""
    for attempt in range(restarts + 1):
        try:
            return run()
        except WorkerError as e:
            if attempt == restarts:
                raise
            print(f"{what} failed: {e}\n-> starting it again (restart {attempt + 1} of {restarts})", file=sys.stderr)
    raise AssertionError("unreachable")
