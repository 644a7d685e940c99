"""Files the course writes: atomic (temporary name + rename) and checksummed (a ``.sha256`` beside them).

A crash or a full disk mid-write leaves the old file or nothing, never half a file. A temporary file is named
``.<name>.<pid>.<random>.tmp``: when its writer was killed (``kill -9`` runs no cleanup), the next write into that
folder sees that the process is gone and removes it. Files are written mode 0644 (readable by every user: data
built by one user, e.g. a container build as root, is read by another).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

DATA_DIR_ENV = "LESSONS_DATA_DIR"
FILE_MODE = 0o644
STALE_AFTER_S = 3600.0  # a temporary file with no live writer's pid in its name counts as stale after this


class CacheWriteError(OSError):
    """The course cannot write where it keeps its files (a read-only or missing folder); says what to do."""


def _unwritable(path: Path, e: OSError) -> CacheWriteError:
    return CacheWriteError(
        f"cannot write {path}: {e.strerror or e}. The course keeps generated data in {path.parent}; make that "
        f"folder writable, or point {DATA_DIR_ENV} at a writable folder (e.g. {DATA_DIR_ENV}=$HOME/lessons-data)")


def data_dir() -> Path:
    """Where generated data is cached: ``$LESSONS_DATA_DIR`` or ``data/`` at the repository root.

    The folder is created when missing; :class:`CacheWriteError` when that is not possible. A folder that exists
    but is read-only is returned (cached files can still be read); writing into it raises :class:`CacheWriteError`.
    """
    env = os.environ.get(DATA_DIR_ENV)
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(path / "(the folder itself)", e) from None
    if not path.is_dir():
        raise CacheWriteError(f"{DATA_DIR_ENV}={env!r} is not a folder: point it at a folder "
                              "(it is created if missing)")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writers that no longer run (killed mid-write); return what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name.split(".")  # ["", name..., pid, random, "tmp"]
        pid = int(parts[-3]) if len(parts) >= 5 and parts[-3].isdigit() else None
        try:
            stale = (not _pid_alive(pid)) if pid is not None and pid != os.getpid() else (
                pid is None and time.time() - tmp.stat().st_mtime > STALE_AFTER_S)
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            pass
    return removed


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        os.fchmod(fd, FILE_MODE)
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
    if not arrays:
        raise ValueError(f"save_arrays({str(path)!r}) got no arrays: pass them by name, e.g. save_arrays(path, x=x)")
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise ValueError(f"{name}: an array of Python objects cannot be cached (it would need pickle to load); "
                             "pass numbers")
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
