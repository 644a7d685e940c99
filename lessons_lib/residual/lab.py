"""Lesson 06's apparatus: the dead-layer experiment (one backward pass), the per-layer gradient-norm recorder,
the panel's experiment, the live panel and the claims table. The training runs repeated over seeds (plain, He-
initialized plain and residual nets of growing depth; the degradation problem; a dead layer through training; the
small ResNet) are in :mod:`.runs` and re-exported here; figures are in :mod:`.plots`.

Every experiment takes the ``block_forward`` its residual blocks run and the ``gradient_norms`` it measures with
(the learner's once they pass their checks; None: :mod:`.reference`'s).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..seeds import check_seed, get_seed, seed_everything
from ..stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, mean_interval, paired_interval, verdict
from ..training import History, check_fit_args, fit
from ..validate import check_choice
from . import reference
from .reference import BlockForward, deep_mlp, weight_layers
from .runs import (  # noqa: F401  (re-exported: the notebook reaches every experiment through lab)
    LABELS,
    PROBE,
    TREATMENTS,
    BlockRuns,
    DeadTraining,
    Degradation,
    DepthSweep,
    GradientNorms,
    basicblock_experiment,
    check_functions,
    dead_block_index,
    dead_layer_training,
    degradation,
    depth_sweep,
    flat_plain,
    he_init,
)

SOURCE = "seed 004 ('Residual Block / Skip Connection')"
PAPER = "He et al. 2016"


class GradNormRecorder(Callback):
    """Per-layer gradient norms of a model during :func:`~lessons_lib.training.fit`, measured with ``norms`` (a
    ``gradient_norms(model, x, y)``) on a fixed probe batch ``(x, y)``: once before the first step (``at_init``)
    and after every epoch (``after_epoch``, one array per epoch, also for an epoch cut short). The probe pass
    runs outside the timed part of the epoch; ``layer_names`` labels the layers, input side first."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, norms: GradientNorms | None = None):
        self.x, self.y = x, y
        self.norms = reference.gradient_norms if norms is None else norms
        self.layer_names: list[str] = []
        self.at_init: np.ndarray | None = None
        self.after_epoch: list[np.ndarray] = []

    def measure(self, model: nn.Module, device: torch.device | str) -> np.ndarray:
        return np.array([float(v) for v in self.norms(model, self.x.to(device), self.y.to(device))])

    def on_train_begin(self, state: TrainState) -> None:
        self.layer_names = [n for n, _ in weight_layers(state.model)]
        self.at_init, self.after_epoch = self.measure(state.model, state.device), []

    def on_epoch_end(self, state: TrainState) -> None:
        self.after_epoch.append(self.measure(state.model, state.device))

    def on_train_end(self, state: TrainState) -> None:
        if len(self.after_epoch) < len(state.history):  # a run stopped mid-epoch keeps its last epoch
            self.on_epoch_end(state)


def experiment(*, device: str = "cpu", callbacks: Sequence = (), n_blocks: int = 8, residual: bool = True,
               width: int = 64, lr: float = 0.05, epochs: int = 8, batch_size: int = 64, optimizer: str = "sgd",
               batchnorm: bool = False, init: str = "default", dataset: str = "digits", seed: int | None = None,
               block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None) -> History:
    """The panel's experiment: a plain or residual :func:`.reference.deep_mlp` of ``n_blocks`` blocks trained on
    ``dataset``, ``init`` "default" (PyTorch's) or "he" (:func:`.runs.he_init`). A :class:`GradNormRecorder` rides
    along: ``history.config["grad_norms"]`` is it."""
    check_choice(init, "init", ("default", "he"))
    check_fit_args(epochs, batch_size, lr, 0.0)
    check_functions(block_forward, gradient_norms)
    seed = get_seed() if seed is None else check_seed(seed)
    data = load(dataset, seed=seed)
    seed_everything(seed)
    model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual, batchnorm=batchnorm,
                     block_forward=block_forward)
    if init == "he":
        he_init(model)
    rec = GradNormRecorder(data.x_train[:PROBE], data.y_train[:PROBE], gradient_norms)
    cfg = {"n_blocks": n_blocks, "residual": residual, "width": width, "lr": lr, "optimizer": optimizer,
           "batchnorm": batchnorm, "init": init}
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
            callbacks=[rec, *callbacks], seed=seed, config=cfg)
    h.config["grad_norms"] = rec
    h.config["model"] = model
    return h


@dataclass
class DeadLayer:
    """Per-layer gradient norms of a plain and a residual net whose block ``dead_block`` has all-zero weights
    in its second layer, and of the same plain net with no dead layer (``plain_alive``). ``dead_layer`` indexes
    that layer in ``layer_names``; ``block_start`` the block's first layer."""

    layer_names: list[str]
    dead_block: int
    dead_layer: int
    block_start: int
    plain: np.ndarray
    residual: np.ndarray
    plain_alive: np.ndarray

    def before(self, which: str) -> np.ndarray:
        """Norms of the layers before the dead block (input side): the seed's "earlier layers"."""
        return getattr(self, which)[: self.block_start]


