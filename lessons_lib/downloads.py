"""Optional real data for online learners: https only, a pinned sha256 per file, an atomic write.

The course never needs the network (its data sets are generated locally); nothing here runs at import or in a
notebook's default path. :func:`download` fetches a named set from :data:`REMOTES`; :func:`fetch` one file.
Every failure (offline, HTTP error, cut-off transfer, wrong checksum, non-https URL) raises a
:class:`DownloadError` saying what happened and leaves neither the file nor a temporary file behind.

Tests never touch the network: plain http is accepted from this machine's loopback address only, and
:func:`loopback_server` serves fixture bytes there (including a transfer cut off halfway).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .cache import atomic_open, data_dir, sha256_file
from .validate import BadArgument, check_float, check_int


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: where it is, its pinned sha256 and (when known) its size in bytes."""

    url: str
    sha256: str | None  # None: this course has no pinned checksum; download() refuses unless one is given
    bytes: int | None = None

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


_FASHION = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
REMOTES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (RemoteFile("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                         "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1", 11_490_434),),
    "fashion-mnist": (
        RemoteFile(_FASHION + "train-images-idx3-ubyte.gz",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        RemoteFile(_FASHION + "train-labels-idx1-ubyte.gz",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        RemoteFile(_FASHION + "t10k-images-idx3-ubyte.gz",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        RemoteFile(_FASHION + "t10k-labels-idx1-ubyte.gz",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
    "notmnist-small": (RemoteFile("https://commondatastorage.googleapis.com/books1000/notMNIST_small.tar.gz", None,
                                  8_458_043),),
}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, cut-off transfer, refused URL); nothing was cached."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the pinned sha256; nothing was cached."""


def _check_url(url: str) -> None:
    u = urllib.parse.urlparse(url)
    if u.scheme == "https" or (u.scheme == "http" and u.hostname in _LOOPBACK):
        return
    raise DownloadError(f"refusing {url!r}: the course downloads over https only (plain http is accepted from "
                        "this machine's loopback address, which the tests use)")


def fetch(url: str, sha256: str, dest: str | os.PathLike, *, expected_bytes: int | None = None,
          timeout: float = 60, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` through a temporary file; keep it only if its sha256 is ``sha256``.

    An existing ``dest`` with the right checksum is kept without downloading. Raises :class:`DownloadError`
    (offline, HTTP error, cut-off transfer, non-https URL) or :class:`ChecksumError`; in every failure no file
    is left at ``dest`` and no temporary file is left beside it.
    """
    from tqdm.auto import tqdm

    _check_url(url)
    if not isinstance(sha256, str) or not sha256:
        raise DownloadError(f"no pinned sha256 for {url}: pass the 64-hex-digit checksum of a file you trust")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise BadArgument(f"sha256={sha256!r} is not a sha256 checksum: it must be 64 hexadecimal digits "
                          "(0-9, a-f), e.g. the output of `sha256sum FILE` for a file you trust")
    expected_bytes = None if expected_bytes is None else check_int(expected_bytes, "expected_bytes", low=1)
    timeout = check_float(timeout, "timeout", low=0, low_open=True, fix="seconds to wait for the server, e.g. 60")
    dest = Path(dest)
    if dest.exists() and sha256_file(dest) == sha256.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    host = urllib.parse.urlparse(url).hostname
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "lessons_lib"}),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}; nothing was cached") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not reach {host} ({reason}). Are you offline? Nothing was cached. The course "
                            "itself never needs the network: its data sets are generated locally.") from None
    h = hashlib.sha256()
    got = 0
    with resp, atomic_open(dest) as f:  # any error below leaves neither dest nor a temporary file
        _check_url(resp.geturl())  # a redirect must not leave https
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_bytes
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                  leave=False) as bar:
            while True:
                try:
                    block = resp.read(1 << 16)
                except (http.client.IncompleteRead, OSError) as e:
                    raise DownloadError(f"{url}: the transfer was cut off after {got:,} bytes ({e}); "
                                        "nothing was cached. Try again.") from None
                if not block:
                    break
                f.write(block)
                h.update(block)
                got += len(block)
                bar.update(len(block))
        for want, what in ((length and length.isdigit() and int(length), "the server announced"),
                           (expected_bytes, "the course expects")):
            if want and got != want:
                raise DownloadError(f"{url}: the transfer was cut off: {got:,} of {want:,} bytes ({what}); "
                                    "nothing was cached. Try again.")
        if h.hexdigest() != sha256.lower():
            raise ChecksumError(f"{url}: sha256 {h.hexdigest()} does not match the pinned {sha256.lower()}; the "
                                "file was not kept. The server may serve a different file: do not use it.")
    return dest


def download(name: str, *, folder: str | os.PathLike | None = None, mirror: str | None = None,
             sha256: str | None = None, timeout: float = 60, progress: bool = True) -> list[Path]:
    """Download a real data set (``"mnist"``, ``"fashion-mnist"``, ``"notmnist-small"``) into ``folder``
    (default ``data/downloads``). Never called at import or by the notebooks' default path.

    ``mirror`` replaces the directory part of each URL (same file names, same pinned checksums). ``sha256`` is
    only for a single-file set without a pinned checksum (notMNIST-small): the checksum of a copy you trust.
    """
    if name not in REMOTES:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(REMOTES)}")
    files = REMOTES[name]
    folder = Path(folder) if folder is not None else data_dir() / "downloads"
    out = []
    for rf in files:
        pin = rf.sha256 or (sha256 if len(files) == 1 else None)
        if pin is None:
            raise DownloadError(f"{name}: this course has no pinned sha256 for {rf.url}, so it is not downloaded "
                                f"automatically. If you have verified a copy, pass download({name!r}, sha256=...).")
        url = rf.url if mirror is None else mirror.rstrip("/") + "/" + rf.filename
        out.append(fetch(url, pin, folder / rf.filename, expected_bytes=rf.bytes if mirror is None else None,
                         timeout=timeout, progress=progress))
    return out




# --- test support: a local server ----------------------------------------------------------------------
@contextlib.contextmanager
def loopback_server(files: Mapping[str, bytes], cut: Collection[str] = ()) -> Iterator[str]:
    """``with loopback_server({"good.bin": data}) as base: fetch(base + "/good.bin", ...)``: an HTTP server on
    127.0.0.1 (a free port) for tests. A GET whose last path component is a key of ``files`` gets those bytes;
    one in ``cut`` announces the full length and sends a third of it, then closes (a cut-off transfer);
    anything else is a 404. Yields the base URL; the server stops when the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            if name not in files:
                self.send_error(404)
                return
            data = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3] if name in cut else data)
            if name in cut:
                self.wfile.flush()
                self.close_connection = True

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
