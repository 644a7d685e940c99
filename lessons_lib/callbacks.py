"""The callback contract of :func:`lessons_lib.training.fit` (small objects, Keras style).

``fit`` calls, in order::

    on_train_begin(state)
    for each epoch:  on_batch_end(state) after every optimizer step,  on_epoch_end(state)
    on_train_end(state)          # always, also after a stop or an exception inside the epoch loop

``state`` is a :class:`TrainState`. A callback stops training by setting ``state.stop_training = True``
(and ``state.stop_reason``); ``fit`` honours it after the current step. Callbacks must not change
``state.history``; they may change the model (e.g. restore best weights at the end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .validate import check_int

if TYPE_CHECKING:
    import torch

    from .history import History


@dataclass
class TrainState:
    """What a callback sees. ``logs`` holds the metrics of the epoch just finished (``on_epoch_end``)."""

    model: torch.nn.Module
    optimizer: Any
    device: torch.device
    history: History
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0  # optimizer steps so far, over all epochs
    batch_loss: float | None = None  # only filled when a callback asks for it (needs_batch_loss)
    logs: dict[str, float] = field(default_factory=dict)
    stop_training: bool = False
    stop_reason: str | None = None


class Callback:
    """Base class: every hook is a no-op. Set ``needs_batch_loss = True`` to get ``state.batch_loss``
    (it costs a device synchronization per step, so leave it off unless you display it)."""

    needs_batch_loss = False

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class StopAfterSteps(Callback):
    """Stop after ``n`` optimizer steps (used to cut long runs short, e.g. in tests)."""

    def __init__(self, n: int):
        self.n = check_int(n, "n", low=1, fix="the number of optimizer steps to run, e.g. 10")

    def on_batch_end(self, state: TrainState) -> None:
        if state.step >= self.n:
            state.stop_training = True
            state.stop_reason = f"stopped after {self.n} steps"
