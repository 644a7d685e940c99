"""Lesson 00, bad input at the public boundary (issue 17): the timing demos' sizes and devices, and the question
checks fed nonsense (a verdict, never a traceback)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lessons_lib.device import DeviceUnavailableError, available_devices, hardware_report
from lessons_lib.tour import checks, lab
from lessons_lib.validate import BadArgument

BAD_COUNTS = [(True, "got bool"), (2.5, "not rounded"), (float("nan"), "whole number"), (-1, "-1"), (0, "=0"),
              ("3", "got str"), (None, "NoneType")]


@pytest.mark.parametrize("value, match", BAD_COUNTS)
def test_timing_demos_refuse_bad_counts(value, match):
    # before: 0 or -1 repeats gave empty results, True ran one repeat, 2.5 and NaN raised deep in range()
    for call, name in ((lambda v: lab.warmup_demo(repeats=v), "repeats"), (lambda v: lab.sync_demo(calls=v), "calls"),
                       (lambda v: lab.sync_demo(repeats=v), "repeats"), (lambda v: lab.sync_demo(size=v), "size"),
                       (lambda v: lab.noise_demo(calls=v), "calls"), (lambda v: lab.noise_demo(repeats=v), "repeats"),
                       (lambda v: lab.noise_demo(burst_every=v), "burst_every"),
                       (lambda v: lab.first_calls(n_first=v), "n_first")):
        if value is None and name == "size":
            continue  # size=None is sync_demo's default (256 on a CPU)
        with pytest.raises(BadArgument, match=f"{name}=.*{match}" if match.startswith(("got", "not", "whole"))
                           else name):
            call(value)


def test_numpy_counts_are_numbers():
    r = lab.sync_demo(size=np.int64(8), calls=np.int32(3), repeats=np.int16(2))
    assert r.calls == 3 and len(r.with_sync) == len(r.without_sync) == 2
    n = lab.noise_demo(calls=np.int64(10), repeats=np.int64(2), size=np.int64(100), burst_every=np.int64(5),
                       burst_seconds=np.float32(0.0))
    assert len(n.noisy) == 2 and all(len(t.times) == 10 for t in n.noisy)


def test_burst_seconds_is_checked():
    for bad in (float("nan"), -0.001, True, 5.0):
        with pytest.raises(BadArgument, match="burst_seconds"):
            lab.noise_demo(calls=5, repeats=1, size=10, burst_seconds=bad)


@pytest.mark.skipif(len(available_devices()) > 1, reason="a GPU is present")
def test_a_missing_gpu_is_named_before_any_work():
    for call in (lambda: lab.sync_demo("gpu"), lambda: lab.warmup_demo("gpu"), lambda: lab.first_calls("gpu")):
        with pytest.raises(DeviceUnavailableError, match="No GPU"):
            call()
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        lab.sync_demo("tpu")


# --- the checks fed nonsense ----------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [np.array([1, 2]), [2], (2, 2), True, {"cores": 2}, torch.tensor([2, 2]), 2.5,
                                    "two", object()])
def test_question_checks_on_nonsense_answers(answer):
    report = hardware_report()
    noise = lab.noise_demo(calls=20, repeats=2, size=100, burst_every=5, burst_seconds=0.001)
    for result in (checks.check_statistic(answer, noise), checks.check_sync_call(answer),
                   checks.check_cores(answer, report)):
        assert result.status == "wrong" and result.message.startswith("✗ Not yet:"), result.message


def test_check_answers_given_as_objects():
    from lessons_lib.device import synchronize

    assert checks.check_sync_call(synchronize).ok  # the function itself names it
    assert checks.check_cores(np.int64(hardware_report().logical_cores), hardware_report()).ok
    assert checks.check_cores(np.array([hardware_report().logical_cores]), hardware_report()).ok
