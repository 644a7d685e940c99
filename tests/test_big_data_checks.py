"""Lesson 08 checks: the reference passes, a stub is "not written", a crash is named, and typical planted bugs in
the learner's memory-mapped Dataset are each caught with the hint that names them; answers come from the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from lessons_lib import letters as L
from lessons_lib.big_data import checks, formats, reference


class Good(Dataset):
    """A right answer written the way a learner might (lazy opening); the bugs below override one piece each."""

    mode: str | None = "r"

    def __init__(self, images_path, labels_path):
        self.paths = (images_path, labels_path)
        self.images = self.labels = None
        self.n = np.load(labels_path, mmap_mode="r").shape[0]

    def __len__(self):
        return self.n

    def index(self, i):
        return i

    def x(self, rows, shape):
        return torch.from_numpy(np.asarray(rows, dtype=np.float32).reshape(*shape, 784) / 255)

    def y(self, labels):
        return torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __getitem__(self, i):
        if self.images is None:
            self.images, self.labels = (np.load(p, mmap_mode=self.mode) for p in self.paths)
        j = self.index(i)
        return self.x(self.images[j], np.shape(i)), self.y(self.labels[i])

    def __getstate__(self):
        return {**self.__dict__, "images": None, "labels": None}


class NoMmap(Good):
    mode = None


class EagerNoMmap(Good):
    def __init__(self, images_path, labels_path):
        super().__init__(images_path, labels_path)
        self.images, self.labels = np.load(images_path), np.load(labels_path)


class FloatUpFront(Good):
    def __init__(self, images_path, labels_path):
        super().__init__(images_path, labels_path)
        self.images = np.load(images_path, mmap_mode="r").astype(np.float32)
        self.labels = np.load(labels_path, mmap_mode="r")


class Unscaled(Good):
    def x(self, rows, shape):
        return torch.from_numpy(np.asarray(rows, dtype=np.float32).reshape(*shape, 784))


class By256(Good):
    def x(self, rows, shape):
        return torch.from_numpy(np.asarray(rows, dtype=np.float32).reshape(*shape, 784) / 256)


class Float64(Good):
    def x(self, rows, shape):
        return torch.from_numpy(np.asarray(rows).reshape(*shape, 784) / 255.0)


class Uint8(Good):
    def x(self, rows, shape):
        return torch.from_numpy(np.array(rows).reshape(*shape, 784))


class Square(Good):
    def x(self, rows, shape):
        return torch.from_numpy(np.asarray(rows, dtype=np.float32) / 255)


class LabelsOffByOne(Good):
    def __getitem__(self, i):
        x, _ = super().__getitem__(i)
        return x, self.y(self.labels[(np.asarray(i) + 1) % self.n])


class ImagesOffByOne(Good):
    def index(self, i):
        return (np.asarray(i) + 1) % self.n


class NumpyLabel(Good):
    def y(self, labels):
        return labels


class FloatLabel(Good):
    def y(self, labels):
        return torch.from_numpy(np.asarray(labels, dtype=np.float32))


class Uint8Label(Good):
    def y(self, labels):
        return torch.from_numpy(np.array(labels))


class IntLabel(Good):
    def y(self, labels):
        return int(labels)


class LenPixels(Good):
    def __len__(self):
        return self.n * 784


class OneIndexOnly(Good):
    def __getitem__(self, i):
        if self.images is None:
            self.images, self.labels = (np.load(p, mmap_mode="r") for p in self.paths)
        x = torch.from_numpy(self.images[int(i)].reshape(784).astype(np.float32) / 255)
        return x, torch.tensor(int(self.labels[int(i)]))


class NoNegatives(Good):
    def __getitem__(self, i):
        if np.ndim(i) == 0 and not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range")
        return super().__getitem__(i)


class PicklesTheData(Good):
    def __getstate__(self):
        return dict(self.__dict__)


class Crashes(Good):
    def __getitem__(self, i):
        return 1 / 0


class Stub(Dataset):
    def __init__(self, images_path, labels_path):
        raise NotImplementedError("keep the two paths")


BUGS = [
    (NoMmap, "loaded the whole file into memory (np.load without mmap_mode='r')"),
    (EagerNoMmap, "constructing the dataset loaded the whole file into memory"),
    (FloatUpFront, "converted the whole set to float32"),
    (Unscaled, "pixels not scaled to [0, 1]"),
    (By256, "divided by 256 instead of 255"),
    (Float64, "returned float64 instead of float32"),
    (Uint8, "returned uint8 instead of float32"),
    (Square, "takes flat images"),
    (LabelsOffByOne, "labels misaligned with images (off by one)"),
    (ImagesOffByOne, "images off by one"),
    (NumpyLabel, "label is a numpy uint8 scalar, the loss needs int64"),
    (FloatLabel, "label is a float, the loss needs int64"),
    (Uint8Label, "label is torch.uint8"),
    (IntLabel, "label is a Python int"),
    (LenPixels, "len counts pixels or bytes instead of images"),
    (OneIndexOnly, "asks for a whole batch in one lookup"),
    (NoNegatives, "Negative indices count from the end"),
    (PicklesTheData, "pickling your dataset copies the whole set"),
]


@pytest.fixture(params=[0, 3])
def seed(request, monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", str(request.param))
    return request.param


def test_the_reference_and_a_learners_version_pass(seed, capsys):
    assert checks.check_memmap_images(reference.MemmapImages).status == "correct"
    assert checks.check_memmap_images(Good).status == "correct"
    assert "✓ Correct." in capsys.readouterr().out


@pytest.mark.parametrize("bug,hint", BUGS, ids=[b.__name__ for b, _ in BUGS])
def test_each_planted_bug_is_named(bug, hint, seed):
    r = checks.check_memmap_images(bug)
    assert r.status == "wrong", r.message
    assert hint in r.message, r.message


def test_stub_crash_and_non_class():
    assert checks.check_memmap_images(Stub).status == "not_written"
    assert checks.check_memmap_images(...).status == "not_written"
    r = checks.check_memmap_images(Crashes)
    assert r.status == "wrong" and "ZeroDivisionError" in r.message
    r = checks.check_memmap_images(3)
    assert r.status == "wrong" and "Pass the function itself" in r.message


def test_yours_or_falls_back_to_the_reference(capsys):
    assert checks.check_memmap_images(Unscaled).yours_or(reference.MemmapImages) is reference.MemmapImages
    assert checks.check_memmap_images(Good).yours_or(reference.MemmapImages) is Good
    out = capsys.readouterr().out
    assert "use the library's reference" in out and "use your MemmapImages" in out


# --- answers from the learner's run -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("letters")
    ls, _ = L.get_letters(2000, 0, folder=folder)
    return ls


def test_images_megabytes_is_the_files_size(small):
    size = small.paths.images.stat().st_size
    assert checks.check_images_megabytes(size / 1e6, small)
    assert checks.check_images_megabytes(small.n * 784 / 1e6, small)  # the header is within 1%
    for wrong, hint in ((8 * size / 1e6, "float64"), (4 * size / 1e6, "float32"), (size / 2**20, "MiB"),
                        (392, "seed's 500,000"), (1.0, "One byte per pixel")):
        r = checks.check_images_megabytes(wrong, small)
        assert r.status == "wrong" and hint in r.message, (wrong, r.message)
    assert checks.check_images_megabytes(..., small).status == "not_written"


def test_float64_factor_comes_from_the_study(small, tmp_path):
    study = formats.study_formats(np.asarray(small.images), n=100, folder=tmp_path)
    assert checks.check_float64_factor(8, study)
    assert "float32" in checks.check_float64_factor(4, study).message
    text = study.row("text, floats").disk_bytes / study.row("uint8 .npy").disk_bytes
    assert "text file on disk" in checks.check_float64_factor(round(text, 1), study).message
    assert checks.check_float64_factor(2, study).status == "wrong"


def test_batch_bytes_comes_from_the_batch():
    xb = torch.zeros(256, 784)
    assert checks.check_batch_bytes(256 * 784 * 4, xb)
    assert "uint8" in checks.check_batch_bytes(256 * 784, xb).message
    assert "float64" in checks.check_batch_bytes(256 * 784 * 8, xb).message
    assert "in MB" in checks.check_batch_bytes(256 * 784 * 4 / 1e6, xb).message
    assert checks.check_batch_bytes(100 * 784 * 4, torch.zeros(100, 784))  # a last, shorter batch
