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
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from .. import processes
from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import DATASETS, Splits, load
from ..device import pick_device
from ..history import History
from ..lsh import LshIndex, check_active_fraction, topk_by_counts, units_kept
from ..seeds import check_seed, get_seed, replicate_seeds, seed_everything, torch_generator
from ..stats import (
    DOES_NOT_HOLD,
    INCONCLUSIVE,
    NOT_MEASURABLE,
    Interval,
    Spread,
    median_range,
    paired_interval,
    verdict,
)
from ..training import evaluate
from ..validate import BadArgument, check_choice, check_float, check_int
from . import reference
from .reference import EpochReport, RankStats

MODES = ("ddp", "manual", "hogwild", "independent")
UPDATES = ("dense", "sparse")
# what the worker processes import: the fork server imports it once (processes.warm_up(PRELOAD), or the first launch)
PRELOAD = ("lessons_lib.parallel.lab", "lessons_lib.parallel.checks")
MAX_WIDTH = 1_000_000  # hidden units (a million units of 51 floats: ~200 MB per process)
MAX_PROCESSES = 64  # one machine; more processes than cores already only warns
MAX_TIMEOUT_S = 24 * 3600.0
SWEEP_TIMEOUT_S = 15.0  # the lesson's runs take 1-3 s: 15 s of silence means a hung run, to be started again
SEED_STREAM = 10  # seeds.replicate_seeds stream of the sweeps' rounds
MIN_CPU_SHARE = 0.9  # a process that got less of its core than this while computing shared it with others


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
        update = check_choice(update, "update", UPDATES)
        n_in = check_int(n_in, "n_in", low=1, high=MAX_WIDTH, fix="the number of input features, e.g. 40")
        n_out = check_int(n_out, "n_out", low=1, high=MAX_WIDTH, fix="the number of classes, e.g. 10")
        seed = None if seed is None else check_seed(seed)
        width = check_int(width, "width", low=1, high=MAX_WIDTH, fix="the number of hidden units, e.g. 1000")
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
        if not isinstance(x, torch.Tensor):
            raise BadArgument(f"x={type(x).__name__}: UnitMajorNet expects a torch tensor (batch, {self.n_in}); "
                              "convert with torch.as_tensor(x, dtype=torch.float32)")
        if x.dim() != 2 or x.shape[1] != self.n_in or len(x) == 0:
            raise BadArgument(f"x of shape {tuple(x.shape)}: UnitMajorNet expects a non-empty (batch, {self.n_in}) "
                              "batch")
        if x.dtype != self.hidden.weight.dtype:
            raise BadArgument(f"x of dtype {x.dtype}: the network's weights are {self.hidden.weight.dtype}; convert "
                              f"with x.to({self.hidden.weight.dtype})")
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
    if not isinstance(model, nn.Module):
        raise BadArgument(f"model={model!r:.60}: gradient_bytes needs a torch module (e.g. lab.UnitMajorNet) after a "
                          "backward pass")
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

    def __post_init__(self) -> None:
        """Check and coerce every field (numpy scalars accepted, bools and strings refused): a bad value raises
        :class:`lessons_lib.validate.BadArgument` naming the field and the fix, here, not inside a process."""
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("mode", check_choice(self.mode, "mode", MODES))
        put("update", check_choice(self.update, "update", UPDATES))
        put("dataset", check_choice(self.dataset, "dataset", DATASETS))
        put("crash_kind", check_choice(self.crash_kind, "crash_kind", ("exit", "raise", "hang")))
        put("device", check_choice(self.device, "device", ("cpu", "cuda", "mps")))
        put("processes", check_int(self.processes, "processes", low=1, high=MAX_PROCESSES,
                                   fix="one process per core; more than the cores only share them"))
        put("width", check_int(self.width, "width", low=1, high=MAX_WIDTH, fix="hidden units, e.g. 1000"))
        put("active_fraction", check_active_fraction(self.active_fraction))
        put("epochs", check_int(self.epochs, "epochs", low=1, high=10_000, fix="e.g. 3"))
        put("batch_size", check_int(self.batch_size, "batch_size", low=1, high=10**7, fix="e.g. 64"))
        put("lr", check_float(self.lr, "lr", low=0.0, low_open=True, fix="SGD's step size, e.g. 0.1"))
        put("seed", check_seed(self.seed))
        put("timeout_s", check_float(self.timeout_s, "timeout_s", low=0.0, high=MAX_TIMEOUT_S, low_open=True,
                                     fix="seconds of silence before a run counts as hung, e.g. 30"))
        if self.train_examples is not None:
            put("train_examples", check_int(self.train_examples, "train_examples", low=1,
                                            fix="the number of training examples to use, or None for all"))
        if self.crash_rank is not None:
            put("crash_rank", check_int(self.crash_rank, "crash_rank", low=0, high=self.processes - 1,
                                        fix=f"a rank from 0 to {self.processes - 1}, or None (no crash)"))
        put("crash_step", check_int(self.crash_step, "crash_step", low=0, fix="a step number >= 0"))

    def n_train(self, data: Splits) -> int:
        """Training examples an epoch uses."""
        return len(data.y_train) if self.train_examples is None else min(self.train_examples, len(data.y_train))

    @property
    def synchronous(self) -> bool:
        """ddp and manual: the processes split each global batch and step together."""
        return self.mode in ("ddp", "manual")

    def validate(self) -> RunConfig:
        """Raise ValueError naming the fix for a combination of fields that cannot run (each field alone was checked
        when the config was made, :meth:`__post_init__`); return ``self``."""
        self.__post_init__()  # a config changed behind the dataclass's back (object.__setattr__) is checked again
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
        if self.device == "cuda":
            pick_device("cuda")  # no GPU here: DeviceUnavailableError says so and how to get one
        if self.train_examples is not None and self.train_examples < self.batch_size:
            raise ValueError(f"train_examples={self.train_examples} is less than one batch ({self.batch_size})")
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
    repeats: list[ParallelResult] = field(default_factory=list, repr=False)  # a sweep's rounds of this config

    @property
    def runs(self) -> list[ParallelResult]:
        """Every run of this configuration in a :func:`sweep`, round by round (just this one outside a sweep)."""
        return self.repeats or [self]

    @property
    def bucket_bytes(self) -> list[int]:
        """DDP's gradient buckets as its communication hook received them in the last step: bytes per bucket, by
        bucket index (rank 0; empty for other modes)."""
        return list(getattr(self.ranks[0], "bucket_bytes", [])) if self.ranks else []

    @property
    def bucket_cap_bytes(self) -> int:
        """DDP's bucket size limit (``bucket_cap_mb``), read from the DDP object (0 for other modes)."""
        return int(getattr(self.ranks[0], "bucket_cap_bytes", 0)) if self.ranks else 0

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
    with the rest of the backward pass; this model's dense gradient is far below DDP's bucket cap, so it travels in
    one bucket, which is only ready at the end of backward: there is nothing to overlap.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.bytes = 0
        self.calls = 0
        self.buckets: dict[int, int] = {}  # bucket index -> bytes, as last received


