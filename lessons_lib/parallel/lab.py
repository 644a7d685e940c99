"""Lesson 10 — beyond one process: synchronous data-parallel training (DDP) and lock-free asynchronous
updates (Hogwild), each with dense and sparse (hash-selected) updates.

Seed 003 (Spring & Shrivastava): distributed training pays for "costly communication and synchronization"
of gradients and parameters; *very sparse* updates are "ideally suited for asynchronous training leading to
near linear speedup with increasing parallelism". This module measures both on the processes you have.

Two ways to use N processes, both started the standard way (``torchrun`` or ``torch.multiprocessing``):

* **ddp** — synchronous data parallel with ``torch.nn.parallel.DistributedDataParallel``. Every process holds
  a full copy of the model and computes the gradient of its slice of the *global* batch; DDP averages the
  gradients with an all-reduce (gloo on CPUs, NCCL on GPUs) before every optimizer step, so N processes
  compute exactly the update one process would compute on the whole batch.
* **hogwild** — asynchronous: the parameters live in shared memory; each process trains on its own shard
  and writes its SGD updates with no lock and no waiting (Recht et al. 2011, "Hogwild!").
* **independent** — the control: each process trains its own copy on its shard, sharing nothing. Its
  speed-up is the most N processes can get on this machine; the others are measured against it.

``update``: "dense" is the standard network (every hidden unit computed and updated); "sparse" computes
only the units that locality-sensitive hashing picks for the batch (lesson 09) and stores the weights
unit-major in ``nn.Embedding(sparse=True)`` tables, so a step's gradient is a sparse tensor holding just
the touched rows.

Units: seconds; ``sync_bytes`` = bytes handed to the all-reduce per step (dense: every gradient element,
float32; sparse: int64 row indices + float32 values of the touched rows); for Hogwild, the bytes of the
gradient written into shared memory per step. ``batch_size`` is the global batch of one synchronous step
(ddp: each of N processes gets batch_size / N examples) and the per-process batch of Hogwild.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import queue as queue_mod
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import Splits, load
from ..exercises import check
from ..lsh import LshIndex, check_active_fraction, topk_by_counts, units_kept
from ..seeds import get_seed, seed_everything, torch_generator
from ..training import History, evaluate

MODES = ("ddp", "hogwild", "independent")
UPDATES = ("dense", "sparse")
SWEEP_TIMEOUT_S = 15.0  # the lesson's runs take 1-3 s: 15 s of silence means a hung run, to be started again
HOST = "127.0.0.1"


# --- bad input: cores, ports, dying processes -------------------------------------------------------
class OversubscribedWarning(UserWarning):
    """More processes than cores: the run goes on, but processes take turns on the cores."""


class PortInUseError(RuntimeError):
    """The rendezvous port is taken by another program."""


class WorkerError(RuntimeError):
    """A training process died or raised; the others were stopped (nothing is left waiting)."""


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_processes(processes: int, device: str = "cpu") -> int:
    """Validate a process count. More processes than cores warns (:class:`OversubscribedWarning`) and runs;
    on CUDA each process needs its own GPU (NCCL), so more processes than GPUs is an error."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    if device == "cuda":
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
                      "to measure speed-up)", OversubscribedWarning, stacklevel=2)
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
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise PortInUseError(f"port {port} on {host} is in use ({e.strerror}): pass port=None to let the "
                                 f"course pick a free one, or stop the program that holds it "
                                 f"(`ss -ltnp 'sport = :{port}'` shows which)") from None
    return int(port)


