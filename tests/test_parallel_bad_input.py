"""Lesson 10, bad input (issue 17): a run's configuration is checked when it is made, field by field, with
``BadArgument`` naming the field and the fix (numpy scalars accepted, bools refused), before any process starts;
sweeps, tables, plots and the checks refuse what they cannot read. No process is started here."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib.device import DeviceUnavailableError
from lessons_lib.parallel import checks, plots
from lessons_lib.parallel import lab as par
from lessons_lib.validate import BadArgument

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
NONSENSE = {"bool": True, "nan": math.nan, "inf": math.inf, "negative": -1, "string": "2", "huge": 10**12,
            "fraction": 2.5}
NUMBER_FIELDS = ["processes", "width", "epochs", "batch_size", "lr", "seed", "timeout_s", "train_examples",
                 "crash_rank", "crash_step", "active_fraction"]


def _valid_anyway(name: str, value: object) -> bool:
    """Values of NONSENSE that are fine for some fields."""
    return ((name in ("lr", "timeout_s") and value == 2.5) or (name == "lr" and value == 10**12)
            or (name in ("train_examples", "crash_step") and value == 10**12))


@pytest.mark.parametrize("kind", NONSENSE)
@pytest.mark.parametrize("name", NUMBER_FIELDS)
def test_run_config_refuses_nonsense_numbers_by_name(name, kind):
    bad = NONSENSE[kind]
    if _valid_anyway(name, bad):
        return
    with pytest.raises(BadArgument, match=f"{name}="):
        par.RunConfig(**{name: bad})


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0, True, 10**9])
def test_timeout_s_is_checked_where_it_is_given(value):
    """RunConfig(timeout_s=nan) used to reach the launcher's arithmetic (a NaN deadline never fires)."""
    with pytest.raises(BadArgument, match=r"timeout_s=.*seconds of silence"):
        par.RunConfig(timeout_s=value)


@pytest.mark.parametrize("name", ["mode", "update", "dataset", "crash_kind", "device"])
@pytest.mark.parametrize("bad", ["nope", 3, None])
def test_unknown_choices_are_named(name, bad):
    with pytest.raises(BadArgument, match=f"{name}=.*must be one of"):
        par.RunConfig(**{name: bad})


def test_numpy_scalars_are_numbers_and_come_out_as_python_ones():
    cfg = par.RunConfig(processes=np.int64(2), epochs=np.int32(1), batch_size=np.int64(8), lr=np.float32(0.5),
                        timeout_s=np.float64(5.0), seed=np.uint32(3), width=np.int16(50), crash_rank=np.int64(1),
                        active_fraction=np.float64(0.1), train_examples=np.int64(64))
    assert cfg.validate() is cfg
    for name in ("processes", "epochs", "batch_size", "seed", "width", "crash_rank", "train_examples"):
        assert type(getattr(cfg, name)) is int, name
    assert type(cfg.lr) is float and type(cfg.timeout_s) is float and cfg.lr == 0.5


def test_crash_rank_must_name_a_process():
    with pytest.raises(BadArgument, match=r"crash_rank=2: .*\[0, 1\]"):
        par.RunConfig(processes=2, crash_rank=2)


def test_a_missing_gpu_is_named_before_any_process_starts():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceUnavailableError):
        par.RunConfig(device="cuda", processes=1).validate()
    with pytest.raises(DeviceUnavailableError):
        par.experiment(device="gpu")


@pytest.mark.parametrize("processes", [0, -1, True, 2.5, math.nan, "2", None, 10**6])
def test_config_helpers_refuse_bad_process_counts(processes):
    for make in (par.ddp_configs, par.hogwild_configs, par.manual_config):
        with pytest.raises(BadArgument, match="processes="):
            make(processes=processes)


def test_a_batch_larger_than_the_data_is_refused_before_launch():
    t0 = time.perf_counter()
    with pytest.raises(BadArgument, match=r"batch_size=5000: larger than the 3200 training examples"):
        par.launch(par.RunConfig(processes=1, epochs=1, batch_size=5000))
    with pytest.raises(BadArgument, match="each process has"):
        par.launch(par.RunConfig(mode="hogwild", processes=2, epochs=1, batch_size=1, train_examples=1))
    with pytest.raises(BadArgument, match="launch needs a RunConfig"):
        par.launch("ddp")
    assert time.perf_counter() - t0 < 10  # no process was started


@pytest.mark.parametrize("repeats", [0, True, 1.5, math.nan, "3", None])
def test_sweep_and_repeat_seeds_refuse_bad_repeats(repeats):
    with pytest.raises(BadArgument, match="repeats="):
        par.repeat_seeds(repeats)
    with pytest.raises(BadArgument, match="repeats="):
        par.sweep([par.RunConfig()], repeats=repeats)


