"""Lesson 10's apparatus: the runs that measure synchronous data parallel (DDP, and the hand-made version of
:mod:`.reference`) and lock-free asynchronous updates (Hogwild), dense and sparse; sweeps, the claims table, the
live panel and a ``torchrun`` entry point. Starting, watching and stopping the processes is core
(:mod:`lessons_lib.processes`).

Seed 003 (Spring & Shrivastava): distributed training pays for "costly communication and synchronization"
of gradients and parameters; *very sparse* updates are "ideally suited for asynchronous training leading to
near linear speedup with increasing parallelism". This module measures both on the processes you have.

Modes of a :class:`RunConfig`:

* **ddp** — ``torch.nn.parallel.DistributedDataParallel``: every process holds a full copy of the model and
  computes the gradient of its slice of the *global* batch; DDP averages the gradients with an all-reduce (gloo on
  CPUs, NCCL on GPUs) before every optimizer step, so N processes compute exactly the update one process would
  compute on the whole batch.
* **manual** — the same, by hand: :func:`reference.data_parallel_worker` with an ``average_gradients`` (yours).
* **hogwild** — asynchronous: the parameters live in shared memory; each process trains on its own shard and
  writes its SGD updates with no lock and no waiting (Recht et al. 2011, "Hogwild!").
* **independent** — the control: each process trains its own copy on its shard, sharing nothing. Its
  speed-up is the most N processes can get on this machine; the others are measured against it.

``update``: "dense" is the standard network (every hidden unit computed and updated); "sparse" computes only the
units that locality-sensitive hashing picks for the batch (lesson 09) and stores the weights unit-major in
``nn.Embedding(sparse=True)`` tables, so a step's gradient is a sparse tensor holding just the touched rows.

Units: seconds; ``sync_bytes`` = bytes handed to the all-reduce per step (dense: every gradient element,
float32; sparse: int64 row indices + float32 values of the touched rows); for Hogwild, the bytes of the
gradient written into shared memory per step. ``batch_size`` is the global batch of one synchronous step
(ddp/manual: each of N processes gets batch_size / N examples) and the per-process batch of Hogwild.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from .. import processes
from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import Splits, load
from ..history import History
from ..lsh import LshIndex, check_active_fraction, topk_by_counts, units_kept
from ..seeds import get_seed, seed_everything, torch_generator
from ..training import evaluate
from . import reference
from .reference import EpochReport, RankStats

MODES = ("ddp", "manual", "hogwild", "independent")
UPDATES = ("dense", "sparse")
# what the worker processes import: the fork server imports it once (processes.warm_up(PRELOAD), or the first launch)
PRELOAD = ("lessons_lib.parallel.lab", "lessons_lib.parallel.checks")
SWEEP_TIMEOUT_S = 15.0  # the lesson's runs take 1-3 s: 15 s of silence means a hung run, to be started again


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


# --- configuration and results ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One parallel run. ``lr`` is plain SGD's step size. ``timeout_s``: a run whose processes all fall silent
    that long is stopped as hung (the launcher shows where each process was); every collective gives up after
    twice that (a peer that stops answering ends a torchrun job with an error); the whole run is bounded by
    ``(4 + epochs) * timeout_s``.
    ``crash_rank``/``crash_step``/``crash_kind``: make that rank exit abruptly (or raise, or hang) at that step
    (the lesson's failure demo; ddp and hogwild)."""

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

    @property
    def synchronous(self) -> bool:
        """ddp and manual: the processes split each global batch and step together."""
        return self.mode in ("ddp", "manual")

    def validate(self) -> RunConfig:
        """Raise ValueError naming the fix for a configuration that cannot run; return ``self``."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.width < 1:
            raise ValueError(f"epochs, batch_size and width must be >= 1, got {self.epochs}, {self.batch_size}, "
                             f"{self.width}")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise ValueError(f"processes must be an integer >= 1, got {self.processes!r}")
        if self.synchronous and self.batch_size < self.processes:
            raise ValueError(f"a global batch of {self.batch_size} cannot be split over {self.processes} "
                             f"processes: use batch_size >= processes")
        if self.mode != "ddp" and self.device != "cpu":
            raise ValueError(f"{self.mode} runs on CPU processes (gloo, shared memory): use device='cpu'")
        if self.mode == "manual" and (self.update != "dense" or self.crash_rank is not None):
            raise ValueError("the hand-made data-parallel run (mode='manual') trains dense updates, without crashes")
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
        return self


@dataclass(frozen=True)
class RunRow:
    """One row of :func:`results_table`: a run's measurements (times in this run, on this machine)."""

    mode: str
    update: str
    processes: int
    batch_size: int
    s_per_epoch: float
    ms_per_step: float
    comm_ms_per_step: float
    comm_share: float
    sync_kb_per_step: float
    units_per_step: float
    examples_per_s: float
    val_acc: float
    test_acc: float
    wall_s: float


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
        """Training seconds per epoch: the slowest rank's (synchronous ranks move in lock-step), or for Hogwild the
        epoch's examples over the summed throughput of all ranks."""
        e = max(len(self.history), 1)
        if self.config.synchronous:
            return max(r.train_seconds for r in self.ranks) / e
        return sum(r.examples for r in self.ranks) / max(self.throughput, 1e-12) / e

    @property
    def throughput(self) -> float:
        """Examples per second, all ranks together."""
        if self.config.synchronous:
            return sum(r.examples for r in self.ranks) / max(max(r.train_seconds for r in self.ranks), 1e-12)
        return sum(r.examples / max(r.train_seconds, 1e-12) for r in self.ranks)

    @property
    def comm_fraction(self) -> float:
        """Share of training time spent synchronizing gradients (mean over ranks)."""
        return sum(r.comm_seconds for r in self.ranks) / max(sum(r.train_seconds for r in self.ranks), 1e-12)

    @property
    def step_seconds(self) -> float:
        return max(r.train_seconds for r in self.ranks) / max(self.ranks[0].steps, 1)

    def _per_step(self, attr: str) -> float:
        return sum(getattr(r, attr) / max(r.steps, 1) for r in self.ranks) / len(self.ranks)

    @property
    def comm_per_step(self) -> float:
        return self._per_step("comm_seconds")

    @property
    def sync_bytes_per_step(self) -> float:
        return self._per_step("sync_bytes")

    @property
    def units_per_step(self) -> float:
        return self._per_step("units")

    @property
    def collectives_per_step(self) -> float:
        """Gradient all-reduces started per step (DDP: one per bucket)."""
        return self._per_step("collectives")

    def row(self) -> RunRow:
        """The run's measurements; NaN where the run does not measure them (bytes and units of a manual run)."""
        c = self.config
        unmeasured = c.mode == "manual"
        return RunRow(c.mode, c.update, c.processes, c.batch_size, self.epoch_seconds, 1e3 * self.step_seconds,
                      1e3 * self.comm_per_step, self.comm_fraction,
                      math.nan if unmeasured else self.sync_bytes_per_step / 1e3,
                      math.nan if unmeasured else self.units_per_step, self.throughput,
                      self.history.val_acc[-1] if len(self.history) else math.nan, self.test_acc, self.wall_seconds)