# --- the network --------------------------------------------------------------------------------------
class UnitMajorNet(nn.Module):
    """``n_in -> width (ReLU) -> n_out`` with every hidden unit's weights in one row.

    ``hidden.weight[j]`` = unit j's input weights and bias (the input gets a constant 1 appended);
    ``out.weight[j]`` = unit j's outgoing weights. With ``update="sparse"`` the rows of the units LSH picks
    for the batch (the union over its examples, ``active_fraction`` of the units per example) are gathered
    through ``nn.Embedding(sparse=True)``: the gradient is a sparse tensor of just those rows, which DDP
    all-reduces as such and SGD applies to those rows only. ``update="dense"`` uses every unit.
    """

    def __init__(self, n_in: int, width: int, n_out: int, *, update: str = "dense", active_fraction: float = 0.05,
                 K: int = 6, L: int = 50, pool_dim: int = 8, seed: int | None = None):
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
        self.n_in, self.width, self.n_out, self.update = n_in, width, n_out, update
        sparse = update == "sparse"
        self.hidden = nn.Embedding(width, n_in + 1, sparse=sparse)
        self.out = nn.Embedding(width, n_out, sparse=sparse)
        self.out_bias = nn.Parameter(torch.zeros(n_out))
        with torch.no_grad():  # nn.Linear's initialisation
            self.hidden.weight.uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in))
            self.out.weight.uniform_(-1 / math.sqrt(width), 1 / math.sqrt(width))
            self.out_bias.uniform_(-1 / math.sqrt(width), 1 / math.sqrt(width))
        self.k = units_kept(width, check_active_fraction(active_fraction)) if sparse else width
        self.index = LshIndex(n_in, width, K=K, L=L, pool_dim=pool_dim, seed=seed) if sparse else None
        self.step = 0
        self._gen = torch_generator(seed, stream=101)
        self.last_units = width

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """Sorted indices of the units this batch computes (the union of each example's LSH top-k)."""
        w = self.hidden.weight.detach()[:, : self.n_in]
        if self.index.due(w, self.step if self.training else None):
            self.index.rebuild(w)
        if self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(int(self._gen.initial_seed()))
        return torch.unique(topk_by_counts(self.index.counts(x), self.k, generator=self._gen, sorted=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"UnitMajorNet expects (batch, {self.n_in}) inputs, got {tuple(x.shape)}")
        xa = torch.cat([x, x.new_ones(len(x), 1)], dim=1)
        if self.update == "dense":
            self.last_units = self.width
            return torch.relu(xa @ self.hidden.weight.T) @ self.out.weight + self.out_bias
        idx = self.units(x)
        if self.training:
            self.step += 1
        self.last_units = len(idx)
        return torch.relu(xa @ self.hidden(idx).T) @ self.out(idx) + self.out_bias


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of the model's current gradients as a collective would send them: dense gradients in full,
    sparse ones as int64 indices + values of their (coalesced) rows."""
    total = 0
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce()
            total += g.indices().numel() * g.indices().element_size() + g.values().numel() * g.values().element_size()
        else:
            total += g.numel() * g.element_size()
    return total


def dense_sync_bytes(n_in: int, width: int, n_out: int) -> int:
    """Bytes of a dense float32 gradient of :class:`UnitMajorNet` (what DDP all-reduces each step)."""
    return 4 * (width * (n_in + 1) + width * n_out + n_out)


def sparse_sync_bytes(n_in: int, rows: int, n_out: int) -> int:
    """Bytes of a sparse gradient touching ``rows`` units: per table int64 indices + float32 rows, plus the
    dense output bias."""
    return rows * (8 + 4 * (n_in + 1)) + rows * (8 + 4 * n_out) + 4 * n_out


# --- configuration and results ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One parallel run. ``lr`` is plain SGD's step size. ``timeout_s``: a run whose processes all fall silent
    that long is stopped as hung (the launcher shows where each process was); every collective gives up after
    twice that (a peer that stops answering ends a torchrun job with an error); the whole run is bounded by
    ``(4 + epochs) * timeout_s``.
    ``crash_rank``/``crash_step``/``crash_kind``: make that rank exit abruptly (or raise, or hang) at that step
    (the lesson's failure demo)."""

    mode: str = "ddp"
    update: str = "dense"
    processes: int = 2
    dataset: str = "mnist1d"
    width: int = 1000
    active_fraction: float = 0.05
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1
    seed: int = 0
    device: str = "cpu"
    timeout_s: float = 30.0
    train_examples: int | None = None  # train on the first n training examples only (None: all)
    crash_rank: int | None = None
    crash_step: int = 0
    crash_kind: str = "exit"  # "exit": vanish with exit code 3; "raise": raise a RuntimeError; "hang": stop

    def n_train(self, data: Splits) -> int:
        """Training examples an epoch uses."""
        return len(data.y_train) if self.train_examples is None else min(self.train_examples, len(data.y_train))

    def validate(self) -> RunConfig:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.width < 1:
            raise ValueError(f"epochs, batch_size and width must be >= 1, got {self.epochs}, {self.batch_size}, "
                             f"{self.width}")
        if self.mode == "ddp" and self.batch_size < self.processes:
            raise ValueError(f"a global batch of {self.batch_size} cannot be split over {self.processes} "
                             f"processes: use batch_size >= processes")
        if self.mode != "ddp" and self.device != "cpu":
            raise ValueError(f"{self.mode} runs on CPU processes (shared memory): use device='cpu'")
        if self.device == "mps":
            raise ValueError("torch.distributed has no backend for Apple GPUs (mps): use device='cpu' (gloo)")
        if self.device == "cuda" and self.update == "sparse":
            raise ValueError("NCCL has no sparse all-reduce: use device='cpu' (gloo) for sparse updates")
        if self.train_examples is not None and self.train_examples < self.batch_size:
            raise ValueError(f"train_examples={self.train_examples} is less than one batch ({self.batch_size})")
        if self.crash_kind not in ("exit", "raise", "hang"):
            raise ValueError(f"crash_kind must be 'exit', 'raise' or 'hang', got {self.crash_kind!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        check_processes(self.processes, self.device)
        return self


@dataclass
class RankStats:
    """What one process measured: training time (evaluation excluded), the part of it spent in gradient
    synchronization (ddp: inside the all-reduce, waiting for peers included), bytes synchronized."""

    rank: int
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    comm_seconds: float = 0.0
    sync_bytes: int = 0
    units: int = 0  # hidden units computed, summed over steps
    epoch_rates: list[float] = field(default_factory=list)  # this rank's examples/s in each epoch

    @property
    def compute_seconds(self) -> float:
        return self.train_seconds - self.comm_seconds


@dataclass
class ParallelResult:
    """A finished run: its config, rank 0's :class:`History` (val metrics per epoch), every rank's stats."""

    config: RunConfig
    history: History
    ranks: list[RankStats] = field(default_factory=list)
    test_acc: float = float("nan")
    wall_seconds: float = 0.0  # launch to last exit, process start-up included

    @property
    def epoch_seconds(self) -> float:
        """Training seconds per epoch: the slowest rank's (ddp ranks move in lock-step), or for Hogwild the
        epoch's examples over the summed throughput of all ranks."""
        e = max(len(self.history), 1)
        if self.config.mode == "ddp":
            return max(r.train_seconds for r in self.ranks) / e
        return sum(r.examples for r in self.ranks) / max(self.throughput, 1e-12) / e

    @property
    def throughput(self) -> float:
        """Examples per second, all ranks together."""
        if self.config.mode == "ddp":
            return sum(r.examples for r in self.ranks) / max(max(r.train_seconds for r in self.ranks), 1e-12)
        return sum(r.examples / max(r.train_seconds, 1e-12) for r in self.ranks)

    @property
    def comm_fraction(self) -> float:
        """Share of training time spent synchronizing gradients (mean over ranks)."""
        return sum(r.comm_seconds for r in self.ranks) / max(sum(r.train_seconds for r in self.ranks), 1e-12)

    @property
    def step_seconds(self) -> float:
        return max(r.train_seconds for r in self.ranks) / max(self.ranks[0].steps, 1)

    @property
    def comm_per_step(self) -> float:
        return sum(r.comm_seconds / max(r.steps, 1) for r in self.ranks) / len(self.ranks)

    @property
    def sync_bytes_per_step(self) -> float:
        return sum(r.sync_bytes / max(r.steps, 1) for r in self.ranks) / len(self.ranks)

    @property
    def units_per_step(self) -> float:
        return sum(r.units / max(r.steps, 1) for r in self.ranks) / len(self.ranks)

    def row(self) -> dict:
        c = self.config
        return {"mode": c.mode, "update": c.update, "processes": c.processes,
                "s/epoch": self.epoch_seconds, "ms/step": 1e3 * self.step_seconds,
                "comm ms/step": 1e3 * self.comm_per_step, "comm share": self.comm_fraction,
                "sync KB/step": self.sync_bytes_per_step / 1e3, "units/step": self.units_per_step,
                "examples/s": self.throughput, "val acc": self.history.val_acc[-1] if len(self.history) else math.nan,
                "test acc": self.test_acc, "wall s": self.wall_seconds}


# --- inside a training process --------------------------------------------------------------------------
def build_model(cfg: RunConfig, data: Splits) -> UnitMajorNet:
    """The run's network, identical on every rank (built from the run's seed)."""
    seed_everything(cfg.seed)
    return UnitMajorNet(data.n_features, cfg.width, data.n_classes, update=cfg.update,
                        active_fraction=cfg.active_fraction, seed=cfg.seed)


def global_batches(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """The epoch's batches of example indices, the same on every rank (drawn from the seed and the epoch);
    a last partial batch is dropped so all ranks take the same number of steps."""
    perm = torch.randperm(n, generator=torch_generator(seed, stream=1000 + epoch))
    return [perm[i: i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


class _SyncMeter:
    """State of the communication hook :func:`_timed_allreduce`: seconds spent in and bytes handed to the
    all-reduce.

    The hook waits for its all-reduce so that the time can be read apart from compute. (DDP would overlap it
    with the rest of the backward pass; this model's dense gradient fits one 25 MB bucket, which is only ready
    at the end of backward, so there is nothing to overlap.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.bytes = 0


def _timed_allreduce(meter, bucket):  # DDP inspects a hook's annotations, so it has none
    """The communication hook: average ``bucket`` over the ranks with DDP's own all-reduce hook, waiting for
    it, and add its time and bytes to ``meter`` (a :class:`_SyncMeter`)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buf = bucket.buffer()
    if buf.is_sparse:
        buf = buf.coalesce()
        meter.bytes += buf.indices().numel() * 8 + buf.values().numel() * buf.values().element_size()
    else:
        meter.bytes += buf.numel() * buf.element_size()
    if buf.is_cuda:
        torch.cuda.synchronize(buf.device)  # the backward kernels first: they are compute, not communication
    t0 = time.perf_counter()
    fut = default_hooks.allreduce_hook(None, bucket)
    fut.wait()
    if buf.is_cuda:
        torch.cuda.synchronize(buf.device)  # NCCL runs on a stream: wait for it before reading the clock
    meter.seconds += time.perf_counter() - t0
    return fut


def _report(q, msg: dict) -> None:
    if q is not None:
        q.put(msg)


def _progress(q, rank: int, epoch: int, step: int, every: int = 10) -> None:
    """Rank 0 tells the launcher its step count every ``every`` steps (for a live readout)."""
    if rank == 0 and step % every == 0:
        _report(q, {"kind": "step", "epoch": epoch, "step": step})


def _train_step(net: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                sums: torch.Tensor, device: torch.device | None = None) -> float:
    """One SGD step on (xb, yb); adds (loss sum, correct, examples) to ``sums``; returns its seconds (a CUDA
    ``device`` is synchronized before the clock stops)."""
    t0 = time.perf_counter()
    out = net(xb)
    loss = nn.functional.cross_entropy(out, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    sums[0] += loss.item() * len(yb)
    sums[1] += (out.argmax(1) == yb).sum().item()
    sums[2] += len(yb)
    return seconds


def _crash_if_asked(cfg: RunConfig, rank: int, step: int) -> None:
    if cfg.crash_rank == rank and step >= cfg.crash_step:
        if cfg.crash_kind == "raise":
            raise RuntimeError(f"simulated failure of rank {rank} at step {step}")
        if cfg.crash_kind == "hang":
            time.sleep(10**6)  # stuck, like a process waiting for something that never comes
        os._exit(3)  # abrupt: no exception, no clean-up, like a killed process


def _epoch_logs(epoch: int, sums: torch.Tensor, val: tuple[float, float], seconds: float, steps: int) -> dict:
    loss_sum, correct, seen = sums.tolist()[:3]
    return {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "val_loss": val[0], "val_acc": val[1], "seconds": seconds, "samples_per_s": seen / max(seconds, 1e-12),
            "step_seconds": seconds / max(steps, 1)}


def ddp_worker(rank: int, cfg: RunConfig, init_method: str, q=None, stop=None) -> RankStats:
    """One DDP process: join the group, train ``cfg.epochs`` epochs on its slice of every global batch, report
    epoch logs (rank 0) and its :class:`RankStats` to ``q``. ``stop``: an event checked at epoch ends."""
    world = cfg.processes
    torch.set_num_threads(1)  # one core per process: N processes use N cores
    cuda = cfg.device == "cuda"
    dev = torch.device(f"cuda:{rank}") if cuda else torch.device(cfg.device)
    if cuda:
        torch.cuda.set_device(dev)
    # 2x: the launcher's silence watch (timeout_s) fires first and can still ask the stuck process for its stack;
    # under torchrun, with no such watch, this timeout is what ends a hung job
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=2 * cfg.timeout_s))
    try:
        return _ddp_train(rank, cfg, dev, q, stop)
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)  # its frames hold DDP: let it go too (see below)
        raise
    finally:
        # DDP's Reducer holds the process group. Had it been the last holder, freeing it would run the gloo
        # group's destructor with the GIL held, which joins gloo's threads while one of them may still be freeing
        # the last barrier's tensor, which needs the GIL: a deadlock, seen here about once in 30 runs
        # (pytorch/pytorch#56297). So DDP is freed first, while the group is still registered, and
        # destroy_process_group() drops the group through Python, which releases the GIL first.
        gc.collect()
        dist.destroy_process_group()


def _ddp_train(rank: int, cfg: RunConfig, dev: torch.device, q, stop) -> RankStats:
    """The body of :func:`ddp_worker`, in the joined process group; everything it builds (DDP among it) is
    freed when it returns."""
    world = cfg.processes
    cuda = dev.type == "cuda"
    from torch.nn.parallel import DistributedDataParallel as DDP

    data = load(cfg.dataset, seed=cfg.seed).to(dev)
    model = build_model(cfg, data).to(dev)
    ddp = DDP(model, device_ids=[rank] if cuda else None)
    meter = _SyncMeter()
    ddp.register_comm_hook(meter, _timed_allreduce)
    opt = torch.optim.SGD(ddp.parameters(), lr=cfg.lr)
    stats = RankStats(rank)
    _report(q, {"kind": "ready", "rank": rank})
    for epoch in range(cfg.epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        seconds = 0.0
        steps = 0
        comm0 = meter.seconds
        for gb in global_batches(cfg.n_train(data), cfg.batch_size, epoch, cfg.seed):
            _crash_if_asked(cfg, rank, stats.steps + steps)
            mine = gb[rank::world].to(dev)
            xb, yb = data.x_train[mine], data.y_train[mine]
            seconds += _train_step(ddp, opt, xb, yb, sums, dev)  # DDP all-reduces in backward()
            steps += 1
            stats.units += model.last_units
            _progress(q, rank, epoch, stats.steps + steps)
        stats.steps += steps
        stats.examples += int(sums[2])
        stats.train_seconds += seconds
        stats.comm_seconds = meter.seconds
        stats.sync_bytes = meter.bytes
        # one small all-reduce per epoch: the epoch's train metrics over all ranks, and whether to stop
        sums[3] = 1.0 if (stop is not None and stop.is_set()) else 0.0
        dist.all_reduce(sums)
        if rank == 0:
            val = evaluate(model, data.x_val, data.y_val)
            logs = _epoch_logs(epoch, sums, val, seconds, steps)
            logs["comm_seconds"] = meter.seconds - comm0
            _report(q, {"kind": "epoch", "logs": logs})
        dist.barrier()  # the others wait here, not inside the next step's timed all-reduce
        if sums[3] > 0:
            break
    if rank == 0:
        _report(q, {"kind": "test", "acc": evaluate(model, data.x_test, data.y_test)[1]})
    _report(q, {"kind": "stats", "stats": asdict(stats)})
    return stats


def _arm_stack_dump(dump_dir: str | None, rank: int) -> None:
    """On SIGUSR1, write every thread's Python stack to ``dump_dir/rank<rank>.txt`` (the launcher asks for it
    when a run hangs, and shows it: a notebook never sees a child process's stderr)."""
    if dump_dir is None or not hasattr(signal, "SIGUSR1"):
        return
    import faulthandler

    f = open(os.path.join(dump_dir, f"rank{rank}.txt"), "w")  # noqa: SIM115 -- open for the process's life
    faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)


def _ddp_entry(rank: int, cfg: RunConfig, port: int, q, stop, dump_dir: str | None = None) -> None:
    _arm_stack_dump(dump_dir, rank)
    try:
        ddp_worker(rank, cfg, f"tcp://{HOST}:{port}", q, stop)
    except BaseException as e:  # tell the launcher first (with the time), then fail as usual
        _report(q, {"kind": "error", "rank": rank, "time": time.time(), "error": _short(e)})
        raise


def share_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Move ``model``'s parameters into shared memory; returns them by name, to hand to other processes."""
    return {name: p.data.share_memory_() for name, p in model.named_parameters()}


def attach_parameters(model: nn.Module, shared: dict[str, torch.Tensor]) -> nn.Module:
    """Point ``model``'s parameters at ``shared`` tensors (same storage: writes are seen by every process)."""
    for name, p in model.named_parameters():
        if shared[name].shape != p.shape:
            raise ValueError(f"shared parameter {name} has shape {tuple(shared[name].shape)}, the model "
                             f"{tuple(p.shape)}: build both from the same RunConfig")
        p.data = shared[name]
    return model


def hogwild_worker(rank: int, cfg: RunConfig, shared: dict[str, torch.Tensor], q=None, stop=None,
                   start=None) -> RankStats:
    """One Hogwild process: SGD on its shard (every ``processes``-th batch of the epoch) on the ``shared``
    parameters (see :func:`share_parameters`), no lock. Rank 0 also evaluates after each of its epochs
    (not timed)."""
    torch.set_num_threads(1)
    data = load(cfg.dataset, seed=cfg.seed)
    model = build_model(cfg, data)  # its own LSH tables...
    if cfg.mode == "hogwild":
        attach_parameters(model, shared)  # ...and the shared weights ("independent": its own copy)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)  # plain SGD: sparse gradients update only their rows
    stats = RankStats(rank)
    _report(q, {"kind": "ready", "rank": rank})
    if start is not None:
        start.wait(timeout=cfg.timeout_s)  # start together, so the processes really overlap
    for epoch in range(cfg.epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        seconds = 0.0
        steps = 0
        for gb in global_batches(cfg.n_train(data), cfg.batch_size, epoch, cfg.seed)[rank::cfg.processes]:
            _crash_if_asked(cfg, rank, stats.steps + steps)
            xb, yb = data.x_train[gb], data.y_train[gb]
            seconds += _train_step(model, opt, xb, yb, sums)  # opt.step() writes into shared memory, no lock
            steps += 1
            if cfg.mode == "hogwild":
                stats.sync_bytes += gradient_bytes(model)  # written into the shared parameters
            stats.units += model.last_units
            _progress(q, rank, epoch, stats.steps + steps)
            if stop is not None and stop.is_set():
                break
        stats.steps += steps
        stats.examples += int(sums[2])
        stats.epoch_rates.append(float(sums[2]) / max(seconds, 1e-12))
        stats.train_seconds += seconds
        if rank == 0:
            logs = _epoch_logs(epoch, sums, evaluate(model, data.x_val, data.y_val), seconds, steps)
            logs["comm_seconds"] = 0.0
            _report(q, {"kind": "epoch", "logs": logs})
        if stop is not None and stop.is_set():
            break
    if rank == 0 and cfg.mode == "independent":
        _report(q, {"kind": "test", "acc": evaluate(model, data.x_test, data.y_test)[1]})
    _report(q, {"kind": "stats", "stats": asdict(stats)})
    return stats


def _hogwild_entry(rank: int, cfg: RunConfig, shared: dict[str, torch.Tensor], q, stop, start,
                   dump_dir: str | None = None) -> None:
    _arm_stack_dump(dump_dir, rank)
    try:
        hogwild_worker(rank, cfg, shared, q, stop, start)
    except BaseException as e:
        _report(q, {"kind": "error", "rank": rank, "time": time.time(), "error": _short(e)})
        raise


# --- launching from a notebook or a script --------------------------------------------------------------
def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _short(e: BaseException, limit: int = 140) -> str:
    """``Type: first line`` of an exception, without C++ source locations, at most ``limit`` characters."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    first = re.sub(r"\[/[^\]]*\] ", "", first)
    return f"{type(e).__name__}: {first if len(first) <= limit else first[: limit - 1] + '…'}"


def _failure_message(pc, errors: list[dict], n: int, elapsed: float) -> str:
    """Name the root cause, then what became of the others. A process that vanished (exit code other than
    0/1, or a signal the launcher did not send) is the cause; otherwise the earliest exception reported by a
    worker (the others typically fail after it, their peer gone)."""
    for p in pc.processes:
        p.join(timeout=5)
    codes = [p.exitcode for p in pc.processes]
    raised = {m["rank"]: m for m in sorted(errors, key=lambda m: m["time"])}
    vanished = [i for i, c in enumerate(codes) if c not in (0, 1, None, -signal.SIGTERM) and i not in raised]
    if vanished:
        cause, what = vanished[0], _describe_exit(codes[vanished[0]])
    elif raised:
        cause = min(raised.values(), key=lambda m: m["time"])["rank"]
        what = f"raised {raised[cause]['error']}"
    else:
        cause = next((i for i, c in enumerate(codes) if c not in (0, None)), 0)
        what = _describe_exit(codes[cause])
    others = [f"process {i} then raised {raised[i]['error']}" if i in raised else f"process {i} {_describe_exit(c)}"
              for i, c in enumerate(codes) if i != cause]
    return (f"process {cause} of {n} {what} after {elapsed:.1f} s; the run was stopped"
            + (f" ({'; '.join(others)})" if others else "")
            + ". Fix the failing process (its traceback is printed above), or run with processes=1 to debug.")


def _describe_message(msg: dict) -> str:
    kind = msg["kind"]
    if kind == "step":
        return f"training (epoch {msg['epoch']}, step {msg['step']})"
    return {"ready": "ready to train", "epoch": f"finished epoch {msg.get('logs', {}).get('epoch')}",
            "test": "evaluated the test set", "stats": "finished", "error": "raised an error"}.get(kind, kind)


def _where_stuck(dump: str) -> str:
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


def _hang_message(pc, dump_dir: str, last_said: dict[int, str], silent: float, elapsed: float) -> str:
    """Ask every live process for its stack (SIGUSR1, see :func:`_arm_stack_dump`), print the stacks, and say
    which process was where."""
    alive = [i for i, p in enumerate(pc.processes) if p.is_alive()]
    if hasattr(signal, "SIGUSR1"):
        for i in alive:
            os.kill(pc.processes[i].pid, signal.SIGUSR1)
        time.sleep(0.5)
    where = []
    for i, p in enumerate(pc.processes):
        path = os.path.join(dump_dir, f"rank{i}.txt")
        dump = open(path).read() if os.path.exists(path) else ""
        if dump:
            print(f"--- stack of process {i} ---\n{dump}", file=sys.stderr)
        state = f"stuck in {_where_stuck(dump)}" if i in alive and dump else (
            "alive" if i in alive else _describe_exit(p.exitcode))
        where.append(f"process {i}: last said {last_said.get(i, 'nothing')!r}, {state}")
    return (f"the run hung: no process reported anything for {silent:.0f} s (after {elapsed:.1f} s) and it was "
            f"stopped; {'; '.join(where)}. If it happens again, run with processes=1 to debug, or raise "
            "timeout_s if a step really takes that long.")


def start_method() -> str:
    """"forkserver" where the OS has it (Linux, macOS): one clean server process imports torch, this module
    and what DDP needs once, and every training process is forked from it in a fraction of a second. "spawn" elsewhere
    (a fresh interpreter per process, ~2 s each). Never plain "fork": it would copy the notebook's threads."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        # DDP's constructor imports torch._dynamo (~800 modules, ~2 s): import it once in the server instead
        multiprocessing.set_forkserver_preload([__name__, "torch._dynamo"])
        return "forkserver"
    return "spawn"


def launch(cfg: RunConfig, *, callbacks: Sequence[Callback] = (), port: int | None = None) -> ParallelResult:
    """Run ``cfg`` in ``cfg.processes`` fresh processes (``torch.multiprocessing``, :func:`start_method`) and
    wait for them, feeding rank 0's progress to ``callbacks`` (the :mod:`lessons_lib.callbacks` contract; a
    callback that sets ``stop_training`` ends the run at the next epoch end for ddp, next step for hogwild).

    Failures end the run, never hang it: a process that dies or raises stops the others and raises
    :class:`WorkerError` naming the rank; a run silent for ``cfg.timeout_s`` is stopped as hung, with each
    process's stack printed and where it was stuck named; the whole run is bounded by ``(4 + epochs) * timeout_s``.
    """
    cfg = cfg.validate()
    data = load(cfg.dataset, seed=cfg.seed)  # create the cache once here, not N times in parallel
    ctx = mp.get_context(start_method())
    q = ctx.Queue()
    stop = ctx.Event()
    dump_dir = tempfile.mkdtemp(prefix="lessons_parallel_")  # where a hung process writes its stack
    if cfg.mode == "ddp":
        port = resolve_port(port)
        args: tuple = (cfg, port, q, stop, dump_dir)
        entry = _ddp_entry
        model = None
    else:
        model = build_model(cfg, data)
        args = (cfg, share_parameters(model), q, stop, ctx.Barrier(cfg.processes), dump_dir)
        entry = _hogwild_entry
    history = History(config={k: v for k, v in asdict(cfg).items() if not k.startswith("crash")},
                      device=cfg.device)
    steps_per_epoch = cfg.n_train(data) // cfg.batch_size // (cfg.processes if cfg.mode != "ddp" else 1)
    state = TrainState(model=model, optimizer=None, device=torch.device("cpu"), history=history, epochs=cfg.epochs,
                       steps_per_epoch=steps_per_epoch)
    result = ParallelResult(cfg, history)
    stats: list[RankStats] = []
    errors: list[dict] = []
    t0 = time.perf_counter()
    deadline = t0 + cfg.timeout_s * (4 + cfg.epochs)
    heard_at = t0  # when a process last reported anything
    last_said: dict[int, str] = {}  # rank -> what it last reported
    for cb in callbacks:
        cb.on_train_begin(state)

    def drain() -> None:
        nonlocal heard_at
        while True:
            try:
                msg = q.get_nowait()
            except queue_mod.Empty:
                return
            kind = msg["kind"]
            heard_at = time.perf_counter()
            last_said[msg.get("rank", msg.get("stats", {}).get("rank", 0))] = _describe_message(msg)
            if kind == "step":
                state.epoch, state.step = msg["epoch"], msg["step"]
                for cb in callbacks:
                    cb.on_batch_end(state)
            elif kind == "epoch":
                logs = msg["logs"]
                history.append(logs)
                history.steps = state.step
                state.epoch, state.logs = int(logs["epoch"]), logs
                for cb in callbacks:
                    cb.on_epoch_end(state)
            elif kind == "test":
                result.test_acc = float(msg["acc"])
            elif kind == "stats":
                stats.append(RankStats(**msg["stats"]))
            elif kind == "error":
                errors.append(msg)
            if state.stop_training:
                stop.set()

    pc = mp.start_processes(entry, args=args, nprocs=cfg.processes, join=False, start_method=start_method())
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
                raise WorkerError(_failure_message(pc, errors, cfg.processes, elapsed)) from None
            now = time.perf_counter()
            if now - heard_at > cfg.timeout_s:
                drain()  # a last look: something may have arrived since the top of the loop
            if now - heard_at > cfg.timeout_s:
                raise WorkerError(_hang_message(pc, dump_dir, last_said, now - heard_at, now - t0))
            if now > deadline:
                raise WorkerError(f"the run took longer than {deadline - t0:.0f} s and was stopped: raise "
                                  "timeout_s, or lower epochs / processes")
        drain()
    finally:
        for p in pc.processes:
            if p.is_alive():
                p.terminate()
        for p in pc.processes:
            p.join(timeout=5)
        shutil.rmtree(dump_dir, ignore_errors=True)
        q.close()
        result.wall_seconds = time.perf_counter() - t0
        history.stop_reason = state.stop_reason
        for cb in callbacks:
            cb.on_train_end(state)
    result.ranks = sorted(stats, key=lambda r: r.rank)
    if len(result.ranks) != cfg.processes:
        raise WorkerError(f"only {len(result.ranks)} of {cfg.processes} processes reported their results")
    if cfg.mode != "ddp":  # rank 0's epoch logs hold its own speed: make samples/s the sum over the ranks
        for e in range(len(history)):
            rates = [r.epoch_rates[e] for r in result.ranks if e < len(r.epoch_rates)]
            if len(rates) == cfg.processes:
                history.samples_per_s[e] = sum(rates)
    if cfg.mode == "hogwild":
        result.test_acc = evaluate(model, data.x_test, data.y_test)[1]
    return result


def launch_with_restarts(cfg: RunConfig, restarts: int = 1) -> ParallelResult:
    """:func:`launch`, started again (at most ``restarts`` times) when it fails, saying so — what
    ``torchrun --max-restarts`` does for a job whose process died or hung. A run that fails every time raises
    the last :class:`WorkerError`."""
    for attempt in range(restarts + 1):
        try:
            return launch(cfg)
        except WorkerError as e:
            if attempt == restarts:
                raise
            print(f"{cfg.mode} {cfg.update} x{cfg.processes} batch {cfg.batch_size} failed: {e}\n"
                  f"-> starting it again (restart {attempt + 1} of {restarts})", file=sys.stderr)
    raise AssertionError("unreachable")


def sweep(configs: Sequence[RunConfig], repeats: int = 1, progress: bool = True,
          restarts: int = 1) -> list[ParallelResult]:
    """Launch each config ``repeats`` times, the configs interleaved (1, 2, …, 1, 2, …) so that a slow spell of
    the machine does not land on one config only; keep each config's fastest run (highest examples/s), the
    usual estimator for "what this code can do here". One line of progress per config. A failed run is
    started again up to ``restarts`` times (see :func:`launch_with_restarts`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best: list[ParallelResult | None] = [None] * len(configs)
    for _ in range(repeats):
        for i, cfg in enumerate(configs):
            r = launch_with_restarts(cfg, restarts)
            if best[i] is None or r.throughput > best[i].throughput:
                best[i] = r
    out = [r for r in best if r is not None]
    if progress:
        for r in out:
            c = r.config
            print(f"{c.mode:>11} {c.update:>6} x{c.processes} batch {c.batch_size:>4}: {r.throughput:9,.0f} "
                  f"examples/s, test acc {r.test_acc:.3f}" + (f" (best of {repeats})" if repeats > 1 else ""))
    return out


def ddp_configs(processes: int = 2, seed: int | None = None) -> list[RunConfig]:
    """The lesson's DDP runs: dense at a small (64) and a large (512) global batch with 1 and ``processes``
    processes, and dense vs sparse at a global batch of 16 (where hashing keeps fewer units) with ``processes``,
    one epoch (enough to measure bytes and time per step)."""
    base = RunConfig(mode="ddp", seed=get_seed() if seed is None else seed, epochs=3, timeout_s=SWEEP_TIMEOUT_S)
    runs = [replace(base, batch_size=b, processes=n, lr=0.05 * b / 64) for b in (64, 512) for n in (1, processes)]
    return runs + [replace(base, batch_size=16, lr=0.05, update=u, processes=processes, epochs=1) for u in UPDATES]


def hogwild_configs(processes: int = 2, seed: int | None = None) -> list[RunConfig]:
    """The lesson's asynchronous runs, one example per step (batch 1: sparse updates touch 5% of the rows) over
    1,600 training examples: Hogwild dense and sparse with 1 and ``processes`` processes, and the independent
    control."""
    base = RunConfig(mode="hogwild", seed=get_seed() if seed is None else seed, epochs=1, batch_size=1, lr=0.01,
                     train_examples=1600, timeout_s=SWEEP_TIMEOUT_S)
    runs = [replace(base, update=u, processes=n) for u in UPDATES for n in (1, processes)]
    return runs + [replace(base, mode="independent", processes=processes)]


def results_table(rows: Sequence[ParallelResult]) -> str:
    """A plain-text table of :meth:`ParallelResult.row` (times in this run, on this machine). "KB/step": gradient
    bytes synchronized (ddp) or written to shared memory (hogwild) per step; "units": hidden units computed per
    step."""
    heads = ("mode", "update", "procs", "batch", "s/epoch", "ms/step", "comm ms", "comm %", "KB/step", "units",
             "examples/s", "val acc", "test acc")
    table = [heads]
    for r in rows:
        d = r.row()
        table.append((d["mode"], d["update"], str(d["processes"]), str(r.config.batch_size), f"{d['s/epoch']:.3f}",
                      f"{d['ms/step']:.2f}", f"{d['comm ms/step']:.2f}", f"{100 * d['comm share']:.0f}%",
                      f"{d['sync KB/step']:.1f}", f"{d['units/step']:.0f}", f"{d['examples/s']:,.0f}",
                      f"{d['val acc']:.3f}", f"{d['test acc']:.3f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(heads))]
    return "\n".join(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)) for row in table)


def pick(rows: Sequence[ParallelResult], mode: str, update: str, processes: int,
         batch_size: int | None = None) -> ParallelResult:
    """The run of the sweep with these settings (the first one if ``batch_size`` is not given)."""
    for r in rows:
        c = r.config
        if (c.mode, c.update, c.processes) == (mode, update, processes) and batch_size in (None, c.batch_size):
            return r
    raise KeyError(f"no run with mode={mode}, update={update}, processes={processes}, batch_size={batch_size}")


def speedup(rows: Sequence[ParallelResult], mode: str, update: str, processes: int,
            batch_size: int | None = None) -> float:
    """Throughput with ``processes`` over throughput with 1 process (same mode, update and batch size).
    The 1-process baseline of "independent" is the 1-process Hogwild run (the same computation)."""
    base_mode = "hogwild" if mode == "independent" else mode
    return (pick(rows, mode, update, processes, batch_size).throughput
            / pick(rows, base_mode, update, 1, batch_size).throughput)


def plot_scaling(rows: Sequence[ParallelResult]):
    """Left: time of each run split into compute and gradient synchronization — per step for DDP runs (the same
    global batch whatever the processes), per epoch otherwise. Right: gradient bytes synchronized (ddp) or
    written into shared memory (hogwild) per step, with the most processes."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    labels = [f"{r.config.mode}\n{r.config.update}\n{r.config.processes}p, b{r.config.batch_size}" for r in rows]
    sync = all(r.config.mode == "ddp" for r in rows)
    # synchronous steps process the same global batch whatever the processes: compare time per step;
    # asynchronous processes step side by side: compare time per epoch (examples / summed throughput)
    total = [1e3 * r.step_seconds if sync else r.epoch_seconds for r in rows]
    comp = [t * (1 - r.comm_fraction) for t, r in zip(total, rows)]
    comm = [t * r.comm_fraction for t, r in zip(total, rows)]
    xs = list(range(len(rows)))
    ax.bar(xs, comp, color="#4c72b0", label="compute")
    if any(comm):
        ax.bar(xs, comm, bottom=comp, color="#dd8452", label="gradient sync (all-reduce)")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("ms per step (global batch)" if sync else "seconds per epoch")
    ax.set_title(("time per step" if sync else "time per epoch") + " (measured in this run)")
    ax.legend(fontsize=8)
    n = max(r.config.processes for r in rows)
    shown = {}
    for r in rows:
        key = (r.config.mode, r.config.update)
        if r.config.processes == n and r.sync_bytes_per_step > 0 and key not in shown:
            shown[key] = r
    kb = [r.sync_bytes_per_step / 1e3 for r in shown.values()]
    bx.bar(range(len(kb)), kb, color=["#4c72b0" if u == "dense" else "#55a868" for _, u in shown])
    bx.set_xticks(list(range(len(kb))), [f"{m} {u}\nbatch {r.config.batch_size}" for (m, u), r in shown.items()],
                  fontsize=8)
    bx.set_ylabel("KB per step")
    bx.set_title(f"gradient bytes per step ({n} processes)")
    for i, v in enumerate(kb):
        bx.text(i, v, f"{v:.1f} KB", ha="center", va="bottom", fontsize=8)
    bx.set_ylim(0, 1.15 * max(kb, default=1))
    fig.tight_layout()
    return fig


# --- the live panel -----------------------------------------------------------------------------------
def parallel_experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), mode: str = "ddp",
                        update: str = "dense", processes: int = 2, epochs: int = 3, batch_size: int = 64,
                        width: int = 1000) -> History:
    """The panel's experiment (contract of :mod:`lessons_lib.panel`): one :func:`launch`; the History's
    config carries the run's time split and bytes per step."""
    cfg = RunConfig(mode=mode, update=update, processes=processes, epochs=epochs, batch_size=batch_size,
                    width=width, device=device, seed=get_seed())
    r = launch(cfg, callbacks=callbacks)
    r.history.config.update({"comm_share": r.comm_fraction, "sync_bytes_per_step": r.sync_bytes_per_step,
                             "examples_per_s": r.throughput, "test_acc": r.test_acc})
    return r.history


def make_panel():
    """Mode (sync DDP / async Hogwild), update (dense / sparse), processes, epochs, batch size, width."""
    import ipywidgets as w

    from ..panel import LivePanel

    knobs = {
        "mode": w.ToggleButtons(options=[("sync (DDP)", "ddp"), ("async (Hogwild)", "hogwild")], value="ddp",
                                description="mode"),
        "update": w.ToggleButtons(options=[("dense", "dense"), ("sparse (LSH 5%)", "sparse")], value="dense",
                                  description="update"),
        "processes": w.IntSlider(value=min(2, cpu_cores()), min=1, max=max(4, cpu_cores()), description="processes"),
        "epochs": w.IntSlider(value=3, min=1, max=20, description="epochs"),
        "batch_size": w.Dropdown(options=[1, 4, 8, 16, 64, 256, 1024], value=64, description="batch size"),
        "width": w.Dropdown(options=[250, 1000, 4000], value=1000, description="width"),
    }
    return LivePanel(parallel_experiment, knobs, title="Lesson 10: processes, sync vs async, dense vs sparse")


# --- claims and exercises -----------------------------------------------------------------------------
def claims_table(ddp: Sequence[ParallelResult], hog: Sequence[ParallelResult]) -> Claims:
    """The lesson's claims, measured from this run's :func:`ddp_configs` and :func:`hogwild_configs` runs."""
    n = max(r.config.processes for r in ddp)
    c = Claims("10 parallel training")
    src = "seed 003 (Spring & Shrivastava)"
    small, large = pick(ddp, "ddp", "dense", n, 64), pick(ddp, "ddp", "dense", n, 512)
    c.add(f"Synchronizing gradients is costly (share of {n}-process DDP training time in the all-reduce, "
          "criterion > 10%)", src, f"{small.comm_fraction:.0%} at a global batch of 64", small.comm_fraction > 0.10)
    c.add("More compute per step (a bigger batch per process) makes that share smaller", "the lesson",
          f"{small.comm_fraction:.0%} at batch 64 vs {large.comm_fraction:.0%} at batch 512",
          large.comm_fraction < small.comm_fraction)
    gap = abs(small.history.val_loss[-1] - pick(ddp, "ddp", "dense", 1, 64).history.val_loss[-1])
    c.add(f"DDP with {n} processes computes the same updates as 1 process on the whole batch (criterion: "
          "val loss within 1e-4)", "DDP's contract", f"val loss after 3 epochs differs by {gap:.1e}", gap < 1e-4)
    s64, s512 = speedup(ddp, "ddp", "dense", n, 64), speedup(ddp, "ddp", "dense", n, 512)
    c.add(f"DDP trains faster with {n} processes than with 1", "the lesson",
          f"{s64:.2f}× the examples/s at batch 64, {s512:.2f}× at batch 512", s64 > 1 and s512 > 1)
    dd, ds = pick(ddp, "ddp", "dense", n, 16), pick(ddp, "ddp", "sparse", n, 16)
    ratio = dd.sync_bytes_per_step / max(ds.sync_bytes_per_step, 1)
    c.add("Sparse updates shrink what must be synchronized", src,
          f"{dd.sync_bytes_per_step / 1e3:.1f} KB dense vs {ds.sync_bytes_per_step / 1e3:.1f} KB sparse per step "
          f"at batch 16 ({ratio:.1f}× less; {ds.units_per_step:.0f} of {ds.config.width} units)", ratio > 1)
    c.add("…and so the time spent synchronizing", "implied by seed 003",
          f"all-reduce {1e3 * ds.comm_per_step:.2f} ms/step sparse vs {1e3 * dd.comm_per_step:.2f} ms dense",
          ds.comm_per_step < dd.comm_per_step)
    ceiling = speedup(hog, "independent", "dense", n)
    for u in UPDATES:
        s = speedup(hog, "hogwild", u, n)
        c.add(f"Lock-free asynchronous (Hogwild) {u} updates: near-linear speed-up (criterion ≥ {0.8 * n:.1f}× "
              f"with {n} processes)", src if u == "sparse" else "Hogwild (Recht et al. 2011)",
              f"{s:.2f}× (independent processes, sharing nothing: {ceiling:.2f}×)", s >= 0.8 * n)
    sd, ss = speedup(hog, "hogwild", "dense", n), speedup(hog, "hogwild", "sparse", n)
    c.add("Sparse updates scale better than dense ones (fewer conflicting writes)", src,
          f"speed-up sparse {ss:.2f}× vs dense {sd:.2f}×", ss > sd)
    for u in UPDATES:
        h1, hn = pick(hog, "hogwild", u, 1), pick(hog, "hogwild", u, n)
        c.add(f"Lock-free {u} updates do not hurt accuracy (criterion: within 2 points of 1 process)",
              "Hogwild (Recht et al. 2011)", f"test acc {hn.test_acc:.3f} with {n} processes vs {h1.test_acc:.3f}",
              hn.test_acc >= h1.test_acc - 0.02)
    ind = pick(hog, "independent", "dense", n)
    hd = pick(hog, "hogwild", "dense", n)
    c.add("Sharing the parameters is what makes N processes one training run", "the lesson",
          f"test acc shared {hd.test_acc:.3f} vs independent copies {ind.test_acc:.3f} (rank 0's copy)",
          hd.test_acc > ind.test_acc)
    return c


def check_examples_per_process(answer: int) -> bool:
    """DDP, global batch 64, 4 processes: how many examples does each process compute per step?"""
    return check(answer, 16, praise="the global batch is split: each process computes 64 / 4 = 16 examples.",
                 hint="DDP splits the global batch between the processes.")


def check_dense_bytes(answer: int) -> bool:
    """Bytes DDP all-reduces per step for UnitMajorNet(40 inputs, width 1000, 10 outputs), float32."""
    return check(answer, dense_sync_bytes(40, 1000, 10),
                 praise="every gradient element, 4 bytes each: (1000×41 + 1000×10 + 10) × 4.",
                 hint="count hidden weights with their bias (1000 × 41), output weights (1000 × 10) and output "
                      "bias (10), then 4 bytes each.")


def check_sparse_bytes(answer: int) -> bool:
    """Bytes of the sparse gradient when a step touches 50 units of that network (int64 indices)."""
    return check(answer, sparse_sync_bytes(40, 50, 10),
                 praise="per table, 50 indices of 8 bytes and 50 rows of floats; plus the dense 10-float bias.",
                 hint="hidden: 50 × (8 + 41 × 4); output: 50 × (8 + 10 × 4); bias: 10 × 4.")


# --- torchrun entry point -------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``torchrun --standalone --nproc-per-node 2 -m lessons_lib.parallel.lab`` (or ``--nnodes`` on a cluster):
    each process reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from torchrun. Without torchrun,
    ``python -m lessons_lib.parallel.lab --processes 2`` launches the processes itself."""
    ap = argparse.ArgumentParser(prog="python -m lessons_lib.parallel.lab", description=main.__doc__)
    ap.add_argument("--mode", choices=MODES, default="ddp")
    ap.add_argument("--update", choices=UPDATES, default="dense")
    ap.add_argument("--processes", type=int, default=2, help="ignored under torchrun (it sets WORLD_SIZE)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    cfg = RunConfig(mode=a.mode, update=a.update, processes=a.processes, epochs=a.epochs, batch_size=a.batch_size,
                    width=a.width, device=a.device, timeout_s=a.timeout, seed=get_seed())
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        if cfg.mode != "ddp":
            ap.error("torchrun starts DDP runs; for hogwild run without torchrun")
        rank = int(os.environ["RANK"])
        cfg = replace(cfg, processes=int(os.environ["WORLD_SIZE"])).validate()
        q = _PrintQueue() if rank == 0 else None
        s = ddp_worker(rank, cfg, "env://", q)
        print(f"rank {rank}/{cfg.processes}: {s.steps} steps, {s.train_seconds:.2f} s training, "
              f"{s.comm_seconds:.2f} s in all-reduce, {s.sync_bytes / max(s.steps, 1) / 1e3:.1f} KB synced per step",
              flush=True)
        return 0
    r = launch(cfg)
    print(results_table([r]))
    return 0


class _PrintQueue:
    """Stands in for the launcher's queue under torchrun: rank 0 prints its epoch lines."""

    def put(self, msg: dict) -> None:
        if msg["kind"] == "epoch":
            lg = msg["logs"]
            print(f"epoch {int(lg['epoch']) + 1}: train loss {lg['train_loss']:.3f}, val acc {lg['val_acc']:.3f}, "
                  f"{lg['seconds']:.2f} s ({lg['comm_seconds']:.2f} s all-reduce)", flush=True)
        elif msg["kind"] == "test":
            print(f"test accuracy {msg['acc']:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
