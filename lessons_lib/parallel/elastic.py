"""A training script that outgrows one machine: the standard pieces, each a few lines.

Started by ``torchrun``, on one machine or several (the same command on each, with its ``--node-rank``)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 1 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:PORT --max-restarts 1 -m lessons_lib.parallel.elastic --out run/

* **Who am I.** torchrun sets ``RANK`` (0..WORLD_SIZE-1 over all machines), ``LOCAL_RANK`` (0.. on this machine)
  and ``WORLD_SIZE``. A process's GPU is ``cuda:LOCAL_RANK``: the global rank names a GPU that does not exist on
  the second machine. Collectives use NCCL on GPUs and gloo on CPUs; the code is the same.
* **The data, the standard way.** :class:`~torch.utils.data.DistributedSampler` gives each process a disjoint
  shard of a permutation drawn from ``seed + epoch``; ``set_epoch`` must be called every epoch, or every epoch
  sees the same order. ``drop_last=True`` drops the tail that does not divide evenly; ``False`` pads it by
  repeating examples (so a few count twice).
* **Checkpoint and elastic restart.** After every epoch rank 0 writes model, optimizer, the next epoch and the RNG
  states to ``out/checkpoint.pt`` through a temporary file and a rename (a kill mid-write leaves the previous
  checkpoint). When a process dies, ``torchrun --max-restarts N`` stops the others and starts them all again;
  each resumes from the checkpoint (loaded with ``weights_only=True``: tensors and plain containers, no code),
  so at most the epoch in progress is lost.
* **Gradient accumulation.** ``--accumulate k`` runs k micro-batches per step inside ``ddp.no_sync()`` (no
  all-reduce) for the first k-1: one all-reduce per k micro-batches, so the bytes sent per example fall by k.
* **Sharded optimizer state.** ``--zero`` wraps the optimizer in
  :class:`~torch.distributed.optim.ZeroRedundancyOptimizer`: each process keeps the Adam moments of about 1/N of
  the parameters and broadcasts its updated share after the step.

At the end rank 0 writes the final weights to ``out/final.pt`` and a JSON summary to ``out/summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..cache import atomic_open
from ..data import load
from ..models import mlp
from ..processes import free_port, process_group

CHECKPOINT, FINAL, SUMMARY = "checkpoint.pt", "final.pt", "summary.json"


def who_am_i() -> tuple[int, int, int, torch.device]:
    """(rank, local_rank, world_size, device) from torchrun's environment; the device is ``cuda:LOCAL_RANK``
    where CUDA exists (never ``cuda:RANK``), else the CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, local_rank, world, device


def shard_loader(dataset: TensorDataset, rank: int, world: int, batch_size: int, seed: int,
                 drop_last: bool = True) -> tuple[DataLoader, DistributedSampler]:
    """This process's loader over its shard. Call ``sampler.set_epoch(epoch)`` before every epoch."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler), sampler


def epoch_shards(n: int, world: int, epoch: int, seed: int, *, drop_last: bool = True,
                 set_epoch: bool = True) -> list[list[int]]:
    """The example indices each of ``world`` processes gets in ``epoch`` (no process group needed): what the
    samplers of a run hand out. Without ``set_epoch`` every epoch repeats epoch 0's order."""
    shards = []
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
        if set_epoch:
            sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of tensors this process holds in the optimizer's state (Adam: two moments per parameter it owns)."""
    inner = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt
    return sum(t.numel() * t.element_size() for s in inner.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def save_checkpoint(path: Path, ddp: DDP, opt: torch.optim.Optimizer, next_epoch: int, rank: int) -> None:
    """Every process calls this (ZeRO gathers its shards onto rank 0 first); rank 0 writes atomically."""
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt.consolidate_state_dict(to=0)
    if rank == 0:
        state = {"model": ddp.module.state_dict(), "optimizer": opt.state_dict(), "next_epoch": next_epoch,
                 "torch_rng": torch.get_rng_state()}  # the sampler's order is a function of (seed, epoch)
        with atomic_open(path) as f:
            torch.save(state, f)
    dist.barrier()  # nobody starts the next epoch (and may crash in it) before the checkpoint is on disk


def load_checkpoint(path: Path, ddp: DDP, opt: torch.optim.Optimizer) -> int:
    """Restore model, optimizer and RNG states on every process; return the epoch to start from (0 if none)."""
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    ddp.module.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["next_epoch"])