# --- inside a training process --------------------------------------------------------------------------
def build_model(cfg: RunConfig, data: Splits) -> UnitMajorNet:
    """The run's network, identical on every rank (built from the run's seed)."""
    seed_everything(cfg.seed)
    return UnitMajorNet(data.n_features, cfg.width, data.n_classes, update=cfg.update,
                        active_fraction=cfg.active_fraction, seed=cfg.seed)


class _SyncMeter:
    """State of the communication hook :func:`_timed_allreduce`: seconds spent in, bytes handed to and buckets
    sent to the all-reduce.

    The hook waits for its all-reduce so that the time can be read apart from compute. (DDP would overlap it
    with the rest of the backward pass; this model's dense gradient fits one 25 MB bucket, which is only ready
    at the end of backward, so there is nothing to overlap.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.bytes = 0
        self.calls = 0


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
    meter.calls += 1
    if buf.is_cuda:
        torch.cuda.synchronize(buf.device)  # the backward kernels first: they are compute, not communication
    t0 = time.perf_counter()
    fut = default_hooks.allreduce_hook(None, bucket)
    fut.wait()
    if buf.is_cuda:
        torch.cuda.synchronize(buf.device)  # NCCL runs on a stream: wait for it before reading the clock
    meter.seconds += time.perf_counter() - t0
    return fut


def _progress(link: processes.Link, epoch: int, step: int, every: int = 10) -> None:
    """Rank 0 tells the launcher its step count every ``every`` steps (for a live readout)."""
    if link.rank == 0 and step % every == 0:
        link.report("step", (epoch, step), status=f"training (epoch {epoch}, step {step})")


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


def _epoch_report(epoch: int, sums: torch.Tensor, val: tuple[float, float], seconds: float, steps: int,
                  comm: float = 0.0) -> EpochReport:
    loss_sum, correct, seen = sums.tolist()[:3]
    return EpochReport(epoch, loss_sum / max(seen, 1), correct / max(seen, 1), val[0], val[1], seconds, steps,
                       int(seen), comm)


def ddp_worker(rank: int, cfg: RunConfig, init_method: str, link: processes.Link | None = None) -> RankStats:
    """One DDP process: join the group, train ``cfg.epochs`` epochs on its slice of every global batch, report
    epoch reports (rank 0) to ``link``; return its :class:`RankStats`. ``link.stopping()`` is honoured at epoch
    ends (the ranks agree on it in the epoch's all-reduce)."""
    link = link or processes.Link(rank, cfg.processes)
    torch.set_num_threads(1)  # one core per process: N processes use N cores
    cuda = cfg.device == "cuda"
    dev = torch.device(f"cuda:{rank}") if cuda else torch.device(cfg.device)
    if cuda:
        torch.cuda.set_device(dev)
    # 2x: the launcher's silence watch (timeout_s) fires first and can still ask the stuck process for its stack;
    # under torchrun, with no such watch, this timeout is what ends a hung job. DDP is built inside _ddp_train, so
    # it is freed before the group is destroyed (the teardown order of processes.process_group)
    with processes.process_group("nccl" if cuda else "gloo", init_method, rank, cfg.processes, 2 * cfg.timeout_s):
        return _ddp_train(rank, cfg, dev, link)


def _ddp_train(rank: int, cfg: RunConfig, dev: torch.device, link: processes.Link) -> RankStats:
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
    link.report("ready", status="ready to train")
    for epoch in range(cfg.epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        seconds = 0.0
        steps = 0
        comm0 = meter.seconds
        for gb in reference.global_batches(cfg.n_train(data), cfg.batch_size, epoch, cfg.seed):
            _crash_if_asked(cfg, rank, stats.steps + steps)
            mine = reference.my_slice(gb, rank, world).to(dev)
            xb, yb = data.x_train[mine], data.y_train[mine]
            seconds += _train_step(ddp, opt, xb, yb, sums, dev)  # DDP all-reduces in backward()
            steps += 1
            stats.units += model.last_units
            _progress(link, epoch, stats.steps + steps)
        stats.steps += steps
        stats.examples += int(sums[2])
        stats.train_seconds += seconds
        stats.comm_seconds, stats.sync_bytes, stats.collectives = meter.seconds, meter.bytes, meter.calls
        # one small all-reduce per epoch: the epoch's train metrics over all ranks, and whether to stop
        sums[3] = 1.0 if link.stopping() else 0.0
        dist.all_reduce(sums)
        if rank == 0:
            val = evaluate(model, data.x_val, data.y_val)
            link.report("epoch", _epoch_report(epoch, sums, val, seconds, steps, meter.seconds - comm0),
                        status=f"finished epoch {epoch}")
        dist.barrier()  # the others wait here, not inside the next step's timed all-reduce
        if sums[3] > 0:
            break
    if rank == 0:
        link.report("test", evaluate(model, data.x_test, data.y_test)[1], status="evaluated the test set")
    return stats


def _ddp_entry(link: processes.Link, cfg: RunConfig) -> RankStats:
    return ddp_worker(link.rank, cfg, link.init_method, link)


def hogwild_worker(link: processes.Link, cfg: RunConfig, shared: dict[str, torch.Tensor], start=None) -> RankStats:
    """One Hogwild process: SGD on its shard (every ``processes``-th batch of the epoch) on the ``shared``
    parameters (see :func:`reference.share_parameters`), no lock ("independent": on its own copy). Rank 0 also
    evaluates after each of its epochs (not timed). ``start``: a barrier, so that the processes really overlap."""
    rank = link.rank
    torch.set_num_threads(1)
    data = load(cfg.dataset, seed=cfg.seed)
    model = build_model(cfg, data)  # its own LSH tables...
    if cfg.mode == "hogwild":
        reference.attach_parameters(model, shared)  # ...and the shared weights ("independent": its own copy)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)  # plain SGD: sparse gradients update only their rows
    stats = RankStats(rank)
    link.report("ready", status="ready to train")
    if start is not None:
        start.wait(timeout=cfg.timeout_s)
    for epoch in range(cfg.epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        seconds = 0.0
        steps = 0
        for gb in reference.global_batches(cfg.n_train(data), cfg.batch_size, epoch, cfg.seed)[rank::cfg.processes]:
            _crash_if_asked(cfg, rank, stats.steps + steps)
            xb, yb = data.x_train[gb], data.y_train[gb]
            seconds += _train_step(model, opt, xb, yb, sums)  # opt.step() writes into shared memory, no lock
            steps += 1
            if cfg.mode == "hogwild":
                stats.sync_bytes += gradient_bytes(model)  # written into the shared parameters
            stats.units += model.last_units
            _progress(link, epoch, stats.steps + steps)
            if link.stopping():
                break
        stats.steps += steps
        stats.examples += int(sums[2])
        stats.epoch_rates.append(float(sums[2]) / max(seconds, 1e-12))
        stats.train_seconds += seconds
        if rank == 0:
            link.report("epoch", _epoch_report(epoch, sums, evaluate(model, data.x_val, data.y_val), seconds, steps),
                        status=f"finished epoch {epoch}")
        if link.stopping():
            break
    if rank == 0 and cfg.mode == "independent":
        link.report("test", evaluate(model, data.x_test, data.y_test)[1], status="evaluated the test set")
    return stats


# --- launching from a notebook or a script --------------------------------------------------------------
def _logs(r: EpochReport) -> dict[str, float]:
    """An :class:`EpochReport` as the logs a :class:`History` and the callbacks read."""
    return {"epoch": r.epoch, "train_loss": r.train_loss, "train_acc": r.train_acc, "val_loss": r.val_loss,
            "val_acc": r.val_acc, "seconds": r.seconds, "samples_per_s": r.examples / max(r.seconds, 1e-12),
            "step_seconds": r.seconds / max(r.steps, 1), "comm_seconds": r.comm_seconds}


def launch(cfg: RunConfig, *, callbacks: Sequence[Callback] = (), port: int | None = None,
           average: Callable | None = None) -> ParallelResult:
    """Run ``cfg`` in ``cfg.processes`` fresh processes (:func:`lessons_lib.processes.launch`) and wait for them,
    feeding rank 0's progress to ``callbacks`` (the :mod:`lessons_lib.callbacks` contract; a callback that sets
    ``stop_training`` ends the run at the next epoch end for ddp, next step for hogwild). ``average``: the gradient
    averaging of a ``manual`` run (default :func:`reference.average_gradients`; a notebook's function is sent as
    its source).

    Failures end the run, never hang it: a process that dies or raises stops the others and raises
    :class:`lessons_lib.processes.WorkerError` naming the rank; a run silent for ``cfg.timeout_s`` is stopped as
    hung, with each process's stack printed and where it was stuck named; the whole run is bounded by
    ``(4 + epochs) * timeout_s``."""
    cfg = cfg.validate()
    data = load(cfg.dataset, seed=cfg.seed)  # create the cache once here, not N times in parallel
    model = None
    if cfg.mode == "ddp":
        target, args = _ddp_entry, (cfg,)
    elif cfg.mode == "manual":
        target = reference.data_parallel_worker
        args = (partial(build_model, cfg), cfg.dataset, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed,
                processes.portable(average or reference.average_gradients, "average_gradients"), cfg.train_examples)
    else:
        model = build_model(cfg, data)
        ctx = torch.multiprocessing.get_context(processes.start_method())
        target, args = hogwild_worker, (cfg, reference.share_parameters(model), ctx.Barrier(cfg.processes))
    history = History(config={k: v for k, v in asdict(cfg).items() if not k.startswith("crash")},
                      device=cfg.device)
    steps_per_epoch = cfg.n_train(data) // cfg.batch_size // (1 if cfg.synchronous else cfg.processes)
    state = TrainState(model=model, optimizer=None, device=torch.device("cpu"), history=history, epochs=cfg.epochs,
                       steps_per_epoch=steps_per_epoch)
    result = ParallelResult(cfg, history)

    def on_message(msg: processes.Message) -> None:
        if msg.kind == "step":
            state.epoch, state.step = msg.payload
            for cb in callbacks:
                cb.on_batch_end(state)
        elif msg.kind == "epoch":
            logs = _logs(msg.payload)
            history.append(logs)
            history.steps = state.step
            state.epoch, state.logs = int(logs["epoch"]), logs
            for cb in callbacks:
                cb.on_epoch_end(state)
        elif msg.kind == "test":
            result.test_acc = float(msg.payload)

    for cb in callbacks:
        cb.on_train_begin(state)
    t0 = time.perf_counter()
    try:
        ranks = processes.launch(target, args, processes=cfg.processes, timeout_s=cfg.timeout_s,
                                 deadline_s=cfg.timeout_s * (4 + cfg.epochs), on_message=on_message,
                                 should_stop=lambda: state.stop_training, port=port, device=cfg.device,
                                 preload=PRELOAD)
    finally:
        result.wall_seconds = time.perf_counter() - t0
        history.stop_reason = state.stop_reason
        for cb in callbacks:
            cb.on_train_end(state)
    result.ranks = list(ranks)
    if not cfg.synchronous:  # rank 0's epoch logs hold its own speed: make samples/s the sum over the ranks
        for e in range(len(history)):
            rates = [r.epoch_rates[e] for r in result.ranks if e < len(r.epoch_rates)]
            if len(rates) == cfg.processes:
                history.samples_per_s[e] = sum(rates)
    if cfg.mode == "hogwild":
        result.test_acc = evaluate(model, data.x_test, data.y_test)[1]
    return result


def _describe(cfg: RunConfig) -> str:
    return f"{cfg.mode} {cfg.update} x{cfg.processes} batch {cfg.batch_size}"


def sweep(configs: Sequence[RunConfig], repeats: int = 1, progress: bool = True,
          restarts: int = 1) -> list[ParallelResult]:
    """Launch each config ``repeats`` times, the configs interleaved (1, 2, …, 1, 2, …) so that a slow spell of
    the machine does not land on one config only; keep each config's fastest run (highest examples/s), the
    usual estimator for "what this code can do here". One line of progress per config. A failed run is
    started again up to ``restarts`` times (:func:`lessons_lib.processes.with_restarts`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best: list[ParallelResult | None] = [None] * len(configs)
    for _ in range(repeats):
        for i, cfg in enumerate(configs):
            r = processes.with_restarts(lambda cfg=cfg: launch(cfg), restarts, _describe(cfg))
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


def manual_config(processes: int = 2, seed: int | None = None) -> RunConfig:
    """The hand-made data-parallel run, with the settings of :func:`ddp_configs`' batch-64 runs (so the two can
    be compared update for update)."""
    return replace(ddp_configs(processes, seed)[0], mode="manual", processes=processes)


def hogwild_configs(processes: int = 2, seed: int | None = None) -> list[RunConfig]:
    """The lesson's asynchronous runs, one example per step (batch 1: sparse updates touch 5% of the rows) over
    1,600 training examples: Hogwild dense and sparse with 1 and ``processes`` processes, and the independent
    control."""
    base = RunConfig(mode="hogwild", seed=get_seed() if seed is None else seed, epochs=1, batch_size=1, lr=0.01,
                     train_examples=1600, timeout_s=SWEEP_TIMEOUT_S)
    runs = [replace(base, update=u, processes=n) for u in UPDATES for n in (1, processes)]
    return runs + [replace(base, mode="independent", processes=processes)]


def _num(x: float, fmt: str) -> str:
    return "–" if math.isnan(x) else format(x, fmt)


def results_table(rows: Sequence[ParallelResult]) -> str:
    """A plain-text table of :meth:`ParallelResult.row` (times in this run, on this machine). "KB/step": gradient
    bytes synchronized (ddp) or written to shared memory (hogwild) per step; "units": hidden units computed per
    step ("–": not measured)."""
    heads = ("mode", "update", "procs", "batch", "s/epoch", "ms/step", "comm ms", "comm %", "KB/step", "units",
             "examples/s", "val acc", "test acc")
    table = [heads]
    for r in rows:
        d = r.row()
        table.append((d.mode, d.update, str(d.processes), str(d.batch_size), f"{d.s_per_epoch:.3f}",
                      f"{d.ms_per_step:.2f}", f"{d.comm_ms_per_step:.2f}", f"{100 * d.comm_share:.0f}%",
                      _num(d.sync_kb_per_step, ".1f"), _num(d.units_per_step, ".0f"), f"{d.examples_per_s:,.0f}",
                      f"{d.val_acc:.3f}", f"{d.test_acc:.3f}"))
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


def val_loss_gap(a: ParallelResult, b: ParallelResult) -> float:
    """|difference| of the two runs' last validation losses (0 when they computed the same updates)."""
    return abs(a.history.val_loss[-1] - b.history.val_loss[-1])


# --- the live panel -----------------------------------------------------------------------------------
def experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), mode: str = "ddp",
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

    cores = processes.cpu_cores()
    knobs = {
        "mode": w.ToggleButtons(options=[("sync (DDP)", "ddp"), ("async (Hogwild)", "hogwild")], value="ddp",
                                description="mode"),
        "update": w.ToggleButtons(options=[("dense", "dense"), ("sparse (LSH 5%)", "sparse")], value="dense",
                                  description="update"),
        "processes": w.IntSlider(value=min(2, cores), min=1, max=max(4, cores), description="processes"),
        "epochs": w.IntSlider(value=3, min=1, max=20, description="epochs"),
        "batch_size": w.Dropdown(options=[1, 4, 8, 16, 64, 256, 1024], value=64, description="batch size"),
        "width": w.Dropdown(options=[250, 1000, 4000], value=1000, description="width"),
    }
    return LivePanel(experiment, knobs, title="Lesson 10: processes, sync vs async, dense vs sparse")


# --- claims ---------------------------------------------------------------------------------------------
def claims(ddp: Sequence[ParallelResult], hog: Sequence[ParallelResult],
           by_hand: ParallelResult | None = None) -> Claims:
    """The lesson's claims, measured from this run's :func:`ddp_configs` and :func:`hogwild_configs` runs (and the
    hand-made data-parallel run of :func:`manual_config`, when given)."""
    n = max(r.config.processes for r in ddp)
    c = Claims("10 parallel training")
    src = "seed 003 (Spring & Shrivastava)"
    small, large = pick(ddp, "ddp", "dense", n, 64), pick(ddp, "ddp", "dense", n, 512)
    c.add(f"Synchronizing gradients is costly (share of {n}-process DDP training time in the all-reduce, "
          "criterion > 10%)", src, f"{small.comm_fraction:.0%} at a global batch of 64", small.comm_fraction > 0.10)
    c.add("More compute per step (a bigger batch per process) makes that share smaller", "the lesson",
          f"{small.comm_fraction:.0%} at batch 64 vs {large.comm_fraction:.0%} at batch 512",
          large.comm_fraction < small.comm_fraction)
    gap = val_loss_gap(small, pick(ddp, "ddp", "dense", 1, 64))
    c.add(f"DDP with {n} processes computes the same updates as 1 process on the whole batch (criterion: "
          "val loss within 1e-4)", "DDP's contract", f"val loss after 3 epochs differs by {gap:.1e}", gap < 1e-4)
    if by_hand is not None:
        gap = val_loss_gap(small, by_hand)
        c.add("Averaging the gradients by hand (one all_reduce per parameter) computes what DDP computes "
              "(criterion: val loss within 1e-4)", "the lesson",
              f"val loss differs by {gap:.1e}; all-reduce time per step with {n} processes: by hand (one per "
              f"parameter) {1e3 * by_hand.comm_per_step:.2f} ms, DDP ({small.collectives_per_step:.0f} bucket) "
              f"{1e3 * small.comm_per_step:.2f} ms", gap < 1e-4)
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


# --- torchrun entry point -------------------------------------------------------------------------------
class _Printer:
    """Stands in for the launcher's queue under torchrun: rank 0 prints its epoch reports."""

    def put(self, msg: processes.Message) -> None:
        if msg.kind == "epoch":
            r: EpochReport = msg.payload
            print(f"epoch {r.epoch + 1}: train loss {r.train_loss:.3f}, val acc {r.val_acc:.3f}, "
                  f"{r.seconds:.2f} s ({r.comm_seconds:.2f} s all-reduce)", flush=True)
        elif msg.kind == "test":
            print(f"test accuracy {msg.payload:.3f}", flush=True)


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
            ap.error("torchrun starts DDP runs; for the other modes run without torchrun")
        rank = int(os.environ["RANK"])
        cfg = replace(cfg, processes=int(os.environ["WORLD_SIZE"])).validate()
        link = processes.Link(rank, cfg.processes, sink=_Printer() if rank == 0 else None)
        s = ddp_worker(rank, cfg, "env://", link)
        print(f"rank {rank}/{cfg.processes}: {s.steps} steps, {s.train_seconds:.2f} s training, "
              f"{s.comm_seconds:.2f} s in all-reduce, {s.sync_bytes / max(s.steps, 1) / 1e3:.1f} KB synced per step",
              flush=True)
        return 0
    from lessons_lib.parallel import lab  # this module by its name: `python -m` runs it as __main__, whose
    r = lab.launch(cfg)                    # functions a fresh process could not import
    print(results_table([r]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
