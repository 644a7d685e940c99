"""Core launcher (lessons_lib.processes): process counts and ports, sending a notebook's function to a fresh process,
results and messages, and every way a run can fail (a process that raises, dies, hangs or never answers) ending in
a WorkerError that names the cause. Real processes (forkserver) on 127.0.0.1."""

from __future__ import annotations

import functools
import math
import os
import socket
import sys
import time
import warnings
from math import sqrt

import numpy as np
import pytest
import torch

from lessons_lib import processes
from lessons_lib.device import DeviceUnavailableError
from lessons_lib.processes import Link, NotPortableError, WorkerError

LIMIT = 7  # a module constant a shipped function may read


# --- targets (importable: they travel by name) -----------------------------------------------------------
def square(link: Link, x: int) -> int:
    link.report("note", x, status=f"squaring {x}")
    return x * x + link.rank


def all_reduce_ranks(link: Link) -> float:
    with processes.process_group("gloo", link.init_method, link.rank, link.world_size, link.collective_timeout_s):
        t = torch.tensor([float(link.rank + 1)])
        torch.distributed.all_reduce(t)
        return float(t)


def fail(link: Link, how: str) -> None:
    link.report("ready", status="about to fail")
    if link.rank == 1:
        if how == "raise":
            raise ValueError("rank 1 gives up")
        if how == "exit":
            os._exit(5)
        if how == "silent_exit":
            os._exit(0)
        if how == "hang":
            time.sleep(10**6)
    elif how != "silent_exit":
        time.sleep(10**6)  # rank 0 would wait forever: the launcher must stop it


def until_stopped(link: Link) -> int:
    steps = 0
    while not link.stopping():
        steps += 1
        link.report("step", steps)
        time.sleep(0.01)
    return steps


