"""Lesson 06, residual blocks: plain vs residual deep networks, per-layer gradient norms, the BasicBlock.

Seed 004 of the course ("Residual Block / Skip Connection"): a block computes ``L1 -> sigma -> L2`` and
adds its input back. If L2 stops working (say all its weights go to 0), the gradient through the block's
layers to the earlier layers is 0, but the skip still carries it: the network keeps learning. The seed
quotes the ResNet ``BasicBlock`` of github.com/akamaster/pytorch_resnet_cifar10 (``resnet.py``)::

    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    out = F.relu(out)

Here: :class:`ResidualBlock` (the MLP version, ``relu(x + L2(relu(L1(x))))``), :class:`BasicBlock`
(convolutional, with identity / projection / zero-padding shortcut), :func:`deep_mlp` (plain or residual,
any depth: a plain net is the same blocks without the skip, so with the same seed both start from the
same weights), :func:`small_resnet` (for the 8x8 digits), and :class:`GradNormRecorder`, which records
the gradient norm of every layer's weight with hooks (a ``fit`` callback, usable from the panel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..callbacks import Callback, TrainState
from ..claims import Claims
from ..data import load
from ..exercises import check
from ..models import ACTIVATIONS, count_parameters
from ..seeds import get_seed, seed_everything
from ..training import History, fit

SOURCE = "seeds/004_657bca9538d5b2ba.txt, 'Residual Block / Skip Connection'"
SHORTCUTS = ("auto", "identity", "projection", "pad")


# ----------------------------------------------------------------------------------------------
# Blocks and networks
# ----------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """MLP block ``act(x + L2(act(L1(x))))`` of constant ``width`` (``skip=False``: ``act(L2(act(L1(x))))``,
    the plain twin with the same layers). ``batchnorm`` puts a BatchNorm1d after each Linear."""

    def __init__(self, width: int, *, skip: bool = True, batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"ResidualBlock needs width >= 1, got {width}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        self.skip = bool(skip)
        self.l1 = nn.Linear(width, width, bias=not batchnorm)
        self.n1 = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        self.l2 = nn.Linear(width, width, bias=not batchnorm)
        self.n2 = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.n2(self.l2(self.act(self.n1(self.l1(x)))))
        if self.skip:
            out = out + x
        return self.act(out)


def deep_mlp(n_in: int, width: int, n_blocks: int, n_out: int, *, residual: bool = True, batchnorm: bool = False,
             activation: str = "relu") -> nn.Sequential:
    """``Linear(n_in, width) -> act -> n_blocks x block -> Linear(width, n_out)`` (logits).

    Each block holds two Linear layers, so the net has ``2 * n_blocks + 2`` Linear layers. ``residual``
    chooses :class:`ResidualBlock` with or without its skip; built after the same seed, the plain and the
    residual net have identical initial weights."""
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
    if n_in < 1 or n_out < 1 or width < 1:
        raise ValueError(f"sizes must be >= 1, got n_in={n_in}, width={width}, n_out={n_out}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
    layers += [ResidualBlock(width, skip=residual, batchnorm=batchnorm, activation=activation) for _ in range(n_blocks)]
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def plain_net(n_in: int, width: int, n_blocks: int, n_out: int, **kw) -> nn.Sequential:
    """:func:`deep_mlp` without skips."""
    return deep_mlp(n_in, width, n_blocks, n_out, residual=False, **kw)


def residual_net(n_in: int, width: int, n_blocks: int, n_out: int, **kw) -> nn.Sequential:
    """:func:`deep_mlp` with skips."""
    return deep_mlp(n_in, width, n_blocks, n_out, residual=True, **kw)


class PadShortcut(nn.Module):
    """akamaster's option A: subsample by ``stride`` and zero-pad the extra channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"a zero-padding shortcut can only add channels ({in_planes} -> {planes}): "
                             "use shortcut='projection' to reduce them")
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class BasicBlock(nn.Module):
    """The ResNet BasicBlock of the seed: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` is 3x3 with ``stride``, ``conv2`` 3x3. ``shortcut``: "identity" (needs ``in_planes ==
    planes`` and ``stride == 1``), "projection" (1x1 conv with stride + BN, akamaster's option B), "pad"
    (subsample and zero-pad channels, option A), or "auto" (identity when shapes match, else
    projection). ``skip=False`` removes the shortcut (a plain block, for comparison).
    Input ``(N, in_planes, H, W)`` -> ``(N, planes, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "auto", skip: bool = True):
        super().__init__()
        if in_planes < 1 or planes < 1 or stride < 1:
            raise ValueError(f"BasicBlock needs in_planes, planes, stride >= 1; got {in_planes}, {planes}, {stride}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}: choose one of {', '.join(SHORTCUTS)}")
        mismatch = in_planes != planes or stride != 1
        if shortcut == "auto":
            shortcut = "projection" if mismatch else "identity"
        if skip and shortcut == "identity" and mismatch:
            raise ValueError(
                f"BasicBlock({in_planes} -> {planes} channels, stride {stride}) cannot add its input back "
                f"unchanged: the shapes differ. Use shortcut='projection' (1x1 conv + BN) or shortcut='pad' "
                f"(subsample and zero-pad channels), or keep in_planes == planes and stride == 1")
        self.skip = bool(skip)
        self.shortcut_kind = shortcut if skip else "none"
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if not skip or shortcut == "identity":
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))
        else:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


def small_resnet(image_shape: tuple[int, int, int] = (1, 8, 8), n_classes: int = 10, *,
                 channels: Sequence[int] = (16, 32), blocks_per_stage: int = 1, residual: bool = True,
                 shortcut: str = "auto") -> nn.Sequential:
    """A small ResNet for flat image vectors (e.g. the 8x8 digits as 64 features): unflatten to
    ``image_shape``, 3x3 conv stem + BN + ReLU to ``channels[0]``, then per stage ``blocks_per_stage``
    :class:`BasicBlock` (the first of each later stage halves the resolution), global average pooling,
    a Linear head. ``residual=False`` gives the same network without shortcuts."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape is (channels, height, width), got {image_shape}")
    if not channels or blocks_per_stage < 1:
        raise ValueError("small_resnet needs at least one stage and blocks_per_stage >= 1")
    c0 = int(channels[0])
    layers: list[nn.Module] = [nn.Unflatten(1, tuple(image_shape)),
                               nn.Conv2d(image_shape[0], c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()]
    prev = c0
    for i, c in enumerate(channels):
        for j in range(blocks_per_stage):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(BasicBlock(prev, int(c), stride=stride, shortcut=shortcut, skip=residual))
            prev = int(c)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_classes)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# Gradient norms per layer, with hooks
