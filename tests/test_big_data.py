"""Lesson 08 (data bigger than memory): formats, the sampler, memory-mapped streaming (through the reference and
through any Dataset that answers a batch of indices), the repeated measurements (rounds, a cold page cache, seeds,
the class-sorted control), the capped child, claims. The checks of the learner's code are in
test_big_data_checks.py; the downloaders in test_downloads.py; PeakRSS and the capped child in test_memcap.py."""

import numpy as np
import pytest
import torch

from lessons_lib import letters as L
from lessons_lib import memcap
from lessons_lib.big_data import formats, lab, measure, pagecache, plots, reference
from lessons_lib.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Interval


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_formats_constants_agree_with_the_letters_set():
    assert formats.IMAGE_BYTES == L.IMAGE_SIZE**2 == reference.PIXELS and formats.FULL_N == L.MAX_IMAGES


# --- formats ---------------------------------------------------------------------------------------
def test_format_sizes_follow_bytes_per_pixel(folder):
    x, _ = L.make_letters(300, 0)
    s = formats.study_formats(x, n=200)
    u8, f64, f32 = s.row("uint8 .npy"), s.row("float64"), s.row("float32")
    ints, text, npz = s.row("text, ints"), s.row("text, floats"), s.row("uint8 .npz")
    assert u8.memory_bytes == 200 * 784 and f64.memory_bytes == 8 * u8.memory_bytes == ints.memory_bytes
    assert f32.memory_bytes == 4 * u8.memory_bytes and ints.memory_dtype == "int64"
    assert text.disk_bytes / u8.disk_bytes > 20  # '%.18e ' is 25 characters per pixel
    assert 1.5 < ints.disk_bytes / u8.disk_bytes < 4.5
    assert npz.disk_bytes < u8.disk_bytes
    assert s.naive.n == 200 and s.naive.array_bytes == f64.memory_bytes
    assert s.naive.growth >= 2 * s.naive.array_bytes * 0.8  # the array and its split copies, at once
    assert s.naive.extrapolate(400) == 2 * s.naive.growth
    assert "uint8 .npy" in s.table() and not list(folder.glob(".formats-*"))
    with pytest.raises(KeyError, match="no format starting with"):
        s.row("parquet")


def test_handwritten_generator_reads_the_file_in_order(folder):
    ls, _ = L.get_letters(1000, 2)
    got = list(formats.handwritten_batches(ls.paths.images, ls.paths.labels, batch_size=300))
    assert [len(y) for _, y in got] == [300, 300, 300, 100]
    assert np.array_equal(np.concatenate([x for x, _ in got]), np.asarray(ls.images))
    assert np.array_equal(np.concatenate([y for _, y in got]), np.asarray(ls.labels))


# --- the sampler -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_shuffle_sampler_is_a_permutation_with_local_reads(seed):
    n, b, block, window = 10_000, 128, 500, 4
    s = reference.BlockShuffleSampler(n, b, block=block, window=window, generator=torch.Generator().manual_seed(seed))
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
    same = reference.BlockShuffleSampler(n, b, block=block, window=window,
                                         generator=torch.Generator().manual_seed(seed))
    assert all(np.array_equal(u, v) for u, v in zip(list(same), epoch1))
    assert len(reference.BlockShuffleSampler(1000, 300, drop_last=True)) == 3
    with pytest.raises(ValueError, match=r"batch_size=0: .*\[1, inf\]"):
        reference.BlockShuffleSampler(10, 0)


def test_sequential_batches_cover_the_range_in_order():
    got = list(reference.SequentialBatches(10, 35, 10))
    assert [g.tolist() for g in got] == [list(range(10, 20)), list(range(20, 30)), list(range(30, 35))]
    assert len(reference.SequentialBatches(10, 35, 10)) == 3
    with pytest.raises(ValueError, match="stop=5: .*greater than start"):
        reference.SequentialBatches(5, 5)


