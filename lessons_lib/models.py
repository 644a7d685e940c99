"""Model builders. ``mlp`` is the course's workhorse; later lessons add their own switches.

In this course ``p`` (dropout) is always the probability to DROP a unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .validate import BadArgument, check_choice, check_int, check_p

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def mlp(
    n_in: int,
    widths: Sequence[int],
    n_out: int,
    activation: str = "relu",
    dropout: float = 0.0,
    dropout_layer: Callable[[float], nn.Module] = nn.Dropout,
) -> nn.Sequential:
    """A multi-layer perceptron ``n_in -> widths[0] -> ... -> n_out`` (logits, no final activation).

    Each hidden layer is ``Linear -> activation`` followed by ``dropout_layer(dropout)`` when
    ``dropout > 0`` (``dropout`` = probability to drop). ``widths=[]`` gives a linear model.
    """
    check_choice(activation, "activation", ACTIVATIONS)
    dropout = check_p(dropout, "dropout")
    n_in = check_int(n_in, "n_in", low=1, fix="the number of input features, e.g. data.n_features")
    n_out = check_int(n_out, "n_out", low=1, fix="the number of classes, e.g. data.n_classes")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise BadArgument(f"widths={widths!r}: must be a list of hidden-layer widths, e.g. [256, 256] ([] for none)")
    widths = [check_int(w, f"widths[{i}]", low=1) for i, w in enumerate(widths)]
    layers: list[nn.Module] = []
    prev = n_in
    for w in widths:
        layers += [nn.Linear(prev, w), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(dropout_layer(dropout))
        prev = w
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def he_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialization for ReLU nets (He et al. 2015): every Linear but the output layer gets
    weights N(0, 2 / fan_in) and bias 0, so the signal keeps its scale layer after layer. PyTorch's default,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), has a variance of 1 / (3 fan_in): each ReLU layer then shrinks the
    signal's second moment about 6 times. Returns ``model``, changed in place."""
    if not isinstance(model, nn.Module):
        raise BadArgument(f"model={model!r:.60}: he_init initializes a torch nn.Module in place")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in linears[:-1]:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
