"""Data-parallel and lock-free training from scratch: what ``DistributedDataParallel`` and Hogwild do.

**Synchronous data parallel.** N processes hold identical copies of the model. Every step, all of them draw the same
global batch (from the same seed), each computes the gradient of the mean loss over *its slice* of it, and
:func:`average_gradients` replaces every process's gradient by the average over the processes (one all-reduce per
parameter). The mean of equal-size slices' mean losses is the whole batch's mean loss, so after the average every
process holds the gradient one process would compute on the whole batch, and the same SGD step keeps the copies
identical. DDP does exactly this, faster: it packs the gradients into buckets of up to ``bucket_cap_mb`` (25 MB by
default; one all-reduce per bucket instead of one per parameter) and starts a bucket's all-reduce while backward
is still computing the others.

**Hogwild** (Recht et al. 2011). The parameters live in shared memory (:func:`share_parameters`); every process
reads them, computes a gradient on its own examples and writes its SGD update with no lock and no waiting.

:func:`data_parallel_worker` is one process of the hand-made data-parallel run; the launcher
(:func:`lessons_lib.processes.launch`) starts N of them and collects their :class:`RankStats`.
Shapes: ``x`` (batch, n_features) float32, ``y`` (batch,) int64 class labels; times in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .. import processes
from ..data import Splits, load
from ..seeds import torch_generator
from ..training import evaluate


# --- the averaging: what the all-reduce in DDP computes ---------------------------------------------------
def average_gradients(model: nn.Module, world_size: int) -> None:
    """Replace each parameter's ``.grad`` (in place) by its average over the ``world_size`` processes of the
    group: all-reduce with SUM (every process receives the sum of all the processes' tensors), then divide.
    Every process must call it, the same parameters in the same order (a collective waits for all of them).
    Parameters without a gradient are skipped. (``dist.ReduceOp.AVG`` does both at once where the backend has it.)"""
    for p in model.parameters():
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world_size)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Make every process's copy of the model equal to process ``src``'s (DDP does it in its constructor)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t, src=src)


def global_batches(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """The epoch's global batches of example indices, the same on every process (drawn from the seed and the
    epoch, not communicated); a last partial batch is dropped so all processes take the same number of steps."""
    perm = torch.randperm(n, generator=torch_generator(seed, stream=1000 + epoch))
    return [perm[i: i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def my_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s share of a global batch: every ``world_size``-th example, starting at ``rank``."""
    return batch[rank::world_size]