# --- streaming -------------------------------------------------------------------------------------
def test_reference_dataset_gives_the_in_memory_floats_also_from_workers(folder):
    ls, gen = L.get_letters(3000, 0)
    assert gen is not None
    x, y = np.load(ls.paths.images), np.load(ls.paths.labels)
    ds = reference.MemmapImages(ls.paths.images, ls.paths.labels)
    assert len(ds) == 3000 and isinstance(ds.images, np.memmap)
    idx = np.array([1017, 0, 2999, 5])  # any order: rows come back in that order
    xb, yb = ds[idx]
    assert xb.dtype == torch.float32 and xb.shape == (4, 784) and yb.dtype == torch.int64
    assert torch.equal(xb, torch.from_numpy(x[idx].reshape(4, -1)).float() / 255)
    assert torch.equal(yb, torch.from_numpy(y[idx].astype(np.int64)))
    x1, y1 = ds[-1]
    assert x1.shape == (784,) and y1.shape == () and torch.equal(x1, xb[2]) and y1 == yb[2]
    tr_disk, _ = lab.make_loaders(ls, "disk", batch_size=100, workers=2, seed=1)
    tr_mem, _ = lab.make_loaders(ls, "memory", batch_size=100, seed=1)
    for (a, ya), (m, ym) in zip(tr_disk, tr_mem):
        assert torch.equal(a, m) and torch.equal(ya, ym)
    with pytest.raises(ValueError, match="source='cloud': must be one of 'memory', 'disk'"):
        lab.make_loaders(ls, "cloud")
    with pytest.raises(ValueError, match="labels"):
        reference.MemmapImages(ls.paths.images, _other_labels(folder))


def _other_labels(folder):
    p = folder / "short_labels.npy"
    np.save(p, np.zeros(10, dtype=np.uint8))
    return p


class PlainDataset(torch.utils.data.Dataset):
    """A learner's dataset that keeps its maps under other names, in a tuple."""

    def __init__(self, images_path, labels_path):
        self.maps = (np.load(images_path, mmap_mode="r"), np.load(labels_path, mmap_mode="r"))

    def __len__(self):
        return len(self.maps[1])

    def __getitem__(self, i):
        rows = np.asarray(self.maps[0][i], dtype=np.float32).reshape(*np.shape(i), 784)
        return torch.from_numpy(rows) / 255, torch.from_numpy(np.asarray(self.maps[1][i], dtype=np.int64))


