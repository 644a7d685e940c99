"""lessons_lib.downloads, against a local HTTP server only (downloads.loopback_server): a good file is cached once,
a wrong checksum or a cut-off transfer caches nothing, offline / HTTP errors / non-https URLs are clear."""

import hashlib
import socket

import pytest

from lessons_lib import downloads as D

FIXTURE = bytes(range(256)) * 400  # 102,400 bytes
FIXTURE_SHA = hashlib.sha256(FIXTURE).hexdigest()


@pytest.fixture
def server():
    files = {"good.bin": FIXTURE, "mnist.npz": FIXTURE, "cut.bin": FIXTURE, "notMNIST_small.tar.gz": FIXTURE}
    with D.loopback_server(files, cut={"cut.bin"}) as url:
        yield url


def test_fetch_good_file_is_cached_once(server, tmp_path):
    dest = tmp_path / "good.bin"
    assert D.fetch(server + "/good.bin", FIXTURE_SHA, dest, progress=False) == dest
    assert dest.read_bytes() == FIXTURE
    mtime = dest.stat().st_mtime_ns
    D.fetch(server + "/good.bin", FIXTURE_SHA, dest)  # already there with the right checksum: kept
    assert dest.stat().st_mtime_ns == mtime and list(tmp_path.iterdir()) == [dest]


def test_checksum_mismatch_caches_nothing(server, tmp_path):
    with pytest.raises(D.ChecksumError, match="does not match the pinned"):
        D.fetch(server + "/good.bin", "0" * 64, tmp_path / "good.bin")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(D.ChecksumError):  # the registry's real pin against a fixture served by a mirror
        D.download("mnist", folder=tmp_path, mirror=server + "/mirror", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cut_off_transfer_caches_nothing(server, tmp_path):
    with pytest.raises(D.DownloadError, match="cut off"):
        D.fetch(server + "/cut.bin", FIXTURE_SHA, tmp_path / "cut.bin")
    assert list(tmp_path.iterdir()) == []


def test_offline_http_errors_and_refused_urls_are_clear(server, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: like being offline
    with pytest.raises(D.DownloadError, match="Are you offline"):
        D.fetch(f"http://127.0.0.1:{port}/x.bin", FIXTURE_SHA, tmp_path / "x.bin", timeout=5)
    with pytest.raises(D.DownloadError, match="HTTP 404"):
        D.fetch(server + "/missing.bin", FIXTURE_SHA, tmp_path / "m.bin")
    with pytest.raises(D.DownloadError, match="https only"):
        D.fetch("http://example.com/mnist.npz", FIXTURE_SHA, tmp_path / "e.bin")  # refused before any network
    with pytest.raises(D.DownloadError, match="no pinned sha256"):
        D.fetch(server + "/good.bin", "", tmp_path / "g.bin")
    with pytest.raises(D.DownloadError, match="no pinned sha256"):
        D.download("notmnist-small", folder=tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        D.download("cifar")
    assert list(tmp_path.iterdir()) == []
    assert all(rf.url.startswith("https://") for files in D.REMOTES.values() for rf in files)


def test_a_trusted_checksum_unlocks_an_unpinned_single_file_set(server, tmp_path):
    got = D.download("notmnist-small", folder=tmp_path, mirror=server, sha256=FIXTURE_SHA, progress=False)
    assert got == [tmp_path / "notMNIST_small.tar.gz"] and got[0].read_bytes() == FIXTURE


def test_a_checksum_that_is_not_hex_or_a_bad_timeout_is_named_before_any_network(tmp_path):
    from lessons_lib.validate import BadArgument

    url = "https://example.invalid/x.bin"  # never contacted: the arguments are refused first
    for bad in ("z" * 64, "g" + FIXTURE_SHA[1:], FIXTURE_SHA + "0", FIXTURE_SHA[:-1] + " "):
        with pytest.raises(BadArgument, match=r"sha256=.*64 hexadecimal digits"):
            D.fetch(url, bad, tmp_path / "x.bin")
    with pytest.raises(BadArgument, match="sha256="):
        D.download("notmnist-small", folder=tmp_path, mirror="https://example.invalid", sha256="x" * 64)
    for bad in (0, -1, float("nan"), True, "60"):
        with pytest.raises(BadArgument, match="timeout="):
            D.fetch(url, FIXTURE_SHA, tmp_path / "x.bin", timeout=bad)
    for bad in (0, 2.5, True):
        with pytest.raises(BadArgument, match="expected_bytes="):
            D.fetch(url, FIXTURE_SHA, tmp_path / "x.bin", expected_bytes=bad)
    assert list(tmp_path.iterdir()) == []