def sgd_step(model: nn.Module, lr: float) -> None:
    """Plain SGD on every parameter that has a gradient: ``p -= lr * p.grad``."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)


# --- what a worker sends back -------------------------------------------------------------------------------
@dataclass
class EpochReport:
    """One epoch, as rank 0 saw it: training metrics (over the examples the run computed, or rank 0's own slice),
    validation metrics, training seconds (evaluation excluded), optimizer steps, examples computed (all processes
    of a synchronous run; rank 0's own in Hogwild) and the seconds spent synchronizing gradients."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    steps: int
    examples: int
    comm_seconds: float = 0.0


@dataclass
class RankStats:
    """What one process measured over the run: training time (evaluation excluded), the part of it spent in
    gradient synchronization (waiting for peers included), bytes synchronized, collectives started, hidden
    units computed (summed over steps) and its examples/s in each epoch."""

    rank: int
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    comm_seconds: float = 0.0
    sync_bytes: int = 0
    collectives: int = 0
    units: int = 0
    epoch_rates: list[float] = field(default_factory=list)

    @property
    def compute_seconds(self) -> float:
        return self.train_seconds - self.comm_seconds


# --- the hand-made data-parallel process -------------------------------------------------------------------
def data_parallel_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, lr: float, world_size: int,
                       average: Callable[[nn.Module, int], None]) -> tuple[float, int, float]:
    """One synchronous step on this process's slice ``(xb, yb)``: forward, backward, ``average`` the gradients
    over the processes, SGD. Returns (loss sum over the slice, correct predictions, seconds in ``average``)."""
    out = model(xb)
    loss = nn.functional.cross_entropy(out, yb)  # mean over the slice
    model.zero_grad(set_to_none=True)
    loss.backward()
    t0 = time.perf_counter()
    average(model, world_size)  # now every process holds the whole global batch's gradient
    comm = time.perf_counter() - t0
    sgd_step(model, lr)
    return loss.item() * len(yb), int((out.argmax(1) == yb).sum()), comm


def data_parallel_worker(link: processes.Link, make_model: Callable[[Splits], nn.Module], dataset: str, epochs: int,
                         batch_size: int, lr: float, seed: int, average: processes.Portable,
                         train_examples: int | None = None) -> RankStats:
    """One process of a hand-made data-parallel run (:func:`lessons_lib.processes.launch` starts
    ``link.world_size`` of them): join the gloo group, start from rank 0's weights, then for every global batch
    of ``batch_size`` examples train on its slice with :func:`data_parallel_step`, the gradients averaged by
    ``average`` (e.g. :func:`average_gradients`, or the learner's, sent with :func:`lessons_lib.processes.portable`).
    Rank 0 reports an :class:`EpochReport` per epoch and the test accuracy ("test"); returns its :class:`RankStats`."""
    torch.set_num_threads(1)  # one core per process: N processes use N cores
    rank, world = link.rank, link.world_size
    with processes.process_group("gloo", link.init_method, rank, world, link.collective_timeout_s):
        data = load(dataset, seed=seed)
        model = make_model(data)
        broadcast_parameters(model)
        avg = average.load()
        n = len(data.y_train) if train_examples is None else min(train_examples, len(data.y_train))
        stats = RankStats(rank)
        link.report("ready", status="ready to train")
        for epoch in range(epochs):
            loss_sum, correct, seen, seconds, comm = 0.0, 0, 0, 0.0, 0.0
            batches = global_batches(n, batch_size, epoch, seed)
            for gb in batches:
                mine = my_slice(gb, rank, world)
                t0 = time.perf_counter()
                ls, c, cs = data_parallel_step(model, data.x_train[mine], data.y_train[mine], lr, world, avg)
                seconds += time.perf_counter() - t0
                loss_sum, correct, seen, comm = loss_sum + ls, correct + c, seen + len(mine), comm + cs
            stats.steps, stats.examples = stats.steps + len(batches), stats.examples + seen
            stats.train_seconds, stats.comm_seconds = stats.train_seconds + seconds, stats.comm_seconds + comm
            if rank == 0:  # training metrics of its own slices; examples of all processes
                val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
                link.report("epoch", EpochReport(epoch, loss_sum / seen, correct / seen, val_loss, val_acc, seconds,
                                                 len(batches), len(batches) * batch_size, comm),
                            status=f"finished epoch {epoch}")
            dist.barrier()  # the others wait for rank 0's evaluation here, not in the next step's timed all-reduce
        if rank == 0:
            link.report("test", evaluate(model, data.x_test, data.y_test)[1], status="evaluated the test set")
        return stats


# --- Hogwild: parameters in shared memory ------------------------------------------------------------------
def share_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Move ``model``'s parameters into shared memory; returns them by name, to hand to other processes."""
    return {name: p.data.share_memory_() for name, p in model.named_parameters()}


def attach_parameters(model: nn.Module, shared: dict[str, torch.Tensor]) -> nn.Module:
    """Point ``model``'s parameters at ``shared`` tensors (same storage: every process's writes are seen by all,
    with no lock — Hogwild's update is then just an ordinary optimizer step)."""
    for name, p in model.named_parameters():
        if shared[name].shape != p.shape:
            raise ValueError(f"shared parameter {name} has shape {tuple(shared[name].shape)}, the model "
                             f"{tuple(p.shape)}: build both from the same configuration")
        p.data = shared[name]
    return model