# ----------------------------------------------------------------------------------------------
def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear / Conv layer of ``model``, input side first."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


class GradNormRecorder(Callback):
    """Records the L2 norm of every Linear/Conv weight's gradient, per backward pass, with tensor hooks.

    Use it as a :func:`~lessons_lib.training.fit` callback (hooks attached at ``on_train_begin``, removed at
    ``on_train_end``; ``per_epoch`` gets the mean norm per layer of each epoch, ``first_step`` the norms
    of the very first backward, at initialization), or on its own::

        rec = GradNormRecorder().attach(model); loss.backward(); rec.last  # one norm per layer
        rec.detach()

    Norms stay on the device during an epoch (no synchronization per step); ``layer_names`` labels them.
    """

    def __init__(self) -> None:
        self.layer_names: list[str] = []
        self.per_epoch: list[np.ndarray] = []
        self.first_step: np.ndarray | None = None
        self._handles: list = []
        self._current: list[torch.Tensor | None] = []
        self._sum: list[torch.Tensor | float] = []
        self._count = 0

    def attach(self, model: nn.Module) -> GradNormRecorder:
        self.detach()
        layers = weight_layers(model)
        if not layers:
            raise ValueError("GradNormRecorder found no Linear or Conv layer in this model")
        self.layer_names = [n for n, _ in layers]
        self._current = [None] * len(layers)
        self._sum = [0.0] * len(layers)
        self._count = 0
        for i, (_, m) in enumerate(layers):
            self._handles.append(m.weight.register_hook(self._make_hook(i)))
        return self

    def _make_hook(self, i: int):
        def hook(grad: torch.Tensor) -> None:
            self._current[i] = grad.detach().norm()

        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def last(self) -> np.ndarray:
        """Norms of the last backward pass, one per layer (NaN for a layer that got no gradient)."""
        return np.array([float("nan") if g is None else float(g) for g in self._current])

    def _accumulate(self) -> None:
        if self.first_step is None:
            self.first_step = self.last
        self._sum = [s + (g if g is not None else 0.0) for s, g in zip(self._sum, self._current)]
        self._count += 1

    def on_train_begin(self, state: TrainState) -> None:
        self.per_epoch, self.first_step = [], None
        self.attach(state.model)

    def on_batch_end(self, state: TrainState) -> None:
        self._accumulate()

    def on_epoch_end(self, state: TrainState) -> None:
        if self._count:
            self.per_epoch.append(np.array([float(s) / self._count for s in self._sum]))
        self._sum = [0.0] * len(self.layer_names)
        self._count = 0

    def on_train_end(self, state: TrainState) -> None:
        if self._count:  # a run stopped mid-epoch keeps its partial epoch
            self.on_epoch_end(state)
        self.detach()


def grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Gradient norm of each Linear/Conv weight for one cross-entropy backward on ``(x, y)`` (train mode;
    the model's ``.grad`` are left as they were)."""
    saved = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    rec = GradNormRecorder().attach(model)
    try:
        model.train()
        for p in model.parameters():
            p.grad = None
        F.cross_entropy(model(x), y).backward()
        return rec.last
    finally:
        rec.detach()
        for p, g in zip(model.parameters(), saved):
            p.grad = g


# ----------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------
def experiment(
    *,
    device: str = "cpu",
    callbacks: Sequence = (),
    n_blocks: int = 8,
    residual: bool = True,
    width: int = 64,
    lr: float = 0.05,
    epochs: int = 8,
    batch_size: int = 64,
    optimizer: str = "sgd",
    batchnorm: bool = False,
    dataset: str = "digits",
    seed: int | None = None,
) -> History:
    """The panel's experiment: a plain or residual :func:`deep_mlp` of ``n_blocks`` blocks trained on
    ``dataset``. A :class:`GradNormRecorder` rides along: ``history.config["grad_norms"]`` is it."""
    seed = get_seed() if seed is None else seed
    data = load(dataset, seed=seed)
    seed_everything(seed)
    model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual, batchnorm=batchnorm)
    rec = GradNormRecorder()
    cfg = {"n_blocks": n_blocks, "residual": residual, "width": width, "lr": lr, "optimizer": optimizer,
           "batchnorm": batchnorm}
    h = fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, device=device,
            callbacks=[rec, *callbacks], seed=seed, config=cfg)
    h.config["grad_norms"] = rec
    h.config["model"] = model
    return h


@dataclass
class DepthSweep:
    """``histories[(residual, n_blocks)]``; each History's ``config["grad_norms"]`` is its recorder."""

    depths: list[int]
    histories: dict[tuple[bool, int], History] = field(default_factory=dict)

    def final_acc(self, residual: bool) -> list[float]:
        return [self.histories[(residual, d)].val_acc[-1] for d in self.depths]

    def rows(self) -> list[dict]:
        return [{"n_blocks": d, "linear_layers": 2 * d + 2, "residual": r,
                 "val_acc": self.histories[(r, d)].val_acc[-1], "train_loss": self.histories[(r, d)].train_loss[-1]}
                for d in self.depths for r in (False, True)]


