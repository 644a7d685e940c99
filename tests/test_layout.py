"""The layout the course promises (CONTRIBUTING.md, "Where things go"): one package per lesson with a short
``reference.py`` (the idea), ``lab.py`` and ``checks.py``; no lesson package imports another; the core imports
no lesson; the reference imports only core modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lessons_lib"
LESSONS = sorted(p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists())
CORE = sorted(p.stem for p in LIB.glob("*.py") if p.stem != "__init__")


def _imported(path: Path) -> set[str]:
    """Top-level lessons_lib names a module imports (a lesson package or a core module)."""
    pkg = path.parent.relative_to(LIB.parent).parts  # ("lessons_lib",) or ("lessons_lib", "<lesson>")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts + [a.name] for a in node.names] if not node.module else [parts]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for parts in names:
            if parts and parts[0] == "lessons_lib" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_lesson_has_its_files():
    assert len(LESSONS) == 11
    for lesson in LESSONS:
        have = {p.name for p in (LIB / lesson).glob("*.py")}
        assert {"__init__.py", "lab.py", "checks.py"} <= have, f"{lesson}: {sorted(have)}"
        if lesson != "tour":  # the tour has no from-scratch idea
            assert "reference.py" in have, lesson


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_lesson_imports_another(lesson):
    for path in (LIB / lesson).glob("*.py"):
        others = _imported(path) & (set(LESSONS) - {lesson})
        assert not others, f"{path.relative_to(LIB)} imports lesson package(s) {sorted(others)}"


@pytest.mark.parametrize("lesson", [les for les in LESSONS if les != "tour"])
def test_reference_is_short_and_imports_only_core(lesson):
    path = LIB / lesson / "reference.py"
    assert len(path.read_text().splitlines()) <= 300, f"{lesson}/reference.py is over ~300 lines"
    assert _imported(path) <= set(CORE), f"{lesson}/reference.py imports {sorted(_imported(path) - set(CORE))}"


def test_core_imports_no_lesson():
    for name in CORE:
        bad = _imported(LIB / f"{name}.py") & set(LESSONS)
        assert not bad, f"core module {name}.py imports lesson package(s) {sorted(bad)}"
