"""Lesson 08 (data bigger than memory): formats, the sampler, memory-mapped streaming, the capped child,
the downloaders (against a local HTTP server only), claims and exercises."""

import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from lessons_lib import letters as L
from lessons_lib.big_data import lab as B


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONS_DATA_DIR", str(tmp_path))
    return tmp_path


# --- formats ---------------------------------------------------------------------------------------
def test_format_sizes_follow_bytes_per_pixel(folder):
    x, _ = L.make_letters(300, 0)
    s = B.study_formats(x, n=200)
    u8, f64, f32 = s.row("uint8 .npy"), s.row("float64"), s.row("float32")
    ints, text, npz = s.row("text, ints"), s.row("text, floats"), s.row("uint8 .npz")
    assert u8.memory_bytes == 200 * 784 and f64.memory_bytes == 8 * u8.memory_bytes == ints.memory_bytes
    assert f32.memory_bytes == 4 * u8.memory_bytes and ints.memory_dtype == "int64"
    assert text.disk_bytes / u8.disk_bytes > 20  # '%.18e ' is 25 characters per pixel
    assert 1.5 < ints.disk_bytes / u8.disk_bytes < 4.5
    assert npz.disk_bytes < u8.disk_bytes
    assert s.naive.n == 200 and s.naive.array_bytes == f64.memory_bytes
    assert s.naive.extrapolate(400) == 2 * s.naive.growth
    assert "uint8 .npy" in s.table() and not list(folder.glob(".formats-*"))


