"""How all-reduce cost grows with machines and model size: the α-β model, fitted here, used to predict a cluster.

A ring all-reduce of ``B`` bytes over ``n`` processes sends ``2(n-1)/n · B`` bytes per process in ``2(n-1)`` steps
(a reduce-scatter, then an all-gather), so with a per-step latency ``α`` (seconds) and a link bandwidth ``β``
(bytes per second)::

    t(n, B) = 2(n-1)/n · B/β + 2(n-1)·α

The bandwidth term hardly grows with n (it tends to 2B/β); the latency term grows linearly. :func:`measure` times
gloo all-reduces between real processes on this machine, :func:`fit` finds α and β by least squares on relative
error, and :func:`predict` uses the formula with a link's published bandwidth to say, on paper, how a step scales
to 8, 64 or 512 GPUs, and where a step's compute stops hiding its communication.

Sparse gradients (lesson 09's LSH layers: a fraction ``f`` of the rows) cannot be summed in a ring because the
processes' rows differ; they are all-gathered: each process receives ``(n-1)·f·B·(1+o)`` bytes (``o``: the row
indices sent along), which grows with n. Sparse beats dense only while ``n·f·(1+o) < 2``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .. import processes
from ..validate import check_float, check_int


@dataclass(frozen=True)
class Link:
    """A network a ring runs over: bandwidth per GPU per direction (bytes/s), per-step latency (s), the source."""

    name: str
    bandwidth: float
    latency: float
    source: str
    max_gpus: int | None = None  # a link inside one server reaches no further than that server


# Bandwidths are the published line rates (per GPU, per direction); latencies are typical orders of magnitude
# (assumed, not measured here): check them on a real cluster with nccl-tests' all_reduce_perf.
LINKS = (
    Link("NVLink 4 (inside one 8-GPU H100 server)", 450e9, 3e-6,
         "NVIDIA H100 datasheet: 900 GB/s NVLink per GPU, both directions together", max_gpus=8),
    Link("InfiniBand NDR 400 Gb/s", 50e9, 5e-6, "InfiniBand NDR: 400 Gb/s per port (e.g. NVIDIA ConnectX-7)"),
    Link("Ethernet 100 Gb/s", 12.5e9, 30e-6, "IEEE 802.3 100 Gb/s Ethernet"),
)


@dataclass(frozen=True)
class AllReduceTiming:
    processes: int
    nbytes: int
    seconds: float  # median over repeats of the slowest process


def _allreduce_worker(link: processes.Link, sizes: Sequence[int], repeats: int) -> list[float]:
    """Median seconds of an all-reduce of each size (float32 elements), measured between barriers."""
    torch.set_num_threads(1)
    with processes.process_group("gloo", link.init_method, link.rank, link.world_size, link.collective_timeout_s):
        out = []
        for n in sizes:
            buf = torch.ones(n)
            dist.all_reduce(buf)  # warm-up: connections, allocations
            times = []
            for _ in range(repeats):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                times.append(time.perf_counter() - t0)
            out.append(statistics.median(times))
        return out


def measure(process_counts: Sequence[int] = (2,), sizes_bytes: Sequence[int] = tuple(4 << (2 * i) for i in range(11)),
            repeats: int = 7, timeout_s: float = 60.0) -> list[AllReduceTiming]:
    """Time gloo all-reduces for every (process count, message size) between real processes on this machine."""
    repeats = check_int(repeats, "repeats", low=1, fix="timing repeats per size, e.g. 7")
    elements = [max(1, check_int(b, "sizes_bytes", low=4, fix="message sizes in bytes, >= 4") // 4)
                for b in sizes_bytes]
    out = []
    for n in process_counts:
        per_rank = processes.launch(_allreduce_worker, (elements, repeats), processes=n, timeout_s=timeout_s)
        for i, e in enumerate(elements):
            out.append(AllReduceTiming(n, 4 * e, max(r[i] for r in per_rank)))
    return out


@dataclass(frozen=True)
class AlphaBeta:
    """Fitted latency ``alpha`` (s), bandwidth ``beta`` (bytes/s) and the fit's relative error on its points."""

    alpha: float
    beta: float
    rms_relative_error: float
    max_relative_error: float
    points: int

    def seconds(self, processes: int, nbytes: float) -> float:
        """The model's all-reduce time for ``nbytes`` over ``processes`` in a ring."""
        return ring_seconds(processes, nbytes, self.beta, self.alpha)


