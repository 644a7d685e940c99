"""Lesson 07 checks: the library's reference and the notebook's worked answers pass, stubs are "not written",
crashes are named, and typical planted bugs are caught with the hint that names them."""

from fractions import Fraction

import pytest
import torch

from lessons_lib.precision import checks, reference
from lessons_lib.precision.hypotheses import LostSurvey, SurveyRow

BF16 = torch.bfloat16
INF = float("inf")


@pytest.fixture(params=[0, 3])
def seed(request, monkeypatch):
    monkeypatch.setenv("LESSONS_SEED", str(request.param))
    return request.param


def _rand16(x, generator):
    return torch.randint(0, 1 << 16, x.shape, generator=generator, dtype=torch.int32)


# --- stochastic rounding: right answers and planted bugs --------------------------------------------
def sr_bit_trick(x, generator):
    """The notebook's worked answer."""
    bits = (x.view(torch.int32) + _rand16(x, generator)) & -65536
    return bits.view(torch.float32).to(BF16)


def _two_neighbours(x):
    lo, hi = reference.neighbours(x, BF16)
    return lo, hi, (x - lo) / (hi - lo)


def sr_nearest(x, generator):
    return x.to(BF16)


def sr_truncate(x, generator):
    return (x.view(torch.int32) & -65536).view(torch.float32).to(BF16)


def sr_floor(x, generator):
    return reference.neighbours(x, BF16)[0].to(BF16)


def sr_reversed(x, generator):
    lo, hi, p = _two_neighbours(x)
    return torch.where(torch.rand(x.shape, generator=generator) < p, lo, hi).to(BF16)


def sr_wrong_part(x, generator):
    bits = (x.view(torch.int32) + (_rand16(x, generator) << 16)) & -65536
    return bits.view(torch.float32).to(BF16)


def sr_cast_not_cut(x, generator):
    return (x.view(torch.int32) + _rand16(x, generator)).view(torch.float32).to(BF16)


def sr_nearest_as_lo(x, generator):
    lo = x.to(BF16)
    hi = torch.nextafter(lo, torch.full_like(lo, INF))
    p = (x - lo.float()) / (hi.float() - lo.float())
    return torch.where(torch.rand(x.shape, generator=generator) < p, hi, lo)


def sr_in_place(x, generator):
    bits = x.view(torch.int32)
    bits += _rand16(x, generator)
    return (bits & -65536).view(torch.float32).to(BF16)


def sr_global_rng(x, generator):
    return sr_bit_trick(x, None)


def sr_reseeds(x, generator):
    return sr_bit_trick(x, torch.Generator().manual_seed(0))


def sr_17_bits(x, generator):
    r = torch.randint(0, 1 << 17, x.shape, generator=generator, dtype=torch.int32)
    return ((x.view(torch.int32) + r) & -65536).view(torch.float32).to(BF16)


def sr_coarse_u_le_p(x, generator):  # 8 random bits and u <= p: exact values (p = 0) go up 1 time in 256
    lo, hi, p = _two_neighbours(x)
    u = torch.randint(0, 256, x.shape, generator=generator) / 256
    return torch.where(u <= p, hi, lo).to(BF16)


def sr_float32(x, generator):
    return sr_bit_trick(x, generator).float()


def sr_crash(x, generator):
    return x.view(torch.int32)[:, :, 0].to(BF16)  # IndexError: the check passes 2-D inputs


def sr_stub(x, generator):
    raise NotImplementedError("round up with probability (x - lo) / (hi - lo)")


SR_BUGS = [
    (sr_nearest, "rounded to nearest, not stochastically (the result never goes the other way)"),
    (sr_truncate, "always rounds down (truncation)"),
    (sr_floor, "always rounds down (truncation)"),
    (sr_reversed, "rounding probability reversed (rounds up with the probability of rounding down)"),
    (sr_wrong_part, "random bits added to the wrong part of the pattern (sign/exponent changed)"),
    (sr_cast_not_cut, "rounded the sum to nearest instead of cutting the low 16 bits off"),
    (sr_nearest_as_lo, "took round-to-nearest (x.to(torch.bfloat16)) as the lower neighbour"),
    (sr_in_place, "changed its input x in place"),
    (sr_global_rng, "ignores the generator"),
    (sr_reseeds, "re-seeds (or makes) its own generator"),
    (sr_17_bits, "not one of its two bf16 neighbours"),
    (sr_coarse_u_le_p, "exact values must come back unchanged"),
    (sr_float32, "has dtype torch.float32; return a torch.bfloat16 tensor"),
]


def test_stochastic_rounding_stub_and_crash():
    r = checks.check_stochastic_round_bf16(sr_stub)
    assert r.status == "not_written" and "round up with probability" in r.message
    r = checks.check_stochastic_round_bf16(sr_crash)
    assert r.status == "wrong" and "raised IndexError" in r.message
    assert checks.check_stochastic_round_bf16(None).status == "not_written"
    assert checks.check_stochastic_round_bf16(sr_bit_trick(torch.ones(2), None)).status == "wrong"  # not a function


