"""Lesson 08, a control: the operating system's page cache, emptied and checked, for a cold-cache measurement.

A file read once stays in the operating system's page cache (free memory it keeps as a copy of the disk), so a
second epoch "from disk" usually reads RAM. A reviewer asks: how fast is streaming when the bytes really come from
the disk? Two calls answer it without root rights:

* :func:`drop_from_page_cache`: ``posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` asks the kernel to drop the
  file's clean cached pages (Linux; a page another process holds mapped, or a dirty page, may stay).
* :func:`resident_fraction`: ``mincore()`` on a fresh read-only mapping of the file says, page by page, which
  pages are in the page cache right now: it checks that the drop worked (and, after an epoch, what it read back).

Best-effort, and what that means: ``POSIX_FADV_DONTNEED`` is advice. It needs no root rights and the kernel may
keep pages (mapped or dirty ones, or pages read back by another process meanwhile), which is why the residency is
measured rather than assumed. What a successful drop guarantees is only that the file's bytes are not in this
machine's page cache: the next read goes to the block device. It does not empty the disk's own cache, a RAID
controller's, or the host's cache behind a virtual disk, so a "cold" read may still be faster than a first read
from a spinning disk would be.

Where either call is missing (macOS has no ``posix_fadvise``; Windows has neither) :func:`cold_cache_supported`
says why, and the lesson reports the cold measurement as not measurable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_PROT_READ, _MAP_SHARED = 0x1, 0x01  # the same values on Linux and macOS


@dataclass(frozen=True)
class Drop:
    """One file's page-cache residency before and after :func:`drop_from_page_cache` (fractions of its pages)."""

    path: str
    before: float
    after: float

    @property
    def dropped(self) -> bool:
        """True when at most 2% of the file's pages are still cached."""
        return self.after <= 0.02


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


def cold_cache_supported() -> str | None:
    """None when this machine can drop a file from the page cache and check it; else why not."""
    if not hasattr(os, "posix_fadvise"):
        return f"{sys.platform} has no posix_fadvise: a file cannot be dropped from the page cache without root"
    if not sys.platform.startswith("linux"):
        return f"dropping pages with posix_fadvise is only checked on Linux here, not on {sys.platform}"
    if _libc() is None:
        return "the C library (for mincore) was not found"
    return None


def resident_fraction(path: str | os.PathLike) -> float:
    """The fraction of ``path``'s pages that are in the page cache now (``mincore`` on a read-only mapping, which
    touches no page). An empty file counts as fully resident."""
    libc = _libc()
    if libc is None:
        raise OSError("the C library (for mincore) was not found")
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore on {path} failed")
            return sum(b & 1 for b in bytes(vec)) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def drop_from_page_cache(*paths: str | os.PathLike) -> list[Drop]:
    """Ask the kernel to drop each file's cached pages (``POSIX_FADV_DONTNEED``) and check with ``mincore`` how
    much is still cached. Dirty pages are written first (``fdatasync``), since only clean pages can be dropped.
    Raises OSError with the reason where this cannot work (see :func:`cold_cache_supported`)."""
    why = cold_cache_supported()
    if why:
        raise OSError(why)
    out = []
    for p in paths:
        before = resident_fraction(p)
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        out.append(Drop(str(Path(p)), before, resident_fraction(p)))
    return out