# --- the sampler -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_shuffle_sampler_is_a_permutation_with_local_reads(seed):
    n, b, block, window = 10_000, 128, 500, 4
    s = B.BlockShuffleSampler(n, b, block=block, window=window, generator=torch.Generator().manual_seed(seed))
    epoch1 = list(s)
    epoch2 = list(s)
    assert len(epoch1) == len(s) == 79
    for ep in (epoch1, epoch2):
        allidx = np.concatenate(ep)
        assert np.array_equal(np.sort(allidx), np.arange(n))  # every index exactly once
        assert all(np.all(np.diff(i) > 0) for i in ep)  # sorted within a batch: sequential reads
        regions = [len(np.unique(i // block)) for i in ep]
        assert max(regions) <= 2 * window and np.mean(regions) <= window + 1  # local reads
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))
    first = np.concatenate(epoch1)[: n // 2]
    assert abs(first.mean() - n / 2) < n * 0.2  # shuffled: not the first half of the file
    same = B.BlockShuffleSampler(n, b, block=block, window=window, generator=torch.Generator().manual_seed(seed))
    assert all(np.array_equal(u, v) for u, v in zip(list(same), epoch1))
    assert len(B.BlockShuffleSampler(1000, 300, drop_last=True)) == 3
    with pytest.raises(ValueError, match=">= 1"):
        B.BlockShuffleSampler(10, 0)


# --- streaming -------------------------------------------------------------------------------------
def test_memmap_dataset_gives_the_in_memory_floats_also_from_workers(folder):
    ls, gen = L.get_letters(3000, 0)
    assert gen is not None
    x = np.asarray(ls.images)
    ds = B.MemmapImages(ls.paths.images, ls.paths.labels, range(1000, 3000), release_every=1)
    idx = np.array([17, 0, 1999, 5])  # any order: rows come back in that order
    xb, yb = ds[idx]
    assert xb.dtype == torch.float32 and xb.shape == (4, 784) and yb.dtype == torch.int64
    assert torch.equal(xb, torch.from_numpy(x[idx + 1000].reshape(4, -1)).float() / 255)
    assert torch.equal(yb, torch.from_numpy(np.asarray(ls.labels)[idx + 1000].astype(np.int64)))
    ds.release()
    assert torch.equal(ds[idx][0], xb)  # releasing pages never changes the data
    tr_disk, _ = B.make_loaders(ls, "disk", batch_size=100, workers=2, seed=1)
    tr_mem, _ = B.make_loaders(ls, "memory", batch_size=100, seed=1)
    for (a, ya), (m, ym) in zip(tr_disk, tr_mem):
        assert torch.equal(a, m) and torch.equal(ya, ym)
    with pytest.raises(ValueError, match="memory, disk"):
        B.make_loaders(ls, "cloud")
    with pytest.raises(ValueError, match="contiguous range"):
        B.MemmapImages(ls.paths.images, ls.paths.labels, range(0, 5000))


def test_handwritten_generator_reads_the_file_in_order(folder):
    ls, _ = L.get_letters(1000, 2)
    got = list(B.handwritten_batches(ls.paths.images, ls.paths.labels, batch_size=300))
    assert [len(y) for _, y in got] == [300, 300, 300, 100]
    assert np.array_equal(np.concatenate([x for x, _ in got]), np.asarray(ls.images))
    assert np.array_equal(np.concatenate([y for _, y in got]), np.asarray(ls.labels))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_and_disk_train_identically(folder, one_thread, seed):
    h = {s: B.streaming_experiment(source=s, n_images=3000, epochs=2, width=64, seed=seed) for s in ("memory", "disk")}
    assert h["memory"].train_loss == h["disk"].train_loss
    assert h["memory"].val_acc == h["disk"].val_acc
    assert h["disk"].val_acc[-1] > 0.4  # 10 letters, chance 0.1
    assert h["disk"].steps == 2 * 11 and h["disk"].config["source"] == "disk"


def test_peak_rss_sees_an_allocation_and_mapped_pages_count_until_released(folder, one_thread):
    with B.PeakRSS() as m:
        a = np.ones(100_000_000 // 8)
        del a
    assert m.growth >= 90e6
    with B.PeakRSS() as m:
        pass
    assert m.growth < 20e6
    ls, _ = L.get_letters(25_000, 0)  # 19.6 MB of images, in the page cache after writing
    if B._status_bytes("RssFile") is None:
        pytest.skip("needs /proc/self/status (Linux)")
    resident = {}
    for release in (0, 1):
        ds = B.MemmapImages(ls.paths.images, ls.paths.labels, release_every=release)
        before = B._status_bytes("RssFile")
        for idx in B.SequentialBatches(len(ds), 256):
            ds[idx]
        resident[release] = B._status_bytes("RssFile") - before  # file pages still mapped after one epoch
        del ds
    assert resident[0] >= 0.8 * ls.nbytes, resident  # every page touched stays resident until released
    assert resident[1] <= 0.1 * ls.nbytes, resident  # released after each batch


# --- the capped child ------------------------------------------------------------------------------
@pytest.mark.skipif(B.cap_supported() is not None, reason="needs Linux 4.7+ for RLIMIT_DATA")
def test_capped_naive_dies_streaming_trains_and_a_tiny_cap_says_so(folder):
    n = 20_000  # float64: 125 MB; the cap leaves 64 MB
    naive = B.run_capped("naive", n_images=n, budget_mb=64, seed=0, timeout=120)
    assert not naive.ok and naive.memory_error and "MemoryError" in naive.error
    assert "float64 copy of 20,000 images" in naive.message
    stream = B.run_capped("stream", n_images=n, budget_mb=64, seed=0, timeout=120)
    assert stream.ok, stream.message
    assert stream.result["val_acc"] > 0.5 and stream.cap_bytes == stream.baseline_bytes + 64_000_000
    tiny = B.run_capped("stream", n_images=n, budget_mb=0.5, seed=0, timeout=60)
    assert not tiny.ok and "raise budget_mb" in tiny.message
    with pytest.raises(ValueError, match="budget_mb must be > 0"):
        B.run_capped("stream", budget_mb=0)
    with pytest.raises(ValueError, match="'naive' or 'stream'"):
        B.run_capped("text")


# --- downloaders: a local server only ----------------------------------------------------------------
FIXTURE = bytes(range(256)) * 400  # 102,400 bytes
FIXTURE_SHA = hashlib.sha256(FIXTURE).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/good.bin") or self.path.endswith("/mnist.npz"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(FIXTURE)))
            self.end_headers()
            self.wfile.write(FIXTURE)
        elif self.path.endswith("/cut.bin"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(FIXTURE)))
            self.end_headers()
            self.wfile.write(FIXTURE[: len(FIXTURE) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_good_file_is_cached_once(server, tmp_path):
    dest = tmp_path / "good.bin"
    assert B.fetch(server + "/good.bin", FIXTURE_SHA, dest, progress=False) == dest
    assert dest.read_bytes() == FIXTURE
    mtime = dest.stat().st_mtime_ns
    B.fetch(server + "/good.bin", FIXTURE_SHA, dest)  # already there with the right checksum: kept
    assert dest.stat().st_mtime_ns == mtime and list(tmp_path.iterdir()) == [dest]


def test_checksum_mismatch_caches_nothing(server, tmp_path):
    with pytest.raises(B.ChecksumError, match="does not match the pinned"):
        B.fetch(server + "/good.bin", "0" * 64, tmp_path / "good.bin")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(B.ChecksumError):  # the registry's real pin against a fixture served by a mirror
        B.download("mnist", folder=tmp_path, mirror=server + "/mirror", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cut_off_transfer_caches_nothing(server, tmp_path):
    with pytest.raises(B.DownloadError, match="cut off"):
        B.fetch(server + "/cut.bin", FIXTURE_SHA, tmp_path / "cut.bin")
    assert list(tmp_path.iterdir()) == []


def test_offline_http_errors_and_refused_urls_are_clear(server, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: like being offline
    with pytest.raises(B.DownloadError, match="Are you offline"):
        B.fetch(f"http://127.0.0.1:{port}/x.bin", FIXTURE_SHA, tmp_path / "x.bin", timeout=5)
    with pytest.raises(B.DownloadError, match="HTTP 404"):
        B.fetch(server + "/missing.bin", FIXTURE_SHA, tmp_path / "m.bin")
    with pytest.raises(B.DownloadError, match="https only"):
        B.fetch("http://example.com/mnist.npz", FIXTURE_SHA, tmp_path / "e.bin")  # refused before any network
    with pytest.raises(B.DownloadError, match="no pinned sha256"):
        B.download("notmnist-small", folder=tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        B.download("cifar")
    assert list(tmp_path.iterdir()) == []
    assert all(rf.url.startswith("https://") for files in B.REMOTES.values() for rf in files)


# --- claims and exercises --------------------------------------------------------------------------
def _fake(acc_gap=0.0, disk_growth=1e6, mem_growth=100e6, disk_sps=900.0, mem_sps=1000.0):
    from lessons_lib.training import History

    def hist(acc, sps):
        h = History()
        h.append({"epoch": 0, "train_loss": 1, "train_acc": 0.5, "val_loss": 1, "val_acc": acc, "seconds": 1,
                  "samples_per_s": sps, "step_seconds": 0.01})
        return h

    cmp = B.Comparison(B.PathRun("memory", hist(0.8, mem_sps), int(mem_growth)),
                       B.PathRun("disk", hist(0.8 + acc_gap, disk_sps), int(disk_growth)), 50_000_000)
    return cmp


def _verdicts(c):
    return {r.claim.split(" ")[0] + " " + r.claim.split(" ")[1] + " " + r.claim.split(" ")[2]: r.holds for r in c.rows}


def test_claims_verdicts_follow_the_numbers(folder):
    x, _ = L.make_letters(120, 0)
    s = B.study_formats(x, n=100)
    good = _verdicts(B.claims(s, _fake(), "no cap here"))
    assert good["The standard solution"] is False  # the standard tools did the job
    assert good["Training from disk"] is True
    assert good["Streaming keeps peak"] is True
    assert good["Streaming reaches >="] is True
    assert good["The text file"] is True
    assert good["Forcing the data"] is True
    assert good["Under the same"] is None
    bad = _verdicts(B.claims(s, _fake(acc_gap=0.05, disk_growth=40e6, disk_sps=500.0), None))
    assert bad["Training from disk"] is False
    assert bad["Streaming keeps peak"] is False
    assert bad["Streaming reaches >="] is False
    assert bad["The standard solution"] is True
    naive = B.CappedRun("naive", False, True, "MemoryError: x", "", 1, 64_000_000, 1, 1.0, 1)
    ok = B.CappedRun("stream", True, False, None, "", 1, 64_000_000, 1, 1.0, 0)
    assert B.claims(s, _fake(), {"naive": naive, "stream": ok}).rows[-1].holds is True
    assert B.claims(s, _fake(), {"naive": ok, "stream": ok}).rows[-1].holds is False


def test_exercise_checks(capsys):
    assert B.check_uint8_megabytes(392) and not B.check_uint8_megabytes(3136)
    assert B.check_float64_factor(8) and not B.check_float64_factor(4)
    assert B.check_batch_bytes(256 * 784 * 4) and not B.check_batch_bytes(256 * 784)
    assert not B.check_batch_bytes(...)
    out = capsys.readouterr().out
    assert "✓ Correct" in out and "✗ Not yet" in out and "Not written yet" in out


def test_bad_knobs():
    with pytest.raises(ValueError, match="source must be one of"):
        B.streaming_experiment(source="cloud")
    with pytest.raises(ValueError, match="1 to 500,000"):
        B.streaming_experiment(n_images=600_000)