def ring_seconds(n: int, nbytes: float, beta: float, alpha: float) -> float:
    """``2(n-1)/n · B/β + 2(n-1)·α`` (0 for one process)."""
    return 2 * (n - 1) / n * nbytes / beta + 2 * (n - 1) * alpha if n > 1 else 0.0


def sparse_allgather_seconds(n: int, nbytes: float, fraction: float, beta: float, alpha: float,
                             index_overhead: float) -> float:
    """All-gather of each process's sparse rows: ``(n-1)·f·B·(1+o)/β + (n-1)·α``."""
    return (n - 1) * fraction * nbytes * (1 + index_overhead) / beta + (n - 1) * alpha if n > 1 else 0.0


def fit(timings: Sequence[AllReduceTiming]) -> AlphaBeta:
    """Least squares of ``t = α·2(n-1) + (1/β)·2(n-1)/n·B`` on relative error (every size counts alike)."""
    rows = [t for t in timings if t.processes > 1]
    if len(rows) < 2:
        raise ValueError(f"fit needs at least 2 timings with >= 2 processes, got {len(rows)}")
    t = np.array([r.seconds for r in rows])
    a = np.array([[2 * (r.processes - 1), 2 * (r.processes - 1) / r.processes * r.nbytes] for r in rows])
    coef, *_ = np.linalg.lstsq(a / t[:, None], np.ones_like(t), rcond=None)
    alpha, inv_beta = (max(float(c), 1e-12) for c in coef)
    rel = a @ np.array([alpha, inv_beta]) / t - 1
    return AlphaBeta(alpha, 1 / inv_beta, float(np.sqrt(np.mean(rel ** 2))), float(np.max(np.abs(rel))), len(rows))


@dataclass(frozen=True)
class Prediction:
    """One cluster size on one link, for a model of ``gradient_bytes`` and ``compute_s`` of compute per step."""

    gpus: int
    link: str
    comm_s: float
    sparse_comm_s: float
    compute_s: float

    @property
    def step_s(self) -> float:
        """Step time if the all-reduce overlaps backward completely (DDP's buckets): the slower of the two."""
        return max(self.compute_s, self.comm_s)

    @property
    def efficiency(self) -> float:
        """Scaling efficiency: the fraction of the step spent computing (1.0 = communication fully hidden)."""
        return self.compute_s / self.step_s

    @property
    def hidden(self) -> bool:
        return self.comm_s <= self.compute_s


def step_compute_seconds(params: float, tokens_per_gpu: float, flops_per_s: float) -> float:
    """Forward + backward of a dense model: about 6 FLOPs per parameter per token (Kaplan et al. 2020)."""
    return 6 * params * tokens_per_gpu / flops_per_s


def predict(params: float = 1.3e9, bytes_per_grad: int = 2, tokens_per_gpu: float = 16_384,
            flops_per_s: float = 400e12, gpus: Sequence[int] = (8, 64, 512), links: Sequence[Link] = LINKS,
            sparse_fraction: float = 0.05) -> list[Prediction]:
    """On paper: data-parallel step time per GPU count and link (stated model, batch and sustained FLOP/s)."""
    params = check_float(params, "params", low=1, fix="the model's parameter count, e.g. 1.3e9")
    sparse_fraction = check_float(sparse_fraction, "sparse_fraction", low=0, high=1, low_open=True)
    nbytes = params * bytes_per_grad
    compute = step_compute_seconds(params, tokens_per_gpu, flops_per_s)
    out = []
    for n in gpus:
        for link in links:
            if link.max_gpus is not None and n > link.max_gpus:
                continue
            out.append(Prediction(n, link.name, ring_seconds(n, nbytes, link.bandwidth, link.latency),
                                  sparse_allgather_seconds(n, nbytes, sparse_fraction, link.bandwidth, link.latency,
                                                           index_overhead=0.0),  # 1 index per wide row
                                  compute))
    return out


def break_even_tokens(params: float, bytes_per_grad: int, link: Link, gpus: int, flops_per_s: float) -> float:
    """Tokens per GPU per step at which compute just hides the all-reduce (fewer: communication shows)."""
    comm = ring_seconds(gpus, params * bytes_per_grad, link.bandwidth, link.latency)
    return comm * flops_per_s / (6 * params)
