"""The "letters" set: a notMNIST-like set the course generates itself, offline.

Letters A–J rendered from the fonts matplotlib ships, 28x28 grayscale, with a random affine distortion
(rotation, scale, shear, shift), a random contrast and background, and pixel noise. Deterministic by seed,
any size from 1 to 500,000 images.

* Generated in chunks of :data:`CHUNK` images, each chunk from its own random stream ``[seed, 8, k]``: memory
  stays bounded, and the first ``n`` images of a larger set with the same seed are the set of size ``n``.
* Written as uint8 ``.npy`` files (``images`` of shape (n, 28, 28), ``labels`` of shape (n,), 0..9 = A..J)
  under :func:`lessons_lib.cache.data_dir`, each through a temporary name and a rename, then a JSON manifest
  (shape, dtype, seed, bytes, sha256). A crash or a full disk leaves no half file.
* :func:`load_letters` checks the files against the manifest and says how to regenerate when they differ.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cache import atomic_write_bytes, data_dir, sha256_file
from .seeds import get_seed

CLASSES = "ABCDEFGHIJ"
IMAGE_SIZE = 28
MAX_IMAGES = 500_000
CHUNK = 1000  # images per random stream / per generation step
VERSION = 1
SUPERSAMPLE = 2  # glyphs are distorted at 56x56 and averaged down to 28x28 (anti-aliasing)
_EXCLUDED_FONTS = ("LastResort", "cmex10", "cmsy10")


class LettersDataError(RuntimeError):
    """The letters files on disk are missing a piece, truncated, corrupt, or do not match their manifest."""


class LettersWriteError(OSError):
    """Writing the letters set failed (e.g. the disk is full); no partial file was left behind."""


# --- fonts and glyph templates -----------------------------------------------------------------
def font_files() -> list[Path]:
    """The TrueType fonts shipped with matplotlib that have glyphs for A..J (about two dozen)."""
    import matplotlib
    from matplotlib.ft2font import FT2Font

    out = []
    for p in sorted(Path(matplotlib.get_data_path(), "fonts", "ttf").glob("*.ttf")):
        if any(x in p.name for x in _EXCLUDED_FONTS):
            continue
        f = FT2Font(str(p))
        if all(f.get_char_index(ord(c)) != 0 for c in CLASSES):
            out.append(p)
    if not out:
        raise RuntimeError("no usable font found in matplotlib's data folder; reinstall matplotlib")
    return out


def _render_glyph(path: Path, ch: str, px: int = 96) -> np.ndarray:
    from matplotlib.ft2font import FT2Font

    f = FT2Font(str(path))
    f.set_size(px, 72)
    f.set_text(ch, 0.0)
    f.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(f.get_image(), dtype=np.float32) / 255.0
    ys, xs = np.nonzero(img > 0.02)
    if len(ys) == 0:
        raise RuntimeError(f"font {path.name} rendered an empty {ch!r}")
    return img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


@lru_cache(maxsize=2)
def _templates(box: float = 0.72) -> tuple[np.ndarray, tuple[str, ...]]:
    """(templates float32 (n_fonts, 10, T, T) in [0, 1] with T = 28 * SUPERSAMPLE, font names).

    Each glyph is cropped, padded to a square and resized so its longer side is ``box`` of the canvas."""
    import torch
    import torch.nn.functional as F

    t = IMAGE_SIZE * SUPERSAMPLE
    side = int(round(box * t))
    fonts = font_files()
    out = np.zeros((len(fonts), len(CLASSES), t, t), dtype=np.float32)
    for i, p in enumerate(fonts):
        for j, ch in enumerate(CLASSES):
            g = _render_glyph(p, ch)
            h, w = g.shape
            m = max(h, w)
            sq = np.zeros((m, m), dtype=np.float32)
            sq[(m - h) // 2: (m - h) // 2 + h, (m - w) // 2: (m - w) // 2 + w] = g
            r = F.interpolate(torch.from_numpy(sq)[None, None], size=(side, side), mode="bilinear",
                              antialias=True, align_corners=False)[0, 0].clamp_(0, 1).numpy()
            o = (t - side) // 2
            out[i, j, o: o + side, o: o + side] = r
    return out, tuple(p.stem for p in fonts)


# --- generation ----------------------------------------------------------------------------------
def _chunk(seed: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (size, 28, 28) and labels uint8 (size,) of chunk ``k`` (its own random stream)."""
    import torch
    import torch.nn.functional as F

    templ, _ = _templates()
    rng = np.random.default_rng([seed, 8, k])
    n_fonts = templ.shape[0]
    labels = rng.integers(0, len(CLASSES), size)
    fonts = rng.integers(0, n_fonts, size)
    rot = np.deg2rad(np.clip(rng.normal(0.0, 8.0, size), -20, 20))
    scale = rng.uniform(0.85, 1.2, size)  # >1 shrinks the letter (theta maps output to input coordinates)
    aspect = rng.uniform(0.85, 1.15, size)
    shear = rng.uniform(-0.25, 0.25, size)
    shift = rng.uniform(-0.1, 0.1, (size, 2))
    contrast = rng.uniform(0.55, 1.0, size)
    background = rng.uniform(0.0, 0.25, size)
    noise = rng.uniform(0.0, 0.12, size)
    gauss = rng.standard_normal((size, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)

    c, s = np.cos(rot), np.sin(rot)
    a11, a12 = c * scale * aspect, (c * shear - s) * scale
    a21, a22 = s * scale * aspect, (s * shear + c) * scale
    theta = np.stack([np.stack([a11, a12, shift[:, 0]], 1), np.stack([a21, a22, shift[:, 1]], 1)], 1)
    src = torch.from_numpy(templ[fonts, labels][:, None])  # (size, 1, T, T)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(src.shape), align_corners=False)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = F.avg_pool2d(warped, SUPERSAMPLE)[:, 0].numpy()  # (size, 28, 28) in [0, 1]
    x = background[:, None, None] + (contrast * (1 - background))[:, None, None] * x
    x = x + noise[:, None, None].astype(np.float32) * gauss
    img = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return img, labels.astype(np.uint8)


def generate_chunks(n: int, seed: int | None = None):
    """Yield ``(images uint8 (m, 28, 28), labels uint8 (m,))`` chunks, in order, making up ``n`` images."""
    seed = get_seed() if seed is None else int(seed)
    _check_n(n)
    for k in range(math.ceil(n / CHUNK)):
        size = min(CHUNK, n - k * CHUNK)
        img, lab = _chunk(seed, k, CHUNK)  # always the full chunk: a prefix of a set is the smaller set
        yield img[:size], lab[:size]


def make_letters(n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The set in memory (small n only: tests, pictures). Use :func:`generate_letters` for files."""
    parts = list(generate_chunks(n, seed))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_IMAGES:
        raise ValueError(f"the letters set has 1 to {MAX_IMAGES:,} images; got n={n!r}")


# --- files -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LetterPaths:
    images: Path
    labels: Path
    manifest: Path

    def all(self) -> tuple[Path, Path, Path]:
        return self.images, self.labels, self.manifest


def paths(n: int, seed: int | None = None, folder: str | os.PathLike | None = None) -> LetterPaths:
    """Where the set of ``n`` images with ``seed`` lives (default folder: :func:`data_dir`)."""
    seed = get_seed() if seed is None else int(seed)
    base = Path(folder) if folder is not None else data_dir()
    stem = f"letters_s{seed}_n{n}"
    return LetterPaths(base / f"{stem}_images.npy", base / f"{stem}_labels.npy", base / f"{stem}.json")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


class _AtomicNpyWriter:
    """Stream uint8 rows into ``path`` via a temporary file; ``commit`` renames it into place."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        import hashlib

        self.path = path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.f = os.fdopen(fd, "wb")
        self.h = hashlib.sha256()
        self.bytes = 0
        try:
            self.write(_npy_header(shape))
        except OSError:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.h.update(data)
        self.bytes += len(data)

    def commit(self) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "bytes": self.bytes, "sha256": self.h.hexdigest()}

    def abort(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def expected_bytes(n: int) -> int:
    """Bytes on disk of the set of ``n`` images (both .npy files, headers included)."""
    return len(_npy_header((n, IMAGE_SIZE, IMAGE_SIZE))) + n * IMAGE_SIZE**2 + len(_npy_header((n,))) + n


def generate_letters(
    n: int,
    seed: int | None = None,
    *,
    folder: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Generate the set of ``n`` images into files (see the module docstring); return its manifest.

    If a valid set is already there and ``overwrite`` is False it is kept (and its manifest returned).
    Raises :class:`LettersWriteError` when writing fails (disk full, ...), leaving no partial file.
    """
    from tqdm.auto import tqdm

    seed = get_seed() if seed is None else int(seed)
    _check_n(n)
    p = paths(n, seed, folder)
    p.images.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and p.manifest.exists():
        try:
            return load_letters(n, seed, folder=folder, verify=False).manifest
        except LettersDataError:
            pass  # a broken set: regenerate it below
    need = expected_bytes(n)
    free = shutil.disk_usage(p.images.parent).free
    if free < need * 1.05 + (16 << 20):
        raise LettersWriteError(
            28, f"not enough free disk space in {p.images.parent}: the letters set of {n:,} images needs "
                f"{need / 1e6:.0f} MB, {free / 1e6:.0f} MB are free. Free some space or pick a smaller n.")
    p.manifest.unlink(missing_ok=True)  # the old manifest must never describe new files
    t0 = time.perf_counter()
    w_img = w_lab = None
    try:
        w_img = _AtomicNpyWriter(p.images, (n, IMAGE_SIZE, IMAGE_SIZE))
        w_lab = _AtomicNpyWriter(p.labels, (n,))
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        with tqdm(total=n, unit="img", desc="letters", disable=not progress, leave=False) as bar:
            for img, lab in generate_chunks(n, seed):
                w_img.write(img.tobytes())
                w_lab.write(lab.tobytes())
                counts += np.bincount(lab, minlength=len(CLASSES))
                bar.update(len(lab))
        f_img = w_img.commit()
        f_lab = w_lab.commit()
    except OSError as e:
        for w in (w_img, w_lab):
            if w is not None:
                w.abort()
        for q in (p.images, p.labels):
            q.unlink(missing_ok=True)
        raise LettersWriteError(e.errno or 28, f"writing the letters set to {p.images.parent} failed ({e}); "
                                f"no partial file was left. Free disk space (it needs {need / 1e6:.0f} MB) "
                                "and run again.") from e
    seconds = time.perf_counter() - t0
    manifest = {
        "format": "lessons-letters", "version": VERSION, "seed": seed, "n": int(n),
        "image_shape": [IMAGE_SIZE, IMAGE_SIZE], "dtype": "uint8", "classes": CLASSES, "chunk": CHUNK,
        "fonts": list(_templates()[1]), "class_counts": counts.tolist(), "seconds": seconds,
        "files": {"images": {**f_img, "shape": [int(n), IMAGE_SIZE, IMAGE_SIZE]},
                  "labels": {**f_lab, "shape": [int(n)]}},
    }
    atomic_write_bytes(p.manifest, json.dumps(manifest, indent=1).encode())
    return manifest


@dataclass
class LettersSet:
    """A letters set on disk: ``images`` (n, 28, 28) and ``labels`` (n,) uint8, memory-mapped by default."""

    images: np.ndarray
    labels: np.ndarray
    manifest: dict
    paths: LetterPaths

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def nbytes(self) -> int:
        """Bytes of the images as uint8 (the set's size in memory at its most compact)."""
        return self.n * IMAGE_SIZE**2

    def split(self, val_fraction: float = 0.1, max_val: int = 10_000) -> tuple[range, range]:
        """(train, val) index ranges: the last ``min(val_fraction * n, max_val)`` images are validation."""
        n_val = max(1, min(int(round(val_fraction * self.n)), max_val))
        if n_val >= self.n:
            raise ValueError(f"a set of {self.n} images is too small to split off a validation set")
        return range(0, self.n - n_val), range(self.n - n_val, self.n)


def _fix(n: int, seed: int, folder) -> str:
    where = "" if folder is None else f", folder={str(folder)!r}"
    return (f"Regenerate it with `lessons_lib.letters.generate_letters({n}, seed={seed}{where}, overwrite=True)` "
            "(or delete the letters_* files and run the notebook again).")


def load_letters(
    n: int, seed: int | None = None, *, folder: str | os.PathLike | None = None, mmap: bool = True,
    verify: bool = True,
) -> LettersSet:
    """Open the set of ``n`` images; ``mmap`` keeps the arrays on disk (``np.load(mmap_mode="r")``).

    Checks the manifest (format, n, seed, shapes), the file sizes and the .npy headers; ``verify`` also
    checks the sha256 of both files (reads them once). Raises FileNotFoundError when there is no manifest and
    :class:`LettersDataError` (saying how to regenerate) when anything does not match.
    """
    seed = get_seed() if seed is None else int(seed)
    _check_n(n)
    p = paths(n, seed, folder)
    fix = _fix(n, seed, folder)
    if not p.manifest.exists():
        raise FileNotFoundError(f"no letters set of {n} images with seed {seed} at {p.manifest}")
    try:
        m = json.loads(p.manifest.read_text())
        files = m["files"]
        ok = (m.get("format") == "lessons-letters" and m.get("version") == VERSION and m.get("n") == n
              and m.get("seed") == seed and files["images"]["shape"] == [n, IMAGE_SIZE, IMAGE_SIZE]
              and files["labels"]["shape"] == [n])
    except (ValueError, KeyError, TypeError) as e:
        raise LettersDataError(f"{p.manifest} is not a valid letters manifest ({e}). {fix}") from None
    if not ok:
        raise LettersDataError(f"{p.manifest} does not describe the set of {n} images with seed {seed} "
                               f"(it says n={m.get('n')}, seed={m.get('seed')}, version={m.get('version')}). {fix}")
    arrays = {}
    for key, path in (("images", p.images), ("labels", p.labels)):
        info = files[key]
        if not path.exists():
            raise LettersDataError(f"{path} is missing. {fix}")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise LettersDataError(f"{path} has {size:,} bytes, its manifest says {info['bytes']:,}: the file is "
                                   f"truncated or was replaced. {fix}")
        if verify and sha256_file(path) != info["sha256"]:
            raise LettersDataError(f"{path} does not match the sha256 in its manifest: it is corrupt. {fix}")
        try:
            a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise LettersDataError(f"{path} is not a readable .npy file ({e}). {fix}") from None
        if list(a.shape) != info["shape"] or a.dtype != np.uint8:
            raise LettersDataError(f"{path} holds {a.dtype} {a.shape}, expected uint8 {tuple(info['shape'])}. {fix}")
        arrays[key] = a
    return LettersSet(arrays["images"], arrays["labels"], m, p)


def get_letters(
    n: int, seed: int | None = None, *, folder: str | os.PathLike | None = None, progress: bool = False,
    verify: bool = True,
) -> tuple[LettersSet, float | None]:
    """Open the set, generating it first if it is not there. Returns (set, seconds spent generating or None).

    A set that is there but broken raises :class:`LettersDataError` (with the fix) instead of being silently
    replaced."""
    seed = get_seed() if seed is None else int(seed)
    try:
        return load_letters(n, seed, folder=folder, verify=verify), None
    except FileNotFoundError:
        pass
    t0 = time.perf_counter()
    generate_letters(n, seed, folder=folder, overwrite=True, progress=progress)
    seconds = time.perf_counter() - t0
    return load_letters(n, seed, folder=folder, verify=False), seconds
