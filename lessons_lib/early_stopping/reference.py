"""Early stopping from scratch, with Keras 3 semantics (``keras.callbacks.EarlyStopping``): the file to read
after lesson 02. Usable on its own (:meth:`EarlyStopping.step`, one value per epoch) or as a
:class:`~lessons_lib.callbacks.Callback` of :func:`~lessons_lib.training.fit`.

The rules, per value of the monitored quantity:

* **improvement** in ``mode="min"``: ``value < best - |min_delta|`` (strictly); in ``mode="max"``:
  ``value > best + |min_delta|``. ``best`` starts at +inf (min) or -inf (max), so the first finite value
  always improves. ``best`` and ``best_epoch`` change only on an improvement.
* ``wait`` counts epochs since the last improvement: +1 every epoch, back to 0 on an improvement, unless a
  ``baseline`` is set and the value does not also beat the baseline (then the model has to beat the baseline
  within ``patience`` epochs).
* **stop** at an epoch without improvement once ``wait >= patience``. ``patience=0`` and ``patience=1`` both
  stop at the first epoch without improvement.
* ``restore_best_weights=True``: a copy of the weights is kept at each improvement and loaded back into the
  model when training ends (Keras 3 does this at the end of training, stopped early or not).
* a NaN or infinite value stops at once (the course's addition: Keras needs ``TerminateOnNaN`` for that).

Seed 004 of the course: "patience = K: terminate training when validation loss has no improvement in the
past K epochs; min_delta = 0.01: only an improvement greater than 0.01 counts".
"""

from __future__ import annotations

import copy
import math

import torch

from ..callbacks import Callback, TrainState

MODES = ("min", "max")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Attributes after each :meth:`step`: ``best`` (the value of the last improvement), ``best_epoch`` (its
    0-based index, -1 before any), ``wait`` (epochs since it), ``stopped_epoch`` (index of the epoch that
    stopped training, or None), ``stop_reason``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        min_delta: float = 0.0,
        patience: int = 0,
        restore_best_weights: bool = False,
        baseline: float | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r} "
                             "(use 'min' for a loss, 'max' for an accuracy)")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"EarlyStopping patience must be an integer >= 0 (epochs to wait), got {patience!r}")
        if not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping min_delta must be a finite number, got {min_delta!r}")
        if baseline is not None and not math.isfinite(baseline):
            raise ValueError(f"EarlyStopping baseline must be finite or None, got {baseline!r}")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (also done at the start of each ``fit``)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.epoch = -1
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored = False

    def is_improvement(self, value: float, reference: float) -> bool:
        """True when ``value`` beats ``reference`` by more than ``min_delta`` (strictly)."""
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def step(self, value: float, model: torch.nn.Module | None = None) -> bool:
        """Record the next epoch's ``value``; return True when training should stop now.

        With ``restore_best_weights`` and a ``model``, the best weights are copied on improvement and
        put back into the model when this call decides to stop.
        """
        value = float(value)
        self.epoch += 1
        if self.stopped_epoch is not None:
            return True
        if not math.isfinite(value):
            self.stopped_epoch = self.epoch
            self.stop_reason = f"{self.monitor} became {value} at epoch {self.epoch}"
            self._restore(model)
            return True
        self.wait += 1
        if self.is_improvement(value, self.best):
            self.best, self.best_epoch = value, self.epoch
            if self.restore_best_weights and model is not None:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.baseline is None or self.is_improvement(value, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and self.epoch > 0:
            self.stopped_epoch = self.epoch
            self.stop_reason = (f"no improvement of {self.monitor} by more than {self.min_delta:g} for "
                                f"{self.wait} epoch(s); best {self.best:.4g} at epoch {self.best_epoch}")
            self._restore(model)
            return True
        return False

    def _restore(self, model: torch.nn.Module | None) -> None:
        if self.restore_best_weights and model is not None and self.best_weights is not None:
            model.load_state_dict(copy.deepcopy(self.best_weights))
            self.restored = True

    # --- the Callback side -------------------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        self.reset()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.monitor not in state.logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r} but fit logs only "
                           f"{sorted(state.logs)}: pick one of those")
        if self.step(state.logs[self.monitor], state.model):
            state.stop_training = True
            state.stop_reason = self.stop_reason

    def on_train_end(self, state: TrainState) -> None:
        if not self.restored:
            self._restore(state.model)
        state.history.best_epoch = self.best_epoch

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, min_delta={self.min_delta:g}, "
                f"patience={self.patience}, restore_best_weights={self.restore_best_weights}, "
                f"baseline={self.baseline})")
