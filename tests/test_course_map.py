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
