"""FastDropout's compiled path (lessons_lib/binomial_bottleneck/fused_dropout.cpp) against independent references:
the numpy path bit for bit when both read the same random bytes, the keep rate and independence of its own
stream, the backward as the upstream gradient times the forward's mask; and core ``native``: a machine that cannot
build falls back with a reason, never an error."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lessons_lib import native
from lessons_lib.binomial_bottleneck import fast_dropout as fd
from lessons_lib.binomial_bottleneck.fast_dropout import FastDropout


def test_the_kernel_is_built_on_this_machine():
    assert fd.compiled() is None, fd.compiled()  # `make data` builds it; CI's machine has a compiler


def _both(p, shape, seed, g_seed=1, x=None):
    """Forward and backward of the kernel and of the numpy path, each from default_rng(seed)'s bytes."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7)) if x is None else x
    g = torch.randn(*x.shape, generator=torch.Generator().manual_seed(g_seed))
    out = []
    for kernel in (True, False):
        xi = x.detach().clone().requires_grad_(True)
        y = FastDropout(p, rng=np.random.default_rng(seed), kernel=kernel)(xi)
        y.backward(g)
        out.append((y.detach(), xi.grad))
    return out


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.8])
@pytest.mark.parametrize("shape", [(128, 1024), (3, 40), (2, 3, 8)])
def test_kernel_reads_the_bytes_as_the_numpy_path_does(p, shape):
    (yk, gk), (yn, gn) = _both(p, shape, seed=11)
    assert torch.equal(yk, yn) and torch.equal(gk, gn)


def test_a_non_contiguous_input_keeps_its_shape_and_order():
    x = torch.randn(64, 40).t()  # (40, 64), not contiguous
    (yk, gk), (yn, gn) = _both(0.2, None, seed=5, x=x)
    assert yk.shape == (40, 64) and torch.equal(yk, yn) and torch.equal(gk, gn)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_own_stream_keep_rate_and_independence(p):
    torch.manual_seed(2)
    y = FastDropout(p)(torch.ones(1024, 1024))
    vals = y.unique()
    assert len(vals) == 2 and vals[0] == 0 and abs(vals[1].item() - 1 / (1 - p)) < 1e-6
    keep = (y != 0).flatten().double()
    n, q = keep.numel(), 1 - p
    assert abs(keep.mean().item() - q) < 5 * math.sqrt(q * p / n)
    for lag in (1, 3, 7, 8, 9, 32, 64):  # inside a group of 8, across groups, across 64-bit words
        both = (keep[:-lag] * keep[lag:]).mean().item()
        assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / (n - lag)), lag


def test_own_stream_follows_manual_seed_not_the_thread_count():
    x = torch.ones(256, 512)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            torch.manual_seed(9)
            outs.append(FastDropout(0.3)(x))
        again = FastDropout(0.3)(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]) and not torch.equal(outs[2], again)


def test_backward_is_the_upstream_gradient_times_the_mask():
    x = torch.randn(64, 256, requires_grad=True)
    g = torch.randn(64, 256)
    y = FastDropout(0.2)(x)
    y.backward(g)
    scale = torch.tensor(1 / 0.8, dtype=torch.float32)
    kept = y.detach() != 0
    assert torch.equal(y.detach(), torch.where(kept, x.detach() * scale, 0.0))
    assert torch.equal(x.grad, torch.where(kept, g * scale, 0.0))


@pytest.mark.parametrize("x", [torch.ones(3, 5), torch.ones(16, dtype=torch.float64), torch.ones(8, 8).bfloat16()])
def test_shapes_and_dtypes_the_kernel_leaves_to_the_numpy_path(x):
    torch.manual_seed(0)
    y = FastDropout(0.5)(x)
    assert y.dtype == x.dtype and y.shape == x.shape and set(y.float().unique().tolist()) <= {0.0, 2.0}


def test_kernel_flag_is_checked():
    with pytest.raises(ValueError, match="kernel must be True or False"):
        FastDropout(0.5, kernel="yes")


def test_without_the_kernel_the_numpy_path_runs(monkeypatch):
    monkeypatch.setattr(native, "load", lambda source, warn=True: None)
    torch.manual_seed(4)
    y = FastDropout(0.1)(torch.ones(256, 256))
    assert abs((y == 0).float().mean().item() - 0.1) < 0.01


def test_native_off_by_environment(monkeypatch):
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_reasons", {})
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert native.load(fd.KERNEL) is None and native.why_not("fused_dropout") == f"{native.NATIVE_ENV}=0"


def test_a_source_that_does_not_build_gives_none_a_reason_and_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_reasons", {})
    monkeypatch.setenv("LESSONS_DATA_DIR", str(tmp_path / "data"))
    bad = tmp_path / "broken_kernel.cpp"
    bad.write_text("this is not C++\n")
    with pytest.warns(RuntimeWarning, match="broken_kernel: the compiled helper could not be built"):
        assert native.load(bad) is None
    assert "Error" in native.why_not("broken_kernel")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked again: the same answer, no second warning, no second build
        assert native.load(bad) is None


def test_build_all_lists_every_lesson_source():
    assert [s.name for s in native.sources()] == ["fused_dropout.cpp"]
    assert native.build_all() == [f"fused_dropout: built in {native.data_dir() / 'build' / 'fused_dropout'}"]
