"""Lesson 04's checks: the reference passes, a stub is "not written", a crash names its exception, and each
typical planted bug is "wrong" with the hint that names it. For any LESSONS_SEED."""

import math

import numpy as np
import pytest

from lessons_lib.binomial_bottleneck import checks, lab, reference


def _stub(*args):
    raise NotImplementedError("write it")


def _crash(*args):
    return [][1]


def _uint8(keep_rule, draw=lambda shape, rng: rng.integers(0, 256, size=shape, dtype=np.uint8), out=lambda m: m):
    def uint8_mask(shape, p, rng):
        return out(keep_rule(draw(shape, rng), p))
    return uint8_mask


UINT8_BUGS = {
    "threshold off by one (keeps with probability (255 − t)/256)": _uint8(lambda b, p: b > round(256 * p)),
    "keeps where byte < threshold (p and 1 − p swapped)": _uint8(lambda b, p: b < round(256 * p)),
    "threshold truncated: int(256 p) rounds down": _uint8(lambda b, p: b >= int(256 * p)),
    "threshold not rounded to a whole byte": _uint8(lambda b, p: b >= 256 * p),
    "returned uint8 0/255 instead of bool": _uint8(lambda b, p: b >= round(256 * p),
                                                   out=lambda m: m.astype(np.uint8) * np.uint8(255)),
    "same mask every call (rng re-created)": _uint8(
        lambda b, p: b >= round(256 * p), draw=lambda s, rng: np.random.default_rng(0).integers(0, 256, s, np.uint8)),
    "the high end is exclusive": _uint8(lambda b, p: b >= round(256 * p),
                                        draw=lambda s, rng: rng.integers(0, 255, size=s, dtype=np.uint8)),
    "every row has the same mask": _uint8(lambda b, p: b >= round(256 * p),  # one byte per column, broadcast
                                          draw=lambda s, rng: np.broadcast_to(rng.integers(0, 256, s[-1]), s)),
    "your function called rng.random": lambda shape, p, rng: rng.random(shape) >= p,
}


@pytest.mark.parametrize("seed", ["0", "5"])
def test_references_pass_for_any_seed(monkeypatch, seed):
    monkeypatch.setenv("LESSONS_SEED", seed)
    assert checks.check_uint8_mask(reference.uint8_mask).status == "correct"
    assert checks.check_uint8_mask(_uint8(lambda b, p: b >= round(256 * p))).ok  # rng.integers, as the cell says
    assert checks.check_bits_mask(reference.bits_mask).status == "correct"
    assert checks.check_mask_share(reference.mask_share).status == "correct"


@pytest.mark.parametrize("check", [checks.check_uint8_mask, checks.check_bits_mask, checks.check_mask_share])
def test_stub_and_crash(check):
    r = check(_stub)
    assert r.status == "not_written" and "write it" in r.message
    r = check(_crash)
    assert r.status == "wrong" and "IndexError" in r.message


@pytest.mark.parametrize("hint", list(UINT8_BUGS))
def test_uint8_planted_bugs_get_their_hint(hint):
    r = checks.check_uint8_mask(UINT8_BUGS[hint])
    assert r.status == "wrong" and hint in r.message, r.message