# --- process counts and ports ----------------------------------------------------------------------------
def test_check_processes():
    with pytest.raises(ValueError, match=r"processes=0: must be a whole number in \[1, inf\]"):
        processes.check_processes(0)
    with pytest.raises(ValueError, match="not rounded"):
        processes.check_processes(1.5)  # type: ignore[arg-type]
    assert processes.check_processes(np.int64(1)) == 1
    with pytest.warns(processes.OversubscribedWarning, match="cores"):
        assert processes.check_processes(processes.cpu_cores() + 1) == processes.cpu_cores() + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processes.check_processes(1)
    if torch.cuda.device_count() == 0:  # no GPU: the course's "how to get one", not "use processes <= 0"
        with pytest.raises(DeviceUnavailableError, match="No GPU is visible"):
            processes.check_processes(2, "cuda")
    elif torch.cuda.device_count() < 64:
        with pytest.raises(ValueError, match="GPUs"):
            processes.check_processes(64, "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        processes.check_processes(1, "tpu")


def test_port_in_use_is_refused_with_the_fix():
    with socket.socket() as s:
        s.bind((processes.HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(processes.PortInUseError, match="port=None"):
            processes.resolve_port(port)
        t0 = time.perf_counter()
        with pytest.raises(processes.PortInUseError):
            processes.launch(square, (2,), processes=2, timeout_s=5, port=port)
        assert time.perf_counter() - t0 < 5  # refused before any process starts
    free = processes.resolve_port(None)
    assert processes.resolve_port(free) == free
    with pytest.raises(ValueError, match="1..65535"):
        processes.resolve_port(70000)


# --- sending functions --------------------------------------------------------------------------------------
def test_a_library_function_travels_by_name():
    p = processes.portable(square)
    assert (p.module, p.qualname, p.source) == (__name__, "square", "")
    assert p.load() is square
    assert processes.portable(p) is p


def test_a_notebook_function_travels_as_its_source_with_what_it_reads():
    def norm(v):  # reads a module (math), a library function (sqrt), a constant (LIMIT) and dist (default)
        return min(LIMIT, sqrt(sum(x * x for x in v)) + math.floor(0.5)), dist.is_available()

    p = processes.portable(norm)
    assert not p.module and "def norm(v):" in p.source
    assert ("math", "math", "") in p.imports and ("sqrt", "math", "sqrt") in p.imports
    assert ("LIMIT", 7) in p.constants
    assert p.load()([3, 4]) == (5, True)
    # line numbers match the file it came from: a traceback points at the learner's own line
    assert p.source.splitlines()[norm.__code__.co_firstlineno - 1].strip().startswith("def norm")


def test_what_cannot_travel_is_refused_with_the_fix():
    with pytest.raises(NotPortableError, match="lambda"):
        processes.portable(lambda x: x)
    y = 3

    def closure(x):
        return x + y

    with pytest.raises(NotPortableError, match="uses y from the function around it"):
        processes.portable(closure)
    net = torch.nn.Linear(2, 2)
    globals()["_net_for_test"] = net
    try:
        def reads_net(model):
            return _net_for_test(model)  # noqa: F821 -- a notebook global

        with pytest.raises(NotPortableError, match=r"reads `_net_for_test` \(Linear\) from your notebook.*inside"):
            processes.portable(reads_net)
    finally:
        del globals()["_net_for_test"]
    with pytest.raises(NotPortableError, match="not a function"):
        processes.portable(3)  # type: ignore[arg-type]
    with pytest.raises(NotPortableError, match="only a function written with `def`"):
        processes.portable(functools.partial(square, x=2))
    ns: dict = {}
    exec("def made(x):\n    return x\n", ns)  # no file, no source to read
    with pytest.raises(NotPortableError, match="cannot be read"):
        processes.portable(ns["made"])


# --- launching ------------------------------------------------------------------------------------------------
def test_results_come_back_by_rank_with_the_messages():
    seen = []
    out = processes.launch(square, (3,), processes=2, timeout_s=10, on_message=seen.append)
    assert out == [9, 10]
    notes = sorted((m.rank, m.payload, m.status) for m in seen if m.kind == "note")
    assert notes == [(0, 3, "squaring 3"), (1, 3, "squaring 3")]


def test_processes_meet_in_a_process_group():
    assert processes.launch(all_reduce_ranks, processes=2, timeout_s=10) == [3.0, 3.0]


def test_a_function_defined_here_runs_in_the_processes():
    def cube(link, x):  # not importable: travels as its source
        return x ** 3 + link.world_size

    assert processes.launch(cube, (2,), processes=2, timeout_s=10) == [10, 10]


def test_should_stop_reaches_the_workers():
    steps = []

    def on(m):
        if m.kind == "step":
            steps.append(m.payload)

    out = processes.launch(until_stopped, processes=1, timeout_s=10, on_message=on, should_stop=lambda: len(steps) > 5)
    assert out[0] >= 6


@pytest.mark.parametrize(("how", "kind", "match"), [
    ("raise", "raised", r"process 1 of 2 raised ValueError: rank 1 gives up after .* s; the run was stopped"),
    ("exit", "died", r"process 1 of 2 exited with code 5 after"),
    ("silent_exit", "missing", r"only 1 of 2 processes reported their results \(missing: \[1\]\)"),
])
def test_a_failing_process_ends_the_run_with_its_cause(how, kind, match):
    t0 = time.perf_counter()
    with pytest.raises(WorkerError, match=match) as e:
        processes.launch(fail, (how,), processes=2, timeout_s=20)
    assert e.value.kind == kind
    if kind != "missing":
        assert e.value.rank == 1
    assert time.perf_counter() - t0 < 15  # the survivor (sleeping forever) was stopped, not waited for


def test_a_hang_is_found_by_its_silence_and_named(capsys):
    t0 = time.perf_counter()
    with pytest.raises(WorkerError, match=r"the run hung: no process reported anything for 2 s.*process 1: last said "
                                          r"'about to fail', stuck in fail \(test_processes\.py:\d+\)") as e:
        processes.launch(fail, ("hang",), processes=2, timeout_s=2)
    assert e.value.kind == "hung" and set(e.value.where) == {0, 1}
    assert "--- stack of process 1 ---" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 12
    with pytest.raises(WorkerError, match="the run hung"):
        processes.launch(fail, ("hang",), processes=2, timeout_s=2, show_stacks=False)
    assert "stack of process" not in capsys.readouterr().err


def test_the_whole_run_has_a_deadline():
    with pytest.raises(WorkerError, match="longer than 3 s") as e:
        processes.launch(until_stopped, processes=1, timeout_s=10, deadline_s=3)
    assert e.value.kind == "deadline"


def test_with_restarts_starts_a_failed_run_again_and_says_so(capsys):
    calls = []

    def run():
        calls.append(1)
        if len(calls) == 1:
            raise WorkerError("process 1 of 2 raised", kind="raised", rank=1)
        return "done"

    assert processes.with_restarts(run, 1, "the test run") == "done"
    assert "the test run failed: process 1 of 2 raised" in capsys.readouterr().err
    calls.clear()
    with pytest.raises(WorkerError):
        processes.with_restarts(lambda: run() if calls else run(), 0)


def test_warm_up_names_the_start_method():
    assert processes.warm_up() in ("forkserver", "spawn")
    assert processes.start_method() == ("forkserver" if sys.platform != "win32" else "spawn")


dist = torch.distributed  # the notebook's usual name, read by the shipped function above
