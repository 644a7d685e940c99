"""The learner's edition, as a learner gets it (``make student``): every lesson 01-10 asks for code, nothing is
answered in advance, and every notebook runs top to bottom before the learner has written a line.

The execution tests are marked ``notebook`` (minutes: each lesson runs whole); ``make unit`` leaves them out,
``make test`` and CI run them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from lessons_lib.editions import write_edition

ROOT = Path(__file__).resolve().parents[1]
TEACHER = sorted((ROOT / "notebooks").glob("*.ipynb"))
LESSONS_WITH_CODE = [p.name for p in TEACHER if "00" < p.name[:2] <= "10"]
STUB = re.compile(r"^\s+raise NotImplementedError\(", re.M)


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("learner")
    write_edition(ROOT / "notebooks", dst)
    return dst


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", LESSONS_WITH_CODE)
def test_each_lesson_asks_for_code(edition, name):
    nb = nbformat.read(edition / name, as_version=4)
    assert STUB.search(_code(nb)), f"{name}: the learner's edition asks for no code (no solution block in a function)"


@pytest.mark.parametrize("name", [p.name for p in TEACHER])
def test_nothing_is_answered_or_shown_in_advance(edition, name):
    nb = nbformat.read(edition / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs left in"
    assert "SOLUTION" not in _code(nb)
    teacher = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    answers = sum(line.rstrip().endswith("# SOLUTION") for line in _code(teacher).splitlines())
    assert _code(nb).count("...  # YOUR ANSWER") == answers


def _run(path: Path) -> list[tuple[int, str, str]]:
    """Execute a notebook in a fresh kernel; return (cell index, output text, error name) per code cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    rows = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        text, error = "", ""
        for o in c.outputs:
            if o.output_type == "stream":
                text += o.text
            elif o.output_type in ("execute_result", "display_data"):
                text += o.get("data", {}).get("text/plain", "")
            elif o.output_type == "error":
                error = f"{o.ename}: {o.evalue}"
        rows.append((i, text, error))
    return rows


@pytest.mark.notebook
@pytest.mark.parametrize("name", [p.name for p in TEACHER])
def test_the_learners_edition_runs_top_to_bottom(edition, name):
    rows = _run(edition / name)
    errors = [(i, e) for i, _, e in rows if e]
    assert not errors, f"{name}: cells raised before the learner wrote anything: {errors}"
    text = "\n".join(t for _, t, _ in rows)
    correct = [line for line in text.splitlines() if re.match(r"^\W*Correct", line)]
    assert not correct, f"{name}: a check passed with nothing written (an answer was pre-filled): {correct}"
    assert "use your" not in text, f"{name}: a later cell used the learner's (unwritten) code"
    if name in LESSONS_WITH_CODE:
        assert "Not written yet" in text, f"{name}: no check reported the unwritten exercises"
        assert "use the library's reference" in text, f"{name}: no later cell fell back to the reference"