def dead_layer_experiment(n_blocks: int = 4, dead_block: int | None = None, width: int = 64,
                          dataset: str = "digits", seed: int | None = None, block_forward: BlockForward | None = None,
                          gradient_norms: GradientNorms | None = None) -> DeadLayer:
    """The seed's claim, measured: zero the weight and bias of ``layer2`` in block ``dead_block`` (default: the
    middle one) of a plain and a residual net built with the same seed, then take one backward pass on a training
    batch (256 examples) and record the gradient norm of every layer."""
    seed = get_seed() if seed is None else check_seed(seed)
    n_blocks, dead_block = dead_block_index(n_blocks, dead_block)
    check_functions(block_forward, gradient_norms)
    norms_fn = reference.gradient_norms if gradient_norms is None else gradient_norms
    data = load(dataset, seed=seed)
    x, y = data.x_train[:PROBE], data.y_train[:PROBE]
    norms = {}
    for residual, kill in ((False, False), (False, True), (True, True)):
        seed_everything(seed)
        model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual,
                         block_forward=block_forward)
        if kill:
            with torch.no_grad():
                model[2 + dead_block].layer2.weight.zero_()
                model[2 + dead_block].layer2.bias.zero_()
        norms[(residual, kill)] = np.array([float(v) for v in norms_fn(model.train(), x, y)])
    names = [n for n, _ in weight_layers(model)]
    return DeadLayer(names, dead_block, names.index(f"{2 + dead_block}.layer2"),
                     names.index(f"{2 + dead_block}.layer1"), norms[(False, True)], norms[(True, True)],
                     norms[(False, False)])


def _both(a: str, b: str) -> str:
    """The verdict of "a and b": holds if both hold, does not hold if either does not, else inconclusive."""
    if DOES_NOT_HOLD in (a, b):
        return DOES_NOT_HOLD
    return HOLDS if a == b == HOLDS else INCONCLUSIVE


def _ratio(iv) -> str:
    """A log10 interval as a ratio with its interval, e.g. "1e-09 (95% CI 3e-10 to 4e-09, 8 runs)"."""
    return f"{10**iv.mean:.2g} (95% CI {10**iv.low:.2g} to {10**iv.high:.2g}, {iv.n} runs)"


VANISHED, ALIVE = -3.0, -1.0  # log10(first / last layer's gradient norm): vanished below 1e-3, alive above 0.1
TRAINABLE = 0.1  # "keeps a deep net trainable": the residual net ends at least 10 points of val accuracy higher