def _timed_allreduce(meter, bucket):  # DDP inspects a hook's annotations, so it has none
    """The communication hook: average ``bucket`` over the ranks with DDP's own all-reduce hook, waiting for
    it, and add its time and bytes to ``meter`` (a :class:`_SyncMeter`)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buf = bucket.buffer()
    if buf.is_sparse:
        buf = buf.coalesce()
        nbytes = buf.indices().numel() * 8 + buf.values().numel() * buf.values().element_size()
    else:
        nbytes = buf.numel() * buf.element_size()
    meter.bytes += nbytes
    meter.buckets[bucket.index()] = nbytes
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
    # a process's GPU is its LOCAL rank (torchrun sets LOCAL_RANK; one machine started by launch: the rank itself):
    # on a second machine the global rank names a GPU that does not exist there
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device(f"cuda:{local_rank}") if cuda else torch.device(cfg.device)
    if cuda:
        torch.cuda.set_device(dev)
    # 2x: the launcher's silence watch (timeout_s) fires first and can still ask the stuck process for its stack;
    # under torchrun, with no such watch, this timeout is what ends a hung job. DDP is built inside _ddp_train, so
    # it is freed before the group is destroyed (the teardown order of processes.process_group)
    with processes.process_group("nccl" if cuda else "gloo", init_method, rank, cfg.processes, 2 * cfg.timeout_s):
        return _ddp_train(rank, cfg, dev, link)


@dataclass
class DdpStats(RankStats):
    """:class:`RankStats` of a DDP process, plus its gradient buckets as the communication hook received them in the
    last step (bytes per bucket, by bucket index) and DDP's bucket size limit, read from the DDP object."""

    bucket_bytes: list[int] = field(default_factory=list)
    bucket_cap_bytes: int = 0
    cpu_seconds: float = 0.0  # CPU time of this process during its training loops
    loop_seconds: float = 0.0  # wall time of those loops

    @property
    def cpu_share(self) -> float:
        """CPU time over the wall time spent outside the all-reduce: about 1 when the process had a core to itself
        while computing, well below 1 when other programs took turns on its core."""
        return self.cpu_seconds / max(self.loop_seconds - self.comm_seconds, 1e-12)