def test_pages_of_any_datasets_maps_are_released(folder):
    ls, _ = L.get_letters(25_000, 0)  # 19.6 MB of images, in the page cache after writing
    ds = PlainDataset(ls.paths.images, ls.paths.labels)
    assert len(lab.memmaps(ds)) == 2 and lab.memmaps(reference.MemmapImages(ls.paths.images, ls.paths.labels))
    if memcap.status_bytes("RssFile") is None:
        pytest.skip("needs /proc/self/status (Linux)")
    resident = {}
    for every in (0, 1):
        wrapped = lab.ReleasingPages(PlainDataset(ls.paths.images, ls.paths.labels), every)
        before = memcap.status_bytes("RssFile")
        for idx in reference.SequentialBatches(0, len(wrapped), 256):
            wrapped[idx]
        resident[every] = memcap.status_bytes("RssFile") - before  # file pages still mapped after one epoch
        del wrapped
    assert resident[0] >= 0.8 * ls.nbytes, resident  # every page touched stays resident until released
    assert resident[1] <= 0.1 * ls.nbytes, resident  # released after each batch
    with pytest.raises(ValueError, match="every=-1"):
        lab.ReleasingPages(ds, -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_and_disk_train_identically(folder, one_thread, seed):
    h = {s: lab.experiment(source=s, n_images=3000, epochs=2, width=64, seed=seed) for s in ("memory", "disk")}
    assert h["memory"].train_loss == h["disk"].train_loss
    assert h["memory"].val_acc == h["disk"].val_acc
    assert h["disk"].val_acc[-1] > 0.4  # 10 letters, chance 0.1
    assert h["disk"].steps == 2 * 11 and h["disk"].config["source"] == "disk"


def test_a_learners_dataset_streams_like_the_reference(folder, one_thread):
    ref = lab.experiment(source="disk", n_images=3000, epochs=1, width=64, seed=0)
    mine = lab.experiment(source="disk", n_images=3000, epochs=1, width=64, seed=0, dataset=PlainDataset)
    assert ref.train_loss == mine.train_loss and ref.val_acc == mine.val_acc


def test_loaders_train_on_training_fonts_and_validate_on_held_out_ones(folder):
    ls, _ = L.get_letters(3000, 0)
    train, val = lab.make_loaders(ls, "disk", batch_size=100, seed=0)
    assert isinstance(train.dataset, lab.Rows) and np.array_equal(train.dataset.indices, ls.split()[0])
    assert np.array_equal(val.dataset.indices, ls.split()[1]) and L.is_validation(val.dataset.indices).all()
    seen = np.concatenate([train.dataset.indices[i] for i in train.sampler])
    assert np.array_equal(np.sort(seen), ls.split()[0]) and not L.is_validation(seen).any()
    x, y = next(iter(val))  # the first validation batch is images 900.. of the file
    assert torch.equal(x[0], torch.from_numpy(np.asarray(ls.images[900], dtype=np.float32).reshape(-1)) / 255)
    full, _ = lab.make_loaders(ls, "memory", batch_size=100, seed=0, block=1)  # block=1: a plain permutation
    regions = [len(np.unique(full.dataset.indices[i] // 512)) for i in full.sampler]
    assert np.mean(regions) > 5  # a full shuffle reads from everywhere


# --- repeated measurements, the cold page cache, seeds ------------------------------------------------
def test_page_cache_drop_is_verified_and_mapped_pages_stay(tmp_path):
    if pagecache.cold_cache_supported():
        pytest.skip(pagecache.cold_cache_supported())
    p = tmp_path / "blob.bin"
    p.write_bytes(np.random.default_rng(0).integers(0, 255, 4_000_000, dtype=np.uint8).tobytes())
    p.read_bytes()
    assert pagecache.resident_fraction(p) > 0.95
    (d,) = pagecache.drop_from_page_cache(p)
    assert d.before > 0.95 and d.after <= 0.02 and d.dropped
    assert pagecache.resident_fraction(p) <= 0.02
    m = np.memmap(p, dtype=np.uint8, mode="r")
    m[: 2_000_000].sum()  # pages this process maps and has touched cannot be dropped: why cold runs use a copy
    (d,) = pagecache.drop_from_page_cache(p)
    assert 0.3 < d.after < 0.7, d
    del m


def test_measure_paths_repeats_rounds_and_reads_a_cold_copy(folder, one_thread):
    ls, _ = L.get_letters(6000, 0)
    pr = measure.measure_paths(ls, dataset=PlainDataset, rounds=2, width=32, seed=0)
    assert pr.rounds == 2 and pr.dataset == "PlainDataset" and pr.n_images == 6000
    if pr.of(measure.COLD):
        assert pr.runs[0].source == measure.COLD  # first in its round: right after the drop
    assert pr.identical  # same batches from memory, a warm file and a cold copy: bit-identical models
    for src in (measure.MEMORY, measure.WARM):
        assert len(pr.of(src)) == 2 and all(r.samples_per_s > 0 for r in pr.of(src))
    ratio = pr.ratio(measure.WARM)
    assert ratio.n == 2 and ratio.low <= ratio.median <= ratio.high
    assert ratio.median == pytest.approx(np.median([d.samples_per_s / m.samples_per_s for d, m in
                                                    zip(pr.of(measure.WARM), pr.of(measure.MEMORY))]))
    # (peak RSS in a test process that freed memory before is not a fair measure, so no bound on its value here:
    # the notebook and bench_streaming.py measure it in fresh processes)
    assert all(r.growth >= 0 for r in pr.runs)
    assert pr.fraction(measure.WARM).median == pytest.approx(pr.growth(measure.WARM).median / pr.set_bytes)
    if pagecache.cold_cache_supported() is None:
        assert pr.cold_ok and all(r.cache_before <= 0.02 and r.cache_after > 0.5 for r in pr.of(measure.COLD))
        assert not list(folder.glob(".cold-*"))  # the private copy is gone
    assert "control:" in pr.table() and "identical" in pr.table()
    off = measure.measure_paths(ls, dataset=PlainDataset, rounds=1, width=32, seed=0, cold=False)
    assert not off.of(measure.COLD) and "switched off" in off.cold_skipped and not off.cold_ok
    with pytest.raises(ValueError, match="rounds=0"):
        measure.measure_paths(ls, rounds=0)


def test_sampler_study_pairs_seeds_and_its_control_sees_the_sorted_file(folder, one_thread):
    ls, _ = L.get_letters(6000, 0)
    st = measure.sampler_study(ls, n_seeds=3, n_sorted=2, epochs=2, width=16, seed=0)
    assert st.block.shape == st.full.shape == (3, 2) and st.sorted_block.shape == (2, 2)
    assert st.n_train == 5400 and st.n_val == 600 and len(set(st.seeds)) == 3
    assert np.all((st.block > 0.15) & (st.block < 1)) and np.all(st.full > 0.15)  # chance is 0.1
    assert np.all(st.full[:, 1] > st.full[:, 0])  # still learning
    d = st.difference("block")
    assert d.n == 3 and d.mean == pytest.approx(np.mean(st.block[:, -1] - st.full[:, -1]))
    assert st.difference("sorted_block").n == 2
    assert st.sorted_block[:, 0].mean() < st.full[:2, 0].mean() - 0.05  # a class-sorted file: few letters per window
    assert st.gain().mean == pytest.approx(np.mean(st.block[:, -1] - st.block[:, 0]))
    again = measure.sampler_study(ls, n_seeds=3, n_sorted=2, epochs=2, width=16, seed=0)
    assert np.array_equal(again.block, st.block) and np.array_equal(again.sorted_block, st.sorted_block)
    assert "sorted file" in st.table()
    with pytest.raises(ValueError, match="n_sorted"):
        measure.sampler_study(ls, n_seeds=3, n_sorted=4)


def test_the_stacked_study_trains_each_seed_like_a_single_run(folder, one_thread):
    """Seed s of the block treatment = fit_stream from disk with the sampler of seed s, up to float rounding."""
    ls, _ = L.get_letters(3000, 0)
    st = measure.sampler_study(ls, n_seeds=2, n_sorted=2, epochs=1, width=16, seed=0)
    s = st.seeds[0]
    torch.manual_seed(s)
    model = lab.mlp(reference.PIXELS, [16], 10)
    train, val = lab.make_loaders(ls, "disk", batch_size=256, seed=s)
    h = lab.fit_stream(model, train, val, epochs=1, seed=s)
    assert abs(h.val_acc[0] - st.block[0, 0]) <= 0.01


def test_within_is_an_equivalence_verdict():
    def iv(low, high):
        return Interval((low + high) / 2, low, high, 5)

    assert measure.within(iv(-0.005, 0.015), 0.02) == HOLDS
    assert measure.within(iv(0.025, 0.04), 0.02) == DOES_NOT_HOLD
    assert measure.within(iv(-0.06, -0.03), 0.02) == DOES_NOT_HOLD
    assert measure.within(iv(0.01, 0.03), 0.02) == INCONCLUSIVE
    assert measure.within(iv(-0.03, 0.03), 0.02) == INCONCLUSIVE  # wider than the margin: undecided, not "holds"
    with pytest.raises(ValueError, match="margin=0"):
        measure.within(iv(0, 0), 0)


def test_the_naive_path_at_full_size_is_measured_or_says_why_not(folder, monkeypatch):
    ls, _ = L.get_letters(3000, 0)
    run = measure.naive_peak(ls, 0)  # in a fresh process: memory this one freed cannot hide the cost
    assert run.skipped is None and run.array_bytes == 3000 * 784 * 8
    assert run.growth >= 1.6 * run.array_bytes  # the float64 array and its split copies, at once
    from collections import namedtuple

    import psutil

    vm = namedtuple("vm", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm(10**6))
    skipped = measure.naive_peak(ls, 0)
    assert skipped.growth is None and "available" in skipped.skipped


# --- the capped child ------------------------------------------------------------------------------
@pytest.mark.skipif(memcap.cap_supported() is not None, reason="needs Linux 4.7+ for RLIMIT_DATA")
def test_capped_naive_dies_streaming_trains_and_a_tiny_cap_says_so(folder):
    n = 20_000  # float64: 125 MB; the cap leaves 64 MB
    demo = lab.capped_demo(n, budget_mb=64, seed=0, timeout=120)
    naive, stream = demo.naive, demo.stream
    assert not naive.ok and naive.memory_error and "MemoryError" in naive.error
    assert "float64 copy of 20,000 images" in naive.message
    assert stream.ok, stream.message
    assert stream.trained.val_acc > 0.5 and stream.child.cap_bytes == stream.child.baseline_bytes + 64_000_000
    tiny = lab.run_capped("stream", n_images=n, budget_mb=0.5, seed=0, timeout=60)
    assert not tiny.ok and "raise budget_mb" in tiny.message
    with pytest.raises(ValueError, match="budget_mb=0"):
        lab.run_capped("stream", budget_mb=0)
    with pytest.raises(ValueError, match="mode='text': must be one of 'naive', 'stream'"):
        lab.run_capped("text")


# --- claims ----------------------------------------------------------------------------------------
def _paths(n=50_000, disk_growth=1e6, mem_growth=100e6, ratios=(0.9, 0.95, 1.0), cold_ratios=(0.85, 0.9, 0.95),
           cached=0.0):
    runs = []
    for r, (w, c) in enumerate(zip(ratios, cold_ratios)):
        runs += [measure.EpochRun(measure.MEMORY, r, 1000.0, int(mem_growth), 0.8),
                 measure.EpochRun(measure.WARM, r, 1000.0 * w, int(disk_growth) + r, 0.8),
                 measure.EpochRun(measure.COLD, r, 1000.0 * c, int(disk_growth), 0.8, cached, 1.0)]
    return measure.PathRepeats(runs, n, n * 784, "MemmapImages", None, True)


def _samplers(block_minus_full=0.002, sorted_minus_full=-0.3, gain=0.04, spread=0.003):
    rng = np.random.default_rng(0)
    full = np.stack([np.full(6, 0.80), np.full(6, 0.80 + gain)], 1) + rng.normal(0, spread, (6, 1))
    block = full + block_minus_full + rng.normal(0, spread, (6, 2))
    srt = full + sorted_minus_full + rng.normal(0, spread, (6, 2))
    return measure.SamplerStudy(list(range(6)), block, full, srt, block, 45_000, 5_000, 64, 1.0)


def _capped(naive_ok, naive_oom, stream_ok):
    def run(mode, ok, oom):
        return lab.CappedRun(mode, ok, oom, None if ok else "MemoryError: x", "", 64_000_000)

    return lab.CappedDemo(run("naive", naive_ok, naive_oom), run("stream", stream_ok, False))


def _row(c, start):
    (row,) = [r for r in c.rows if r.claim.startswith(start)]
    return row


def test_claims_verdicts_follow_the_numbers(folder):
    x, _ = L.make_letters(120, 0)
    s = formats.study_formats(x, n=100)
    good = lab.claims(s, _paths(), _samplers(), "no cap here")
    assert _row(good, "The standard solution").verdict == DOES_NOT_HOLD  # the standard tools did the job
    assert _row(good, "Streaming with block").verdict == HOLDS
    assert _row(good, "...but not from a file sorted").verdict == HOLDS
    assert _row(good, "The letters set is not solved").verdict == HOLDS
    assert _row(good, "Streaming reaches >=").verdict == HOLDS
    assert _row(good, "...also when every byte").verdict == HOLDS
    assert _row(good, "The text file").verdict == HOLDS and _row(good, "Forcing the data").verdict == HOLDS
    assert _row(good, "Under the same").holds is None
    # at the default size, the 500k figures are not measured, and the row says so instead of guessing
    assert _row(good, "Streaming 500k images keeps peak").holds is None and "not measured at 500,000" in \
        _row(good, "Streaming 500k images keeps peak").measured
    assert _row(good, "~500k 28x28").holds is None and "a guess, not a measurement" in _row(good, "~500k").measured
    full = lab.claims(s, _paths(n=500_000, disk_growth=20e6), _samplers(), None,
                      measure.NaivePeak(500_000, int(6.3e9), int(3.1e9)))
    assert _row(full, "Streaming 500k images keeps peak").verdict == HOLDS  # 20 MB of 392 MB
    assert _row(full, "~500k 28x28").verdict == DOES_NOT_HOLD and "6.3 GB" in _row(full, "~500k").measured
    big = lab.claims(s, _paths(n=500_000, disk_growth=50e6), _samplers(), None,
                     measure.NaivePeak(500_000, int(9e9), int(3.1e9)))
    assert _row(big, "Streaming 500k images keeps peak").verdict == DOES_NOT_HOLD
    assert _row(big, "~500k").verdict == HOLDS
    mixed = lab.claims(s, _paths(ratios=(0.7, 0.9, 1.0), cold_ratios=(0.5, 0.6, 0.7)), _samplers(), None)
    assert _row(mixed, "Streaming reaches >=").verdict == INCONCLUSIVE  # one round below 80%
    assert _row(mixed, "...also when every byte").verdict == DOES_NOT_HOLD
    bad = lab.claims(s, _paths(disk_growth=80e6), _samplers(block_minus_full=-0.05, sorted_minus_full=0.0,
                                                               gain=0.0), None)
    assert _row(bad, "Streaming with block").verdict == DOES_NOT_HOLD
    assert _row(bad, "The standard solution").verdict == HOLDS
    assert _row(bad, "...but not from a file sorted").verdict == DOES_NOT_HOLD
    assert _row(bad, "The letters set is not solved").verdict == DOES_NOT_HOLD
    noisy = lab.claims(s, _paths(), _samplers(block_minus_full=0.01, spread=0.02), None)
    assert _row(noisy, "Streaming with block").verdict == INCONCLUSIVE
    assert _row(noisy, "The standard solution").verdict == INCONCLUSIVE
    warm_cache = lab.claims(s, _paths(cached=0.5), _samplers(), None)  # the drop did not work
    assert _row(warm_cache, "...also when every byte").holds is None
    assert lab.claims(s, _paths(), _samplers(), _capped(False, True, True)).rows[-1].holds is True
    assert lab.claims(s, _paths(), _samplers(), _capped(True, False, True)).rows[-1].holds is False
    assert lab.claims(s, _paths(), _samplers(), _capped(False, True, False)).rows[-1].holds is False


def test_bad_knobs():
    with pytest.raises(ValueError, match="source='cloud'"):
        lab.experiment(source="cloud")
    with pytest.raises(ValueError, match="1 to 500,000"):
        lab.experiment(n_images=600_000)


def test_figures_draw(folder):
    import matplotlib

    matplotlib.use("Agg")
    x, y = L.make_letters(200, 0)
    s = formats.study_formats(x, n=50)
    for fig in (plots.plot_examples(x, y), plots.plot_sizes(s), plots.plot_read_pattern(n=5000),
                plots.plot_paths(_paths()), plots.plot_samplers(_samplers())):
        assert fig.axes


def test_the_panel_streams_through_the_given_dataset(folder, one_thread):
    panel = lab.make_panel(dataset=PlainDataset, n_choices=(3000, 6000))
    assert "PlainDataset" in panel.title
    h = panel.run(epochs=1)
    assert panel.runs[-1].error is None and h.config["source"] == "disk" and h.config["n_images"] == 3000
    assert h.val_acc[-1] > 0.2
