"""Files the course writes: atomic (temporary name + rename) and checksummed (a ``.sha256`` beside them).

A crash or a full disk mid-write leaves the old file or nothing, never half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

DATA_DIR_ENV = "LESSONS_DATA_DIR"


def data_dir() -> Path:
    """Where generated data is cached: ``$LESSONS_DATA_DIR`` or ``data/`` at the repository root."""
    env = os.environ.get(DATA_DIR_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_open(path) as f: f.write(...)``: the bytes go to a temporary file in the same folder,
    which is fsynced and renamed onto ``path`` when the block ends normally, and deleted if it raises (a full
    disk, a failed checksum, Ctrl-C): ``path`` never holds half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


class CorruptCacheError(RuntimeError):
    """A cached file does not match its recorded checksum."""


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> str:
    """Save arrays as an ``.npz`` atomically, with ``<path>.sha256`` beside it; return the checksum."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    digest = sha256_bytes(data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(f"{path}.sha256", f"{digest}  {Path(path).name}\n".encode())
    return digest


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load an ``.npz`` written by :func:`save_arrays`, verifying its checksum.

    Raises FileNotFoundError if absent and :class:`CorruptCacheError` if the bytes do not match.
    """
    path = Path(path)
    sums = Path(f"{path}.sha256")
    if not path.exists() or not sums.exists():
        raise FileNotFoundError(path)
    data = path.read_bytes()
    expected = sums.read_text().split()[0] if sums.read_text().strip() else ""
    if sha256_bytes(data) != expected:
        raise CorruptCacheError(
            f"{path} does not match its checksum in {sums.name}: it is corrupt or was edited. "
            "Delete it (the course regenerates it), or run `make data`."
        )
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}