def test_sweep_checks_everything_before_the_first_launch():
    cfg = par.RunConfig(processes=1, epochs=1)
    with pytest.raises(BadArgument, match="one seed per round"):
        par.sweep([cfg], repeats=2, seeds=[1])
    with pytest.raises(BadArgument, match="must differ"):
        par.sweep([cfg], repeats=2, seeds=[1, 1])
    with pytest.raises(BadArgument, match=r"seeds\[1\]="):
        par.sweep([cfg], repeats=2, seeds=[1, -1])
    with pytest.raises(BadArgument, match="non-empty list of RunConfig"):
        par.sweep([], repeats=1)
    with pytest.raises(BadArgument, match="non-empty list of RunConfig"):
        par.sweep("ddp", repeats=1)
    with pytest.raises(ValueError, match="batch_size >= processes"):  # the 2nd config: found before the 1st runs
        par.sweep([cfg, replace(cfg, processes=2, batch_size=1)], repeats=1)


def test_the_network_refuses_bad_sizes_and_inputs():
    for kwargs, match in [({"width": 0}, "width="), ({"width": True}, "width="), ({"n_in": 10**12}, "n_in="),
                          ({"update": "lsh"}, "update="), ({"seed": math.inf}, "seed="), ({"seed": -1}, "seed="),
                          ({"update": "sparse", "active_fraction": 0}, "active_fraction=")]:
        kw = {"n_in": 40, "width": 100, "n_out": 10, **kwargs}
        with pytest.raises(BadArgument, match=match):
            par.UnitMajorNet(kw.pop("n_in"), kw.pop("width"), kw.pop("n_out"), **kw)
    net = par.UnitMajorNet(40, 100, 10)
    for x, match in [(torch.zeros(3, 7), r"shape \(3, 7\)"), (torch.zeros(0, 40), "non-empty"),
                     (torch.zeros(2, 40, dtype=torch.float64), "dtype torch.float64"),
                     (np.zeros((2, 40), np.float32), "torch tensor")]:
        with pytest.raises(BadArgument, match=match):
            net(x)
    with pytest.raises(BadArgument, match="torch module"):
        par.gradient_bytes("net")


def test_tables_plots_and_claims_refuse_what_they_cannot_read():
    for fn in (par.results_table, plots.plot_scaling):
        for bad in ([], "runs", [1, 2], None):
            with pytest.raises(BadArgument, match="non-empty list of runs"):
                fn(bad)
    with pytest.raises(BadArgument, match="ddp="):
        par.claims([], [])


def test_checks_read_only_the_lessons_objects():
    net = par.UnitMajorNet(40, 100, 10)
    torch.nn.functional.cross_entropy(net(torch.randn(2, 40)), torch.tensor([0, 1])).backward()
    with pytest.raises(BadArgument, match="lab.UnitMajorNet"):
        checks.check_dense_bytes(1, None)
    with pytest.raises(BadArgument, match="synchronous run"):
        checks.check_examples_per_process(32, "run")
    # nonsense answers are a verdict, never a traceback
    for answer in (None, "204040", math.nan, True, [1, 2], -1, 10**30, math.inf, int, len, torch.tensor([1, 2]),
                   np.array([20440, 20440])):  # arrays: core check_answer's `==` alone would raise
        r = checks.check_dense_bytes(answer, net)
        assert r.status in ("wrong", "not_written"), (answer, r.status)
    assert checks.check_dense_bytes(np.int64((100 * 41 + 100 * 10 + 10) * 4), net).status == "correct"


@FAST
@given(processes=st.integers(1, par.MAX_PROCESSES), as_numpy=st.booleans(), batch=st.integers(1, 4096),
       timeout=st.floats(1e-3, par.MAX_TIMEOUT_S), lr=st.floats(1e-6, 1e3))
def test_any_sensible_config_is_accepted_and_coerced(processes, as_numpy, batch, timeout, lr):
    p = np.int64(processes) if as_numpy else processes
    cfg = par.RunConfig(mode="hogwild", processes=p, batch_size=batch, timeout_s=timeout, lr=lr)
    assert cfg.processes == processes and type(cfg.processes) is int
    assert cfg.validate() is cfg


@FAST
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not float(v).is_integer()),
                       st.booleans(), st.integers(max_value=0), st.text(max_size=3)))
def test_no_nonsense_process_count_gets_through(value):
    with pytest.raises(BadArgument, match="processes="):
        par.RunConfig(processes=value)