def depth_sweep(depths: Sequence[int] = (1, 2, 4, 12), *, epochs: int = 6, width: int = 64, lr: float = 0.05,
                device: str = "cpu", dataset: str = "digits", seed: int | None = None) -> DepthSweep:
    """Train plain and residual nets of each depth (``n_blocks``) with the same seed, budget and optimizer."""
    sw = DepthSweep(depths=[int(d) for d in depths])
    for d in sw.depths:
        for r in (False, True):
            sw.histories[(r, d)] = experiment(device=device, n_blocks=d, residual=r, width=width, lr=lr,
                                              epochs=epochs, dataset=dataset, seed=seed)
    return sw


@dataclass
class DeadLayer:
    """Per-layer gradient norms of a plain and a residual net whose block ``dead_block`` has all-zero
    weights in its second layer (L2), and of the same plain net with no dead layer (``plain_alive``).
    ``dead_layer`` indexes that L2 in ``layer_names``; ``block_start`` the block's first layer (L1)."""

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
                          dataset: str = "digits", seed: int | None = None) -> DeadLayer:
    """The seed's claim, measured: zero the weights and bias of L2 in block ``dead_block`` (default: the
    middle one) of a plain and a residual net built with the same seed, then take one backward pass on a
    training batch (256 examples) and record the gradient norm of every layer."""
    seed = get_seed() if seed is None else seed
    dead_block = n_blocks // 2 if dead_block is None else dead_block
    if not 0 <= dead_block < n_blocks:
        raise ValueError(f"dead_block must be in [0, {n_blocks - 1}], got {dead_block}")
    data = load(dataset, seed=seed)
    x, y = data.x_train[:256], data.y_train[:256]
    norms = {}
    for residual, kill in ((False, False), (False, True), (True, True)):
        seed_everything(seed)
        model = deep_mlp(data.n_features, width, n_blocks, data.n_classes, residual=residual)
        if kill:
            block = model[2 + dead_block]
            with torch.no_grad():
                block.l2.weight.zero_()
                block.l2.bias.zero_()
        norms[(residual, kill)] = grad_norms(model, x, y)
        names = [n for n, _ in weight_layers(model)]
    return DeadLayer(names, dead_block, names.index(f"{2 + dead_block}.l2"), names.index(f"{2 + dead_block}.l1"),
                     norms[(False, True)], norms[(True, True)], norms[(False, False)])


