"""The learner's edition generator: markers become stubs, answers become `...`, outputs go, and a notebook
the learner changed is never overwritten."""

from __future__ import annotations

import json

import nbformat
import pytest

from lessons_lib import editions
from lessons_lib.editions import EditionError, learner_notebook, write_edition

SOLVED = '''def dropout_forward(x, p):
    """Inverted dropout."""
    # BEGIN SOLUTION keep each unit with probability 1 - p
    keep = x > p
    return x * keep / (1 - p)
    # END SOLUTION
'''


def _nb(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for kind, src in cells:
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        if kind == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="✓ Correct. answer leaked\n")]
            cell.execution_count = 3
        nb.cells.append(cell)
    nb.metadata["widgets"] = {"state": "teacher's widget state"}
    return nb


def test_solution_block_becomes_a_stub_with_its_hint():
    out = learner_notebook(_nb(("code", SOLVED)))
    src = out.cells[0].source
    assert "keep = x > p" not in src and "BEGIN SOLUTION" not in src
    assert "    # YOUR CODE HERE\n    raise NotImplementedError('keep each unit with probability 1 - p')" in src
    assert src.startswith('def dropout_forward(x, p):\n    """Inverted dropout."""')
    ns: dict = {}
    exec(src, ns)  # the stub defines the function without raising
    with pytest.raises(NotImplementedError, match="probability 1 - p"):
        ns["dropout_forward"](1.0, 0.5)


def test_a_block_without_hint_gets_the_generic_hint():
    block = "def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n"
    src = learner_notebook(_nb(("code", block))).cells[0].source
    assert editions.STUB_HINT in src


def test_answers_become_ellipsis_and_outputs_go():
    nb = _nb(("code", "stop_epoch = 4  # SOLUTION\nchecks.check_stop_epoch(stop_epoch)"),
             ("markdown", "Why?\n<!-- BEGIN SOLUTION -->\nBecause the best was at epoch 1.\n<!-- END SOLUTION -->"))
    out = learner_notebook(nb)
    assert out.cells[0].source == "stop_epoch = ...  # YOUR ANSWER\nchecks.check_stop_epoch(stop_epoch)"
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert "Because" not in out.cells[1].source and "*Your answer here.*" in out.cells[1].source
    assert "widgets" not in out.metadata
    assert nb.cells[0].outputs, "the teacher's notebook object is not changed"


@pytest.mark.parametrize("src, why", [
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "top level"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION", "without a"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION", "inside another"),
    ("check(4)  # SOLUTION", "only an assignment"),
])
def test_malformed_markers_are_refused_with_the_line(src, why):
    with pytest.raises(EditionError, match=why):
        learner_notebook(_nb(("code", src)), "03_dropout.ipynb")


def _teacher(tmp_path, source=SOLVED):
    src = tmp_path / "notebooks"
    src.mkdir(exist_ok=True)
    nbformat.write(_nb(("code", source)), src / "03_dropout.ipynb")
    return src


def test_write_then_regenerate_never_overwrites_the_learners_work(tmp_path):
    src, dst = _teacher(tmp_path), tmp_path / "learner"
    [w] = write_edition(src, dst)
    assert w.action == "written" and (dst / editions.MANIFEST).exists()
    assert [w.action for w in write_edition(src, dst)] == ["unchanged"]

    # running the notebook (outputs, execution counts, re-saved metadata) is not a change
    nb = nbformat.read(dst / "03_dropout.ipynb", as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, dst / "03_dropout.ipynb")
    _teacher(tmp_path, SOLVED.replace("Inverted dropout.", "Inverted dropout (p = probability to DROP)."))
    assert [w.action for w in write_edition(src, dst)] == ["written"], "an untouched copy follows the teacher's"

    # the learner writes code: regeneration skips it, says why, and keeps their code
    nb = nbformat.read(dst / "03_dropout.ipynb", as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("raise NotImplementedError", "return x  #")
    nbformat.write(nb, dst / "03_dropout.ipynb")
    _teacher(tmp_path, SOLVED.replace("Inverted", "Inverted (v3)"))
    [w] = write_edition(src, dst)
    assert w.action == "skipped" and "you changed it" in w.reason
    assert "return x  #" in nbformat.read(dst / "03_dropout.ipynb", as_version=4).cells[0].source

    # --force keeps a backup and writes a fresh copy
    [w] = write_edition(src, dst, force=True)
    assert w.action == "written"
    assert "return x  #" in nbformat.read(dst / "03_dropout.ipynb.~1~", as_version=4).cells[0].source
    assert "(v3)" in nbformat.read(dst / "03_dropout.ipynb", as_version=4).cells[0].source


def test_a_notebook_not_written_by_the_generator_is_kept(tmp_path):
    src, dst = _teacher(tmp_path), tmp_path / "learner"
    dst.mkdir()
    nbformat.write(_nb(("code", "my own work")), dst / "03_dropout.ipynb")
    [w] = write_edition(src, dst)
    assert w.action == "skipped"
    assert nbformat.read(dst / "03_dropout.ipynb", as_version=4).cells[0].source == "my own work"


def test_cli_reports_each_notebook_and_refuses_bad_input(tmp_path, capsys):
    src, dst = _teacher(tmp_path), tmp_path / "learner"
    assert editions.main([str(src), str(dst)]) == 0
    assert "written" in capsys.readouterr().out
    assert editions.main([str(tmp_path / "nowhere"), str(dst)]) == 2
    assert "no teacher's notebooks" in capsys.readouterr().err
    manifest = json.loads((dst / editions.MANIFEST).read_text())
    assert set(manifest) == {"03_dropout.ipynb"}