def _bits(unpack, draw=lambda n, rng: rng.integers(0, 256, size=(n + 7) // 8, dtype=np.uint8)):
    def bits_mask(shape, rng):
        n = math.prod(shape)
        return unpack(draw(n, rng), n, shape)
    return bits_mask


BITS_BUGS = {
    "bits not trimmed to the shape": _bits(lambda b, n, s: np.unpackbits(b).view(bool).reshape(s)),
    "returned uint8 0/1 instead of bool": _bits(lambda b, n, s: np.unpackbits(b, count=n).reshape(s)),
    "returned uint8 0/255 instead of bool": _bits(lambda b, n, s: (np.unpackbits(b, count=n) * 255).reshape(s)),
    "same mask every call (rng re-created)": _bits(
        lambda b, n, s: np.unpackbits(b, count=n).view(bool).reshape(s),
        lambda n, rng: np.random.default_rng(1).integers(0, 256, (n + 7) // 8, np.uint8)),
    "are not independent": _bits(lambda b, n, s: np.repeat(b >= 128, 8)[:n].reshape(s)),
    "random bytes (8 units per byte)": _bits(lambda b, n, s: (b & 1).astype(bool).reshape(s),
                                             lambda n, rng: rng.integers(0, 256, size=n, dtype=np.uint8)),
}


def test_bits_other_bit_order_is_right_too():
    little = _bits(lambda b, n, s: np.unpackbits(b, count=n, bitorder="little").view(bool).reshape(s),
                   lambda n, rng: np.frombuffer(rng.bytes((n + 7) // 8), np.uint8))
    assert checks.check_bits_mask(little).ok


@pytest.mark.parametrize("hint", list(BITS_BUGS))
def test_bits_planted_bugs_get_their_hint(hint):
    r = checks.check_bits_mask(BITS_BUGS[hint])
    assert r.status == "wrong" and hint in r.message, r.message


def _records(stats):
    return stats.stats.items()


SHARE_BUGS = {
    "used cumulative time of a caller (double counts)":
        lambda st, names: sum(v[3] for k, v in _records(st) if k[2] in names) / st.total_tt,
    "used tottime": lambda st, names: sum(v[2] for k, v in _records(st) if k[2] in names) / st.total_tt,
    "matched the function name too loosely": lambda st, names: reference.mask_share(
        st, {k[2] for k, _ in _records(st) if any(n in k[2] for n in names)}),
    "divided by the wrong total": lambda st, names: reference.mask_share(st, names) * st.total_tt / max(
        v[3] for _, v in _records(st)),
    "not a percentage": lambda st, names: 100 * reference.mask_share(st, names),
}


def test_share_cases_are_exact_and_distinct():
    cases = checks.share_cases()
    assert len(cases) == 3
    for _, stats, names, exact in cases:
        assert reference.mask_share(stats, names) == pytest.approx(exact, rel=1e-12)
        assert 0 < exact < 1 and stats.total_tt > 0
        tottime_reading = sum(v[2] for k, v in stats.stats.items() if k[2] in names) / stats.total_tt
        assert tottime_reading < exact  # the profiles tell cumtime from tottime


@pytest.mark.parametrize("hint", list(SHARE_BUGS))
def test_share_planted_bugs_get_their_hint(hint):
    r = checks.check_mask_share(SHARE_BUGS[hint])
    assert r.status == "wrong" and hint in r.message, r.message


def test_share_on_a_real_profile_counts_nested_time_once():
    prof = lab.profile_training(lab.dropout_mask(), epochs=1, seed=0)
    share = reference.mask_share(prof.stats, lab.MASK_NAMES)
    double = SHARE_BUGS["used cumulative time of a caller (double counts)"](prof.stats, set(lab.MASK_NAMES))
    outer = [v[3] for k, v in prof.stats.stats.items() if k[2] == "dropout_mask"]
    assert share == pytest.approx(outer[0] / prof.stats.total_tt)  # dropout_mask contains bits_mask
    assert double > share


def test_amdahl_bound_comes_from_the_run():
    prof = lab.profile_training(reference.binomial_mask, epochs=1, seed=0)
    s = reference.mask_share(prof.stats, lab.MASK_NAMES)
    assert checks.check_amdahl_bound(1 / (1 - s), prof).ok
    assert checks.check_amdahl_bound(round(1 / (1 - s), 2), prof).ok
    r = checks.check_amdahl_bound(1 / s, prof)
    assert r.status == "wrong" and "1 / s" in r.message
    r = checks.check_amdahl_bound(1 - s, prof)
    assert r.status == "wrong" and "1 − s is the time that remains" in r.message
    assert checks.check_amdahl_bound(..., prof).status == "not_written"
