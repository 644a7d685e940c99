"""The one place random seeds come from.

Every notebook and experiment calls :func:`seed_everything`. The seed is read from the environment
variable ``LESSONS_SEED`` (default 0), so a teacher can rerun the whole course with another seed:
``LESSONS_SEED=3 make test``. A lesson's checks must hold for any seed, not just 0.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

ENV_VAR = "LESSONS_SEED"
DEFAULT_SEED = 0


def get_seed() -> int:
    """The course seed: ``$LESSONS_SEED`` if set, else 0. Raises ValueError on a non-integer."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not an integer; set it to a whole number, e.g. {ENV_VAR}=0"
        ) from None


def seed_everything(seed: int | None = None) -> int:
    """Seed python's ``random``, numpy's global RNG and torch (all devices); return the seed used.

    ``seed=None`` means :func:`get_seed` (the environment's ``LESSONS_SEED``, default 0).
    """
    seed = get_seed() if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA / MPS device
    return seed


def numpy_rng(seed: int | None = None, stream: int = 0) -> np.random.Generator:
    """A numpy Generator derived from the course seed; ``stream`` gives independent sub-streams."""
    seed = get_seed() if seed is None else int(seed)
    return np.random.default_rng([seed, stream])


def torch_generator(seed: int | None = None, stream: int = 0) -> torch.Generator:
    """A CPU torch.Generator derived from the course seed (for DataLoader shuffling and the like)."""
    seed = get_seed() if seed is None else int(seed)
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + stream)
    return g
