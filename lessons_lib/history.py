"""``History``: the per-epoch record of one training run (what :func:`lessons_lib.training.fit` returns and
what a :class:`~lessons_lib.callbacks.Callback` reads through its ``TrainState``)."""

from __future__ import annotations

from dataclasses import dataclass, field

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "samples_per_s", "step_seconds")


@dataclass
class History:
    """Per-epoch metrics of one run. Losses are mean cross-entropy (nats), accuracies in [0, 1],
    ``seconds`` is the training time of the epoch (evaluation excluded), ``step_seconds`` = seconds /
    optimizer steps. ``train_*`` are averaged over the epoch's batches in training mode unless ``fit``
    was called with ``eval_train=True``."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    device: str = "cpu"
    steps: int = 0
    stop_reason: str | None = None
    best_epoch: int | None = None

    def append(self, logs: dict[str, float]) -> None:
        self.epoch.append(int(logs["epoch"]))
        for k in METRICS:
            getattr(self, k).append(float(logs[k]))

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def best(self, metric: str = "val_acc", mode: str = "max") -> tuple[int, float]:
        """(epoch index, value) of the best ``metric``."""
        values = getattr(self, metric)
        if not values:
            raise ValueError("empty history: no epoch was run")
        pick = max if mode == "max" else min
        i = pick(range(len(values)), key=values.__getitem__)
        return i, values[i]

    def first_epoch_reaching(self, metric: str, target: float, mode: str = "max") -> int | None:
        """Index of the first epoch whose ``metric`` reaches ``target`` (>= for max, <= for min), else None."""
        for i, v in enumerate(getattr(self, metric)):
            if (v >= target) if mode == "max" else (v <= target):
                return i
        return None

    def summary(self) -> dict[str, float | int | str | None]:
        """The numbers a runs table shows."""
        if not self.epoch:
            return {"epochs": 0}
        bi, bv = self.best("val_acc")
        return {
            "device": self.device,
            "epochs": len(self),
            "train_acc": self.train_acc[-1],
            "val_acc": self.val_acc[-1],
            "best_val_acc": bv,
            "best_epoch": bi,
            "step_ms": 1e3 * sorted(self.step_seconds)[len(self.step_seconds) // 2],
            "samples_per_s": sorted(self.samples_per_s)[len(self.samples_per_s) // 2],
            "seconds": self.total_seconds,
            "stop": self.stop_reason or "",
        }