def test_bf16_neighbours_agree_with_the_reference_and_the_cast():
    """Two independent ways to find the neighbours (nextafter around torch's cast; frexp in reference.py)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * 2.0 ** torch.randint(-40, 40, (20000,), generator=g).float()
    x = torch.cat([x, torch.tensor([1.0, -1.0, 0.0, 2.0**-130, -(2.0**-130), 1.0 + 2**-8, -4096.0])])
    lo, hi = checks.bf16_neighbours(x)
    rlo, rhi = reference.neighbours(x, BF16)
    exact = x.to(BF16).float() == x
    assert torch.equal(lo, rlo) and torch.equal(hi[~exact], rhi[~exact]) and torch.equal(hi[exact], x[exact])
    nearest = x.to(BF16).float()
    assert torch.all((nearest == lo) | (nearest == hi))


# --- counting lost updates: right answers and planted bugs --------------------------------------------
def count_worked(w, u, dtype):
    """The notebook's worked answer."""
    new = (w + u).to(dtype)
    return int(((new == w) & (u != 0)).sum())


def count_in_float32(w, u, dtype):
    return int((((w + u) == w) & (u != 0)).sum())


def count_zero_updates_too(w, u, dtype):
    return int(((w + u).to(dtype) == w).sum())


def count_float32_and_zeros(w, u, dtype):
    return int(((w + u) == w).sum())


def count_rounds_u_first(w, u, dtype):
    return int((((w + u.to(dtype)).to(dtype) == w) & (u != 0)).sum())


def count_kept(w, u, dtype):
    return int((((w + u).to(dtype) != w) & (u != 0)).sum())


def count_half_gap_threshold(w, u, dtype):
    return int(((u.abs() < torch.finfo(dtype).eps * w.abs() / 2) & (u != 0)).sum())


def count_share(w, u, dtype):
    return float((((w + u).to(dtype) == w) & (u != 0)).sum() / (u != 0).sum())


def count_mask(w, u, dtype):
    return ((w + u).to(dtype) == w) & (u != 0)


def count_w_to_float32(w, u, dtype):
    return int((((w.float() + u).to(dtype) == w) & (u != 0)).sum())


def count_in_place(w, u, dtype):
    old = w.clone()
    w += u.to(w.dtype)
    return int(((w == old) & (u != 0)).sum())


def count_positive_only(w, u, dtype):  # no named mistake: the generic hint shows one update it gets wrong
    return int((((w + u).to(dtype) == w) & (u > 0)).sum())


def count_crash(w, u, dtype):
    return int(((w + u).to(dtype) == w).sum(dim=1))


COUNT_BUGS = [
    (count_in_float32, "counted lost updates in float32 instead of the storage dtype"),
    (count_zero_updates_too, "counted zero updates as lost"),
    (count_float32_and_zeros, "and counted zero updates as lost too"),
    (count_rounds_u_first, "rounded the update u to bfloat16 before adding it"),
    (count_kept, "counted the updates that survive"),
    (count_half_gap_threshold, "compared |u| with half the gap"),
    (count_share, "not their share"),
    (count_mask, "return one number"),
    (count_w_to_float32, "converted w to float32 before adding"),
    (count_in_place, "changed w or u in place"),
    (count_positive_only, "your function counted 0 (expected 1)"),
]


RIGHT = [(checks.check_stochastic_round_bf16, reference.stochastic_round_bf16),
         (checks.check_stochastic_round_bf16, sr_bit_trick),
         (checks.check_count_lost_updates, reference.count_lost_updates),
         (checks.check_count_lost_updates, count_worked)]


@pytest.mark.parametrize("check,fn", RIGHT, ids=[f.__name__ for _, f in RIGHT])
@pytest.mark.parametrize("lessons_seed", [0, 1, 2, 3, 4])
def test_the_reference_and_the_worked_answers_pass_for_any_seed(check, fn, lessons_seed, monkeypatch, capsys):
    monkeypatch.setenv("LESSONS_SEED", str(lessons_seed))
    r = check(fn)
    out = capsys.readouterr().out
    assert r.status == "correct" and r.candidate is fn and "Correct" in out, out


PLANTED = [(checks.check_stochastic_round_bf16, reference.stochastic_round_bf16, bug, hint) for bug, hint in SR_BUGS] \
    + [(checks.check_count_lost_updates, reference.count_lost_updates, bug, hint) for bug, hint in COUNT_BUGS]


@pytest.mark.parametrize("check,ref,bug,hint", PLANTED, ids=[p[2].__name__ for p in PLANTED])
def test_planted_bugs_are_named(check, ref, bug, hint, seed):
    r = check(bug)
    assert r.status == "wrong" and hint in r.message and "Correct" not in r.message, r.message
    assert r.yours_or(ref) is ref  # the cells below fall back to the library's reference


