"""Lesson 04's mask generators (binomial_bottleneck.reference): bad input, p = 0, keep rates (binomial tests)
against the stated quantization (binomial_bottleneck.lab.keep_probability), independence, reproducibility."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest, chisquare

from lessons_lib.binomial_bottleneck.lab import AUTO_TOLERANCE, MASK_METHODS, keep_probability
from lessons_lib.binomial_bottleneck.reference import (
    MASKS,
    auto_method,
    bernoulli_mask,
    bits_mask,
    pattern_table,
    random_bytes,
    table_mask,
    uint8_mask,
)
from lessons_lib.seeds import numpy_rng

SEEDS = (0, 1, 2)
CASES = [(m, p) for m in MASKS for p in (0.1, 0.5, 0.8) if m != "bits" or p == 0.5] + [("auto", 0.2),
                                                                                       ("auto", 0.75)]


def test_the_stated_methods_are_the_generators():
    assert set(MASK_METHODS) == set(MASKS)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_p_outside_range_raises_naming_the_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        bernoulli_mask((4, 4), bad)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError) as e:
        bernoulli_mask((4, 4), 0.5, method="fast")
    for m in list(MASKS) + ["auto"]:
        assert m in str(e.value)


def test_bits_only_at_half():
    with pytest.raises(ValueError, match="0.5"):
        bernoulli_mask((4, 4), 0.3, method="bits", rng=0)


@pytest.mark.parametrize("method", ["auto"] + list(MASKS))
def test_p_zero_is_all_true_and_draws_nothing(method):
    g = np.random.default_rng(5)
    before = g.bit_generator.state
    np.random.seed(3)
    global_before = np.random.get_state()[1].copy()
    m = bernoulli_mask((7, 9), 0.0, method=method, rng=g)
    assert m.dtype == bool and m.shape == (7, 9) and m.all()
    assert g.bit_generator.state == before
    bernoulli_mask((7, 9), 0.0, method=method)  # rng=None: numpy's global generator untouched
    assert np.array_equal(np.random.get_state()[1], global_before)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method,p", CASES)
def test_keep_rate_matches_stated_keep_probability(method, p, seed):
    n_rows, n_cols = 1024, 1024
    m = bernoulli_mask((n_rows, n_cols), p, method=method, rng=numpy_rng(seed, stream=99))
    assert m.dtype == bool and m.shape == (n_rows, n_cols)
    q = keep_probability(method, p)
    assert binomtest(int(m.sum()), m.size, q).pvalue > 1e-5
    # rows and columns independent: row / column sums have the binomial variance, neighbours uncorrelated
    var = q * (1 - q)
    for sums, k in ((m.sum(axis=1), n_cols), (m.sum(axis=0), n_rows)):
        assert 0.8 < sums.var() / (k * var) < 1.25
    f = m.astype(np.float64) - q
    tol = 5 / math.sqrt(m.size) * var
    assert abs((f[:, 1:] * f[:, :-1]).mean()) < tol
    assert abs((f[1:, :] * f[:-1, :]).mean()) < tol
    assert not np.array_equal(m[0], m[1])


@pytest.mark.parametrize("method", list(MASKS) + ["auto"])
def test_stated_quantization_is_honest(method):
    res = AUTO_TOLERANCE if method == "auto" else MASK_METHODS[method].resolution
    for p in np.linspace(0.001, 0.999, 397):
        if method == "bits":
            continue
        q = keep_probability(method, float(p))
        assert abs(q - (1 - p)) <= res + 1e-15, (method, p, q)


def test_uint8_quantization_is_real_and_measurable():
    assert keep_probability("uint8", 0.1) == 230 / 256  # t = round(25.6) = 26 bytes dropped
    m = bernoulli_mask(1 << 22, 0.1, method="uint8", rng=numpy_rng(0, stream=5))
    assert binomtest(int(m.sum()), m.size, 230 / 256).pvalue > 1e-5
    assert binomtest(int(m.sum()), m.size, 0.9).pvalue < 1e-6  # 0.9 itself is rejected: 1/256 steps


def test_uint8_mask_keeps_exactly_the_bytes_at_or_above_the_threshold():
    class Stream:  # a generator whose bytes are every value 0..255 once
        def bytes(self, n):
            return np.arange(256, dtype=np.uint8)[:n].tobytes()

    for p in (0.0, 0.1, 0.5, 0.999):
        t = round(256 * p)
        assert int(uint8_mask(256, p, Stream()).sum()) == max(256 - t, 0)
    assert not uint8_mask(16, 0.9999, np.random.default_rng(0)).any()  # t = 256: no byte is that large


def test_exact_is_exact_where_uint8_is_not():
    m = bernoulli_mask(1 << 22, 0.1, method="exact", rng=numpy_rng(1, stream=6))
    assert binomtest(int(m.sum()), m.size, 0.9).pvalue > 1e-5


def test_auto_choices():
    assert auto_method(0.5) == "bits"
    assert auto_method(0.75) == auto_method(0.1) == "table"  # 2 random bits per unit at every other p
    for p in (0.1, 0.2, 0.8, 0.3, 0.999):
        assert abs(keep_probability("auto", p) - (1 - p)) <= 2**-16


BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int64)  # pattern -> its 8 units


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.8, 0.3, 0.05, 1 / 3, 0.999, 1e-7])
def test_pattern_table_every_unit_within_2_16_and_pairs_nearly_independent(p):
    """Read off the table itself (no sampling): each of the 8 units of a group is kept in the same number of the
    65,536 entries, within 2^-17 of 1 - p; every pair of units is kept together as often as independent units
    would be, to 2e-4; the pattern distribution is within 1e-3 of the independent one (total variation)."""
    table = pattern_table(p)
    assert table.dtype == np.uint8 and table.shape == (65536,) and not table.flags.writeable
    share = np.bincount(table, minlength=256) / 65536  # probability of each keep pattern
    units = BITS.T @ share
    assert np.all(units == units[0]) and abs(units[0] - (1 - p)) <= 2**-17
    pairs = (BITS.T * share) @ BITS
    off = ~np.eye(8, dtype=bool)
    assert np.abs(pairs - np.outer(units, units))[off].max() < 2e-4
    k = BITS.sum(axis=1)
    assert 0.5 * np.abs(share - (1 - p) ** k * p ** (8 - k)).sum() < 1e-3


def test_pattern_table_planted_bug_is_caught():
    """Without the last step (moving entries until every unit has its share) the units drift apart: the check
    above would fail. Shown on the rounded counts alone."""
    p = 0.3
    k = BITS.sum(axis=1)
    ideal = (1 - p) ** k * p ** (8 - k) * 65536
    counts = np.floor(ideal).astype(np.int64)
    counts[np.argsort(counts - ideal, kind="stable")[: 65536 - counts.sum()]] += 1
    units = BITS.T @ (counts / 65536)
    assert not (np.all(units == units[0]) and abs(units[0] - 0.7) <= 2**-17)


def test_table_mask_is_the_table_read_by_16_bit_words():
    """table_mask's bits are, group by group, the table entries of the random 16-bit words it drew."""
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    m = table_mask((5, 13), 0.2, g1)  # 65 units: 9 groups, the last one cut short
    words = random_bytes(g2, 18).view(np.uint16)
    want = np.unpackbits(pattern_table(0.2)[words])[:65].astype(bool).reshape(5, 13)
    assert np.array_equal(m, want)


