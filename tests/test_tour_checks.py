"""Lesson 00's questions: answers checked against the learner's own run (their hardware report, their timings),
with the typical wrong answers named."""

import dataclasses

import pytest

from lessons_lib.device import hardware_report
from lessons_lib.timing import Timing
from lessons_lib.tour import checks
from lessons_lib.tour.lab import NoiseResult

NOISY = NoiseResult([Timing([0.001] * 45 + [0.010] * 5, []), Timing([0.001] * 50, [])], [], 25, 0.004)


@pytest.mark.parametrize("answer", ["median", " Median ", "MEDIAN"])
def test_statistic_right(answer):
    assert checks.check_statistic(answer, NOISY).status == "correct"


def test_statistic_mean_quotes_the_run():
    r = checks.check_statistic("mean", NOISY)
    assert r.status == "wrong" and "pulled the mean to 1.450 ms" in r.message and "95%" in r.message  # all 100 calls
    assert "maximum" in checks.check_statistic("max", NOISY).message
    assert checks.check_statistic(..., NOISY).status == "not_written"


def test_sync_call():
    assert checks.check_sync_call("lessons_lib.device.synchronize()")
    assert checks.check_sync_call("synchronize")
    assert "sleeping guesses" in checks.check_sync_call("time.sleep").message
    assert checks.check_sync_call(...).status == "not_written"


def test_cores_come_from_the_report():
    report = hardware_report()
    assert checks.check_cores(report.logical_cores, report)
    other = dataclasses.replace(report, physical_cores=4, logical_cores=8, torch_threads=2)
    assert checks.check_cores(8, other) and not checks.check_cores(report.logical_cores + 100, other)
    assert "PHYSICAL" in checks.check_cores(4, other).message
    assert "threads torch uses" in checks.check_cores(2, other).message
    assert checks.check_cores(..., other).status == "not_written"