def test_counter_stub_and_crash():
    def stub(w, u, dtype):
        raise NotImplementedError("count them")

    assert checks.check_count_lost_updates(stub).status == "not_written"
    r = checks.check_count_lost_updates(count_crash)
    assert r.status == "wrong" and "raised IndexError" in r.message


@pytest.mark.parametrize("dtype", [BF16, torch.float16, torch.float32])
def test_count_cases_are_exact_and_tell_the_mistakes_apart(dtype):
    """The float64 sums are exact, a float32 sum rounds them once (no double rounding), and every typical mistake
    counts something else than the exact count."""
    w, u = checks._count_cases(dtype, torch.Generator().manual_seed(5))
    s = w.double() + u.double()
    assert torch.equal(s - w.double(), u.double())  # exact in float64
    exact = checks._exact_lost(w, u, dtype)
    assert torch.equal(((w + u).to(dtype) == w) & (u != 0), exact)
    lost = int(exact.sum())
    # w.float() loses nothing for 16-bit weights; in float32, summing in float32 or rounding u first is right too
    harmless = ("converted w to float32",) + (("counted lost", "rounded the update") if dtype == torch.float32 else ())
    wrong = [n for n, hint in checks._count_mistakes(w, u, dtype) if not hint.startswith(harmless)]
    assert len(wrong) >= 4 and lost not in wrong, (lost, wrong)


def test_round_exact_rounds_once_where_torch_rounds_twice():
    s = torch.tensor([1 + 2**-8 + 2**-40, 1 + 2**-8, 1 + 2**-7 + 2**-8, 1 + 2**-11 + 2**-40], dtype=torch.float64)
    assert s[:1].to(BF16).item() == 1.0  # torch: float64 -> float32 -> bf16, two roundings
    got = checks.round_exact(s[:3], BF16).tolist()
    assert got == [1 + 2**-7, 1.0, 1 + 2**-6]  # above the tie: up; a tie: to the even neighbour (twice)
    assert checks.round_exact(s[3:], torch.float16).item() == 1 + 2**-10
    for v in (1 + 2**-8 + 2**-40, 3.14159, -2.5 - 2**-9):  # against exact rational arithmetic
        r = checks.round_exact(torch.tensor([v], dtype=torch.float64), BF16).item()
        lo, hi = reference.neighbours(torch.tensor([v], dtype=torch.float64), BF16)
        d_lo, d_hi = abs(Fraction(v) - Fraction(lo.item())), abs(Fraction(hi.item()) - Fraction(v))
        assert r == (lo.item() if d_lo < d_hi else hi.item())


# --- answers ------------------------------------------------------------------------------------------
class _Run:
    class history:  # noqa: N801
        val_loss = [float("nan")]


def test_eps_in_fp16():
    r = checks.check_eps_in_fp16(0.0, _Run)
    assert r.status == "correct" and "validation loss of nan" in r.message
    assert "what eps is in fp32" in checks.check_eps_in_fp16(1e-8, _Run).message
    assert "smallest positive number" in checks.check_eps_in_fp16(2.0**-24, _Run).message
    assert checks.check_eps_in_fp16(..., _Run).status == "not_written"
    assert checks.check_eps_in_fp16("zero", _Run).status == "wrong"


def test_largest_lost_update():
    assert checks.check_largest_lost_update(2.0**-6).status == "correct"
    assert "whole gap" in checks.check_largest_lost_update(2.0**-5).message
    assert "half the gap at 1.0" in checks.check_largest_lost_update(2.0**-8).message
    assert "power of two at or below w" in checks.check_largest_lost_update(6 * 2.0**-8).message
    assert checks.largest_lost_update(1.0 + 2**-7, BF16) < 2**-8  # odd last bit: the tie goes up, so just below


def _survey():
    rows = []
    for layer, share_bf16, w in (("0.weight", 0.8, 0.08), ("4.bias", 1.0, 0.4), ("2.weight", 0.6, 0.05)):
        rows.append(SurveyRow("adam lr 0.0001", layer, "bf16", round(share_bf16 * 10), 10, w, 1e-4))
        rows.append(SurveyRow("adam lr 0.0001", layer, "fp16", 0, 10, w, 1e-4))
    return LostSurvey(rows)


def test_most_lost_layer_from_the_learners_survey():
    s = _survey()
    assert s.share("adam lr 0.0001", "bf16") == pytest.approx(24 / 30)
    assert checks.check_most_lost_layer("4.bias", s).status == "correct"
    assert checks.check_most_lost_layer(" 4.bias ", s).status == "correct"
    assert "smallest share" in checks.check_most_lost_layer("2.weight", s).message
    assert "one of 0.weight, 4.bias, 2.weight" in checks.check_most_lost_layer("layer 4", s).message
    assert checks.check_most_lost_layer(..., s).status == "not_written"
    assert "4.bias" in str(s) and "adam lr 0.0001" in str(s)
