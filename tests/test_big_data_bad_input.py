"""Lesson 08 and the letters set under bad input and interrupted work: a clear error naming the argument, the value
and the fix, never a raw numpy/torch error or a silent wrong result; numpy scalars are numbers, bools are not; an
interrupted write (an exception, Ctrl-C, kill -9) leaves no file a later run accepts and no temporary file after the
next run; reuse verifies checksums (opt-out: verify=False). Plus property tests (Hypothesis) of the samplers, the
dataset's indexing and the split."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lessons_lib import letters as L
from lessons_lib.big_data import formats, lab, measure, plots
from lessons_lib.big_data.reference import BlockShuffleSampler, MemmapImages, SequentialBatches
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONS_DATA_DIR", str(tmp_path))
    return tmp_path


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# --- letters: arguments -------------------------------------------------------------------------------------
def test_numpy_integer_sizes_write_readable_files(folder):
    """np.int64(3) used to be written into the .npy header as 'np.int64(3)': generation 'succeeded', no load did."""
    m = L.generate_letters(np.int64(3), np.int64(1))
    assert m["n"] == 3 and type(m["n"]) is int and m["seed"] == 1
    ls, seconds = L.get_letters(np.int64(3), np.uint32(1))
    assert seconds is None and ls.images.shape == (3, 28, 28)
    assert np.load(ls.paths.images).shape == (3, 28, 28)  # a plain np.load reads the header too
    assert L.paths(np.int32(3), 1).images.name == "letters_v2_s1_n3_images.npy"


@pytest.mark.parametrize("bad", [True, False, 2.5, "3", None, float("nan"), -1, 0, L.MAX_IMAGES + 1, np.bool_(True)])
def test_bad_sizes_are_named_and_nothing_is_written(folder, bad):
    with pytest.raises(BadArgument, match=r"n=.*1 to 500,000 images"):
        L.generate_letters(bad)
    for fn in (L.get_letters, L.load_letters, L.make_letters, L.paths, L.expected_bytes, L.split_indices):
        with pytest.raises(BadArgument, match="n="):
            fn(bad)
    assert _files(folder) == []  # no file named ..._nTrue_...


@pytest.mark.parametrize("bad", [True, -1, 2.5, "0", 2**32])
def test_bad_seeds_folders_and_flags(folder, bad):
    with pytest.raises(BadArgument, match="seed="):
        L.generate_letters(3, bad)
    with pytest.raises(BadArgument, match="folder="):
        L.generate_letters(3, 0, folder=3)
    for flag in ("overwrite", "progress", "verify"):
        with pytest.raises(BadArgument, match=f"{flag}="):
            L.generate_letters(3, 0, **{flag: "no"})
    with pytest.raises(BadArgument, match="max_val="):
        L.split_indices(2000, max_val=0)
    with pytest.raises(BadArgument, match="no validation images"):
        L.split_indices(900)
    assert _files(folder) == []


@FAST
@given(n=st.integers(L.CHUNK - L.VAL_PER_CHUNK + 1, 40_000), max_val=st.integers(1, 20_000))
def test_split_is_disjoint_sorted_and_validation_is_held_out_fonts(n, max_val):
    tr, va = L.split_indices(np.int64(n), max_val)
    assert len(np.intersect1d(tr, va)) == 0 and np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert not L.is_validation(tr).any() and L.is_validation(va).all()
    assert len(va) == min(max_val, int(L.is_validation(np.arange(n)).sum())) and len(tr) + int(
        L.is_validation(np.arange(n)).sum()) == n


# --- letters: reuse verifies, files are readable by others ---------------------------------------------------
def test_reuse_verifies_checksums_and_verify_false_is_the_opt_out(folder):
    m = L.generate_letters(1000, 0)
    p = L.paths(1000, 0)
    for q in p.all():
        assert q.stat().st_mode & 0o777 == 0o644
    b = bytearray(p.images.read_bytes())
    b[5000] ^= 0xFF  # one pixel flipped in place: same size, same header
    p.images.write_bytes(bytes(b))
    assert L.load_letters(1000, 0, verify=False).n == 1000  # the documented opt-out trusts the size and header
    for fn in (L.load_letters, L.get_letters):
        with pytest.raises(L.LettersDataError, match="sha256.*corrupt.*overwrite=True"):
            fn(1000, 0)
    m2 = L.generate_letters(1000, 0)  # reuse checks, finds it broken, regenerates
    assert m2["files"]["images"]["sha256"] == m["files"]["images"]["sha256"]
    assert L.load_letters(1000, 0).n == 1000 and not [q for q in folder.iterdir() if q.suffix == ".tmp"]


def test_a_truncated_or_foreign_npy_says_how_to_regenerate(folder):
    L.generate_letters(1000, 0)
    p = L.paths(1000, 0)
    p.labels.write_bytes(p.labels.read_bytes()[:60])
    with pytest.raises(L.LettersDataError, match="truncated.*overwrite=True"):
        L.load_letters(1000, 0, verify=False)
    with pytest.raises(ValueError, match="not a readable .npy file.*truncated"):
        MemmapImages(p.images, p.labels)


def test_a_folder_that_cannot_be_written_is_named_not_the_disk_space(folder, monkeypatch):
    import tempfile

    for code, words in ((errno.EACCES, "not writable.*LESSONS_DATA_DIR"), (errno.EROFS, "not writable"),
                        (errno.ENOSPC, "disk is full.*needs")):
        def refuse(*a, _code=code, **k):
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(L.LettersWriteError, match=words) as e:
            L.generate_letters(3, 0)
        assert "needs 0 MB" not in str(e.value) and "no partial file" in str(e.value)
        assert _files(folder) == []


def test_a_read_only_folder_is_refused_before_writing(folder, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # chmod 555 does not stop root: pretend
    with pytest.raises(L.LettersWriteError, match="not writable") as e:
        L.generate_letters(3, 0)
    assert "free" not in str(e.value).split("not writable")[0]


# --- letters: interrupted writes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("when", [0, 1, 2])
def test_ctrl_c_at_any_chunk_leaves_no_file_and_no_temporary(folder, monkeypatch, when):
    """KeyboardInterrupt raised from inside the chunk generator (chunk ``when`` of three; 2 = after the last one,
    while committing): no temporary, no half set, and a later run regenerates a set that loads."""
    real_chunk, real_commit = L._chunk, L._AtomicNpyWriter.commit
    calls = {"chunk": 0, "commit": 0}

    def chunk(seed, k, size, **kw):
        calls["chunk"] += 1
        if k == when:
            raise KeyboardInterrupt
        return real_chunk(seed, k, size, **kw)

    def commit(self):
        calls["commit"] += 1
        if when == 2 and calls["commit"] == 2:  # the images are renamed into place, the labels not yet
            raise KeyboardInterrupt
        return real_commit(self)

    L.generate_letters(2000, 0)  # one good set beside it: untouched
    monkeypatch.setattr(L, "_chunk", chunk if when < 2 else real_chunk)
    monkeypatch.setattr(L._AtomicNpyWriter, "commit", commit)
    with pytest.raises(KeyboardInterrupt):
        L.generate_letters(3000, 0)
    assert _files(folder) == [q.name for q in sorted(L.paths(2000, 0).all())]
    with pytest.raises(FileNotFoundError):
        L.load_letters(3000, 0)
    monkeypatch.setattr(L, "_chunk", real_chunk)
    monkeypatch.setattr(L._AtomicNpyWriter, "commit", real_commit)
    assert L.get_letters(3000, 0)[0].paths.images.parent == folder
    assert not [q for q in folder.iterdir() if q.name.endswith(".tmp")]


def test_kill_9_mid_write_leaves_nothing_accepted_and_the_next_run_sweeps(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from lessons_lib import letters as L
        real = L._chunk
        def slow(seed, k, size, **kw):
            if k == 2:
                print("WRITING", flush=True)
                time.sleep(60)
            return real(seed, k, size, **kw)
        L._chunk = slow
        L.generate_letters(5000, 0, folder={str(tmp_path)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITING"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    left = [p for p in tmp_path.iterdir()]
    assert left and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left)  # only temporaries
    with pytest.raises(FileNotFoundError):
        L.load_letters(5000, 0, folder=tmp_path)
    time.sleep(0.1)
    L.generate_letters(1000, 0, folder=tmp_path)  # the next run, another set even: sweeps the dead writer's files
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert L.get_letters(5000, 0, folder=tmp_path)[0].n == 5000


# --- the reference dataset ----------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 50).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


@pytest.mark.parametrize("name, images, labels, words", [
    ("short labels", "x", lambda y: y[:40], "50 images but 40 labels"),
    ("float images", lambda x: x.astype(np.float32), "y", "holds float32.*divided by 255"),
    ("float labels", "x", lambda y: y.astype(np.float32), "integer class labels"),
    ("2-D labels", "x", lambda y: y.reshape(5, 10), "integer class labels of shape"),
    ("labels out of range", "x", lambda y: y + 200, "labels 200..209.*0..9"),
    ("flat images", lambda x: x.reshape(50, -1), "y", r"expected uint8 \(n, 28, 28\)"),
])
def test_files_that_do_not_belong_together_are_refused(small, name, images, labels, words):
    d, x, y = small
    if images != "x":
        np.save(d / "x.npy", images(x))
    if labels != "y":
        np.save(d / "y.npy", labels(y))
    with pytest.raises(ValueError, match=words):
        MemmapImages(d / "x.npy", d / "y.npy")


def test_foreign_and_missing_files(small):
    d, _, _ = small
    (d / "junk.npy").write_bytes(b"hello")
    with pytest.raises(ValueError, match="junk.npy is not a readable .npy file"):
        MemmapImages(d / "junk.npy", d / "y.npy")
    with pytest.raises(FileNotFoundError):
        MemmapImages(d / "none.npy", d / "y.npy")


@pytest.mark.parametrize("bad, words", [(1.5, "whole number"), (True, "not booleans"), ("a", "whole number"),
                                        (np.array([1.0, 2.0]), "not floats"), (np.ones(50, bool), "not booleans"),
                                        (50, "out of range.*-50..49"), (-51, "out of range"),
                                        (np.array([0, 99]), "index 99 is out of range")])
def test_bad_indices_are_named(small, bad, words):
    d, _, _ = small
    with pytest.raises(IndexError, match=words):
        MemmapImages(d / "x.npy", d / "y.npy")[bad]


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the files are only read
@given(idx=st.one_of(st.integers(-50, 49), st.lists(st.integers(-50, 49), max_size=20)),
       kind=st.sampled_from(["python", "numpy", "torch", "int32"]))
def test_any_valid_index_gives_the_numpy_answer(small, idx, kind):
    d, x, y = small
    ds = MemmapImages(d / "x.npy", d / "y.npy")
    i = {"python": lambda v: v, "numpy": lambda v: np.asarray(v, dtype=np.int64),
         "torch": lambda v: torch.as_tensor(v, dtype=torch.int64), "int32": lambda v: np.asarray(v, dtype=np.int32)
         }[kind](idx)
    xb, yb = ds[i]
    ref = np.asarray(idx, dtype=np.int64)
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert tuple(xb.shape) == ref.shape + (784,)
    np.testing.assert_array_equal(xb.numpy(), x[ref].reshape(*ref.shape, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(yb.numpy(), y[ref])


# --- samplers -----------------------------------------------------------------------------------------------------
@FAST
@given(n=st.integers(1, 3000), batch=st.integers(1, 700), block=st.integers(1, 600), window=st.integers(1, 10),
       seed=st.integers(0, 2**32 - 1), np_scalars=st.booleans())
def test_block_shuffle_is_a_permutation_for_any_sizes(n, batch, block, window, seed, np_scalars):
    from lessons_lib.seeds import torch_generator

    conv = np.int64 if np_scalars else int
    s = BlockShuffleSampler(conv(n), conv(batch), block=conv(block), window=conv(window),
                            generator=torch_generator(seed))
    batches = list(s)
    assert len(batches) == len(s)
    assert all(len(b) <= batch and np.all(np.diff(b) > 0) for b in batches)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": True}, {"batch_size": 2.5}, {"block": 0}, {"window": True},
                                {"batch_size": "256"}])
def test_bad_sampler_sizes_are_named(kw):
    args = {"n": 100, "batch_size": 10, **kw}
    name = next(iter(kw))
    with pytest.raises(BadArgument, match=f"{name}="):
        BlockShuffleSampler(args.pop("n"), args.pop("batch_size"), **args)


@pytest.mark.parametrize("start, stop, b, name", [(5, 5, 1, "stop="), (-1, 5, 1, "start="), (0, 5, 0, "batch_size="),
                                                  (0, True, 1, "stop="), (0, 5.5, 1, "stop=")])
def test_bad_sequential_batches(start, stop, b, name):
    with pytest.raises(BadArgument, match=name):
        SequentialBatches(start, stop, b)


# --- the lesson's knobs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("letters")
    return L.get_letters(1000, 0, folder=d)[0]


@pytest.mark.parametrize("kw, name", [
    ({"source": "cloud"}, "source="), ({"batch_size": 0}, "batch_size="), ({"batch_size": True}, "batch_size="),
    ({"workers": -1}, "workers="), ({"workers": 1.5}, "workers="), ({"block": 0}, "block="),
    ({"window": np.float64("nan")}, "window="), ({"seed": -3}, "seed="), ({"release_every": -1}, "every="),
    ({"dataset": "MemmapImages"}, "dataset="),
])
def test_bad_loader_knobs(one_set, kw, name):
    with pytest.raises(BadArgument, match=name):
        lab.make_loaders(one_set, **{"source": "disk", **kw})


def test_loader_knobs_accept_numpy_scalars(one_set):
    tr, va = lab.make_loaders(one_set, "disk", batch_size=np.int64(100), workers=np.int32(0), block=np.int64(64),
                              window=np.int16(4), seed=np.uint8(3))
    xb, yb = next(iter(tr))
    assert xb.shape == (100, 784) and yb.dtype == torch.int64
    with pytest.raises(BadArgument, match="LettersSet"):
        lab.make_loaders("letters", "disk")
    with pytest.raises(BadArgument, match="dataset=.*not an instance"):
        lab.make_loaders(one_set, "disk", dataset=MemmapImages(one_set.paths.images, one_set.paths.labels))


@pytest.mark.parametrize("kw, name", [
    ({"source": "tape"}, "source="), ({"n_images": True}, "n_images="), ({"n_images": 500}, "n_images="),
    ({"n_images": 600_000}, "n_images="), ({"n_images": 2500.5}, "n_images="), ({"epochs": 0}, "epochs="),
    ({"lr": float("inf")}, "lr="), ({"lr": 0}, "lr="), ({"width": -1}, "width="), ({"dataset": None}, "dataset="),
    ({"seed": True}, "seed="),
])
def test_bad_panel_knobs_are_named_before_any_work(folder, kw, name):
    with pytest.raises(BadArgument, match=name):
        lab.experiment(**kw)
    assert not [p for p in folder.iterdir() if p.name.startswith("letters_")]


@pytest.mark.parametrize("kw, name", [({"mode": "text"}, "mode="), ({"budget_mb": 0}, "budget_mb="),
                                      ({"budget_mb": float("nan")}, "budget_mb="), ({"timeout": -1}, "timeout="),
                                      ({"n_images": np.bool_(True)}, "n_images="), ({"epochs": 0}, "epochs=")])
def test_bad_capped_knobs(folder, kw, name):
    with pytest.raises(BadArgument, match=name):
        lab.run_capped(**{"mode": "stream", **kw})
    if "mode" not in kw and "n_images" not in kw and "epochs" not in kw:
        with pytest.raises(BadArgument, match=name):
            lab.capped_demo(**kw)


@pytest.mark.parametrize("kw, name", [({"rounds": 0}, "rounds="), ({"rounds": 2.5}, "rounds="),
                                      ({"width": 0}, "width="), ({"dataset": print}, "dataset=")])
def test_bad_measurement_knobs(one_set, kw, name):
    with pytest.raises(BadArgument, match=name):
        measure.measure_paths(one_set, **kw)


@pytest.mark.parametrize("kw, name", [({"n_seeds": 1}, "n_seeds="), ({"n_seeds": True}, "n_seeds="),
                                      ({"n_sorted": 7}, "n_sorted="), ({"epochs": 0}, "epochs="),
                                      ({"lr": -1e-3}, "lr="), ({"prefix": 0}, "prefix=")])
def test_bad_study_knobs(one_set, kw, name):
    with pytest.raises(BadArgument, match=name):
        measure.sampler_study(one_set, **kw)


def test_other_public_functions_name_their_bad_arguments(one_set):
    with pytest.raises(BadArgument, match="margin="):
        measure.within(measure.mean_interval([0.1, 0.2]), float("nan"))
    with pytest.raises(BadArgument, match="timeout="):
        measure.naive_peak(one_set, timeout=0)
    with pytest.raises(BadArgument, match="n="):
        formats.study_formats(one_set.images, n=5000)
    with pytest.raises(BadArgument, match="n="):
        formats.study_formats(one_set.images, n=np.bool_(True))
    with pytest.raises(BadArgument, match="images: expected a uint8 array"):
        formats.study_formats(one_set.images.astype(np.float32), n=10)
    with pytest.raises(BadArgument, match="batch_size="):
        next(formats.handwritten_batches(one_set.paths.images, one_set.paths.labels, batch_size=0))
    with pytest.raises(BadArgument, match="batches="):
        plots.plot_read_pattern(batches=0)
    with pytest.raises(BadArgument, match="seed="):
        plots.plot_read_pattern(seed=-1)
    with pytest.raises(BadArgument, match="every="):
        lab.ReleasingPages(one_set.images, every=True)
