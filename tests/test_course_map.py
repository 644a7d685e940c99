import json

from lessons_lib import course_map
from lessons_lib.claims import Claims


def test_claims_rows_parse_what_claims_prints(tmp_path):
    c = Claims("07 precision")
    c.add("fp32 is faster than fp64", "seed 001", "2.1x", True)
    c.add("bf16 is native here", "lesson", "no AVX512-BF16", None)
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "execute_result",
                                                         "data": {"text/plain": str(c)}}]}]}
    path = tmp_path / "07_precision.ipynb"
    path.write_text(json.dumps(nb))
    rows = course_map.claims_rows(path)
    assert [(r.lesson, r.claim, r.source, r.measured) for r in rows] == [
        ("07", "fp32 is faster than fp64", "seed 001", "2.1x"),
        ("07", "bf16 is native here", "lesson", "no AVX512-BF16"),
    ]
    assert rows[0].verdict.endswith("holds here") and "not measurable" in rows[1].verdict


def test_every_notebook_is_on_the_map_and_shows_its_claims():
    numbers = {les.number for les in course_map.LESSONS}
    for nb in sorted(course_map.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        assert nb.name[:2] in numbers, f"{nb.name} is missing from course_map.LESSONS"
        assert course_map.claims_rows(nb), f"{nb.name} has no executed claims table"
    text = course_map.render()
    for les in course_map.LESSONS:
        assert f"| {les.number} |" in text


SOURCE_PART = r"^(seed \d{3}\b.*|lesson\b.*|.*\b(19|20)\d{2}\b.*|(PyTorch|Keras|NumPy)\b.* docs\b.*)$"
INTERNAL_WORDS = ("issue", "benchmark goal", "course target", "finding", "seeds/", ".txt")


def _top_level_parts(source: str) -> list[str]:
    """Split "seed 002 ('a; b'); lesson + Recht 2011" at ; and + outside parentheses and quotes."""
    parts, depth, cur = [], 0, ""
    for ch in source:
        depth += ch == "("
        depth -= ch == ")"
        if ch in ";+" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def test_claim_sources_name_a_seed_text_the_lesson_or_a_paper():
    """One naming scheme for sources: "seed NNN (...)", "lesson (...)", a paper with its year, or a library's
    docs; never internal words such as "issue 3", "benchmark goal" or a file path."""
    import re

    bad = []
    for nb in sorted(course_map.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        for r in course_map.claims_rows(nb):
            parts = [p.strip() for p in _top_level_parts(r.source)]
            if any(w in r.source.lower() for w in INTERNAL_WORDS) or not all(re.match(SOURCE_PART, p) for p in parts):
                bad.append(f"{nb.name}: {r.source!r} ({r.claim[:50]})")
    assert not bad, "sources outside the scheme:\n" + "\n".join(bad)


def test_verdicts_are_three_valued_and_each_settled_verdict_shows_its_runs():
    """A noisy claim reports its run count ("N runs" / "N repeats" / "N seeds") beside its verdict."""
    for nb in sorted(course_map.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        for r in course_map.claims_rows(nb):
            assert r.verdict.split(" ")[0] in ("✓", "✗", "?", "—"), (nb.name, r.verdict)
