"""The "letters" set: a notMNIST-like set the course generates itself, offline.

Letters A–J rendered from the fonts matplotlib ships, 28x28 grayscale, uint8. Each image is one glyph with:
a stroke width (the glyph thickened by 0, 1 or 2 pixels at twice the resolution), a random affine distortion
(rotation, scale, aspect, shear, shift), a smooth elastic warp, sometimes a fainter fragment of another letter
beside it (as in a crop from a line of text), a random contrast and background, and pixel noise.
Deterministic by seed, any size from 1 to 500,000 images.

Validation uses **fonts that training never sees**: the fonts are split into training fonts and held-out fonts
(every fifth, see :func:`font_split`), and the last :data:`VAL_PER_CHUNK` images of every chunk of :data:`CHUNK`
are rendered from held-out fonts. :meth:`LettersSet.split` returns those images as validation, the rest as
training, so no set ever trains on a validation font. (Version 1 of the set was easy: a small MLP reached ~99.6%
validation accuracy after one epoch, so a learning curve had nothing to show. Version 2 is the one described here.)

* Generated in chunks of :data:`CHUNK` images, each chunk from its own random stream ``[seed, 8, k]`` and always
  generated whole: memory stays bounded, and the first ``n`` images of a larger set with the same seed are the set
  of size ``n`` (the prefix property).
* Written as uint8 ``.npy`` files (``images`` of shape (n, 28, 28), ``labels`` of shape (n,), 0..9 = A..J)
  under :func:`lessons_lib.cache.data_dir`, each through a temporary name and a rename, then a JSON manifest
  (shape, dtype, seed, version, fonts, bytes, sha256). A crash or a full disk leaves no half file. The file names
  carry the version (``letters_v2_s0_n50000_images.npy``), so a set of an older version is never reused:
  :func:`old_files` lists such files, :func:`remove_old_files` deletes them.
* :func:`load_letters` checks the files against the manifest and says how to regenerate when they differ: always
  the manifest, the file sizes and the ``.npy`` headers, and with ``verify=True`` (the default everywhere, also when
  :func:`generate_letters` or :func:`get_letters` reuse a set) the sha256 of both files, which reads them once (about
  a second for the 500k set). A file verified once is not hashed again by the same process while its size, inode
  and modification time stay the same. ``verify=False`` is the documented opt-out: only the cheap checks, so a set
  whose bytes were flipped in place is not noticed.
* Interrupted writes: the temporary files carry the writer's pid (``.letters_..._images.npy.<pid>.<random>.tmp``);
  any exception (a full disk, Ctrl-C) deletes them, and the next :func:`generate_letters` sweeps those of a writer
  that was killed outright (``kill -9``). Files are written 0644 (readable by every user).
* Arguments follow :mod:`lessons_lib.validate`: ``n`` and ``seed`` are whole numbers (numpy integers accepted,
  bools refused), anything else raises :class:`~lessons_lib.validate.BadArgument` naming the argument and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cache import FILE_MODE, atomic_write_bytes, data_dir, sha256_file, sweep_stale_temporaries
from .seeds import check_seed, get_seed
from .validate import BadArgument, check_int

CLASSES = "ABCDEFGHIJ"
IMAGE_SIZE = 28
MAX_IMAGES = 500_000
CHUNK = 1000  # images per random stream / per generation step
VAL_PER_CHUNK = 100  # the last 100 images of every chunk are rendered from held-out fonts (validation)
VERSION = 2  # bump when the images change: the version is in the file names and the manifest
SUPERSAMPLE = 2  # glyphs are distorted at 56x56 and averaged down to 28x28 (anti-aliasing)
STROKES = (0, 1, 2)  # stroke thickening (pixels of dilation at 56x56) an image is drawn with
_EXCLUDED_FONTS = ("LastResort", "cmex10", "cmsy10")
_HELD_OUT_EVERY = 5  # font i (in sorted order) is held out for validation when i % 5 == 2
_STEM = re.compile(r"^letters_(v(?P<version>\d+)_)?s-?\d+_n\d+(_images\.npy|_labels\.npy|\.json)$")


class LettersDataError(RuntimeError):
    """The letters files on disk are missing a piece, truncated, corrupt, or do not match their manifest."""


class LettersWriteError(OSError):
    """Writing the letters set failed (a full disk, a folder that is not writable); no partial file was left."""


# --- fonts and glyph templates -----------------------------------------------------------------
def font_files() -> list[Path]:
    """The TrueType fonts shipped with matplotlib that have glyphs for A..J (about two dozen), sorted by name."""
    import matplotlib
    from matplotlib.ft2font import FT2Font

    out = []
    for p in sorted(Path(matplotlib.get_data_path(), "fonts", "ttf").glob("*.ttf")):
        if any(x in p.name for x in _EXCLUDED_FONTS):
            continue
        f = FT2Font(str(p))
        if all(f.get_char_index(ord(c)) != 0 for c in CLASSES):
            out.append(p)
    if len(out) < _HELD_OUT_EVERY:
        raise RuntimeError(f"only {len(out)} usable fonts found in matplotlib's data folder (the set needs at least "
                           f"{_HELD_OUT_EVERY}); reinstall matplotlib")
    return out


def font_split(n_fonts: int) -> tuple[np.ndarray, np.ndarray]:
    """(training fonts, held-out validation fonts) as indices into :func:`font_files`: every fifth font, from the
    third on, is held out (with matplotlib's 22 fonts: one or two of each family)."""
    i = np.arange(n_fonts)
    held = i % _HELD_OUT_EVERY == 2
    return i[~held], i[held]


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
    """(templates float32 (n_fonts, 10, len(STROKES), T, T) in [0, 1] with T = 28 * SUPERSAMPLE, font names).

    Each glyph is cropped, padded to a square and resized so its longer side is ``box`` of the canvas, then
    thickened by each of :data:`STROKES` pixels (a max filter)."""
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
    flat = torch.from_numpy(out).reshape(-1, 1, t, t)
    strokes = [flat if k == 0 else F.max_pool2d(flat, 2 * k + 1, 1, k) for k in STROKES]
    thick = torch.stack(strokes, 1).reshape(len(fonts), len(CLASSES), len(STROKES), t, t).numpy()
    return np.ascontiguousarray(thick), tuple(p.stem for p in fonts)


@lru_cache(maxsize=1)
def _basis() -> np.ndarray:
    """(12, T*T) float32: rows x, y, 1 (the affine part) and the 9 smooth modes cos(i*pi*u) cos(j*pi*v),
    i, j in 0..2 (the elastic part), at the pixel centres of the T x T canvas in grid_sample's [-1, 1] units."""
    t = IMAGE_SIZE * SUPERSAMPLE
    c = ((np.arange(t) * 2 + 1) / t - 1).astype(np.float64)  # pixel centres (align_corners=False)
    y, x = np.meshgrid(c, c, indexing="ij")
    modes = [np.cos(np.pi * i * (y + 1) / 2) * np.cos(np.pi * j * (x + 1) / 2) for i in range(3) for j in range(3)]
    return np.stack([x, y, np.ones_like(x), *modes]).reshape(12, t * t).astype(np.float32)


def _sampling_grid(theta: np.ndarray, elastic: np.ndarray) -> np.ndarray:
    """grid_sample's grid (m, T, T, 2): the affine map ``theta`` (m, 2, 3) plus the elastic field, whose modes'
    amplitudes are ``elastic`` (m, 2, 9)."""
    t = IMAGE_SIZE * SUPERSAMPLE
    coef = np.concatenate([theta, elastic], axis=2).astype(np.float32)  # (m, 2, 12)
    return (coef.reshape(-1, 12) @ _basis()).reshape(len(theta), 2, t, t).transpose(0, 2, 3, 1)


# --- generation ----------------------------------------------------------------------------------
def _chunk(seed: int, k: int, size: int, return_fonts: bool = False):
    """Images uint8 (size, 28, 28) and labels uint8 (size,) of chunk ``k`` (its own random stream), and with
    ``return_fonts`` each image's font (index into :func:`font_files`). Its last :data:`VAL_PER_CHUNK` images
    are drawn from the held-out fonts; call it with ``size = CHUNK``."""
    import torch
    import torch.nn.functional as F

    templ, _ = _templates()
    train_fonts, val_fonts = font_split(templ.shape[0])
    rng = np.random.default_rng([seed, 8, k])
    labels = rng.integers(0, len(CLASSES), size)
    held_out = np.arange(size) >= size - VAL_PER_CHUNK
    fonts = np.where(held_out, val_fonts[rng.integers(0, len(val_fonts), size)],
                     train_fonts[rng.integers(0, len(train_fonts), size)])
    stroke = rng.integers(0, len(STROKES), size)
    rot = np.deg2rad(np.clip(rng.normal(0.0, 10.0, size), -25, 25))
    scale = rng.uniform(0.85, 1.25, size)  # >1 shrinks the letter (theta maps output to input coordinates)
    aspect = rng.uniform(0.8, 1.2, size)
    shear = rng.uniform(-0.3, 0.3, size)
    shift = rng.uniform(-0.12, 0.12, (size, 2))
    elastic = rng.standard_normal((size, 2, 9)) * 0.04
    elastic[:, :, 0] = 0.0  # mode (0, 0) is a plain shift, already drawn
    # in 30% of the images, part of another letter (same font, fainter) beside this one, as in a line of text
    neighbour = (labels + rng.integers(1, len(CLASSES), size)) % len(CLASSES)
    n_shift = np.stack([rng.choice([-1.0, 1.0], size) * rng.uniform(0.8, 1.3, size),
                        rng.uniform(-0.15, 0.15, size)], 1)  # left or right of this letter
    n_alpha = rng.uniform(0.2, 0.5, size) * (rng.random(size) < 0.3)
    contrast = rng.uniform(0.55, 1.0, size)
    background = rng.uniform(0.0, 0.25, size)
    noise = rng.uniform(0.0, 0.12, size)
    gauss = rng.standard_normal((size, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)

    c, s = np.cos(rot), np.sin(rot)
    a11, a12 = c * scale * aspect, (c * shear - s) * scale
    a21, a22 = s * scale * aspect, (s * shear + c) * scale
    theta = np.stack([np.stack([a11, a12, shift[:, 0]], 1), np.stack([a21, a22, shift[:, 1]], 1)], 1)
    src = torch.from_numpy(templ[fonts, labels, stroke][:, None])  # (size, 1, T, T)
    grid = torch.from_numpy(_sampling_grid(theta, elastic))
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    near = np.flatnonzero(n_alpha > 0)
    if len(near):
        th = theta[near].copy()
        th[:, :, 2] += n_shift[near]
        nsrc = torch.from_numpy(templ[fonts[near], neighbour[near], 0][:, None])
        frag = F.grid_sample(nsrc, torch.from_numpy(_sampling_grid(th, elastic[near])), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        frag *= torch.from_numpy(n_alpha[near].astype(np.float32))[:, None, None, None]
        warped[near] = torch.maximum(warped[near], frag)
    x = F.avg_pool2d(warped, SUPERSAMPLE)[:, 0].numpy()  # (size, 28, 28) in [0, 1]
    x = background[:, None, None].astype(np.float32) + (contrast * (1 - background))[:, None, None].astype(
        np.float32) * x
    x += noise[:, None, None].astype(np.float32) * gauss
    img = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return (img, labels.astype(np.uint8), fonts) if return_fonts else (img, labels.astype(np.uint8))


def generate_chunks(n: int, seed: int | None = None):
    """Yield ``(images uint8 (m, 28, 28), labels uint8 (m,))`` chunks, in order, making up ``n`` images."""
    seed = _seed(seed)
    n = _check_n(n)
    for k in range(math.ceil(n / CHUNK)):
        size = min(CHUNK, n - k * CHUNK)
        img, lab = _chunk(seed, k, CHUNK)  # always the full chunk: a prefix of a set is the smaller set
        yield img[:size], lab[:size]


def make_letters(n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The set in memory (small n only: tests, pictures). Use :func:`generate_letters` for files."""
    n, seed = _check_n(n), _seed(seed)
    parts = list(generate_chunks(n, seed))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_n(n, name: str = "n") -> int:
    """``n`` as a Python int in [1, MAX_IMAGES] (numpy integers accepted, bools and fractions refused)."""
    return check_int(n, name, low=1, high=MAX_IMAGES,
                     fix=f"the letters set has 1 to {MAX_IMAGES:,} images, e.g. {name}=50_000")


def _seed(seed) -> int:
    """The course seed when ``seed`` is None, else ``seed`` checked (a whole number in [0, 2**32 - 1])."""
    return get_seed() if seed is None else check_seed(seed)


def is_validation(index) -> np.ndarray:
    """Whether image ``index`` (an int or an int array) is drawn from a held-out font: the last
    :data:`VAL_PER_CHUNK` of every chunk of :data:`CHUNK` images."""
    return np.asarray(index) % CHUNK >= CHUNK - VAL_PER_CHUNK


def split_indices(n: int, max_val: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted int64 index arrays of the set of ``n`` images: training = the images of training
    fonts; validation = the first ``max_val`` images of held-out fonts (the others are left out: a held-out font
    is never trained on). About 10% of ``n`` is validation (at most ``max_val``)."""
    n = _check_n(n)
    max_val = check_int(max_val, "max_val", low=1, fix="the most validation images to keep, e.g. 10_000")
    idx = np.arange(n, dtype=np.int64)
    val = is_validation(idx)
    if not val.any():
        raise BadArgument(f"n={n}: a set of {n} images has no validation images yet (they are the last "
                          f"{VAL_PER_CHUNK} of every {CHUNK}); use n >= {CHUNK - VAL_PER_CHUNK + 1}")
    return idx[~val], idx[val][:max_val]


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
    n, seed = _check_n(n), _seed(seed)
    base = _folder(folder)
    stem = f"letters_v{VERSION}_s{seed}_n{n}"
    return LetterPaths(base / f"{stem}_images.npy", base / f"{stem}_labels.npy", base / f"{stem}.json")


def _folder(folder) -> Path:
    if folder is None:
        return data_dir()
    if not isinstance(folder, (str, os.PathLike)) or str(folder) == "":
        raise BadArgument(f"folder={folder!r}: must be a folder path (str or pathlib.Path), or None for the course's "
                          "data folder")
    return Path(folder)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    shape = tuple(int(d) for d in shape)  # np.int64(3) would be written as "np.int64(3)": an unreadable header
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


class _AtomicNpyWriter:
    """Stream uint8 rows into ``path`` via a temporary file named with the writer's pid (so that
    :func:`lessons_lib.cache.sweep_stale_temporaries` removes it after a ``kill -9``); ``commit`` renames it into
    place, ``abort`` closes and deletes it."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        import hashlib

        self.path = path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        self.tmp = Path(tmp)
        try:
            os.fchmod(fd, FILE_MODE)  # readable by every user, like the course's other files (mkstemp gives 0600)
            self.f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        self.h = hashlib.sha256()
        self.bytes = 0
        try:
            self.write(_npy_header(shape))
        except BaseException:
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
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:
            pass  # swept by the next run


def expected_bytes(n: int) -> int:
    """Bytes on disk of the set of ``n`` images (both .npy files, headers included)."""
    n = _check_n(n)
    return len(_npy_header((n, IMAGE_SIZE, IMAGE_SIZE))) + n * IMAGE_SIZE**2 + len(_npy_header((n,))) + n


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes < 10e6 else f"{nbytes / 1e6:,.0f} MB"


def _write_error(e: OSError, folder: Path, n: int, need: int) -> LettersWriteError:
    """What to say when writing failed: a full disk and a folder one may not write are different problems."""
    code = e.errno or errno.EIO
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (f"The folder is not writable ({e.strerror or e}): make it writable, or point LESSONS_DATA_DIR at a "
               "writable folder (e.g. LESSONS_DATA_DIR=$HOME/lessons-data), or pass folder=...")
    elif code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = (f"The disk is full or a file-size limit was reached ({e.strerror or e}): free some space (the set needs "
               f"{_mb(need)}) or pick a smaller n.")
    else:
        fix = f"({e}) Check the folder and run again."
    return LettersWriteError(code, f"writing the letters set of {n:,} images to {folder} failed; no partial file was "
                                   f"left. {fix}")


def generate_letters(
    n: int,
    seed: int | None = None,
    *,
    folder: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    verify: bool = True,
) -> dict:
    """Generate the set of ``n`` images into files (see the module docstring); return its manifest.

    If a set is already there and ``overwrite`` is False it is reused (and its manifest returned) once it passes
    :func:`load_letters` (with ``verify``: its sha256 too; ``verify=False`` skips the hash, see the module
    docstring); a set that fails is regenerated. Raises :class:`LettersWriteError` when writing fails (a full disk,
    a folder that is not writable), and on any exit by an exception (Ctrl-C included) leaves no partial file and
    no temporary file; temporaries of a writer killed outright are swept at the start of the next call.
    """
    from tqdm.auto import tqdm

    n, seed = _check_n(n), _seed(seed)
    overwrite, progress, verify = _flag(overwrite, "overwrite"), _flag(progress, "progress"), _flag(verify, "verify")
    p = paths(n, seed, folder)
    base = p.images.parent
    need = expected_bytes(n)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, base, n, need) from None
    sweep_stale_temporaries(base)
    if not overwrite and p.manifest.exists():
        try:
            return load_letters(n, seed, folder=folder, verify=verify).manifest
        except LettersDataError:
            pass  # a broken set: regenerate it below
    if not os.access(base, os.W_OK | os.X_OK):
        raise _write_error(PermissionError(errno.EACCES, "permission denied"), base, n, need)
    free = shutil.disk_usage(base).free
    if free < need * 1.05 + (16 << 20):
        raise LettersWriteError(
            errno.ENOSPC, f"not enough free disk space in {base}: the letters set of {n:,} images needs "
                          f"{_mb(need)}, {_mb(free)} are free. Free some space or pick a smaller n.")
    t0 = time.perf_counter()
    writers: list[_AtomicNpyWriter] = []
    done = False
    try:
        p.manifest.unlink(missing_ok=True)  # the old manifest must never describe new files
        _VERIFIED.pop(str(p.images), None)
        _VERIFIED.pop(str(p.labels), None)
        writers.append(_AtomicNpyWriter(p.images, (n, IMAGE_SIZE, IMAGE_SIZE)))
        writers.append(_AtomicNpyWriter(p.labels, (n,)))
        w_img, w_lab = writers
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        with tqdm(total=n, unit="img", desc="letters", disable=not progress, leave=False) as bar:
            for img, lab in generate_chunks(n, seed):
                w_img.write(img.tobytes())
                w_lab.write(lab.tobytes())
                counts += np.bincount(lab, minlength=len(CLASSES))
                bar.update(len(lab))
        f_img = w_img.commit()
        f_lab = w_lab.commit()
        seconds = time.perf_counter() - t0
        names = _templates()[1]
        manifest = {
            "format": "lessons-letters", "version": VERSION, "seed": seed, "n": n,
            "image_shape": [IMAGE_SIZE, IMAGE_SIZE], "dtype": "uint8", "classes": CLASSES, "chunk": CHUNK,
            "fonts": list(names), "validation_fonts": [names[i] for i in font_split(len(names))[1]],
            "val_per_chunk": VAL_PER_CHUNK, "class_counts": counts.tolist(), "seconds": seconds,
            "files": {"images": {**f_img, "shape": [n, IMAGE_SIZE, IMAGE_SIZE]},
                      "labels": {**f_lab, "shape": [n]}},
        }
        atomic_write_bytes(p.manifest, json.dumps(manifest, indent=1).encode())
        done = True
    except OSError as e:
        raise _write_error(e, base, n, need) from e
    finally:
        if not done:  # any exit by an exception, KeyboardInterrupt included: no temporary, no half set
            for w in writers:
                w.abort()
            for q in p.all():
                try:
                    q.unlink(missing_ok=True)
                except OSError:
                    pass
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

    def split(self, max_val: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) sorted int64 index arrays: validation = held-out fonts (see :func:`split_indices`)."""
        return split_indices(self.n, max_val)


def old_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """Letters files of another version of the set in ``folder`` (default :func:`data_dir`): never read again."""
    base = _folder(folder)
    out = []
    for p in sorted(base.glob("letters_*")):
        m = _STEM.match(p.name)
        if m and int(m.group("version") or 1) != VERSION:
            out.append(p)
    return out


def remove_old_files(folder: str | os.PathLike | None = None) -> int:
    """Delete :func:`old_files`; returns the bytes freed."""
    freed = 0
    for p in old_files(folder):
        freed += p.stat().st_size
        p.unlink(missing_ok=True)
    return freed


_VERIFIED: dict[str, tuple[int, int, int, str]] = {}  # path -> (inode, size, mtime_ns, sha256) hashed by this process


def _sha256_once(path: Path) -> str:
    """The file's sha256, hashed again only when its inode, size or modification time changed since this process
    last hashed it (rewriting a file in place, even one byte, changes its modification time)."""
    st = path.stat()
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _VERIFIED.get(str(path))
    if hit is not None and hit[:3] == key:
        return hit[3]
    digest = sha256_file(path)
    _VERIFIED[str(path)] = (*key, digest)
    return digest


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise BadArgument(f"{name}={value!r}: must be True or False, got {type(value).__name__}")
    return bool(value)


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
    checks the sha256 of both files (reads them once per process, see the module docstring; ``verify=False`` is the
    opt-out that trusts bytes of the right size). Raises FileNotFoundError when there is no manifest and
    :class:`LettersDataError` (saying how to regenerate) when anything does not match.
    """
    n, seed = _check_n(n), _seed(seed)
    mmap, verify = _flag(mmap, "mmap"), _flag(verify, "verify")
    p = paths(n, seed, folder)
    fix = _fix(n, seed, folder)
    if not p.manifest.exists():
        raise FileNotFoundError(f"no letters set of {n} images with seed {seed} at {p.manifest}")
    try:
        m = json.loads(p.manifest.read_bytes())
        files = m["files"]
        ok = (m.get("format") == "lessons-letters" and m.get("version") == VERSION and m.get("n") == n
              and m.get("seed") == seed and files["images"]["shape"] == [n, IMAGE_SIZE, IMAGE_SIZE]
              and files["labels"]["shape"] == [n]
              and all(isinstance(files[k].get("bytes"), int) and isinstance(files[k].get("sha256"), str)
                      for k in ("images", "labels")))
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
        if verify and _sha256_once(path) != info.get("sha256"):
            raise LettersDataError(f"{path} does not match the sha256 in its manifest: it is corrupt. {fix}")
        try:
            a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
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
    replaced. ``verify``: see :func:`load_letters` (default: the sha256 too, once per process)."""
    n, seed = _check_n(n), _seed(seed)
    progress = _flag(progress, "progress")
    try:
        return load_letters(n, seed, folder=folder, verify=verify), None
    except FileNotFoundError:
        pass
    t0 = time.perf_counter()
    generate_letters(n, seed, folder=folder, overwrite=True, progress=progress, verify=verify)
    seconds = time.perf_counter() - t0
    return load_letters(n, seed, folder=folder, verify=False), seconds
