"""Residual blocks from their definition, and a per-layer gradient-norm recorder (lesson 06; seed 004 of the
course, "Residual Block / Skip Connection").

A block computes ``F(x) = layer2(relu(layer1(x)))`` and adds its input back *before* the last activation::

    out = relu(F(x) + shortcut(x))      shortcut(x) = x, or a projection of x when the shape changes

(:func:`residual_forward`). One function serves the MLP block (:class:`ResidualBlock`: each layer a Linear,
optionally + BatchNorm1d) and the ResNet ``BasicBlock`` the seed quotes from
github.com/akamaster/pytorch_resnet_cifar10 (:class:`BasicBlock`: each layer a 3x3 conv + BatchNorm2d)::

    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    out = F.relu(out)

A *plain* block (``skip=False``) has the same layers without the addition, so a plain and a residual net built
after the same seed start from the same weights. :func:`gradient_norms` runs one backward pass and reads the
gradient norm of every weight layer: the measurement that shows the skip keeping the gradient alive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("auto", "identity", "projection", "pad")
BlockForward = Callable[[torch.Tensor, nn.Module], torch.Tensor]


def residual_forward(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """``relu(F(x) + shortcut(x))`` with ``F(x) = block.layer2(relu(block.layer1(x)))``; the shortcut is ``x``
    itself when ``block.shortcut`` is None (same shape in and out), else ``block.shortcut(x)`` (a projection)."""
    out = block.layer2(F.relu(block.layer1(x)))
    shortcut = x if block.shortcut is None else block.shortcut(x)
    return F.relu(out + shortcut)  # the ReLU comes after the sum: the skip passes x (and its gradient) unchanged


class Block(nn.Module):
    """What both blocks share: ``layer1``, ``layer2``, ``shortcut`` (None: the identity) and ``forward_fn``, the
    function a residual block's forward runs (:func:`residual_forward`, or the learner's once it passes).
    ``skip=False`` makes the plain twin: ``relu(layer2(relu(layer1(x))))``."""

    def __init__(self, layer1: nn.Module, layer2: nn.Module, shortcut: nn.Module | None, skip: bool,
                 forward_fn: BlockForward | None):
        super().__init__()
        self.layer1, self.layer2, self.shortcut = layer1, layer2, shortcut
        self.skip = bool(skip)
        self.forward_fn = residual_forward if forward_fn is None else forward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip:
            return self.forward_fn(x, self)
        return F.relu(self.layer2(F.relu(self.layer1(x))))


def _linear(d_in: int, d_out: int, batchnorm: bool) -> nn.Module:
    if not batchnorm:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out))  # BN's beta replaces the bias


class ResidualBlock(Block):
    """MLP block ``d_in -> d_out`` features (``d_out`` defaults to ``d_in``): each layer a Linear (+ BatchNorm1d
    with ``batchnorm``). When ``d_out != d_in`` the shortcut is a projection ``Linear(d_in, d_out, bias=False)``."""

    def __init__(self, d_in: int, d_out: int | None = None, *, skip: bool = True, batchnorm: bool = False,
                 forward_fn: BlockForward | None = None):
        d_out = d_in if d_out is None else d_out
        if int(d_in) < 1 or int(d_out) < 1:
            raise ValueError(f"ResidualBlock needs d_in, d_out >= 1, got {d_in}, {d_out}")
        shortcut = nn.Linear(d_in, d_out, bias=False) if (skip and d_out != d_in) else None
        super().__init__(_linear(d_in, d_out, batchnorm), _linear(d_out, d_out, batchnorm), shortcut, skip, forward_fn)


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


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(Block):
    """The seed's ResNet block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convolutions,
    ``layer1 = conv1 (with stride) + bn1``, ``layer2 = conv2 + bn2``.

    ``shortcut``: "identity" (needs ``in_planes == planes`` and ``stride == 1``), "projection" (1x1 conv with
    stride + BN, akamaster's option B), "pad" (subsample and zero-pad channels, option A), or "auto" (identity
    when the shapes match, else projection). Input ``(N, in_planes, H, W)`` -> ``(N, planes, ceil(H / stride),
    ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "auto", skip: bool = True,
                 forward_fn: BlockForward | None = None):
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
        module = None
        if skip and shortcut == "projection":
            module = _conv_bn(in_planes, planes, 1, stride)
        elif skip and shortcut == "pad":
            module = PadShortcut(in_planes, planes, stride)
        super().__init__(_conv_bn(in_planes, planes, 3, stride), _conv_bn(planes, planes, 3, 1), module, skip,
                         forward_fn)
        self.shortcut_kind = shortcut if skip else "none"


def deep_mlp(n_in: int, width: int, n_blocks: int, n_out: int, *, residual: bool = True, batchnorm: bool = False,
             block_forward: BlockForward | None = None) -> nn.Sequential:
    """``Linear(n_in, width) -> relu -> n_blocks x ResidualBlock(width) -> Linear(width, n_out)`` (logits).

    Each block holds two Linear layers, so the net has ``2 * n_blocks + 2``. ``residual=False``: the blocks
    without their skip; built after the same seed, the plain and the residual net have identical weights."""
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
    if n_in < 1 or n_out < 1 or width < 1:
        raise ValueError(f"sizes must be >= 1, got n_in={n_in}, width={width}, n_out={n_out}")
    blocks = [ResidualBlock(width, skip=residual, batchnorm=batchnorm, forward_fn=block_forward)
              for _ in range(n_blocks)]
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), *blocks, nn.Linear(width, n_out))


def small_resnet(image_shape: tuple[int, int, int] = (1, 8, 8), n_classes: int = 10, *,
                 channels: Sequence[int] = (16, 32), blocks_per_stage: int = 1, residual: bool = True,
                 shortcut: str = "auto", block_forward: BlockForward | None = None) -> nn.Sequential:
    """A small ResNet for flat image vectors (e.g. the 8x8 digits as 64 features): unflatten to ``image_shape``,
    3x3 conv stem + BN + ReLU to ``channels[0]``, then per stage ``blocks_per_stage`` :class:`BasicBlock` (the
    first of each later stage halves the resolution), global average pooling, a Linear head.
    ``residual=False`` gives the same network without shortcuts."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape is (channels, height, width), got {image_shape}")
    if not channels or blocks_per_stage < 1:
        raise ValueError("small_resnet needs at least one stage and blocks_per_stage >= 1")
    prev = int(channels[0])
    layers: list[nn.Module] = [nn.Unflatten(1, tuple(image_shape)), *_conv_bn(image_shape[0], prev, 3, 1), nn.ReLU()]
    for i, c in enumerate(channels):
        for j in range(blocks_per_stage):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(BasicBlock(prev, int(c), stride=stride, shortcut=shortcut, skip=residual,
                                     forward_fn=block_forward))
            prev = int(c)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_classes)]
    return nn.Sequential(*layers)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear / Conv layer of ``model``, input side first (the order of
    ``model.named_modules()``)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The L2 norm of the gradient of every weight layer's ``weight`` (:func:`weight_layers` order, input side
    first) for one mean cross-entropy backward pass on ``(x, y)``. The model's old ``.grad`` are cleared first
    (else the new gradient would add to them) and hold this pass's gradients afterwards."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [float(m.weight.grad.norm()) for _, m in weight_layers(model)]