def basicblock_experiment(*, epochs: int = 4, lr: float = 3e-3, channels: Sequence[int] = (16, 32),
                          blocks_per_stage: int = 1, device: str = "cpu", seed: int | None = None,
                          callbacks: Sequence = ()) -> dict[str, History]:
    """Train :func:`small_resnet` with and without shortcuts on the 8x8 digits (Adam); the two nets start
    from the same weights. Returns ``{"residual": History, "plain": History}``."""
    seed = get_seed() if seed is None else seed
    data = load("digits", seed=seed)
    out = {}
    for residual in (True, False):
        seed_everything(seed)
        model = small_resnet((1, 8, 8), data.n_classes, channels=channels, blocks_per_stage=blocks_per_stage,
                             residual=residual)
        h = fit(model, data, epochs=epochs, lr=lr, batch_size=64, optimizer="adam", device=device, seed=seed,
                callbacks=list(callbacks), config={"residual": residual, "params": count_parameters(model)})
        h.config["model"] = model
        out["residual" if residual else "plain"] = h
    return out


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def plot_depth_sweep(sw: DepthSweep):
    """Left: final val accuracy against depth, plain vs residual. Right: val-accuracy curves of every run."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    layers = [2 * d + 2 for d in sw.depths]
    a.plot(layers, sw.final_acc(False), "s--", color="#d62728", label="plain")
    a.plot(layers, sw.final_acc(True), "o-", color="#1f77b4", label="residual")
    a.set(xscale="log", xlabel="depth (Linear layers)", ylabel="final val accuracy", ylim=(0, 1.02),
          title="Same budget, growing depth")
    a.set_xticks(layers, [str(v) for v in layers])
    a.minorticks_off()
    cmap = plt.get_cmap("viridis")
    for k, d in enumerate(sw.depths):
        col = cmap(k / max(len(sw.depths) - 1, 1))
        for r, ls in ((True, "-"), (False, "--")):
            h = sw.histories[(r, d)]
            b.plot([e + 1 for e in h.epoch], h.val_acc, ls, color=col,
                   label=f"{2 * d + 2} layers, {'residual' if r else 'plain'}")
    b.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1.02), title="Learning curves (solid: residual)")
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _draw_recorder(ax, rec: GradNormRecorder, title: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    idx = np.arange(1, len(rec.layer_names) + 1)
    if rec.first_step is not None:
        ax.plot(idx, np.maximum(rec.first_step, 1e-30), "o-", ms=3, color="#7f7f7f", label="first step (init)")
    cmap = plt.get_cmap("viridis")
    n = len(rec.per_epoch)
    for e, v in enumerate(rec.per_epoch):
        if e in (0, n // 2, n - 1):
            ax.plot(idx, np.maximum(v, 1e-30), "-", color=cmap(e / max(n - 1, 1)), label=f"epoch {e + 1} (mean)")
    ax.set(yscale="log", xlabel="layer (1 = input side)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_recorder(rec: GradNormRecorder, title: str = "gradient norm per layer"):
    """One :class:`GradNormRecorder` (e.g. ``history.config["grad_norms"]`` of a panel run) as a figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    _draw_recorder(ax, rec, title)
    ax.set_ylabel("‖dLoss/dW‖ of the layer")
    fig.tight_layout()
    return fig


def plot_grad_norms(sw: DepthSweep, n_blocks: int | None = None):
    """Gradient norm per layer (input side on the left) at initialization and during training, for the
    plain and the residual net of depth ``n_blocks`` (default: the deepest)."""
    import matplotlib.pyplot as plt

    d = max(sw.depths) if n_blocks is None else n_blocks
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, r in zip(axes, (False, True)):
        _draw_recorder(ax, sw.histories[(r, d)].config["grad_norms"],
                       f"{'residual' if r else 'plain'}, {2 * d + 2} Linear layers")
    axes[0].set_ylabel("‖dLoss/dW‖ of the layer")
    fig.tight_layout()
    return fig


def plot_dead_layer(dl: DeadLayer):
    """Gradient norm per layer with one dead layer, plain vs residual (exact zeros drawn on the floor line)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.8))
    idx = np.arange(1, len(dl.layer_names) + 1)
    floor = 1e-12
    ax.plot(idx, np.where(dl.plain_alive > 0, dl.plain_alive, floor), ":", color="#7f7f7f", lw=1.5,
            label="plain, no dead layer (reference)")
    for v, lab, fmt, col in ((dl.plain, "plain, dead layer", "s--", "#d62728"),
                             (dl.residual, "residual, dead layer", "o-", "#1f77b4")):
        ax.plot(idx, np.where(v > 0, v, floor), fmt, color=col, label=lab)
    ax.axvspan(dl.block_start + 0.5, dl.dead_layer + 1.5, color="#ffdd99", alpha=0.5, lw=0,
               label="the dead block (its L2 = 0)")
    ax.axhline(floor, color="gray", lw=0.8)
    ax.text(0.8, floor * 2.5, "exactly 0", color="gray", fontsize=8)
    ax.set(yscale="log", xlabel="layer (1 = input side)", ylabel="‖dLoss/dW‖", xticks=idx,
           title="One backward pass with a dead layer: does the gradient reach the early layers?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_basicblock(runs: dict[str, History]):
    """Val accuracy and train loss per epoch of the small ResNet with and without shortcuts."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, col, ls in (("residual", "#1f77b4", "-"), ("plain", "#d62728", "--")):
        h = runs[name]
        ep = [e + 1 for e in h.epoch]
        a.plot(ep, h.val_acc, ls, color=col, marker="o", ms=3, label=name)
        b.plot(ep, h.train_loss, ls, color=col, marker="o", ms=3, label=name)
    a.set(xlabel="epoch", ylabel="val accuracy", title="Small ResNet on 8x8 digits", ylim=(0, 1.02))
    b.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Claims, panel, exercises
