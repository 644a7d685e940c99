"""Compiled helpers, built on this machine: a lesson's C++ file (a PyTorch extension) is compiled once with
``torch.utils.cpp_extension`` into ``<data dir>/build/<name>`` and loaded from there (a later process loads the
built module in a fraction of a second; a changed source is rebuilt). `make data` builds every one ahead
(``python -m lessons_lib.native``), so no notebook waits for the compiler (about 30 s per file on 2 cores).

A machine that cannot build one (no C++ compiler or ninja, an unwritable data folder, or ``LESSONS_NATIVE=0``)
gets None, with the reason in :func:`why_not` and one warning: the lesson then runs its numpy path, slower and
with the same semantics.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

from .cache import data_dir

NATIVE_ENV = "LESSONS_NATIVE"  # "0": never build or load compiled helpers
# For any CPU of the architecture (no -march=native: a build made in one place, e.g. a Binder image, may run on
# another CPU). OpenMP (Linux, gcc): at::parallel_for is a template compiled into the extension, serial without
# -fopenmp; linked with it, the extension shares the libgomp.so.1 torch has loaded (one pool, torch's threads).
_OPENMP = ["-fopenmp"] if platform.system() == "Linux" else []
_FLAGS = ["-O3", *_OPENMP]
_loaded: dict[str, ModuleType | None] = {}  # by source path
_reasons: dict[str, str] = {}  # by name


def sources() -> list[Path]:
    """Every lesson's C++ source (``lessons_lib/<lesson>/*.cpp``)."""
    return sorted(Path(__file__).resolve().parent.glob("*/*.cpp"))


def _ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the venv's own (pip's ``ninja``) is not on it unless the venv is active."""
    here = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and (Path(here) / "ninja").exists():
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def _build_dir(name: str) -> Path:
    return data_dir() / "build" / name


def load(source: str | os.PathLike, *, warn: bool = True) -> ModuleType | None:
    """The extension built from ``source`` (its stem names it), built now if needed; None if it cannot be
    (see :func:`why_not`). Cached for the process by the path: a repeated call is one dictionary lookup, cheap
    enough for a layer's forward."""
    key = os.fspath(source)
    if key in _loaded:
        return _loaded[key]
    source = Path(key)
    name = source.stem
    module = None
    if os.environ.get(NATIVE_ENV, "1").strip() == "0":
        _reasons[name] = f"{NATIVE_ENV}=0"
    else:
        try:
            build = _build_dir(name)
            _ninja_on_path()
            build.mkdir(parents=True, exist_ok=True)
            from torch.utils.cpp_extension import load as build_and_load

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = build_and_load(name, [str(source)], extra_cflags=_FLAGS, extra_ldflags=_OPENMP,
                                        build_directory=str(build))
        except Exception as e:  # no compiler or ninja, a compile error, an unwritable folder: the numpy path
            lines = str(e).strip().splitlines()
            _reasons[name] = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
            if warn:
                warnings.warn(f"{name}: the compiled helper could not be built ({_reasons[name]}); using the numpy "
                              f"path instead (same results, slower). Set {NATIVE_ENV}=0 to skip the attempt.",
                              RuntimeWarning, stacklevel=2)
    _loaded[key] = module
    return module


def why_not(name: str) -> str | None:
    """Why the extension ``name`` is not available in this process (None: it is, or was never asked for)."""
    return _reasons.get(name)


def build_all() -> list[str]:
    """Build (or find built) every lesson's extension; a line each."""
    out = []
    for src in sources():
        module = load(src, warn=False)
        out.append(f"{src.stem}: " + (f"built in {_build_dir(src.stem)}" if module is not None
                                      else f"not built ({why_not(src.stem)}); its lesson uses the numpy path"))
    return out


if __name__ == "__main__":
    for line in build_all():
        print(line)
