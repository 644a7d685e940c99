"""Model builders. ``mlp`` is the course's workhorse; later lessons add their own switches.

In this course ``p`` (dropout) is always the probability to DROP a unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

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
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout is the probability to drop and must be in [0, 1), got {dropout}")
    if n_in < 1 or n_out < 1 or any(int(w) < 1 for w in widths):
        raise ValueError(f"layer sizes must be >= 1, got n_in={n_in}, widths={list(widths)}, n_out={n_out}")
    layers: list[nn.Module] = []
    prev = n_in
    for w in widths:
        layers += [nn.Linear(prev, int(w)), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(dropout_layer(dropout))
        prev = int(w)
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
