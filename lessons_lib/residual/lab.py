"""Lesson 06's apparatus: the dead-layer experiment, plain vs residual nets of growing depth with per-layer
gradient norms, the small ResNet, the live panel and the claims table. Figures are in :mod:`.plots`.

Every experiment takes the ``block_forward`` its residual blocks run and the ``gradient_norms`` it measures with
(the learner's once they pass their checks; None: :mod:`.reference`'s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..models import count_parameters
from ..seeds import get_seed, seed_everything
from ..training import History, fit
from . import reference
from .reference import BlockForward, deep_mlp, small_resnet, weight_layers

SOURCE = "seeds/004_657bca9538d5b2ba.txt, 'Residual Block / Skip Connection'"
GradientNorms = Callable[[nn.Module, torch.Tensor, torch.Tensor], Sequence[float]]
PROBE = 256  # training examples in the batch the gradient norms are measured on


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
               batchnorm: bool = False, dataset: str = "digits", seed: int | None = None,
               block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None) -> History:
    """The panel's experiment: a plain or residual :func:`.reference.deep_mlp` of ``n_blocks`` blocks trained on
    ``dataset``. A :class:`GradNormRecorder` rides along: ``history.config["grad_norms"]`` is it."""
    seed = get_seed() if seed is None else seed
    data = load(dataset, seed=seed)
    seed_everything(seed)
    model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual, batchnorm=batchnorm,
                     block_forward=block_forward)
    rec = GradNormRecorder(data.x_train[:PROBE], data.y_train[:PROBE], gradient_norms)
    cfg = {"n_blocks": n_blocks, "residual": residual, "width": width, "lr": lr, "optimizer": optimizer,
           "batchnorm": batchnorm}
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
            callbacks=[rec, *callbacks], seed=seed, config=cfg)
    h.config["grad_norms"] = rec
    h.config["model"] = model
    return h


@dataclass
class DepthRow:
    n_blocks: int
    linear_layers: int
    residual: bool
    val_acc: float
    train_loss: float


@dataclass
class DepthSweep:
    """``histories[(residual, n_blocks)]``; each History's ``config["grad_norms"]`` is its recorder."""

    depths: list[int]
    histories: dict[tuple[bool, int], History] = field(default_factory=dict)

    def final_acc(self, residual: bool) -> list[float]:
        return [self.histories[(residual, d)].val_acc[-1] for d in self.depths]

    def recorder(self, residual: bool, n_blocks: int | None = None) -> GradNormRecorder:
        """The gradient-norm recorder of one run (default: the deepest)."""
        return self.histories[(residual, max(self.depths) if n_blocks is None else n_blocks)].config["grad_norms"]

    def rows(self) -> list[DepthRow]:
        return [DepthRow(d, 2 * d + 2, r, self.histories[(r, d)].val_acc[-1], self.histories[(r, d)].train_loss[-1])
                for d in self.depths for r in (False, True)]


def depth_sweep(depths: Sequence[int] = (1, 2, 4, 12), *, epochs: int = 6, width: int = 64, lr: float = 0.05,
                device: str = "cpu", dataset: str = "digits", seed: int | None = None,
                block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None) -> DepthSweep:
    """Train plain and residual nets of each depth (``n_blocks``) with the same seed, budget and optimizer."""
    sw = DepthSweep(depths=[int(d) for d in depths])
    for d in sw.depths:
        for r in (False, True):
            sw.histories[(r, d)] = experiment(device=device, n_blocks=d, residual=r, width=width, lr=lr,
                                              epochs=epochs, dataset=dataset, seed=seed, block_forward=block_forward,
                                              gradient_norms=gradient_norms)
    return sw


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
    seed = get_seed() if seed is None else seed
    dead_block = n_blocks // 2 if dead_block is None else dead_block
    if not 0 <= dead_block < n_blocks:
        raise ValueError(f"dead_block must be in [0, {n_blocks - 1}], got {dead_block}")
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