def claims(*, sweep: DepthSweep, dead: DeadLayer, blocks: BlockRuns, dead_training: DeadTraining | None = None,
           degraded: Degradation | None = None) -> Claims:
    """The lesson's claims table, from this run's measurements. Claims that noise can move carry a 95% interval
    over the runs (paired where two nets share their run seeds); the deepest plain net appears twice, with
    PyTorch's default init and with He init (the control)."""
    c = Claims("06 residual blocks")
    pb, rb = dead.before("plain"), dead.before("residual")
    c.add("Exact (chain rule): if a layer's weights all go to 0, the gradient to the earlier layers is 0 in a plain "
          "net", SOURCE, f"one backward pass: largest gradient norm before the dead layer, plain net: "
                         f"{float(np.max(pb)):.3g}", float(np.max(pb)) == 0.0)
    if dead_training is not None:
        wp, wr = dead_training.weight_norm["plain"], dead_training.weight_norm["residual"]
        acc_p = mean_interval(dead_training.val_acc("plain"))
        c.add("Exact: the dead layer's own gradient is 0 too, so in the plain net it stays dead through training",
              "lesson", f"its weight norm, largest over {len(wp)} runs and {wp.shape[1] - 1} epochs: "
                        f"{float(wp.max()):.3g}; the net's val acc {acc_p.format('.3f')}", float(wp.max()) == 0.0)
        gain = paired_interval(dead_training.val_acc("residual"), dead_training.val_acc("plain"))
        c.add("With the skip connection the earlier layers still get a gradient, and the network still works",
              SOURCE, f"one pass: smallest gradient norm before the dead layer {float(np.min(rb)):.3g}; trained "
                      f"{wr.shape[1] - 1} epochs: the dead layer's weight norm {mean_interval(wr[:, -1]).format('.3g')}"
                      f", val acc residual - plain {gain.format('.3f')}",
              _both(HOLDS if bool(np.all(rb > 0)) and bool(np.all(np.isfinite(rb))) else DOES_NOT_HOLD,
                    verdict(gain, 0.0)))
    else:
        c.add("With the skip connection, the earlier layers still get a gradient", SOURCE,
              f"smallest gradient norm before the dead layer, residual net: {float(np.min(rb)):.3g}",
              bool(np.all(rb > 0)) and bool(np.all(np.isfinite(rb))))
    d = sweep.deepest
    layers = 2 * d + 2
    res = sweep.final("val_acc", "residual", d)
    for t, head in (("plain", "Skip connections keep a deep network trainable"),
                    ("plain_he", "Control: the same holds against a plain net with He init")):
        if t not in sweep.treatments:
            continue
        gap = paired_interval(res, sweep.final("val_acc", t, d))
        c.add(f"{head}: at {layers} Linear layers, same budget, the residual net's val accuracy is at least "
              f"{TRAINABLE * 100:.0f} points above the plain net's ({LABELS[t]})",
              f"{SOURCE} + lesson", f"val acc residual {mean_interval(res).format('.3f')}; residual - plain "
                                    f"{gap.format('.3f')}", verdict(gap, TRAINABLE))
    if degraded is not None:
        s, dp = degraded.shallow, degraded.deep
        worse = paired_interval(degraded.best(dp), degraded.best(s))
        c.add(f"Degradation: a deeper plain net, well initialized (He), trains worse than a shallower one: higher "
              f"training loss ({2 * dp + 2} vs {2 * s + 2} layers, each at its best learning rate)", PAPER,
              f"training loss {2 * dp + 2} layers (lr {degraded.best_lr(dp):g}) minus {2 * s + 2} layers "
              f"(lr {degraded.best_lr(s):g}): {worse.format('.3f')}", verdict(worse, 0.0))
        fixed = paired_interval(degraded.best(dp), sweep.final("train_loss", "residual", dp))
        c.add(f"Residual blocks answer it: at {2 * dp + 2} layers the residual net reaches a lower training loss than "
              "the He-initialized plain net at its best learning rate", PAPER,
              f"training loss plain (He) - residual: {fixed.format('.3f')}", verdict(fixed, 0.0))
    checks = [("plain", "In the deep plain net with PyTorch's default init, the gradient vanishes on its way to the "
                        "first layer (below 1e-3 of the last layer's)", "lesson", VANISHED, "below"),
              ("plain_he", "Control: with He init, the deep plain net's gradient does not vanish at initialization "
                           "(above 0.1 of the last layer's)", "lesson; He et al. 2015", ALIVE, "above"),
              ("residual", "The gradient reaching the first layer does not vanish in the residual net (above 0.1 of "
                           "the last layer's)", "lesson", ALIVE, "above")]
    for t, claim, source, threshold, side in checks:
        if t not in sweep.treatments:
            continue
        logs = sweep.log_ratio(t, d)
        if not all(math.isfinite(v) for v in logs):
            c.add(claim, source, "the first layer's gradient is exactly 0 in a run", side == "below")
            continue
        iv = mean_interval(logs)
        c.add(claim, source, f"{layers} layers, first-layer / last-layer gradient norm at init: {_ratio(iv)}",
              verdict(iv, threshold, side))
    acc = mean_interval([h.val_acc[-1] for h in blocks.residual])
    diff = paired_interval([h.val_acc[-1] for h in blocks.residual], [h.val_acc[-1] for h in blocks.plain])
    secs = statistics.median(h.total_seconds for h in blocks.residual)
    c.add("The seed's BasicBlock (conv-BN-ReLU-conv-BN + shortcut) trains a small ResNet to at least 90% val "
          "accuracy", SOURCE,
          f"8x8 digits, {len(blocks.residual[0])} epochs: val acc {acc.format('.3f')}; with - without shortcuts "
          f"{diff.format('.3f')}; median {secs:.1f} s of training per run", verdict(acc, 0.9))
    return c


def make_panel(block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None):
    """The lesson's live panel: plain or residual, depth, learning rate, epochs, initialization, batch norm inside the
    blocks.
    Its runs use ``block_forward`` and ``gradient_norms`` (None: the reference's)."""
    import ipywidgets as w

    from ..panel import LivePanel

    style = {"description_width": "80px"}
    knobs = {
        "residual": w.ToggleButtons(options=[("residual", True), ("plain", False)], value=True,
                                    description="blocks", style=style),
        "n_blocks": w.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=8, description="n_blocks", style=style),
        "lr": w.SelectionSlider(options=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2], value=0.05, description="lr (SGD)",
                                style=style),
        "epochs": w.IntSlider(value=8, min=1, max=40, description="epochs", style=style),
        "init": w.ToggleButtons(options=[("PyTorch default", "default"), ("He", "he")], value="default",
                                description="init", style=style),
        "batchnorm": w.Checkbox(value=False, description="batch norm in blocks"),
    }
    run = partial(experiment, block_forward=block_forward, gradient_norms=gradient_norms)
    return LivePanel(run, knobs, title="Residual vs plain: a deep MLP on the 8x8 digits")