def _ddp_train(rank: int, cfg: RunConfig, dev: torch.device, link: processes.Link) -> DdpStats:
    """The body of :func:`ddp_worker`, in the joined process group; everything it builds (DDP among it) is
    freed when it returns."""
    world = cfg.processes
    cuda = dev.type == "cuda"
    from torch.nn.parallel import DistributedDataParallel as DDP

    data = load(cfg.dataset, seed=cfg.seed).to(dev)
    model = build_model(cfg, data).to(dev)
    ddp = DDP(model, device_ids=[dev.index] if cuda else None)
    meter = _SyncMeter()
    ddp.register_comm_hook(meter, _timed_allreduce)
    opt = torch.optim.SGD(ddp.parameters(), lr=cfg.lr)
    stats = DdpStats(rank, bucket_cap_bytes=int(getattr(ddp, "bucket_bytes_cap", 0)))
    link.report("ready", status="ready to train")
    for epoch in range(cfg.epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        seconds = 0.0
        steps = 0
        comm0 = meter.seconds
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for gb in reference.global_batches(cfg.n_train(data), cfg.batch_size, epoch, cfg.seed):
            _crash_if_asked(cfg, rank, stats.steps + steps)
            mine = reference.my_slice(gb, rank, world).to(dev)
            xb, yb = data.x_train[mine], data.y_train[mine]
            seconds += _train_step(ddp, opt, xb, yb, sums, dev)  # DDP all-reduces in backward()
            steps += 1
            stats.units += model.last_units
            _progress(link, epoch, stats.steps + steps)
        stats.cpu_seconds += time.process_time() - cpu0
        stats.loop_seconds += time.perf_counter() - wall0
        stats.steps += steps
        stats.examples += int(sums[2])
        stats.train_seconds += seconds
        stats.comm_seconds, stats.sync_bytes, stats.collectives = meter.seconds, meter.bytes, meter.calls
        stats.bucket_bytes = [meter.buckets[i] for i in sorted(meter.buckets)]
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
    if not isinstance(cfg, RunConfig):
        raise BadArgument(f"cfg={cfg!r:.60}: launch needs a RunConfig, e.g. lab.RunConfig(mode='ddp', processes=2)")
    cfg = cfg.validate()
    data = load(cfg.dataset, seed=cfg.seed)  # create the cache once here, not N times in parallel
    per_epoch = cfg.n_train(data) // (1 if cfg.synchronous else cfg.processes)
    if cfg.batch_size > per_epoch:
        raise BadArgument(f"batch_size={cfg.batch_size}: larger than the {per_epoch} training examples "
                          f"{'an epoch' if cfg.synchronous else 'each process'} has, so no step would run; use "
                          f"batch_size <= {per_epoch}")
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


def repeat_seeds(repeats: int, seed: int | None = None) -> list[int]:
    """The seeds of a sweep's ``repeats`` rounds: ``seed`` (default: the course seed) first, so that round 1 is the
    run the rest of the lesson shows, then distinct seeds derived from it (``seeds.replicate_seeds``)."""
    repeats = check_int(repeats, "repeats", low=1, high=1000, fix="the number of rounds, e.g. 3")
    seed = get_seed() if seed is None else check_seed(seed)
    others = [s for s in replicate_seeds(repeats, stream=SEED_STREAM, seed=seed) if s != seed]
    return [seed, *others[: repeats - 1]]


def sweep(configs: Sequence[RunConfig], repeats: int = 1, progress: bool = True, restarts: int = 1,
          seeds: Sequence[int] | None = None, average: Callable | None = None) -> list[ParallelResult]:
    """Launch each config ``repeats`` times, the configs interleaved round by round (1, 2, …, 1, 2, …) so that a
    slow spell of the machine hits every config alike, and a ratio of two configs can be taken within a round.
    ``seeds``: one per round (e.g. :func:`repeat_seeds`); round i runs every config with ``seeds[i]``, so the
    rounds are independent runs and two configs of one round are a pair (same seed). None: every round uses each
    config's own seed (timing repeats only).

    Returns one :class:`ParallelResult` per config, its first round's run, whose ``.runs`` holds every round's run
    (medians, ranges and intervals are taken over them: :func:`spread`, :func:`speedup`). One line of progress per
    config. A failed run is started again up to ``restarts`` times (:func:`lessons_lib.processes.with_restarts`).
    ``average``: the gradient averaging of ``manual`` configs (see :func:`launch`)."""
    repeats = check_int(repeats, "repeats", low=1, high=1000, fix="the number of rounds, e.g. 3")
    configs = list(configs) if not isinstance(configs, RunConfig) else [configs]
    if not configs or not all(isinstance(c, RunConfig) for c in configs):
        raise BadArgument(f"configs={configs!r:.80}: sweep needs a non-empty list of RunConfig, e.g. "
                          "lab.ddp_configs(processes=2)")
    if seeds is not None:
        seeds = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
        if len(seeds) != repeats:
            raise BadArgument(f"seeds={seeds!r:.80}: give one seed per round ({repeats} rounds, {len(seeds)} seeds), "
                              "e.g. lab.repeat_seeds(repeats)")
        if len(set(seeds)) != len(seeds):
            raise BadArgument(f"seeds={seeds!r:.80}: the rounds' seeds must differ (a repeated seed repeats a run, "
                              "it is not a new one); use lab.repeat_seeds(repeats)")
    for cfg in configs:
        cfg.validate()  # every config before the first launch, not in the middle of the sweep
    runs: list[list[ParallelResult]] = [[] for _ in configs]
    for i in range(repeats):
        for cfg, out in zip(configs, runs):
            c = cfg if seeds is None else replace(cfg, seed=int(seeds[i]))
            out.append(processes.with_restarts(lambda c=c: launch(c, average=average), restarts, _describe(c)))
    for rs in runs:
        rs[0].repeats = rs
    first = [rs[0] for rs in runs]
    if progress:
        for r in first:
            c, sp = r.config, median_range([x.throughput for x in r.runs])
            acc = statistics.fmean(x.test_acc for x in r.runs)
            print(f"{c.mode:>11} {c.update:>6} x{c.processes} batch {c.batch_size:>4}: {sp.median:9,.0f} examples/s"
                  + (f" (range {sp.low:,.0f}–{sp.high:,.0f}, {sp.n} runs)" if sp.n > 1 else "")
                  + f", test acc {acc:.3f}" + (" (mean)" if sp.n > 1 else ""))
    return first


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


def _median_row(r: ParallelResult) -> RunRow:
    """The run's row with every timing and count replaced by its median over the sweep's rounds and the accuracies
    by their mean (a single run: its own row)."""
    rows = [x.row() for x in r.runs]
    if len(rows) == 1:
        return rows[0]
    mean = {"val_acc", "test_acc"}
    vals = {}
    for f in fields(RunRow):
        v = [getattr(x, f.name) for x in rows]
        if isinstance(v[0], str) or f.name in ("processes", "batch_size"):
            vals[f.name] = v[0]
        elif any(math.isnan(x) for x in v):
            vals[f.name] = math.nan
        else:
            vals[f.name] = statistics.fmean(v) if f.name in mean else statistics.median(v)
    return RunRow(**vals)


def check_runs(rows: object, name: str = "rows") -> list[ParallelResult]:
    """``rows`` as a non-empty list of :class:`ParallelResult` (what :func:`sweep` returns), else BadArgument."""
    if isinstance(rows, ParallelResult):
        rows = [rows]
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows \
            or not all(isinstance(r, ParallelResult) for r in rows):
        raise BadArgument(f"{name}={rows!r:.60}: needs a non-empty list of runs (ParallelResult), as lab.sweep or "
                          "lab.launch return them")
    return list(rows)


def results_table(rows: Sequence[ParallelResult]) -> str:
    """A plain-text table of :meth:`ParallelResult.row` (times in this run, on this machine): over a sweep's rounds,
    the median of every time, byte and unit count, the range of examples/s, the mean of the accuracies. "KB/step":
    gradient bytes synchronized (ddp) or written to shared memory (hogwild) per step; "units": hidden units
    computed per step ("–": not measured)."""
    heads = ("mode", "update", "procs", "batch", "runs", "s/epoch", "ms/step", "comm ms", "comm %", "KB/step", "units",
             "examples/s", "(range)", "val acc", "test acc")
    table = [heads]
    for r in check_runs(rows):
        d, sp = _median_row(r), median_range([x.throughput for x in r.runs])
        table.append((d.mode, d.update, str(d.processes), str(d.batch_size), str(sp.n), f"{d.s_per_epoch:.3f}",
                      f"{d.ms_per_step:.2f}", f"{d.comm_ms_per_step:.2f}", f"{100 * d.comm_share:.0f}%",
                      _num(d.sync_kb_per_step, ".1f"), _num(d.units_per_step, ".0f"), f"{d.examples_per_s:,.0f}",
                      f"{sp.low:,.0f}–{sp.high:,.0f}" if sp.n > 1 else "", f"{d.val_acc:.3f}", f"{d.test_acc:.3f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(heads))]
    note = ("times, bytes, units: median over the runs (one per round, each with its own seed); examples/s (range): "
            "lowest–highest; val/test acc: mean" if any(len(r.runs) > 1 for r in rows) else "")
    return "\n".join([*(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)) for row in table), *([note] if note
                                                                                                     else [])])


def pick(rows: Sequence[ParallelResult], mode: str, update: str, processes: int,
         batch_size: int | None = None) -> ParallelResult:
    """The run of the sweep with these settings (the first one if ``batch_size`` is not given)."""
    for r in rows:
        c = r.config
        if (c.mode, c.update, c.processes) == (mode, update, processes) and batch_size in (None, c.batch_size):
            return r
    raise KeyError(f"no run with mode={mode}, update={update}, processes={processes}, batch_size={batch_size}")


def spread(run: ParallelResult, measure: Callable[[ParallelResult], float]) -> Spread:
    """``measure`` of every round's run of this configuration: median and range."""
    return median_range([measure(r) for r in run.runs])


def paired(a: ParallelResult, b: ParallelResult, measure: Callable[[ParallelResult, ParallelResult], float]) -> Spread:
    """``measure(a_i, b_i)`` of the two configurations' runs round by round (same round: same seed, side by side in
    time): median and range."""
    if len(a.runs) != len(b.runs):
        raise ValueError(f"paired needs runs from the same rounds, got {len(a.runs)} and {len(b.runs)}")
    return median_range([measure(x, y) for x, y in zip(a.runs, b.runs)])


def speedup(rows: Sequence[ParallelResult], mode: str, update: str, processes: int,
            batch_size: int | None = None) -> Spread:
    """Throughput with ``processes`` over throughput with 1 process (same mode, update and batch size), round by
    round: median and range over the rounds. The 1-process baseline of "independent" is the 1-process Hogwild run
    (the same computation)."""
    base_mode = "hogwild" if mode == "independent" else mode
    return paired(pick(rows, mode, update, processes, batch_size), pick(rows, base_mode, update, 1, batch_size),
                  lambda a, b: a.throughput / b.throughput)


def val_loss_gap(a: ParallelResult, b: ParallelResult) -> float:
    """|difference| of the two runs' last validation losses (0 when they computed the same updates)."""
    return abs(a.history.val_loss[-1] - b.history.val_loss[-1])


def acc_gap(a: ParallelResult, b: ParallelResult) -> Interval:
    """Test accuracy of ``a`` minus ``b``, paired round by round (same seed): mean and 95% interval."""
    if len(a.runs) < 2:
        raise ValueError("acc_gap needs a sweep with repeats >= 2 (and seeds): one run gives no interval")
    return paired_interval([r.test_acc for r in a.runs], [r.test_acc for r in b.runs])


# --- the live panel -----------------------------------------------------------------------------------
def experiment(*, device: str = "cpu", callbacks: Sequence[Callback] = (), mode: str = "ddp",
               update: str = "dense", processes: int = 2, epochs: int = 3, batch_size: int = 64,
               width: int = 1000) -> History:
    """The panel's experiment (contract of :mod:`lessons_lib.panel`): one :func:`launch`; the History's
    config carries the run's time split and bytes per step."""
    cfg = RunConfig(mode=mode, update=update, processes=processes, epochs=epochs, batch_size=batch_size,
                    width=width, device=pick_device(device).type, seed=get_seed())
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
def _points(iv: Interval) -> str:
    return f"{100 * iv.mean:+.1f} ± {100 * iv.half_width:.1f} points ({iv.level:.0%} CI, {iv.n} paired runs)"


def _acc_gap(a: ParallelResult, b: ParallelResult, threshold: float) -> tuple[str, str | bool]:
    """Test accuracy a − b over the sweep's rounds (paired by seed) and its verdict against ``threshold`` (holds
    above it); a single run gives the difference with a plain comparison."""
    if len(a.runs) >= 2:
        iv = acc_gap(a, b)
        return _points(iv), verdict(iv, threshold, "above")
    d = a.test_acc - b.test_acc
    return f"{100 * d:+.1f} points (1 run: no interval)", d > threshold


def _kb(nbytes: float) -> str:
    return f"{nbytes / 1e3:,.1f} KB" if nbytes < 1e6 else f"{nbytes / 2**20:,.1f} MB"


def claims(ddp: Sequence[ParallelResult], hog: Sequence[ParallelResult],
           by_hand: ParallelResult | None = None) -> Claims:
    """The lesson's claims, measured from this run's :func:`ddp_configs` and :func:`hogwild_configs` sweeps (and the
    hand-made data-parallel run of :func:`manual_config`, when given). Timings: median and range over the sweep's
    rounds, ratios and differences taken within a round; accuracies: mean and 95% interval of differences paired by
    seed. Verdicts from :func:`lessons_lib.stats.verdict` (holds / does not hold / inconclusive)."""
    ddp, hog = check_runs(ddp, "ddp"), check_runs(hog, "hog")
    if by_hand is not None and not isinstance(by_hand, ParallelResult):
        raise BadArgument(f"by_hand={by_hand!r:.60}: the hand-made run, as lab.launch(lab.manual_config(...)) "
                          "returns it, or None")
    n = max(r.config.processes for r in ddp)
    c = Claims("10 parallel training")
    src = "seed 003 (Spring & Shrivastava)"
    small, large = pick(ddp, "ddp", "dense", n, 64), pick(ddp, "ddp", "dense", n, 512)
    share = spread(small, lambda r: r.comm_fraction)
    c.add(f"Synchronizing gradients is costly (share of {n}-process DDP training time in the all-reduce, "
          "criterion > 10%)", src, f"{share.format('.0f', 100, '%')} at a global batch of 64",
          verdict(share, 0.10, "above"))
    less = paired(small, large, lambda a, b: a.comm_fraction - b.comm_fraction)
    c.add("More compute per step (a bigger batch per process) makes that share smaller", "lesson",
          f"share at batch 64 − share at batch 512, per round: {less.format('+.0f', 100, ' points')}",
          verdict(less, 0.0, "above"))
    one = pick(ddp, "ddp", "dense", 1, 64)
    gap = max(val_loss_gap(a, b) for a, b in zip(small.runs, one.runs))
    c.add(f"DDP with {n} processes computes the same updates as 1 process on the whole batch (criterion: "
          "val loss within 1e-4)", "lesson; PyTorch DDP docs",
          f"val loss after 3 epochs differs by at most {gap:.1e} ({len(small.runs)} run(s), each its own seed)",
          gap < 1e-4)
    if by_hand is not None:
        same = [r for r in small.runs if r.config.seed == by_hand.config.seed]
        buckets = small.bucket_bytes
        how = (f"by hand one all-reduce per parameter; DDP {len(buckets)} bucket{'s' if len(buckets) != 1 else ''} "
               f"of {' + '.join(_kb(b) for b in buckets)} per step (its cap: {_kb(small.bucket_cap_bytes)})")
        if same:
            gap = val_loss_gap(same[0], by_hand)
            c.add("Averaging the gradients by hand (one all_reduce per parameter) computes what DDP computes "
                  "(criterion: val loss within 1e-4)", "lesson", f"val loss differs by {gap:.1e}; {how}",
                  gap < 1e-4)
        else:
            c.add("Averaging the gradients by hand (one all_reduce per parameter) computes what DDP computes "
                  "(criterion: val loss within 1e-4)", "lesson",
                  f"no DDP run with the hand-made run's seed {by_hand.config.seed} to compare with", None)
    for b in (64, 512):
        sp = speedup(ddp, "ddp", "dense", n, b)
        # the control: on a busy machine other programs take turns on the cores, a lone process and N processes get
        # unequal shares of them, and the ratio measures the machine's load, not DDP; it counts only if every process
        # of both runs had its core to itself (CPU time ≈ wall time while computing) in every round
        shares = {k: min(getattr(r, "cpu_share", 1.0) for x in pick(ddp, "ddp", "dense", k, b).runs for r in x.ranks)
                  for k in (1, n)}
        worst = min(shares, key=shares.get)
        starved = shares[worst] < MIN_CPU_SHARE
        c.add(f"DDP trains faster with {n} processes than with 1 (global batch {b})", "lesson",
              f"{sp.format('.2f', unit='×')} the examples/s of 1 process (ratio within each round)"
              + (f"; a process of the {worst}-process run had only {shares[worst]:.0%} of a core in some round (busy "
                 "machine), so the ratio is not this code's" if starved else ""),
              NOT_MEASURABLE if starved else verdict(sp, 1.0, "above"))
    dd, ds = pick(ddp, "ddp", "dense", n, 16), pick(ddp, "ddp", "sparse", n, 16)
    fewer = paired(dd, ds, lambda a, b: a.sync_bytes_per_step / max(b.sync_bytes_per_step, 1))
    c.add("Sparse updates shrink what must be synchronized", src,
          f"{_kb(spread(dd, lambda r: r.sync_bytes_per_step).median)} dense vs "
          f"{_kb(spread(ds, lambda r: r.sync_bytes_per_step).median)} sparse per step at batch 16 (medians): "
          f"{fewer.format('.1f', unit='×')} fewer bytes; {spread(ds, lambda r: r.units_per_step).median:.0f} of "
          f"{ds.config.width} units", verdict(fewer, 1.0, "above"))
    slower = paired(ds, dd, lambda a, b: a.comm_per_step / max(b.comm_per_step, 1e-12))
    c.add("…and so the time spent synchronizing", "seed 003 (implied)",
          f"all-reduce time per step, sparse / dense: {slower.format('.2f', unit='×')} "
          f"({1e3 * spread(ds, lambda r: r.comm_per_step).median:.2f} ms vs "
          f"{1e3 * spread(dd, lambda r: r.comm_per_step).median:.2f} ms, medians)", verdict(slower, 1.0, "below"))
    # the control: independent processes sharing nothing show the speed-up this machine allows right now; when even
    # they fall short of the criterion (busy cores), a short Hogwild speed-up says nothing about Hogwild
    ceiling = speedup(hog, "independent", "dense", n)
    room = verdict(ceiling, 0.8 * n, "above")
    ups = {u: speedup(hog, "hogwild", u, n) for u in UPDATES}
    for u in UPDATES:
        v = verdict(ups[u], 0.8 * n, "above")
        if room == DOES_NOT_HOLD:
            v = NOT_MEASURABLE
        elif room == INCONCLUSIVE and v == DOES_NOT_HOLD:
            v = INCONCLUSIVE
        c.add(f"Lock-free asynchronous (Hogwild) {u} updates: near-linear speed-up (criterion ≥ {0.8 * n:.1f}× "
              f"with {n} processes)", src if u == "sparse" else "Recht et al. 2011 (Hogwild)",
              f"{ups[u].format('.2f', unit='×')} (independent processes, sharing nothing: "
              f"{ceiling.format('.2f', unit='×')}"
              + (": this machine's cores were too busy to show any near-linear speed-up" if room == DOES_NOT_HOLD
                 else "") + ")", v)
    per_round = {u: [a.throughput / b.throughput for a, b in zip(pick(hog, "hogwild", u, n).runs,
                                                                  pick(hog, "hogwild", u, 1).runs)] for u in UPDATES}
    # the rounds are paired (same seed, side by side in time): a t-interval on the per-round differences; the range
    # of 3 rounds would cover a zero difference only 75% of the time (all 3 on one side: 1 chance in 4)
    diffs = [s - d for s, d in zip(per_round["sparse"], per_round["dense"])]
    better = paired_interval(per_round["sparse"], per_round["dense"]) if len(diffs) >= 2 else None
    shown = (f"{better.mean:+.2f} ± {better.half_width:.2f} (95% CI, {better.n} rounds paired by seed)"
             if better is not None else f"{diffs[0]:+.2f} (1 round: no interval)")
    c.add("Sparse updates scale better than dense ones (fewer conflicting writes; criterion: the 95% interval of "
          "the per-round difference of speed-ups above 0, else inconclusive)", src,
          f"speed-up sparse − dense: {shown}; medians sparse {ups['sparse'].median:.2f}×, "
          f"dense {ups['dense'].median:.2f}×",
          verdict(better, 0.0, "above") if better is not None else INCONCLUSIVE)
    for u in UPDATES:
        text, v = _acc_gap(pick(hog, "hogwild", u, n), pick(hog, "hogwild", u, 1), -0.02)
        c.add(f"Lock-free {u} updates do not hurt accuracy (criterion: test accuracy within 2 points of 1 process)",
              "Recht et al. 2011 (Hogwild)", f"{n} processes − 1 process: {text}", v)
    text, v = _acc_gap(pick(hog, "hogwild", "dense", n), pick(hog, "independent", "dense", n), 0.0)
    c.add("Sharing the parameters is what makes N processes one training run (test accuracy above independent "
          "copies)", "lesson", f"shared − independent copies (rank 0's copy): {text}", v)
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
