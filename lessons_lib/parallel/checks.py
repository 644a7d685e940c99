"""Lesson 10's checks of the learner's code and answers (each returns an :class:`exercises.CheckResult`).

:func:`check_average_gradients` runs the learner's ``average_gradients(model, world_size)`` where it must work: in 2
real processes joined in a gloo group on 127.0.0.1. Each process computes the gradient of the mean loss over its
own shard of a batch, calls the learner's function, and sends back its gradients; they must all equal the
gradient ONE process computes with a plain backward over the two shards concatenated (the independent reference:
no all-reduce involved). A spy around ``dist.all_reduce`` records, in every process, each call's reduce op and
which tensor it was given (a parameter's ``.grad``, the parameter itself, or another tensor), so a wrong answer is
diagnosed by recomputing what the typical mistakes produce. The learner's function travels to the processes as
its source (:func:`lessons_lib.processes.portable`).
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import exercises, processes
from ..exercises import CheckResult, Mistake
from ..seeds import get_seed, torch_generator
from ..validate import BadArgument
from .lab import PRELOAD, ParallelResult, UnitMajorNet, gradient_bytes

WORLD = 2  # processes of the check
SHARD = 6  # examples per process
TIMEOUT_S = 4.0  # silence that means a hung check (its collectives give up after twice that)
SIZES = (5, 4, 3)  # the check's network: 5 -> 4 (tanh) -> 3


# --- average_gradients ------------------------------------------------------------------------------------
def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.Tanh(), nn.Linear(SIZES[1], SIZES[2]))


@dataclass
class AveragingCase:
    """The check's data: the network's parameters and each process's shard (numpy, so they pickle by value)."""

    params: dict[str, np.ndarray]
    x: list[np.ndarray]  # per rank, (SHARD, 5) float32
    y: list[np.ndarray]  # per rank, (SHARD,) int64

    def model(self) -> nn.Module:
        net = _net()
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.params.items()})
        return net

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
        """Gradient of the mean cross-entropy over (x, y), one process, a plain backward."""
        net = self.model()
        nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        return {n: p.grad.detach().clone() for n, p in net.named_parameters()}


def averaging_case(seed: int | None = None) -> AveragingCase:
    """Random parameters and WORLD shards of SHARD examples, from the course seed."""
    g = torch_generator(seed, stream=1510)
    net = _net()
    params = {n: (0.7 * torch.randn(p.shape, generator=g)).numpy() for n, p in net.named_parameters()}
    x = torch.randn(WORLD, SHARD, SIZES[0], generator=g)
    y = torch.randint(0, SIZES[2], (WORLD, SHARD), generator=g)
    return AveragingCase(params, [x[r].numpy() for r in range(WORLD)], [y[r].numpy() for r in range(WORLD)])


@dataclass
class Call:
    """One collective the learner's code started: ``fn`` ("all_reduce", "reduce"), the reduce ``op``, and what it
    was given: "grad" (a parameter's .grad), "param" (a parameter's values) or "other" (a copy, a new tensor)."""

    fn: str
    op: str
    target: str
    name: str = ""


@dataclass
class RankOutcome:
    """What one process of the check saw: its gradients and parameters after the learner's function, the
    collectives it started, and what it raised (``in_collective``: inside a collective, e.g. its peer left)."""

    rank: int
    grads: dict[str, np.ndarray | None] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    raised: str = ""
    line: str = ""
    in_collective: bool = False
    not_written: str | None = None


