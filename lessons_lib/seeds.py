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

from .validate import check_int

ENV_VAR = "LESSONS_SEED"
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes [0, 2**32); every generator here accepts that range


def check_seed(seed: object, name: str = "seed") -> int:
    """A course seed: a whole number in [0, 2**32 - 1] (numpy integers accepted, bools and floats with a
    fraction refused)."""
    return check_int(seed, name, low=0, high=MAX_SEED, fix=f"use a whole number from 0 to {MAX_SEED}, e.g. 0")


def get_seed() -> int:
    """The course seed: ``$LESSONS_SEED`` if set, else 0. Raises ValueError on a non-integer."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not an integer; set it to a whole number, e.g. {ENV_VAR}=0"
        ) from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{ENV_VAR}={raw!r} is out of range: set it to a whole number from 0 to {MAX_SEED}, "
                         f"e.g. {ENV_VAR}=0")
    return value


def seed_everything(seed: int | None = None) -> int:
    """Seed python's ``random``, numpy's global RNG and torch (all devices); return the seed used.

    ``seed=None`` means :func:`get_seed` (the environment's ``LESSONS_SEED``, default 0).
    """
    seed = get_seed() if seed is None else check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA / MPS device
    return seed


def numpy_rng(seed: int | None = None, stream: int = 0) -> np.random.Generator:
    """A numpy Generator derived from the course seed; ``stream`` gives independent sub-streams."""
    seed = get_seed() if seed is None else check_seed(seed)
    return np.random.default_rng([seed, check_seed(stream, "stream")])


def torch_generator(seed: int | None = None, stream: int = 0) -> torch.Generator:
    """A CPU torch.Generator derived from the course seed (for DataLoader shuffling and the like)."""
    seed = get_seed() if seed is None else check_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + check_seed(stream, "stream"))
    return g


def replicate_seeds(n: int, stream: int = 0, seed: int | None = None) -> list[int]:
    """``n`` distinct seeds for the repeated runs of one measurement, derived from the course seed.

    Another ``LESSONS_SEED`` gives an unrelated set (not a shifted one), so re-running the course under a new seed
    repeats every measurement on fresh runs. ``stream`` separates the measurements of one lesson.
    """
    n = check_int(n, "n", low=1, fix="the number of runs, e.g. 5")
    stream = check_int(stream, "stream", low=0, fix="a small whole number that separates a lesson's measurements")
    rng = numpy_rng(seed, stream=10_000 + stream)
    out: list[int] = []
    while len(out) < n:
        s = int(rng.integers(0, 2**31 - 1))
        if s not in out:
            out.append(s)
    return out
