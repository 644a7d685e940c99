"""No logic is copied between the notebooks and the library: no run of six or more code lines stands both in a
notebook (the teacher's worked solutions included) and in a ``lessons_lib`` module, or in two notebooks.

Lines are compared after folding white space; blank lines, comments, imports and lone punctuation are passed over
(as the ``duplicates`` tool does). Within the library, repeated code is found by that tool, not here.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
RUN = 6
SKIP = re.compile(r"^(#.*|import .*|from \S+ import .*|[\)\]\}:,]+|\"\"\"|'''|\.\.\.|pass|else:|try:|return|"
                  r"# NBVAL_\w+)?$")


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not SKIP.match(line):
            out.append(line)
    return out


def _runs(lines: list[str]) -> set[tuple[str, ...]]:
    return {tuple(lines[i:i + RUN]) for i in range(len(lines) - RUN + 1)}


def _notebook_runs() -> dict[str, set[tuple[str, ...]]]:
    runs = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [_lines(c.source) for c in nb.cells if c.cell_type == "code"]
        runs[path.name] = set().union(*(_runs(c) for c in cells)) if cells else set()
    return runs


def test_no_notebook_repeats_library_code():
    library: dict[tuple[str, ...], str] = {}
    for path in sorted((ROOT / "lessons_lib").rglob("*.py")):
        for run in _runs(_lines(path.read_text())):
            library.setdefault(run, str(path.relative_to(ROOT)))
    copies = [(name, library[run], run[0]) for name, runs in _notebook_runs().items() for run in runs if run in library]
    assert not copies, "notebook code that repeats the library (notebook, module, first line): " + repr(copies[:5])


def test_no_two_notebooks_share_code():
    seen: dict[tuple[str, ...], str] = {}
    shared = []
    for name, runs in _notebook_runs().items():
        for run in runs:
            if run in seen and seen[run] != name:
                shared.append((seen[run], name, run[0]))
            seen.setdefault(run, name)
    assert not shared, "code repeated across notebooks (first, second, first line): " + repr(shared[:5])


def test_the_rule_catches_a_copy(tmp_path):
    code = "\n".join(f"x{i} = compute({i}) * scale" for i in range(8))
    assert _runs(_lines(code)) & _runs(_lines("# a comment\n" + code.replace("\n", "\n\n")))