class _Spy:
    """Wraps ``dist.all_reduce`` and ``dist.reduce`` in this process: records (and reports) every call."""

    def __init__(self, link: processes.Link, model: nn.Module):
        self.link, self.model, self.calls, self.failed = link, model, [], False

    def _target(self, t: torch.Tensor) -> tuple[str, str]:
        for n, p in self.model.named_parameters():
            if p.grad is not None and t.data_ptr() == p.grad.data_ptr():
                return "grad", n
            if t.data_ptr() == p.data_ptr():
                return "param", n
        return "other", ""

    def wrap(self, real: Callable, fn: str) -> Callable:
        sig = inspect.signature(real)

        def spy(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            op = str(bound.arguments.get("op", dist.ReduceOp.SUM)).rsplit(".", 1)[-1]
            call = Call(fn, op, *self._target(bound.arguments["tensor"]))
            self.calls.append(call)
            self.link.report("call", call, status=f"in {fn} call {len(self.calls)}")
            try:
                return real(*args, **kwargs)
            except Exception:
                self.failed = True
                raise

        return spy


def _averaging_worker(link: processes.Link, fn: processes.Portable, case: AveragingCase) -> RankOutcome:
    """One process of the check: backward on its shard, the learner's function, then what it left."""
    torch.set_num_threads(1)
    rank, out = link.rank, RankOutcome(link.rank)
    with processes.process_group("gloo", link.init_method, rank, link.world_size, link.collective_timeout_s):
        model = case.model()
        nn.functional.cross_entropy(model(torch.from_numpy(case.x[rank])), torch.from_numpy(case.y[rank])).backward()
        spy = _Spy(link, model)
        c10d = dist.distributed_c10d
        real = {name: getattr(c10d, name) for name in ("all_reduce", "reduce")}
        for name, f in real.items():  # dist.all_reduce is c10d.all_reduce: patch both names
            setattr(dist, name, spy.wrap(f, name))
            setattr(c10d, name, getattr(dist, name))
        try:
            fn.load()(model, link.world_size)
        except NotImplementedError as e:
            out.not_written = str(e)
        except Exception as e:
            out.raised, out.in_collective = processes.short_error(e), spy.failed
            mine = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == fn.filename]
            out.line = f" (line {mine[-1].lineno} of your cell: `{mine[-1].line.strip()}`)" if mine else ""
        finally:
            for name, f in real.items():
                setattr(dist, name, f)
                setattr(c10d, name, f)
        out.calls = spy.calls
        out.grads = {n: None if p.grad is None else p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
        out.params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
        del model, spy
    return out


def _close(a: np.ndarray | torch.Tensor | None, b: torch.Tensor) -> bool:
    return a is not None and tuple(a.shape) == tuple(b.shape) and torch.allclose(
        torch.as_tensor(a), b, rtol=1e-4, atol=1e-6)


def _classify(got: np.ndarray | None, expected: torch.Tensor, local: torch.Tensor,
              shards: list[torch.Tensor]) -> str:
    """Which typical result one process's gradient of one parameter is."""
    if got is None:
        return "none"
    stack = torch.stack(shards)
    candidates = {"ok": expected, "sum": WORLD * expected, "twice": expected / WORLD, "local": local,
                  "local/world": local / WORLD, "max": stack.max(0).values, "max/world": stack.max(0).values / WORLD,
                  "min": stack.min(0).values, "min/world": stack.min(0).values / WORLD, "prod": stack.prod(0),
                  "prod/world": stack.prod(0) / WORLD}
    return next((k for k, v in candidates.items() if _close(got, v)), "other")


def _diagnose(outcomes: list[RankOutcome], case: AveragingCase) -> None:
    """Raise :class:`Mistake` (or NotImplementedError) naming what went wrong; return when it is right."""
    for o in outcomes:
        if o.not_written is not None:
            raise NotImplementedError(o.not_written)
    counts = [len(o.calls) for o in outcomes]
    for o in outcomes:
        if o.raised and not o.in_collective:
            if "AVG" in o.raised:
                raise Mistake(f"{o.raised}{o.line}: this torch's gloo backend has no ReduceOp.AVG — all-reduce with "
                              "ReduceOp.SUM, then divide by world_size")
            raise Mistake(f"your average_gradients raised {o.raised} in process {o.rank}{o.line}")
    if len(set(counts)) > 1:
        raise _uneven(counts)
    for o in outcomes:
        if o.raised:
            raise Mistake(f"a collective failed in process {o.rank}: {o.raised}{o.line}")
    names = list(case.params)
    expected = case.gradients(np.concatenate(case.x), np.concatenate(case.y))
    local = [case.gradients(case.x[r], case.y[r]) for r in range(WORLD)]
    kinds = {(o.rank, n): _classify(o.grads[n], expected[n], local[o.rank][n], [lo[n] for lo in local])
             for o in outcomes for n in names}
    found = set(kinds.values())
    calls = [c for o in outcomes for c in o.calls]
    if "none" in found:
        (rank, n) = next(k for k, v in kinds.items() if v == "none")
        raise Mistake(f"the .grad of {n} is None in process {rank} after your function: average it in place "
                      "(p.grad.div_(...) or p.grad /= ...), do not delete it")
    if found == {"ok"}:
        changed = [n for o in outcomes for n in names if not np.array_equal(o.params[n], case.params[n])]
        exercises.expect(not changed, f"the gradients are right, but your function changed the parameters "
                                      f"({', '.join(sorted(set(changed)))}): average_gradients must change only "
                                      "p.grad — the optimizer's step changes the weights")
        return
    exercises.diagnose(found, {
        "summed but did not divide by the world size (gradients are world_size× too large): after the SUM "
        "all-reduce, divide each p.grad by world_size": lambda f: f == {"sum"},
        "divided twice: the gradients are world_size× too small (ReduceOp.AVG already divides; or you divided "
        "before and after the all-reduce)": lambda f: f == {"twice"},
        "used ReduceOp.MAX (or MIN): that keeps the largest (smallest) gradient entry, not the mean — all-reduce "
        "with ReduceOp.SUM, then divide by world_size": lambda f: f <= {"max", "max/world", "min", "min/world"},
        "used ReduceOp.PRODUCT: that multiplies the processes' gradients — all-reduce with ReduceOp.SUM, then divide "
        "by world_size": lambda f: f <= {"prod", "prod/world"},
    })
    if found <= {"local", "local/world"}:
        targets = {c.target for c in calls}
        exercises.diagnose(targets, {
            "averaged the parameters instead of the gradients: all_reduce p.grad, not p (or p.data) — each process "
            "still holds its own shard's gradient": lambda t: "param" in t,
            "called all_reduce on a copy (the .grad was not updated in place): all_reduce p.grad itself, not "
            "p.grad.clone(), p.grad / n or a new tensor — each process still holds its own shard's gradient":
                lambda t: "other" in t,
        })
        raise Mistake("the gradients were not averaged: each process still holds its own shard's gradient "
                      f"({'no all_reduce was called' if not calls else 'the all_reduce results were not kept'})")
    rank0 = {kinds[(0, n)] for n in names}
    if rank0 <= {"ok", "sum"} and any(kinds[(o.rank, n)] != kinds[(0, n)] for o in outcomes for n in names):
        raise Mistake("only rank 0's gradients were reduced: the other processes end with a different gradient "
                      "(dist.reduce sends the result to one process, or the division ran only on rank 0) — every "
                      "process must all_reduce and divide, so that all of them take the same step")
    per_param = {n: {kinds[(o.rank, n)] for o in outcomes} for n in names}
    skipped = [n for n, k in per_param.items() if k <= {"local", "local/world"}]
    if skipped and any(k == {"ok"} for k in per_param.values()):
        raise Mistake(f"one parameter skipped: {', '.join(skipped)} still hold(s) each process's own gradient "
                      "while the others are averaged — loop over every parameter of model.parameters()")
    rank, n = next(k for k, v in kinds.items() if v != "ok")
    got = np.round(np.ravel(next(o for o in outcomes if o.rank == rank).grads[n])[:3], 4).tolist()
    want = np.round(expected[n].ravel()[:3].numpy(), 4).tolist()
    raise Mistake(f"process {rank}'s gradient of {n} is not the whole batch's gradient (the average over the "
                  f"processes): its first entries are {got}, expected {want}")


def _uneven(counts: list[int]) -> Mistake:
    said = ", ".join(f"process {r} called all_reduce {c} time(s)" for r, c in enumerate(counts))
    return Mistake(f"not every process called all_reduce (the collective waits forever): {said}. Every process must "
                   "make the same collective calls in the same order — no `if rank == 0:` around them")


def _failed_run(e: processes.WorkerError, calls: dict[int, list[Call]]) -> Mistake:
    """The mistake behind a check whose processes hung or died."""
    counts = [len(calls.get(r, [])) for r in range(WORLD)]
    if len(set(counts)) > 1:
        return _uneven(counts)
    if e.kind == "hung":
        status = "; ".join(f"process {r} last said {s!r}" for r, s in sorted(e.status.items()))
        return Mistake(f"your average_gradients did not return within {TIMEOUT_S:.0f} s ({status}; it called "
                       f"all_reduce {counts[0]} time(s) in each process)")
    return Mistake(f"the check's processes failed: {e}")


def run_averaging(fn: Callable, seed: int | None = None) -> list[RankOutcome]:
    """Run ``fn`` as ``average_gradients`` in WORLD gloo processes on :func:`averaging_case`; the outcomes by rank.
    Raises :class:`Mistake` when it cannot be sent or its processes hang or die."""
    try:
        shipped = processes.portable(fn, "average_gradients")
    except processes.NotPortableError as e:
        raise Mistake(f"average_gradients cannot be sent to the worker processes: {e}") from None
    calls: dict[int, list[Call]] = {}

    def seen(msg: processes.Message) -> None:
        if msg.kind == "call":
            calls.setdefault(msg.rank, []).append(msg.payload)

    try:
        return processes.launch(_averaging_worker, (shipped, averaging_case(seed)), processes=WORLD,
                                timeout_s=TIMEOUT_S, on_message=seen, show_stacks=False,
                                preload=PRELOAD)
    except processes.WorkerError as e:
        raise _failed_run(e, calls) from None


def check_average_gradients(fn: Callable) -> CheckResult:
    """``average_gradients(model, world_size)``: run in 2 gloo processes, each process's gradients after it must
    equal one process's gradient over the whole batch (both shards)."""
    seed = get_seed()
    return exercises.check_code(
        "average_gradients", fn, lambda f: _diagnose(run_averaging(f, seed), averaging_case(seed)),
        praise=f"In {WORLD} processes (gloo), every process now holds the gradient that one process computes on the "
               "whole batch — what DDP's all-reduce does before each step.",
        not_written=f"Write it, then run this cell again: it runs your function in {WORLD} processes.")


def _plain(value: object) -> object:
    """A numpy / torch answer as Python values, so that an exact comparison of an array answer gives a verdict
    (an array's ``==`` has no single truth value; core ``check_answer`` would raise)."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic, torch.Tensor)) else value


# --- answers read off the lesson's own objects --------------------------------------------------------
def _net_dims(net: UnitMajorNet) -> tuple[int, int, int]:
    if not isinstance(net, UnitMajorNet):
        raise BadArgument(f"net={net!r:.60}: the check reads the lesson's network (lab.UnitMajorNet) after a backward "
                          "pass; pass the `net` (or `sparse_net`) of the cells above")
    if net.out_bias.grad is None:
        raise ValueError("run a backward pass on the net first: the check measures its gradients (gradient_bytes)")
    return net.n_in, net.width, net.n_out


def check_dense_bytes(answer: int, net: UnitMajorNet) -> CheckResult:
    """Bytes DDP all-reduces per step for the dense ``net`` (float32): measured as :func:`lab.gradient_bytes`."""
    n_in, width, n_out = _net_dims(net)
    expected = gradient_bytes(net)
    floats = width * (n_in + 1) + width * n_out + n_out
    return exercises.check_answer(
        _plain(answer), expected, exercise="dense_bytes",
        praise=f"every gradient element, 4 bytes each: ({width}×{n_in + 1} + {width}×{n_out} + {n_out}) × 4 = "
               f"{expected:,} bytes, what gradient_bytes measures on the net.",
        hint=f"count the hidden rows ({width} × (inputs + bias)), the output rows ({width} × {n_out}) and the output "
             "bias, then 4 bytes each (float32).",
        mistakes={floats: "that is the number of gradient elements; each float32 takes 4 bytes.",
                  4 * (width * n_in + width * n_out + n_out): f"each hidden unit's row also holds its bias: "
                                                               f"{n_in} + 1 numbers per row.",
                  4 * (width * (n_in + 1) + width * n_out): f"the output bias travels too ({n_out} floats).",
                  8 * floats: "4 bytes per float32 number, and only the gradient travels (not the weights)."})


def check_sparse_bytes(answer: int, net: UnitMajorNet) -> CheckResult:
    """Bytes of ``net``'s sparse gradient after a step that touched ``net.last_units`` units: measured as
    :func:`lab.gradient_bytes` (int64 row indices and float32 rows per table, plus the dense output bias)."""
    n_in, _, n_out = _net_dims(net)
    rows, expected = net.last_units, gradient_bytes(net)
    values = 4 * rows * (n_in + 1) + 4 * rows * n_out
    return exercises.check_answer(
        _plain(answer), expected, exercise="sparse_bytes",
        praise=f"per table {rows} indices of 8 bytes and {rows} rows of floats, plus the dense {n_out}-float bias: "
               f"{expected:,} bytes, what gradient_bytes measures.",
        hint=f"hidden table: {rows} × (8 + {n_in + 1} × 4); output table: {rows} × (8 + {n_out} × 4); bias: "
             f"{n_out} × 4.",
        mistakes={values + 4 * n_out: "a sparse tensor also sends each row's index: int64, 8 bytes per row, in "
                                      "each table.",
                  values + 8 * rows + 4 * n_out: "each of the two tables (hidden, out) sends its own row indices, "
                                                 "and they are int64: 8 bytes each.",
                  expected - 4 * n_out: f"the output bias is dense: its {n_out} floats travel every step.",
                  4 * (net.width * (n_in + 1) + net.width * n_out + n_out):
                      f"that is the dense gradient; this step touched only {rows} units' rows."})


def check_examples_per_process(answer: int, run: ParallelResult) -> CheckResult:
    """How many examples each process of the synchronous ``run`` computed per step (read off its ranks' stats)."""
    if not isinstance(run, ParallelResult) or not run.ranks or not run.config.synchronous:
        raise BadArgument(f"run={run!r:.60}: the check reads a finished synchronous run (ddp or manual), as "
                          "lab.pick(ddp_runs, 'ddp', 'dense', 2, 64) returns it")
    r = run.ranks[0]
    expected = r.examples // max(r.steps, 1)
    batch, n = run.config.batch_size, run.config.processes
    return exercises.check_answer(
        _plain(answer), expected, exercise="examples_per_process",
        praise=f"the global batch is split: each of the {n} processes computes {batch} / {n} = {expected} examples "
               "per step (measured: examples / steps of each process).",
        hint="DDP splits each global batch between the processes.",
        mistakes={batch: f"{batch} is the global batch; each of the {n} processes computes only its slice of it.",
                  batch * n: f"the processes do not each take a whole batch: they split one global batch of {batch}."})
