"""Lesson 09's checks catch the typical mistakes: the library's reference passes, a stub is "not written", a
crash is named, and each planted bug is "wrong" with the hint that names it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lessons_lib.hashing import checks, lab, reference


# --- simhash: planted bugs ----------------------------------------------------------------------------------
def _proj(x, planes):
    return np.einsum("nd,tbd->ntb", x, planes)


def _pack(bits, weights):
    return (bits.astype(np.int64) * weights).sum(-1)


def simhash_reversed(x, planes):
    K = planes.shape[1]
    return _pack(_proj(x, planes) >= 0, 2 ** np.arange(K)[::-1])


def simhash_strict(x, planes):
    return _pack(_proj(x, planes) > 0, 2 ** np.arange(planes.shape[1]))


def simhash_inverted(x, planes):
    return _pack(_proj(x, planes) < 0, 2 ** np.arange(planes.shape[1]))


def simhash_shared_planes(x, planes):
    L, K, _ = planes.shape
    bits = (x @ planes[0].T >= 0)  # (n, K): the first table's hyperplanes for every table
    return np.repeat(_pack(bits, 2 ** np.arange(K))[:, None], L, axis=1)


def simhash_global_shift(x, planes):
    L, K, _ = planes.shape
    return _pack(_proj(x, planes) >= 0, 2 ** (np.arange(L)[:, None] * K + np.arange(K)))


def simhash_shift_t_plus_b(x, planes):
    L, K, _ = planes.shape
    return _pack(_proj(x, planes) >= 0, 2 ** (np.arange(L)[:, None] + np.arange(K)))


def simhash_summed(x, planes):
    return (_proj(x, planes) >= 0).sum(-1)


def simhash_grouped_wrongly(x, planes):
    L, K, dim = planes.shape
    flat = x @ planes.reshape(L * K, dim).T  # (n, L*K), table-major
    bits = flat.reshape(len(x), K, L).transpose(0, 2, 1) >= 0
    return _pack(bits, 2 ** np.arange(K))


def simhash_transposed(x, planes):
    return reference.simhash(x, planes).T


def simhash_own_planes(x, planes):
    mine = np.random.default_rng(5).standard_normal(planes.shape)  # ignores the planes it is given
    return reference.simhash(x, mine)


def simhash_float32(x, planes):  # right, in single precision: must pass
    return reference.simhash(x.astype(np.float32), planes.astype(np.float32))


SIMHASH_BUGS = [
    (simhash_reversed, "reverse order"),
    (simhash_strict, "used > 0 where the rule is >= 0"),
    (simhash_inverted, "bits inverted"),
    (simhash_shared_planes, "all tables share one set of hyperplanes"),
    (simhash_global_shift, "wrong shift (shift t*K + b"),
    (simhash_shift_t_plus_b, "wrong shift (shift t + b)"),
    (simhash_summed, "summed the bits instead of packing"),
    (simhash_grouped_wrongly, "grouped into tables wrongly"),
    (simhash_transposed, "transposed"),
    (simhash_own_planes, "Bit b is 1 when planes[t, b] · x >= 0 and is worth 2**b"),
]


def test_simhash_reference_passes(capsys):
    r = checks.check_simhash(reference.simhash)
    assert r.status == "correct" and r.message.startswith("✓ Correct.")
    assert "Correct" in capsys.readouterr().out
    assert checks.check_simhash(simhash_float32).status == "correct"


def test_simhash_cases_have_exact_zero_projections_and_no_near_zero_ones():
    for _, x, planes in checks._simhash_cases():
        proj = checks._projections(x, planes)
        assert np.sum(proj == 0) > 0  # where > 0 and >= 0 differ
        assert np.all((proj == 0) | (np.abs(proj) > 1e-3))  # no bit that float rounding could flip


def test_simhash_statistics_alone_catch_a_biased_hash():
    def half_the_bits_forced(x, planes):  # right on the exact cases' shapes, biased on the statistics' ones
        codes = reference.simhash(x, planes)
        return codes | 1 if planes.shape[2] == 16 else codes

    r = checks.check_simhash(half_the_bits_forced)
    assert r.status == "wrong" and "1 - θ/π" in r.message and "binomial" in r.message


def test_simhash_stub_and_crash():
    def stub(x, planes):
        raise NotImplementedError("project x on each hyperplane")

    r = checks.check_simhash(stub)
    assert r.status == "not_written" and "project x on each hyperplane" in r.message

    def crash(x, planes):
        return x @ planes  # shapes do not line up

    r = checks.check_simhash(crash)
    assert r.status == "wrong" and "raised ValueError" in r.message
    assert checks.check_simhash(...).status == "not_written"
    assert checks.check_simhash(reference.simhash(np.zeros((1, 2)), np.ones((1, 1, 2)))).status == "wrong"


# --- active_units: planted bugs -------------------------------------------------------------------------------
def _tables(unit_codes):
    return [{c: np.flatnonzero(unit_codes[:, t] == c) for c in np.unique(unit_codes[:, t])}
            for t in range(unit_codes.shape[1])]


def _counts(unit_codes, query_codes):
    counts = np.zeros((len(query_codes), len(unit_codes)), dtype=np.int64)
    for b, q in enumerate(query_codes):
        for t, table in enumerate(_tables(unit_codes)):
            counts[b, table.get(q[t], [])] += 1
    return counts


def _stable_top(counts, k):
    return np.argsort(-counts, axis=1, kind="stable")[:, :k]


def lookup_once_per_query(unit_codes, query_codes, k):
    counts = (_counts(unit_codes, query_codes) > 0).astype(np.int64)
    return counts, _stable_top(counts, k)


def lookup_one_dict(unit_codes, query_codes, k):
    shared: dict[int, list[int]] = {}
    for t in range(unit_codes.shape[1]):
        for j, c in enumerate(unit_codes[:, t]):
            shared.setdefault(int(c), []).append(j)  # no table in the key
    counts = np.zeros((len(query_codes), len(unit_codes)), dtype=np.int64)
    for b, q in enumerate(query_codes):
        for c in q:
            for j in shared.get(int(c), []):
                counts[b, j] += 1
    return counts, _stable_top(counts, k)


def lookup_carried_over(unit_codes, query_codes, k):
    counts = np.cumsum(_counts(unit_codes, query_codes), axis=0)
    return counts, _stable_top(counts, k)


def lookup_first_table_only(unit_codes, query_codes, k):
    counts = _counts(unit_codes[:, :1], query_codes[:, :1])
    return counts, _stable_top(counts, k)


def lookup_fewest(unit_codes, query_codes, k):
    counts = _counts(unit_codes, query_codes)
    return counts, np.argsort(counts, axis=1, kind="stable")[:, :k]


def lookup_high_ties(unit_codes, query_codes, k):
    counts = _counts(unit_codes, query_codes)
    return counts, np.argsort(counts, axis=1, kind="stable")[:, ::-1][:, :k]


def lookup_reversed_default_sort(unit_codes, query_codes, k):  # a typical learner version: unstable, reversed
    counts = _counts(unit_codes, query_codes)
    return counts, np.argsort(counts, axis=1)[:, ::-1][:, :k]


def lookup_random_ties(unit_codes, query_codes, k):
    counts = _counts(unit_codes, query_codes)
    noise = np.random.default_rng(1).random(counts.shape) * 0.5
    return counts, np.argsort(-(counts + noise), axis=1)[:, :k]


def lookup_values(unit_codes, query_codes, k):
    counts = _counts(unit_codes, query_codes)
    return counts, -np.sort(-counts, axis=1)[:, :k]


def lookup_k_plus_one(unit_codes, query_codes, k):
    counts = _counts(unit_codes, query_codes)
    return counts, _stable_top(counts, k + 1)


def lookup_active_only(unit_codes, query_codes, k):
    return _stable_top(_counts(unit_codes, query_codes), k)


LOOKUP_BUGS = [
    (lookup_once_per_query, "once per query"),
    (lookup_one_dict, "one dictionary for all L tables"),
    (lookup_carried_over, "carried over from one query to the next"),
    (lookup_first_table_only, "counted only one table (the first)"),
    (lookup_fewest, "FEWEST collisions"),
    (lookup_high_ties, "ties broken toward the HIGHER index"),
    (lookup_random_ties, "ties at the border broken by another rule"),
    (lookup_reversed_default_sort, "[::-1] on an ascending sort reverses the order of equal counts"),
    (lookup_values, "not the units' indices"),
    (lookup_k_plus_one, "active (k units per query) has shape"),
    (lookup_active_only, "return two arrays"),
]


def test_active_units_reference_passes():
    r = checks.check_active_units(reference.active_units)
    assert r.status == "correct" and r.message.startswith("✓ Correct.")

    def right_with_dicts(unit_codes, query_codes, k):
        counts = _counts(unit_codes, query_codes)
        return counts, _stable_top(counts, k)

    assert checks.check_active_units(right_with_dicts).status == "correct"


PLANTED = [(checks.check_simhash, *b) for b in SIMHASH_BUGS] + [(checks.check_active_units, *b) for b in LOOKUP_BUGS]


@pytest.mark.parametrize("check,bug,hint", PLANTED, ids=[b.__name__ for _, b, _ in PLANTED])
def test_planted_bug_is_named(check, bug, hint):
    r = check(bug)
    assert r.status == "wrong", r.message
    assert hint in r.message, r.message


def test_lookup_cases_test_the_tie_rule_and_the_edges():
    _, units, queries, k = checks._lookup_cases()[1]
    counts = checks._brute_counts(units, queries)
    border_ties = 0
    for c in counts:
        kth = np.sort(c)[::-1][k - 1]
        border_ties += int(np.sum(c == kth) > np.sum(c[np.argsort(-c, kind="stable")[:k]] == kth))
    assert border_ties >= 3  # the tie rule decides the set for most queries
    assert counts[-2, 13] == units.shape[1] and counts[-1].max() == 0  # a full match, and no collision at all
    hand = checks._lookup_cases()[0]
    assert checks._brute_counts(hand[1], hand[2]).tolist() == [[3, 2, 1, 2, 1]]


def test_active_units_stub_and_crash():
    def stub(unit_codes, query_codes, k):
        raise NotImplementedError("one dict per table")

    assert checks.check_active_units(stub).status == "not_written"

    def crash(unit_codes, query_codes, k):
        return {}[0]

    r = checks.check_active_units(crash)
    assert r.status == "wrong" and "raised KeyError" in r.message


# --- answers from the run -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rates():
    return lab.collision_rates(np.radians([30, 60, 90]), n_pairs=50, K=6, L=4, seed=0)


def test_check_bit_and_bucket_collision(rates):
    assert checks.check_bit_collision(1 - 60 / 180, rates)
    assert "DISAGREES" in checks.check_bit_collision(60 / 180, rates).message
    assert "cos θ" in checks.check_bit_collision(0.5, rates).message
    assert checks.check_bit_collision(..., rates).status == "not_written"
    assert checks.check_bucket_collision((2 / 3) ** 6, rates)
    assert "all K = 6 bits" in checks.check_bucket_collision(2 / 3, rates).message
    assert "DISAGREE" in checks.check_bucket_collision((1 / 3) ** 6, rates).message


def test_check_hash_mults_and_union_fraction():
    layer = lab.SampledHidden(40, 1000, selector="lsh", K=6, L=50, pool_dim=8, seed=0)
    run = lab.RunResult("lsh", 0.05, 0.0, 0.0, 0.0, 0.0, lab.MultFractions(0.05, 0.0, 0.0), None,
                        torch.nn.Sequential(layer))
    assert checks.check_hash_mults(8 * 6 * 50, run)
    assert "pooled to 8" in checks.check_hash_mults(40 * 6 * 50, run).message
    assert "dot product of length pool_dim" in checks.check_hash_mults(300, run).message
    unions = lab.UnionSizes(0.05, (1, 32), (0.05, 0.8))
    assert checks.check_union_fraction(1 - 0.95**32, unions)
    assert "overlap" in checks.check_union_fraction(1.0, unions).message
    assert "NO example" in checks.check_union_fraction(0.95**32, unions).message
    assert math.isclose(unions.at(32), 0.8)