@dataclass
class BlockRuns:
    """The small ResNet trained with and without its shortcuts (same initial weights)."""

    residual: History
    plain: History


def basicblock_experiment(*, epochs: int = 4, lr: float = 3e-3, channels: Sequence[int] = (16, 32),
                          blocks_per_stage: int = 1, device: str = "cpu", seed: int | None = None,
                          callbacks: Sequence = (), block_forward: BlockForward | None = None) -> BlockRuns:
    """Train :func:`.reference.small_resnet` with and without shortcuts on the 8x8 digits (Adam)."""
    seed = get_seed() if seed is None else seed
    data = load("digits", seed=seed)
    runs = {}
    for residual in (True, False):
        seed_everything(seed)
        model = small_resnet((1, 8, 8), data.n_classes, channels=channels, blocks_per_stage=blocks_per_stage,
                             residual=residual, block_forward=block_forward)
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=64, optimizer="adam", device=device, seed=seed,
                callbacks=list(callbacks), config={"residual": residual, "params": count_parameters(model)})
        h.config["model"] = model
        runs[residual] = h
    return BlockRuns(residual=runs[True], plain=runs[False])


def claims(*, sweep: DepthSweep, dead: DeadLayer, blocks: BlockRuns) -> Claims:
    """The lesson's claims table, from this run's measurements."""
    c = Claims("06 residual blocks")
    pb, rb = dead.before("plain"), dead.before("residual")
    c.add("If a layer's weights all go to 0, the gradient to the earlier layers is 0 in a plain net", SOURCE,
          f"largest gradient norm before the dead layer, plain net: {float(np.max(pb)):.3g}", float(np.max(pb)) == 0.0)
    c.add("With the skip connection, the earlier layers still get a gradient", SOURCE,
          f"smallest gradient norm before the dead layer, residual net: {float(np.min(rb)):.3g}",
          bool(np.all(rb > 0)) and bool(np.all(np.isfinite(rb))))
    d = max(sweep.depths)
    hp, hr = sweep.histories[(False, d)], sweep.histories[(True, d)]
    c.add(f"Skip connections keep a deep network trainable ({2 * d + 2} Linear layers, same budget)",
          SOURCE + " + course", f"final val acc {hr.val_acc[-1]:.3f} residual vs {hp.val_acc[-1]:.3f} plain",
          hr.val_acc[-1] > hp.val_acc[-1] + 0.1)
    gp, gr = sweep.recorder(False).at_init, sweep.recorder(True).at_init
    ratio_p, ratio_r = gp[0] / gp[-1], gr[0] / gr[-1]
    c.add("The gradient reaching the first layer does not vanish in the residual net", "course (lesson 06)",
          f"first-layer / last-layer gradient norm at init: {ratio_r:.2g} residual vs {ratio_p:.2g} plain",
          ratio_r > 100 * ratio_p and ratio_r > 1e-2)
    br, bp = blocks.residual, blocks.plain
    c.add("The seed's BasicBlock (conv-BN-ReLU-conv-BN + shortcut) trains a small ResNet", SOURCE,
          f"8x8 digits, {len(br)} epochs: val acc {br.val_acc[-1]:.3f} with shortcuts, {bp.val_acc[-1]:.3f} "
          f"without; {br.total_seconds:.1f} s of training", br.val_acc[-1] >= 0.9)
    return c


def make_panel(block_forward: BlockForward | None = None, gradient_norms: GradientNorms | None = None):
    """The lesson's live panel: plain or residual, depth, learning rate, epochs, batch norm inside the blocks.
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
        "batchnorm": w.Checkbox(value=False, description="batch norm in blocks"),
    }
    run = partial(experiment, block_forward=block_forward, gradient_norms=gradient_norms)
    return LivePanel(run, knobs, title="Residual vs plain: a deep MLP on the 8x8 digits")
