"""Which devices exist, how to ask for one, and what hardware this is.

``pick_device("cpu" | "gpu" | "auto")``: "gpu" means CUDA if present, else Apple's MPS; asking for a
GPU that is not there raises :class:`DeviceUnavailableError`, whose message says what is missing and
how to get one. Code in this course moves tensors with ``.to(device)``, never ``.cuda()``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

import psutil
import torch

KINDS = ("cpu", "gpu", "auto")

GPU_HELP = (
    "No GPU is visible to PyTorch here ({why}). To get one: on a machine with an NVIDIA GPU install a "
    "CUDA build of torch (see the README, 'GPU and Apple-silicon users'); on an Apple-silicon Mac use "
    "the standard macOS wheel (it has MPS); or run the course on a cloud notebook with a GPU. "
    "Meanwhile use device='cpu' (or 'auto', which falls back to the CPU)."
)


class DeviceUnavailableError(RuntimeError):
    """A device was asked for that this machine or this torch build does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device strings usable here, CPU first: e.g. ``["cpu"]``, ``["cpu", "cuda"]``, ``["cpu", "mps"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available():
        devices.append("mps")
    return devices


def gpu_unavailable_reason() -> str | None:
    """None when a GPU is usable; otherwise one sentence saying why not."""
    if torch.cuda.is_available() or _mps_available():
        return None
    if torch.version.cuda is None and platform.system() != "Darwin":
        return f"this torch {torch.__version__} is a CPU-only build and no CUDA device is visible"
    if torch.version.cuda is not None:
        return f"torch {torch.__version__} was built with CUDA {torch.version.cuda} but finds no GPU or driver"
    return "torch finds no MPS device (needs Apple silicon and macOS 12.3+)"


def pick_device(kind: str = "auto") -> torch.device:
    """Return the device for ``kind``: "cpu", "gpu" (CUDA, else MPS), "auto" (a GPU if any, else CPU).

    Explicit torch device strings ("cuda:1", "mps") are accepted too. Raises
    :class:`DeviceUnavailableError` for a GPU that is not there and ValueError for an unknown kind.
    """
    if isinstance(kind, torch.device):
        kind = str(kind)
    k = str(kind).strip().lower()
    if k == "cpu":
        return torch.device("cpu")
    if k in ("gpu", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        if k == "auto":
            return torch.device("cpu")
        raise DeviceUnavailableError(GPU_HELP.format(why=gpu_unavailable_reason()))
    if k.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(GPU_HELP.format(why=gpu_unavailable_reason()))
        dev = torch.device(k)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"{k} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist: use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return dev
    if k == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(GPU_HELP.format(why=gpu_unavailable_reason()))
        return torch.device("mps")
    raise ValueError(f"unknown device kind {kind!r}: use one of {', '.join(KINDS)} (or 'cuda:N', 'mps')")


def synchronize(device: torch.device | str) -> None:
    """Wait until all queued work on ``device`` is done (no-op on the CPU). Call before reading a clock.

    A GPU that is not there raises :class:`DeviceUnavailableError` (how to get one), not torch's assertion."""
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i['internal_api']} ({i['num_threads']} threads)" for i in threadpool_info()]
        return ", ".join(sorted(set(libs))) or "unknown"
    except Exception:  # threadpoolctl missing or failing: not worth crashing a report
        return "unknown"


@dataclass
class HardwareReport:
    """What this machine offers the course. ``str(report)`` prints a small table."""

    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    memory_gb: float
    torch_version: str
    torch_threads: int
    numpy_blas: str
    devices: list[str]
    gpus: list[dict] = field(default_factory=list)
    gpu_reason: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("CPU", self.cpu_model),
            ("cores (physical / logical)", f"{self.physical_cores} / {self.logical_cores}"),
            ("memory", f"{self.memory_gb:.1f} GB"),
            ("torch", f"{self.torch_version}, {self.torch_threads} intra-op threads"),
            ("numpy BLAS", self.numpy_blas),
            ("devices", ", ".join(self.devices)),
        ]
        for g in self.gpus:
            rows.append((f"GPU {g['index']}", f"{g['name']}, {g['memory_gb']:.1f} GB"))
        if self.gpu_reason:
            rows.append(("GPU", f"none: {self.gpu_reason}"))
        return rows

    def machine(self) -> str:
        """One line naming where a measurement was made: CPU, cores, torch build, GPU."""
        gpu = ", ".join(g["name"] for g in self.gpus) or "no GPU"
        return f"{self.cpu_model}, {self.logical_cores} logical cores, torch {self.torch_version}, {gpu}"

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())


def hardware_report() -> HardwareReport:
    """One call: CPU model and cores, memory, torch and BLAS threads, GPU names and memory."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gb": p.total_memory / 1e9})
    elif _mps_available():
        gpus.append({"index": 0, "name": "Apple MPS", "memory_gb": psutil.virtual_memory().total / 1e9})
    return HardwareReport(
        cpu_model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=os.cpu_count() or 1,
        memory_gb=psutil.virtual_memory().total / 1e9,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        numpy_blas=_blas_info(),
        devices=available_devices(),
        gpus=gpus,
        gpu_reason=gpu_unavailable_reason(),
    )
