"""The generated letters set: deterministic by seed, a prefix of any larger set, learnable but not trivial,
validation on held-out fonts, versioned atomic files, clear errors on bad files."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lessons_lib import letters as L


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONS_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deterministic_by_seed_and_prefix_of_larger_sets(seed):
    x1, y1 = L.make_letters(1500, seed)
    x2, y2 = L.make_letters(1500, seed)
    big_x, big_y = L.make_letters(2300, seed)  # crosses a chunk boundary
    assert x1.shape == (1500, 28, 28) and x1.dtype == np.uint8 and y1.dtype == np.uint8
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(big_x[:1500], x1) and np.array_equal(big_y[:1500], y1)
    other, _ = L.make_letters(1500, seed + 10)
    assert np.mean(other != x1) > 0.5
    counts = np.bincount(y1, minlength=10)
    assert counts.min() > 100 and counts.max() < 200  # ten classes, about 150 each
    assert 20 < x1.mean() < 120 and x1.max() == 255  # dark background, bright ink, some saturation


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_letters_are_learnable_but_not_trivial(seed):
    from sklearn.linear_model import LogisticRegression

    x, y = L.make_letters(3000, seed)
    tr, va = L.split_indices(3000)
    x = x.reshape(len(x), -1) / 255.0
    clf = LogisticRegression(max_iter=60).fit(x[tr], y[tr])
    train_acc, val_acc = clf.score(x[tr], y[tr]), clf.score(x[va], y[va])
    assert 0.5 < val_acc < 0.9, val_acc  # well above chance (0.1), far from solved (version 1 gave ~0.95)
    assert train_acc - val_acc > 0.08, (train_acc, val_acc)  # unseen fonts and distortions: a generalization gap


def test_validation_images_come_from_fonts_training_never_sees():
    n_fonts = len(L.font_files())
    train_fonts, val_fonts = L.font_split(n_fonts)
    assert set(train_fonts) | set(val_fonts) == set(range(n_fonts)) and not set(train_fonts) & set(val_fonts)
    assert 0.15 <= len(val_fonts) / n_fonts <= 0.25
    _, labels, fonts = L._chunk(0, 3, L.CHUNK, return_fonts=True)
    val = L.is_validation(np.arange(3 * L.CHUNK, 4 * L.CHUNK))
    assert val.sum() == L.VAL_PER_CHUNK and val[-L.VAL_PER_CHUNK:].all()
    assert set(fonts[val]) <= set(val_fonts) and set(fonts[~val]) <= set(train_fonts)
    assert len(set(fonts[~val])) == len(train_fonts)  # every training font is used
    tr, va = L.split_indices(2500)
    assert len(va) == 200 and len(tr) == 2300 and not set(tr) & set(va)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(2500))
    assert va.tolist()[:3] == [900, 901, 902] and va[-1] == 1999
    tr, va = L.split_indices(L.MAX_IMAGES)  # the cap: 10,000 validation images; held-out fonts never trained on
    assert len(va) == 10_000 and len(tr) == 450_000 and not L.is_validation(tr).any() and L.is_validation(va).all()
    with pytest.raises(ValueError, match="no validation images yet"):
        L.split_indices(900)


def test_fonts_have_all_ten_letters():
    fonts = L.font_files()
    assert len(fonts) >= 15
    assert not any("LastResort" in f.name for f in fonts)


def test_files_manifest_and_load(folder):
    m = L.generate_letters(1200, 3)
    p = L.paths(1200, 3)
    assert m["n"] == 1200 and m["seed"] == 3 and m["dtype"] == "uint8" and m["image_shape"] == [28, 28]
    assert m["files"]["images"]["bytes"] == p.images.stat().st_size
    assert sum(m["class_counts"]) == 1200
    ls = L.load_letters(1200, 3)
    x, y = L.make_letters(1200, 3)
    assert np.array_equal(np.asarray(ls.images), x) and np.array_equal(np.asarray(ls.labels), y)
    assert isinstance(ls.images, np.memmap)
    assert L.expected_bytes(1200) == p.images.stat().st_size + p.labels.stat().st_size
    tr, va = ls.split()
    assert len(tr) == 1100 and len(va) == 100 and va[0] == 900  # the held-out fonts' images of chunk 0
    assert p.images.name == f"letters_v{L.VERSION}_s3_n1200_images.npy" and m["version"] == L.VERSION == 2
    assert all(q.stat().st_mode & 0o777 == 0o644 for q in p.all())  # readable by every user
    assert m["validation_fonts"] and set(m["validation_fonts"]) < set(m["fonts"])
    assert not list(folder.glob(".*tmp"))  # no temporary file left
    # a second call keeps the valid set
    mtime = p.images.stat().st_mtime_ns
    L.generate_letters(1200, 3)
    assert p.images.stat().st_mtime_ns == mtime


def test_truncated_corrupt_and_mismatched_files_say_how_to_regenerate(folder):
    L.generate_letters(1000, 0)
    p = L.paths(1000, 0)
    good = p.images.read_bytes()
    p.images.write_bytes(good[:-500])  # truncated
    with pytest.raises(L.LettersDataError, match=r"truncated.*generate_letters\(1000, seed=0.*overwrite=True"):
        L.load_letters(1000, 0)
    with pytest.raises(L.LettersDataError, match="truncated"):
        L.get_letters(1000, 0)  # a broken set is reported, not silently replaced
    corrupt = bytearray(good)
    corrupt[5000] ^= 0xFF
    p.images.write_bytes(bytes(corrupt))  # same size, one byte flipped
    with pytest.raises(L.LettersDataError, match="sha256.*corrupt"):
        L.load_letters(1000, 0)
    p.images.write_bytes(good)
    m = json.loads(p.manifest.read_text())
    m["n"] = 999
    p.manifest.write_text(json.dumps(m))
    with pytest.raises(L.LettersDataError, match="does not describe"):
        L.load_letters(1000, 0)
    p.manifest.write_text("{not json")
    with pytest.raises(L.LettersDataError, match="not a valid letters manifest"):
        L.load_letters(1000, 0)
    L.generate_letters(1000, 0, overwrite=True)  # the fix the message names
    assert L.load_letters(1000, 0).n == 1000
    with pytest.raises(FileNotFoundError):
        L.load_letters(1001, 0)


def test_bad_sizes():
    for n in (0, -5, L.MAX_IMAGES + 1, 2.5):
        with pytest.raises(ValueError, match="1 to 500,000"):
            L.make_letters(n)


def test_not_enough_disk_space_is_refused_before_writing(folder, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(L.LettersWriteError, match="not enough free disk space"):
        L.generate_letters(50_000, 0)
    assert list(folder.iterdir()) == []


def test_disk_full_mid_write_leaves_no_half_file(tmp_path):
    """A child whose file-size limit (RLIMIT_FSIZE) is hit mid-write: the write fails like a full disk."""
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        from lessons_lib import letters as L
        try:
            L.generate_letters(2000, 0, folder={str(tmp_path)!r})
        except L.LettersWriteError as e:
            print("WRITE-ERROR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "WRITE-ERROR" in out.stdout, out.stderr[-2000:]
    assert "no partial file was left" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no .npy, no manifest, no temporary file


def test_a_set_of_an_older_version_is_not_reused(folder):
    """Version 1 files (no version in their names) are ignored, listed and removable; a manifest of another
    version at the new name is refused with the fix."""
    old = [folder / f"letters_s0_n1000{suffix}" for suffix in ("_images.npy", "_labels.npy", ".json")]
    for q in old:
        q.write_bytes(b"old")
    (folder / "mnist1d.npz").write_bytes(b"other data")
    with pytest.raises(FileNotFoundError):
        L.load_letters(1000, 0)
    ls, seconds = L.get_letters(1000, 0)  # generated anew, not the old files
    assert seconds is not None and ls.manifest["version"] == L.VERSION
    assert L.old_files() == sorted(old)
    assert L.remove_old_files() == 9 and L.old_files() == [] and (folder / "mnist1d.npz").exists()
    p = L.paths(1000, 0)
    m = json.loads(p.manifest.read_text())
    m["version"] = 1
    p.manifest.write_text(json.dumps(m))
    with pytest.raises(L.LettersDataError, match="version=1.*overwrite=True"):
        L.load_letters(1000, 0)
