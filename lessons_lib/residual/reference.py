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

from ..validate import BadArgument, check_choice, check_int

SHORTCUTS = ("auto", "identity", "projection", "pad")
BlockForward = Callable[[torch.Tensor, nn.Module], torch.Tensor]
MAX_BLOCKS = 2000  # deeper than ResNet-1202 (600 blocks): a typo, not an experiment for this lesson's apparatus


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadArgument(f"{name}={value!r}: must be True or False, got {type(value).__name__}")
    return value


def _size(value: object, name: str, fix: str = "") -> int:
    return check_int(value, name, low=1, high=2**20, fix=fix or "a positive whole number of features or channels")


def residual_forward(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """``relu(F(x) + shortcut(x))`` with ``F(x) = block.layer2(relu(block.layer1(x)))``; the shortcut is ``x``
    itself when ``block.shortcut`` is None (same shape in and out), else ``block.shortcut(x)`` (a projection)."""
    if not all(hasattr(block, a) for a in ("layer1", "layer2", "shortcut")):
        raise BadArgument(f"block must have layer1, layer2 and shortcut (a ResidualBlock or BasicBlock), got "
                          f"{type(block).__name__}")
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
        self.skip = _flag(skip, "skip")
        if forward_fn is not None and not callable(forward_fn):
            raise BadArgument(f"forward_fn={forward_fn!r}: must be a function forward_fn(x, block), or None for "
                              "residual_forward")
        self.forward_fn = residual_forward if forward_fn is None else forward_fn

    def check_input(self, x: object) -> None:
        """Refuse an input this block cannot take, naming the shape it needs (instead of torch's matmul error)."""
        first = self.layer1[0] if isinstance(self.layer1, nn.Sequential) else self.layer1
        n_in, ndim = (first.in_features, 2) if isinstance(first, nn.Linear) else (first.in_channels, 4)
        want = "(N, features)" if ndim == 2 else "(N, channels, H, W)"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise BadArgument(f"{type(self).__name__} needs a float torch.Tensor of shape {want} with {n_in} "
                              f"{want[4:-1].split(',')[0]}, got {type(x).__name__}"
                              + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        if x.ndim != ndim or x.shape[1] != n_in:
            raise BadArgument(f"{type(self).__name__} needs x of shape {want} with {n_in} in dimension 1, got "
                              f"{tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
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
        d_in = _size(d_in, "d_in")
        d_out = d_in if d_out is None else _size(d_out, "d_out")
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
        in_planes, planes = _size(in_planes, "in_planes"), _size(planes, "planes")
        stride = check_int(stride, "stride", low=1, high=64, fix="1 keeps the resolution, 2 halves it")
        check_choice(shortcut, "shortcut", SHORTCUTS)
        _flag(skip, "skip")
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
    n_blocks = check_int(n_blocks, "n_blocks", low=0, high=MAX_BLOCKS, fix="the number of residual blocks, e.g. 8")
    n_in = _size(n_in, "n_in", "the number of input features, e.g. data.n_features")
    width, n_out = _size(width, "width"), _size(n_out, "n_out", "the number of classes, e.g. data.n_classes")
    _flag(residual, "residual"), _flag(batchnorm, "batchnorm")
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
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise BadArgument(f"image_shape={image_shape!r}: must be (channels, height, width), e.g. (1, 8, 8)")
    image_shape = tuple(_size(v, f"image_shape[{i}]") for i, v in enumerate(image_shape))
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__") or not list(channels):
        raise BadArgument(f"channels={channels!r}: must be a list of channels per stage, e.g. (16, 32)")
    channels = [_size(c, f"channels[{i}]") for i, c in enumerate(channels)]
    blocks_per_stage = check_int(blocks_per_stage, "blocks_per_stage", low=1, high=MAX_BLOCKS)
    n_classes = _size(n_classes, "n_classes", "the number of classes, e.g. 10")
    _flag(residual, "residual")
    prev = channels[0]
    layers: list[nn.Module] = [nn.Unflatten(1, tuple(image_shape)), *_conv_bn(image_shape[0], prev, 3, 1), nn.ReLU()]
    for i, c in enumerate(channels):
        for j in range(blocks_per_stage):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(BasicBlock(prev, c, stride=stride, shortcut=shortcut, skip=residual,
                                     forward_fn=block_forward))
            prev = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_classes)]
    return nn.Sequential(*layers)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear / Conv layer of ``model``, input side first (the order of
    ``model.named_modules()``)."""
    if not isinstance(model, nn.Module):
        raise BadArgument(f"model must be an nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The L2 norm of the gradient of every weight layer's ``weight`` (:func:`weight_layers` order, input side
    first) for one mean cross-entropy backward pass on ``(x, y)``. The model's old ``.grad`` are cleared first
    (else the new gradient would add to them) and hold this pass's gradients afterwards."""
    _check_batch(model, x, y)
    layers = weight_layers(model)
    frozen = [n for n, m in layers if not m.weight.requires_grad]
    if frozen:
        raise BadArgument(f"layers {frozen} are frozen (requires_grad=False): unfreeze them to measure their gradient")
    model.zero_grad(set_to_none=True)
    try:
        out = model(x)
    except (RuntimeError, BadArgument) as e:
        raise BadArgument(f"x of shape {tuple(x.shape)} does not fit the model ({e}): pass a batch of the data the "
                          "model was built for") from e
    F.cross_entropy(out, y).backward()
    return [float(m.weight.grad.norm()) for _, m in layers]


def _check_batch(model: object, x: object, y: object) -> None:
    """Refuse a model or batch :func:`gradient_norms` cannot use, naming the fix."""
    if not isinstance(model, nn.Module) or not weight_layers(model):
        raise BadArgument(f"model must be an nn.Module with Linear or Conv layers, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise BadArgument(f"x must be a float torch.Tensor (N, features...), got {type(x).__name__}"
                          + (f" {x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else ""))
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != x.shape[:1]:
        raise BadArgument(f"y must be a torch.long tensor of {len(x)} class labels (one per row of x), got "
                          f"{type(y).__name__}" + (f" {y.dtype} of shape {tuple(y.shape)}"
                                                   if isinstance(y, torch.Tensor) else ""))
    last = weight_layers(model)[-1][1]
    n_classes = getattr(last, "out_features", None)
    if len(y) and n_classes is not None and not 0 <= int(y.min()) <= int(y.max()) < n_classes:
        raise BadArgument(f"y holds labels from {int(y.min())} to {int(y.max())} but the model has {n_classes} "
                          f"outputs: labels must be in 0..{n_classes - 1}")
