"""Early stopping from scratch, with Keras 3 semantics (``keras.callbacks.EarlyStopping``): the file to read
after lesson 02. Usable on its own (:meth:`EarlyStopping.step`, one value per epoch) or as a
:class:`~lessons_lib.callbacks.Callback` of :func:`~lessons_lib.training.fit`.

The rules, per value of the monitored quantity:

* **direction**: ``mode="min"`` (a loss), ``"max"`` (an accuracy), or ``"auto"`` (the default, as in Keras 3):
  decided from the name of ``monitor`` (:func:`direction_of`: "val_loss" is minimized, "val_acc" maximized).
* **improvement** in ``mode="min"``: ``value < best - |min_delta|`` (strictly); in ``mode="max"``:
  ``value > best + |min_delta|``. The first value always improves (Keras 3 starts with no best at all; ``best``
  shows +inf or -inf until then). ``best`` and ``best_epoch`` change only on an improvement.
* ``wait`` counts epochs since the last improvement: +1 every epoch, back to 0 on an improvement, unless a
  ``baseline`` is set and the value does not also beat the baseline (then the model has to beat the baseline
  within ``patience`` epochs).
* **stop** at an epoch without improvement once ``wait >= patience``. ``patience=0`` and ``patience=1`` both
  stop at the first epoch without improvement.
* ``restore_best_weights=True``: a copy of the weights is kept at each improvement and loaded back into the
  model when training ends (Keras 3 does this at the end of training, stopped early or not).
* a NaN after the first epoch is never an improvement (every comparison with it is false), so a run whose loss
  turns NaN stops ``patience`` epochs later, as in Keras 3, which has no NaN rule of its own (stopping at once is
  ``TerminateOnNaN``'s job). A NaN at the first epoch becomes the best, and nothing beats it afterwards.

Bad settings are refused with a message naming the fix (:mod:`lessons_lib.validate`: numpy scalars are numbers,
bools are not; a NaN or infinite ``min_delta`` or ``baseline`` is refused). A negative ``min_delta`` counts as its
absolute value, as in Keras 3. One refusal is stricter than Keras 3: an unknown ``mode`` raises here, where Keras
warns and falls back to "auto".

Seed 004 of the course: "patience = K: terminate training when validation loss has no improvement in the
past K epochs; min_delta = 0.01: only an improvement greater than 0.01 counts".
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import torch

from ..callbacks import Callback, TrainState
from ..validate import BadArgument, check_choice, check_float, check_int

MODES = ("auto", "min", "max")
UP = ("acc", "auc", "precision", "recall", "f1", "iou")  # in a name: a quantity to maximize (Keras's "up" metrics)
DOWN = ("loss", "error", "crossentropy", "hinge", "mse", "mae")  # ...and to minimize


def direction_of(monitor: str, mode: str = "auto") -> str:
    """"min" or "max": ``mode`` itself, or for ``mode="auto"`` the direction Keras 3 gives the quantity named
    ``monitor``: the loss (any name ending in "loss") is minimized, accuracy-like metrics ("acc", "auc",
    "precision", ...) are maximized, error-like ones minimized. Keras 3 reads the direction off the metric
    object; the course's logs carry names only, so a name that says neither raises, as Keras 3 does for a metric
    it cannot place."""
    if not isinstance(monitor, str) or not monitor:
        raise BadArgument(f"EarlyStopping monitor={monitor!r:.60}: must be the name of a logged quantity, e.g. "
                          "'val_loss' or 'val_acc'")
    mode = check_choice(mode, "EarlyStopping mode", MODES)
    if mode != "auto":
        return mode
    name = monitor.lower().removeprefix("val_").removeprefix("train_")
    if name.endswith("loss"):
        return "min"
    if any(k in name for k in UP):
        return "max"
    if any(k in name for k in DOWN):
        return "min"
    raise BadArgument(f"EarlyStopping monitor={monitor!r} with mode='auto': cannot tell whether {monitor!r} should "
                      "be maximized or minimized; pass mode='max' (e.g. an accuracy) or mode='min' (e.g. a loss)")


def _as_value(value: object, monitor: str) -> float:
    """One epoch's value of the monitored quantity as a float: a number, or a one-element tensor/array (NaN and
    inf pass: they are part of the rules above); a bool, a string or several numbers are refused."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and np.prod(value.shape, dtype=int) == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise BadArgument(f"EarlyStopping got {monitor}={value!r:.60}: one number per epoch is needed (the epoch's "
                          f"{monitor}), got {type(value).__name__}")
    return float(value)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Attributes after each :meth:`step`: ``best`` (the value of the last improvement), ``best_epoch`` (its
    0-based index, -1 before any), ``wait`` (epochs since it), ``stopped_epoch`` (index of the epoch that
    stopped training, or None), ``stop_reason``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        patience: int = 0,
        restore_best_weights: bool = False,
        baseline: float | None = None,
    ):
        self.direction = direction_of(monitor, mode)  # "min" or "max": what mode="auto" resolves to
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(check_float(min_delta, "EarlyStopping min_delta",  # Keras 3 takes |min_delta| too
                                         fix="the smallest change that counts as an improvement, e.g. 0.01"))
        self.patience = check_int(patience, "EarlyStopping patience", low=0,
                                  fix="the number of epochs without improvement to wait, e.g. 3")
        if not isinstance(restore_best_weights, (bool, np.bool_)):
            raise BadArgument(f"EarlyStopping restore_best_weights={restore_best_weights!r}: must be True or False")
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = None if baseline is None else check_float(
            baseline, "EarlyStopping baseline", fix="a value the monitored quantity must beat, or None")
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (also done at the start of each ``fit``)."""
        self.best = math.inf if self.direction == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.epoch = -1
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored = False

    def is_improvement(self, value: float, reference: float) -> bool:
        """True when ``value`` beats ``reference`` by more than ``min_delta`` (strictly)."""
        if self.direction == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def step(self, value: float, model: torch.nn.Module | None = None) -> bool:
        """Record the next epoch's ``value``; return True when training should stop now.

        With ``restore_best_weights`` and a ``model``, the best weights are copied on improvement and
        put back into the model when this call decides to stop.
        """
        value = _as_value(value, self.monitor)
        self.epoch += 1
        if self.stopped_epoch is not None:
            return True
        self.wait += 1
        if self.best_epoch < 0 or self.is_improvement(value, self.best):
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
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r} ({self.direction}), "
                f"min_delta={self.min_delta:g}, "
                f"patience={self.patience}, restore_best_weights={self.restore_best_weights}, "
                f"baseline={self.baseline})")