def _crash_here(args: argparse.Namespace, rank: int, epoch: int, step: int) -> bool:
    return args.attempt == 0 and (rank, epoch, step) == (args.crash_rank, args.crash_epoch, args.crash_step)


def train(args: argparse.Namespace) -> dict:
    """One process of the job: join the group, train (resuming from a checkpoint if there is one), leave."""
    rank, local_rank, world, device = who_am_i()
    store, args.attempt = attempt_store(rank, world, args.timeout)
    # the group is left in the order that cannot deadlock: DDP (built in _train) is freed first
    with process_group("nccl" if device.type == "cuda" else "gloo", None, rank, world, args.timeout, store=store):
        return _train(args, rank, local_rank, world, device)


def attempt_store(rank: int, world: int, timeout_s: float) -> tuple[dist.Store, int]:
    """The rendezvous store torchrun set up (MASTER_ADDR:MASTER_PORT), its keys prefixed by the job's attempt,
    and that attempt (0 for the first start, 1 after the first restart, ...).

    After a restart the new processes meet in the same store; without the prefix a process can read the address
    its peer's previous incarnation published there and try to connect to a dead process (gloo: "connectFullMesh
    failed ... Connection refused"), which we saw in about 2 restarts of 3. The attempt is counted in the store
    itself (every process adds 1 as it joins), because torchrun's TORCHELASTIC_RESTART_COUNT is per machine:
    a machine restarted only because another one failed keeps its count."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
                         is_master=rank == 0 and not agent_hosts_it, timeout=timedelta(seconds=timeout_s),
                         wait_for_workers=False)
    attempt = (base.add("lessons/joins", 1) - 1) // world
    return dist.PrefixStore(f"lessons/attempt{attempt}", base), attempt


def launched_worker(link, argv: Sequence[str]) -> dict:
    """The same training, started by :func:`lessons_lib.processes.launch` instead of torchrun (the notebook's
    quick runs: no torchrun start-up, the fork server already warm). CPU only."""
    args = parse(argv)
    args.attempt = int(args.attempt_of_launch)
    with process_group("gloo", link.init_method, link.rank, link.world_size, args.timeout):
        return _train(args, link.rank, link.rank, link.world_size, torch.device("cpu"))


def _train(args: argparse.Namespace, rank: int, local_rank: int, world: int, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    d = load("mnist1d", seed=args.seed)
    dataset = TensorDataset(d.x_train, d.y_train)
    loader, sampler = shard_loader(dataset, rank, world, args.batch_size, args.seed,
                                   drop_last=not args.pad)
    model = mlp(d.n_features, [args.width] * args.depth, d.n_classes).to(device)
    ddp = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    sent = {"bytes": 0, "allreduces": 0}

    def counting_allreduce(state, bucket):  # DDP inspects a hook's annotations, so it has none
        sent["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
        sent["allreduces"] += 1
        return dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future().then(
            lambda fut: fut.value()[0])

    ddp.register_comm_hook(None, counting_allreduce)
    if args.zero:
        opt: torch.optim.Optimizer = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.Adam,
                                                             lr=args.lr)
    else:
        opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    out = Path(args.out)
    start = load_checkpoint(out / CHECKPOINT, ddp, opt)
    loss_fn, examples, t0 = nn.CrossEntropyLoss(), 0, time.perf_counter()
    for epoch in range(start, args.epochs):
        if not args.no_set_epoch:
            sampler.set_epoch(epoch)
        micro = list(loader)
        for step in range(0, len(micro) - args.accumulate + 1, args.accumulate):
            if _crash_here(args, rank, epoch, step):
                os._exit(17)  # as a killed process: no cleanup, no goodbye to the group
            opt.zero_grad(set_to_none=True)
            for i, (xb, yb) in enumerate(micro[step: step + args.accumulate]):
                last = i == args.accumulate - 1
                with ddp.no_sync() if not last else contextlib.nullcontext():
                    (loss_fn(ddp(xb.to(device)), yb.to(device)) / args.accumulate).backward()
                examples += len(xb)
            opt.step()
        save_checkpoint(out / CHECKPOINT, ddp, opt, epoch + 1, rank)
    summary = {"rank": rank, "local_rank": local_rank, "world_size": world, "device": str(device),
               "start_epoch": start, "restarts": args.attempt,
               "examples": examples, "allreduce_bytes": sent["bytes"], "allreduces": sent["allreduces"],
               "optimizer_state_bytes": optimizer_state_bytes(opt), "seconds": time.perf_counter() - t0,
               "first_indices": list(sampler)[:8]}
    gathered: list[dict | None] = [None] * world
    dist.all_gather_object(gathered, summary)
    if rank == 0:
        with atomic_open(out / FINAL) as f:
            torch.save(ddp.module.state_dict(), f)
        with atomic_open(out / SUMMARY) as f:
            f.write(json.dumps(gathered, indent=1).encode())
    return summary


def torchrun_commands(script_args: Sequence[str], *, nodes: int = 1, procs_per_node: int = 2, port: int,
                      max_restarts: int = 0, host: str = "127.0.0.1") -> list[list[str]]:
    """The torchrun command of each "machine" (one per node; on a cluster each runs on its own host with HOST
    the address of node 0). Here the nodes are launchers on this box, meeting at ``host:port``."""
    cmds = []
    for node in range(nodes):
        cmds.append([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(node),
                     "--nproc-per-node", str(procs_per_node), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", f"{host}:{port}", "--rdzv-id", f"lessons-{port}",
                     "--max-restarts", str(max_restarts), "--monitor-interval", "0.5",
                     "-m", "lessons_lib.parallel.elastic", *script_args])
    return cmds


def run_torchrun(script_args: Sequence[str], *, nodes: int = 1, procs_per_node: int = 2, max_restarts: int = 0,
                 timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start every node's torchrun at once and wait for all; returns their completed processes (stdout/stderr
    captured). One thread per OMP pool keeps 2 cores from being oversubscribed."""
    cmds = torchrun_commands(script_args, nodes=nodes, procs_per_node=procs_per_node, port=free_port(),
                             max_restarts=max_restarts)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    out = []
    try:
        for p, cmd in zip(procs, cmds):
            so, se = p.communicate(timeout=timeout)
            out.append(subprocess.CompletedProcess(cmd, p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="torchrun ... -m lessons_lib.parallel.elastic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for checkpoint.pt, final.pt and summary.json")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="micro-batch per process")
    ap.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step (no_sync)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2, help="hidden layers")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("LESSONS_SEED", "0")))
    ap.add_argument("--timeout", type=float, default=120, help="seconds a collective waits for the others")
    ap.add_argument("--zero", action="store_true", help="shard Adam's state with ZeroRedundancyOptimizer")
    ap.add_argument("--pad", action="store_true", help="DistributedSampler(drop_last=False): pad, not drop")
    ap.add_argument("--no-set-epoch", action="store_true", help="forget sampler.set_epoch (to see what breaks)")
    ap.add_argument("--attempt-of-launch", type=int, default=0, help=argparse.SUPPRESS)  # launched_worker only
    ap.add_argument("--crash-rank", type=int, default=-1, help="this rank exits abruptly (first attempt only)")
    ap.add_argument("--crash-epoch", type=int, default=-1)
    ap.add_argument("--crash-step", type=int, default=0)
    a = ap.parse_args(argv)
    for name in ("epochs", "batch_size", "accumulate", "width", "depth"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if not a.lr > 0:
        ap.error(f"--lr must be > 0, got {a.lr}")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    if "RANK" not in os.environ:
        print("start me with torchrun, e.g.\n  torchrun --standalone --nproc-per-node 2 "
              "-m lessons_lib.parallel.elastic --out run/", file=sys.stderr)
        return 2
    train(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
