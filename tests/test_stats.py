"""The statistics behind every verdict: intervals against scipy's own t-test, verdicts, and bad input named."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib import claims, stats
from lessons_lib.validate import BadArgument


def test_mean_interval_matches_scipy_t_interval():
    from scipy import stats as ss

    vals = [0.91, 0.93, 0.9, 0.94, 0.92]
    got = stats.mean_interval(vals)
    lo, hi = ss.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=ss.sem(vals))
    assert got.n == 5 and math.isclose(got.low, lo) and math.isclose(got.high, hi)
    assert got.format(".2f", scale=100, unit="%").startswith("92.00% ± ")


def test_paired_interval_cancels_shared_noise():
    base = [0.5, 0.7, 0.9, 0.6]
    treated = [b + 0.01 for b in base]
    assert stats.verdict(stats.paired_interval(treated, base), 0.0) == stats.HOLDS  # tiny effect, no shared noise
    assert stats.verdict(stats.mean_interval(treated), 0.7) == stats.INCONCLUSIVE


@pytest.mark.parametrize("values, threshold, holds_if, want", [
    ([1.0, 1.1, 1.2], 0.5, "above", "holds"), ([1.0, 1.1, 1.2], 2.0, "above", "does not hold"),
    ([1.0, 1.1, 1.2], 1.1, "above", "inconclusive"), ([1.0, 1.1, 1.2], 2.0, "below", "holds"),
])
def test_verdict_three_values(values, threshold, holds_if, want):
    assert stats.verdict(stats.mean_interval(values), threshold, holds_if) == want


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12), st.floats(-1e6, 1e6))
def test_verdict_is_consistent_with_the_interval(values, threshold):
    iv = stats.mean_interval(values)
    assert iv.low <= iv.mean <= iv.high or iv.high - iv.low < 1e-6 * max(1.0, abs(iv.mean))
    above, below = stats.verdict(iv, threshold, "above"), stats.verdict(iv, threshold, "below")
    # the two directions never both hold, and holds in one means does-not-hold in the other
    assert {above, below} <= {"holds", "does not hold", "inconclusive"}
    assert (above == "holds") == (below == "does not hold")


@pytest.mark.parametrize("call, match", [
    (lambda: stats.mean_interval([]), "at least 2 runs"),
    (lambda: stats.mean_interval([1.0]), "at least 2 runs"),
    (lambda: stats.mean_interval([1.0, float("nan")]), "diverged"),
    (lambda: stats.mean_interval([1.0, 2.0], level=1.5), "level="),
    (lambda: stats.mean_interval("ab"), "sequence of numbers"),
    (lambda: stats.mean_interval([1.0, True]), r"values\[1\]"),
    (lambda: stats.paired_interval([1, 2], [1, 2, 3]), "in pairs"),
    (lambda: stats.median_range([]), "no values"),
    (lambda: stats.median_range([float("nan")]), "diverged"),
    (lambda: stats.verdict(stats.mean_interval([1, 2, 3]), 0, holds_if="up"), "holds_if="),
    (lambda: stats.verdict(stats.mean_interval([1, 2, 3]), float("nan")), "threshold="),
    (lambda: stats.verdict((1, 2), 0), "Interval or Spread"),
    (lambda: claims.Claims("x", machine="m").add("c", "lesson", "1", "maybe"), "holds='maybe'"),
    (lambda: claims.Claims("x", machine="m").add("c", "lesson", "1", 3), "holds=3"),
    (lambda: claims.Claims("x", machine="m").add(None, "lesson", "1", True), "claim=None"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(BadArgument, match=match):
        call()


def test_numpy_and_torch_booleans_are_verdicts():
    c = claims.Claims("x", machine="m")
    assert c.add("a", "lesson", "1", np.bool_(True)).verdict == "holds"
    assert c.add("b", "lesson", "1", torch.tensor(False)).verdict == "does not hold"
    assert stats.mean_interval(np.array([1, 2, 3], dtype=np.int64)).n == 3


def test_tensors_of_run_metrics_are_numbers():
    assert stats.mean_interval(torch.tensor([0.5, 0.6, 0.7])).n == 3
    assert stats.median_range([torch.tensor(1.0), np.float32(2.0)]).median == 1.5
    with pytest.raises(BadArgument, match="values"):
        stats.mean_interval([torch.zeros(2), torch.zeros(2)])


def test_cpu_rounds_and_min_ratios():
    from lessons_lib.timing import cpu_rounds, min_ratios

    t = cpu_rounds({"slow": lambda: sum(range(20000)), "fast": lambda: sum(range(2000))}, rounds=6)
    assert len(t["slow"]) == len(t["fast"]) == 6 and np.median(t["slow"]) > 3 * np.median(t["fast"])
    assert min_ratios([4, 2, 9, 3, 3, 3, 7], [1, 2, 1, 1, 1, 3, 1]) == [2.0, 3.0]  # each group's fastest
    assert min_ratios([2, 1, 3, 4, 4, 8, 9], [1, 2, 2, 2, 9, 9, 1]) == [1.0, 2.0]
    with pytest.raises(BadArgument, match="same rounds"):
        min_ratios([1, 2], [1])
    with pytest.raises(BadArgument, match="rounds=0"):
        cpu_rounds({"a": lambda: None}, rounds=0)
    with pytest.raises(BadArgument, match="fns="):
        cpu_rounds({"a": 3})


def test_all_of_combines_verdicts():
    assert stats.all_of("holds", "holds") == "holds"
    assert stats.all_of("holds", "inconclusive") == "inconclusive"
    assert stats.all_of("inconclusive", "does not hold") == "does not hold"
    with pytest.raises(BadArgument, match="all_of got True"):
        stats.all_of("holds", True)


def test_check_answer_does_not_take_a_bool_for_a_number():
    from lessons_lib.exercises import check_answer

    for wrong in (True, np.bool_(True)):
        r = check_answer(wrong, 1.0, exercise="q", abs_tol=1e-9)
        assert r.status == "wrong" and "not numbers" in r.message
    assert check_answer(True, True, exercise="q").status == "correct"  # a yes/no question still takes bools
    assert check_answer(np.float32(1.0), 1.0, exercise="q", abs_tol=1e-6).status == "correct"


def test_median_interval_is_two_order_statistics_with_the_binomial_coverage():
    from scipy.stats import binom

    m = stats.median_interval(list(range(21, 0, -1)))
    assert (m.median, m.low, m.high, m.n) == (11, 6, 16, 21)  # x_(6) and x_(16) of 21
    assert m.level == pytest.approx(1 - 2 * binom.cdf(5, 21, 0.5)) and m.level >= 0.95
    assert stats.median_interval(list(range(1, 16))).low == 4  # n = 15: x_(4), x_(12)
    few = stats.median_interval([3.0, 1.0, 2.0])  # too few for 95%: the range, and what it covers
    assert (few.low, few.high) == (1.0, 3.0) and few.level == pytest.approx(0.75)
    assert "CI of the median, 21 repeats" in m.format()
    assert stats.verdict(m, 5.5) == "holds" and stats.verdict(m, 11) == "inconclusive"
    assert stats.verdict(m, 17) == "does not hold"


def test_median_interval_covers_the_median_as_often_as_it_says():
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(3000):
        m = stats.median_interval(rng.lognormal(size=21))  # skewed, as timings are; true median 1
        hits.append(m.low <= 1.0 <= m.high)
    assert abs(np.mean(hits) - 0.973) < 0.015


@pytest.mark.parametrize("values, level, match", [([], 0.95, "no values"), ([1.0, float("nan")], 0.95, "nan"),
                                                  ([1.0, 2.0], 1.5, "level")])
def test_median_interval_bad_input(values, level, match):
    with pytest.raises(BadArgument, match=match):
        stats.median_interval(values, level)
