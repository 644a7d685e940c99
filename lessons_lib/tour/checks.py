"""Lesson 00 · checks of the tour's questions, with the expected values read from the learner's own run where
there is one (the cores of *their* hardware report, the mean and median of *their* noisy timings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..device import HardwareReport
from ..exercises import CheckResult, check_answer

if TYPE_CHECKING:
    from .lab import NoiseResult


def _word(answer: object) -> object:
    """'lessons_lib.device.synchronize()' -> 'synchronize'; a function or module gives its name; other
    non-strings are left alone."""
    if callable(answer) and hasattr(answer, "__name__"):
        answer = answer.__name__
    if not isinstance(answer, str):
        return answer
    return answer.strip().lower().removesuffix("()").split(".")[-1]


def check_statistic(answer: str, noise: NoiseResult) -> CheckResult:
    """Which statistic of repeated timings does the course report, "mean" or "median"? (``noise``: the run's
    timings with a noisy neighbour, whose numbers, all repeats together, the hint quotes.)"""
    calls = noise.pooled
    above = sum(t < calls.mean for t in calls.times) / len(calls.times)
    return check_answer(answer, "median", exercise="statistic", normalize=_word,
                        praise="The median stays with the bulk of the calls; the rare long outliers that other "
                               "programs cause do not move it.",
                        mistakes={"mean": f"in your run the few slow calls pulled the mean to {calls.mean * 1e3:.3f} "
                                          f"ms, above {above:.0%} of all calls; the median ({calls.median * 1e3:.3f} "
                                          "ms) stays with the bulk. Which one describes a typical call?",
                                  "max": "the maximum is the one outlier you want to ignore.",
                                  "min": "the minimum is a lucky call; it hides the usual cost."},
                        hint='answer "mean" or "median": look at the histogram, which line stays with the bulk?')


def check_sync_call(answer: str) -> CheckResult:
    """The ``lessons_lib.device`` function to call before reading the clock when timing GPU work."""
    return check_answer(answer, "synchronize", exercise="sync_call", normalize=_word,
                        praise="synchronize(device) waits until the GPU has finished the queued work.",
                        mistakes={"sleep": "sleeping guesses how long the GPU needs: too short and the clock stops "
                                           "early, too long and you time your guess. Wait for the device instead.",
                                  "perf_counter": "that reads the clock; the question is what must run before it.",
                                  "pick_device": "that chooses a device; the question is how to wait for it."},
                        hint="it is in lessons_lib.device; its name says what it does to the device and the host.")


def check_cores(answer: int, report: HardwareReport) -> CheckResult:
    """How many logical cores does the hardware report show on the learner's machine?"""
    mistakes: dict[object, str] = {}
    if report.physical_cores and report.physical_cores != report.logical_cores:
        mistakes[report.physical_cores] = ("that is the PHYSICAL core count; the question asks for the logical ones "
                                           "(hardware threads), the second number.")
    if report.torch_threads != report.logical_cores:
        mistakes.setdefault(report.torch_threads, "that is how many threads torch uses, not how many logical cores "
                                                  "the machine has.")
    return check_answer(answer, report.logical_cores, exercise="cores", mistakes=mistakes,
                        praise="That is how many threads torch and numpy can run at once here.",
                        hint="read the 'cores (physical / logical)' line of the report: the second number.")