def test_reproducible_and_follows_global_seed():
    a = bernoulli_mask((64, 64), 0.3, rng=numpy_rng(0))
    b = bernoulli_mask((64, 64), 0.3, rng=numpy_rng(0))
    assert np.array_equal(a, b)
    np.random.seed(11)
    c = bernoulli_mask((64, 64), 0.3)
    np.random.seed(11)
    d = bernoulli_mask((64, 64), 0.3)
    assert np.array_equal(c, d)
    np.random.seed(11)
    e = bernoulli_mask((64, 64), 0.3, method="binomial")
    np.random.seed(11)
    assert np.array_equal(e, np.random.binomial(1, 0.7, (64, 64)).astype(bool))  # exactly the seed's call
    rs = np.random.RandomState(4)
    assert np.array_equal(bernoulli_mask(50, 0.3, "binomial", rs),
                          np.random.RandomState(4).binomial(1, 0.7, 50).astype(bool))


def test_shapes_and_random_bytes():
    assert bernoulli_mask(10, 0.5, rng=0).shape == (10,)
    assert bernoulli_mask((3, 0), 0.5, rng=0).shape == (3, 0)
    assert bernoulli_mask((2, 3, 5), 0.25, rng=0).shape == (2, 3, 5)
    assert bits_mask((7, 9), np.random.default_rng(0)).shape == (7, 9)  # 63 bits: the 64th is trimmed
    b = random_bytes(np.random.default_rng(0), 1 << 20)
    counts = np.bincount(b, minlength=256)
    assert b.dtype == np.uint8 and len(b) == 1 << 20
    assert chisquare(counts).pvalue > 1e-5  # all 256 byte values equally likely
    mt = random_bytes(np.random.Generator(np.random.MT19937(0)), 1 << 16)  # 32-bit bit generator path
    assert abs(mt.mean() - 127.5) < 2
