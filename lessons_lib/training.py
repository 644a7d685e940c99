"""``fit``: the one training loop of the course, and the :class:`History` it returns.

Deterministic on the CPU for a given seed: the model is built by the caller after
:func:`lessons_lib.seeds.seed_everything`, and ``fit`` draws its shuffling and dropout randomness from
``seed``. Times are measured with :class:`lessons_lib.timing.Stopwatch` (device synchronized).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from tqdm.auto import tqdm

from .callbacks import Callback, TrainState
from .data import Splits
from .device import pick_device
from .history import History  # noqa: F401  (History is part of fit's contract)
from .seeds import get_seed, torch_generator
from .timing import Stopwatch
from .validate import check_float, check_int


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader yielding ``(x_batch, y_batch)`` slices of in-memory tensors, a whole batch per
    index lookup (much faster than per-sample collation for small rows)."""
    ds = TensorDataset(x, y)
    base = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode; restores the previous mode."""
    if len(x) == 0:
        raise ValueError("evaluate got an empty set")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    return loss_sum.item() / len(x), correct.item() / len(x)


def make_optimizer(name: str, params: Iterable, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """"adam", "adamw" or "sgd" (momentum 0.9)."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: choose adam, adamw or sgd")


def fit(
    model: nn.Module,
    data: Splits,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    eval_train: bool = False,
    progress: bool = False,
    config: dict | None = None,
) -> History:
    """Train ``model`` on ``data.x_train`` with cross-entropy; evaluate on ``data.x_val`` every epoch.

    ``device`` is a torch device or a kind for :func:`~lessons_lib.device.pick_device`. The model and
    the data are moved there. Returns a :class:`History`; the model is trained in place. The loop itself is
    :func:`train_loop`, shared with lessons that stream their batches from disk.
    """
    epochs, batch_size, lr, weight_decay = check_fit_args(epochs, batch_size, lr, weight_decay)
    if len(data.x_train) == 0:
        raise ValueError("fit got an empty training set: check the data split (e.g. subset_train(n) with n >= 1)")
    if len(data.x_val) == 0:
        raise ValueError("fit got an empty validation set: use a val_fraction > 0 when loading the data")
    check_model_fits_data(model, data)
    dev = pick_device(device)  # a torch.device too: a missing GPU gets the course's message
    seed = get_seed() if seed is None else seed
    model.to(dev)
    d = data.to(dev)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    loader = batches(d.x_train, d.y_train, batch_size, shuffle=True, generator=torch_generator(seed, stream=2))
    return train_loop(
        model, loader, optimizer=opt, device=dev, epochs=epochs, callbacks=callbacks, seed=seed,
        validate=lambda: evaluate(model, d.x_val, d.y_val),
        train_metrics=(lambda: evaluate(model, d.x_train, d.y_train)) if eval_train else None,
        progress=progress, config=config,
    )


def check_fit_args(epochs: object, batch_size: object, lr: object,
                   weight_decay: object) -> tuple[int, int, float, float]:
    """The training loop's numbers, checked and coerced (numpy scalars accepted, bools and NaN refused)."""
    return (check_int(epochs, "epochs", low=1, fix="train for at least one epoch"),
            check_int(batch_size, "batch_size", low=1, fix="examples per step, e.g. 128"),
            check_float(lr, "lr", low=0.0, low_open=True, fix="a learning rate such as 1e-3"),
            check_float(weight_decay, "weight_decay", low=0.0, fix="0 for none, e.g. 1e-4"))