# ----------------------------------------------------------------------------------------------
def claims(*, sweep: DepthSweep, dead: DeadLayer, blocks: dict[str, History]) -> Claims:
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
    gp = sweep.histories[(False, d)].config["grad_norms"].first_step
    gr = sweep.histories[(True, d)].config["grad_norms"].first_step
    ratio_p, ratio_r = gp[0] / gp[-1], gr[0] / gr[-1]
    c.add("The gradient reaching the first layer does not vanish in the residual net", "course (lesson 06)",
          f"first-layer / last-layer gradient norm at init: {ratio_r:.2g} residual vs {ratio_p:.2g} plain",
          ratio_r > 100 * ratio_p and ratio_r > 1e-2)
    br, bp = blocks["residual"], blocks["plain"]
    c.add("The seed's BasicBlock (conv-BN-ReLU-conv-BN + shortcut) trains a small ResNet", SOURCE,
          f"8x8 digits, {len(br)} epochs: val acc {br.val_acc[-1]:.3f} with shortcuts, {bp.val_acc[-1]:.3f} "
          f"without; {br.total_seconds:.1f} s of training", br.val_acc[-1] >= 0.9)
    return c


def make_panel():
    """The lesson's live panel: plain or residual, depth, learning rate, epochs."""
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
    return LivePanel(experiment, knobs, title="Residual vs plain: a deep MLP on the 8x8 digits")


def check_dead_layer_gradient(answer: float) -> bool:
    """Exercise 1: in a plain net whose layer k has all-zero weights, the gradient norm of layer k-1's weight?"""
    return check(answer, 0.0, abs_tol=1e-12, praise="dL/d(input of layer k) = W_k^T delta = 0, and every earlier "
                 "gradient is built from it: all exactly 0.",
                 hint="the backward pass multiplies by the dead layer's weight matrix on its way down.")


def check_basicblock_output_shape(answer: Sequence[int]) -> bool:
    """Exercise 2: output shape of BasicBlock(16, 32, stride=2) on an input of shape (5, 16, 8, 8)?"""
    with torch.no_grad():
        expected = tuple(BasicBlock(16, 32, stride=2)(torch.zeros(5, 16, 8, 8)).shape)
    return check(None if answer is None or answer is Ellipsis else tuple(answer), expected,
                 praise="32 channels, and stride 2 halves 8x8 to 4x4; the projection shortcut does the same "
                 "to the input so that the two can be added.",
                 hint="the channels become `planes`; a 3x3 conv with padding 1 and stride 2 halves H and W.")


def check_basicblock_parameters(answer: int) -> bool:
    """Exercise 3: trainable parameters of BasicBlock(16, 32, stride=2, shortcut='projection')?"""
    expected = count_parameters(BasicBlock(16, 32, stride=2, shortcut="projection"))
    return check(answer, expected, praise="conv1 16*32*9 + conv2 32*32*9 + 1x1 projection 16*32, plus gamma "
                 "and beta of three BatchNorms (3 * 2 * 32); the convs have no bias (BN's beta replaces it).",
                 hint="count conv1 (3x3, 16->32), conv2 (3x3, 32->32), the 1x1 projection (16->32) and 2 "
                 "parameters per channel for each of the three BatchNorms; no conv bias.")


def check_padding_shortcut_parameters(answer: int) -> bool:
    """Exercise 4: how many parameters does the zero-padding shortcut (option A) add?"""
    return check(answer, 0, praise="option A only subsamples and pads with zeros: free, which is why the "
                 "CIFAR ResNets of the seed's source use it.", hint="it has no weights at all.")