@torch.no_grad()
def check_model_fits_data(model: nn.Module, data: Splits) -> None:
    """Raise a clear ValueError when ``model`` cannot take ``data``'s inputs or its labels exceed its outputs.

    One forward pass of two training examples (on the CPU copy, in eval mode; the mode is restored) finds a wrong
    input width before training starts, instead of torch's shape error from deep inside the loop."""
    for name in ("y_train", "y_val"):
        y = getattr(data, name)
        if y.dtype != torch.int64:
            raise ValueError(f"data.{name} has dtype {y.dtype}: class labels must be int64 (y.long())")
    was_training = model.training
    model.eval()
    try:
        first = next(model.parameters(), None)
        x = data.x_train[:2].to(first.device if first is not None else "cpu")
        out = model(x)
    except RuntimeError as e:
        raise ValueError(f"the model cannot take data.x_train's rows of shape {tuple(data.x_train.shape[1:])} "
                         f"({str(e).splitlines()[0][:120]}): build it with n_in={data.n_features}") from None
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"the model returns shape {tuple(out.shape)} for a batch of 2: it must return "
                         "(batch, classes) logits")
    n_out = out.shape[1]
    for name in ("y_train", "y_val"):
        y = getattr(data, name)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_out:
            raise ValueError(f"data.{name} holds labels {lo}..{hi} but the model has {n_out} outputs: labels must be "
                             f"in 0..{n_out - 1} (build the model with n_out={max(hi + 1, data.n_classes)})")


@torch.no_grad()
def evaluate_batches(model: nn.Module, loader: Iterable, device: torch.device | str) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over an iterable of ``(x, y)`` batches, in eval mode (mode restored)."""
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    n = 0
    for xb, yb in loader:
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        out = model(xb)
        loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
        n += len(yb)
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate_batches got no batches: is the validation loader empty?")
    return loss_sum.item() / n, correct.item() / n


def train_loop(
    model: nn.Module,
    train_batches: Iterable,
    *,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    epochs: int,
    validate: Callable[[], tuple[float, float]],
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    train_metrics: Callable[[], tuple[float, float]] | None = None,
    keep_grads: bool = False,
    progress: bool = False,
    config: dict | None = None,
) -> History:
    """The one training loop of the course, for any re-iterable of ``(x, y)`` batches (e.g. a DataLoader).

    Each epoch: train on every batch (moved to ``device``; a no-op when already there), then
    ``validate() -> (loss, acc)``. Train metrics are averaged over the epoch's batches, or come from
    ``train_metrics()`` when given. ``keep_grads``: zero gradients in place instead of freeing them (steadier
    memory, for memory measurements). Callbacks follow :mod:`lessons_lib.callbacks`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    seed = get_seed() if seed is None else seed
    history = History(config=dict(config or {}), device=str(device))
    try:
        steps_per_epoch = len(train_batches)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = 0  # unknown for a plain iterable
    state = TrainState(model=model, optimizer=optimizer, device=device, history=history, epochs=epochs,
                       steps_per_epoch=steps_per_epoch)
    want_batch_loss = any(cb.needs_batch_loss for cb in callbacks)
    torch.manual_seed(seed + 17)  # dropout and other in-model randomness: reproducible per seed
    for cb in callbacks:
        cb.on_train_begin(state)
    bar = tqdm(total=epochs, desc="epochs", disable=not progress, leave=False)
    try:
        for epoch in range(epochs):
            state.epoch = epoch
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            steps = seen = 0
            with Stopwatch(device) as sw:
                for xb, yb in train_batches:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    out = model(xb)
                    loss = nn.functional.cross_entropy(out, yb)
                    optimizer.zero_grad(set_to_none=not keep_grads)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    seen += len(yb)
                    state.step += 1
                    if train_metrics is None:
                        loss_sum += loss.detach() * len(yb)
                        correct += (out.detach().argmax(1) == yb).sum()
                    if want_batch_loss:
                        state.batch_loss = loss.item()
                    for cb in callbacks:
                        cb.on_batch_end(state)
                    if state.stop_training:
                        break
            if seen == 0:
                raise ValueError("the training batches were empty: check the data / loader")
            if train_metrics is not None:
                train_loss, train_acc = train_metrics()
            else:
                train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen
            val_loss, val_acc = validate()
            seconds = sw.seconds
            state.logs = {
                "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                "val_acc": val_acc, "seconds": seconds, "samples_per_s": seen / max(seconds, 1e-12),
                "step_seconds": seconds / max(steps, 1),
            }
            history.append(state.logs)
            history.steps = state.step
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
            if not state.stop_training:
                for cb in callbacks:
                    cb.on_epoch_end(state)
            if state.stop_training:
                break
    finally:
        bar.close()
        history.stop_reason = state.stop_reason
        for cb in callbacks:
            cb.on_train_end(state)
    return history
