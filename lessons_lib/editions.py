"""The learner's edition: the teacher's notebooks (``notebooks/``) with the solutions taken out (``learner/``).

One source, two editions. The teacher's notebooks hold worked solutions between the markers that otter-grader
and nbgrader use, so nbval runs and checks them; ``make student`` (``python -m lessons_lib.editions``) writes
the learner's edition:

* code cells: the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` become, at the block's indentation::

      # YOUR CODE HERE
      raise NotImplementedError("<hint>")

  where ``<hint>`` is the text after ``# BEGIN SOLUTION`` on its line (else a generic one). A block must sit
  inside a function, so that the learner's edition runs top to bottom: defining a stub raises nothing, and
  the lesson's check says "not written yet" and falls back to the library's reference.
* a line ``name = value  # SOLUTION`` becomes ``name = ...  # YOUR ANSWER`` (an answer to a question).
* markdown cells: ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` becomes *Your answer here.*
* every output, execution count and stored widget state is dropped: the learner sees their own run only.

Regenerating never overwrites a notebook the learner has changed: ``learner/.editions.json`` records a
fingerprint of each notebook as written (its cells' types and sources: JupyterLab re-saving a file, or running
it, does not count as a change; editing a cell does). A changed notebook is skipped with a message; ``--force``
keeps it as ``NAME.ipynb.~N~`` and writes a fresh copy.

Why a script and not ``otter assign`` or nbgrader: both want their own notebook format or course database
(otter: assignment/question config cells; nbgrader: cell metadata, a gradebook, a course directory) and bring
a grading service along, while this course needs only the marker replacement, per-exercise hints and the
skip-if-changed rule: about 150 lines, tested in ``tests/test_editions.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .cache import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b[ \t]*(?P<hint>.*)$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\b")
ANSWER = re.compile(r"^(?P<lhs>[ \t]*[A-Za-z_][\w.\[\]'\", ]*?\s*=)(?!=)\s*(?P<rhs>.+?)\s*#\s*SOLUTION\s*$")
MD_BLOCK = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->.*?<!--\s*END SOLUTION\s*-->", re.S)
MANIFEST = ".editions.json"
STUB_HINT = "write your code here (the docstring above says what it must return)"


class EditionError(ValueError):
    """A teacher's notebook whose solution markers cannot be turned into a learner's edition."""


def _stub_code(source: str, where: str) -> str:
    out: list[str] = []
    block: tuple[str, str] | None = None  # (indent, hint) of the open block
    for n, line in enumerate(source.split("\n"), 1):
        m = BEGIN.match(line)
        if block is None and m:
            indent, hint = m["indent"], m["hint"].strip() or STUB_HINT
            if not indent:
                raise EditionError(f"{where}, line {n}: '# BEGIN SOLUTION' at the top level of a cell; put the "
                                   "solution inside a function so the learner's edition runs before it is written")
            block = (indent, hint)
            continue
        if block is not None:
            if BEGIN.match(line):
                raise EditionError(f"{where}, line {n}: '# BEGIN SOLUTION' inside another solution block")
            if END.match(line):
                indent, hint = block
                out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({hint!r})"]
                block = None
            continue
        if END.match(line):
            raise EditionError(f"{where}, line {n}: '# END SOLUTION' without a '# BEGIN SOLUTION' above it")
        if re.search(r"#\s*SOLUTION\s*$", line):
            a = ANSWER.match(line)
            if not a:
                raise EditionError(f"{where}, line {n}: '# SOLUTION' marks only an assignment `name = value`; "
                                   f"got {line.strip()!r}")
            line = f"{a['lhs']} ...  # YOUR ANSWER"
        out.append(line)
    if block is not None:
        raise EditionError(f"{where}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'")
    return "\n".join(out)


def learner_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The learner's edition of a teacher's notebook (a new object; ``nb`` is not changed)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        if cell.cell_type == "code":
            cell.source = _stub_code(cell.source, where)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = MD_BLOCK.sub("*Your answer here.*", cell.source)
        cell.get("metadata", {}).pop("execution", None)
        if "SOLUTION" in cell.source and cell.cell_type == "code":
            raise EditionError(f"{where}: a solution marker was left in the learner's edition")
    nb.metadata.pop("widgets", None)
    return nb


def fingerprint(nb: nbformat.NotebookNode) -> str:
    """sha256 of the cells' types and sources: what a learner changes when they write code (not outputs)."""
    cells = [[c.cell_type, c.source if isinstance(c.source, str) else "".join(c.source)] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Written:
    """What :func:`write_edition` did with one notebook: "written", "unchanged" or "skipped" (and why)."""

    path: Path
    action: str
    reason: str = ""


def _backup_name(path: Path) -> Path:
    n = 1
    while (path.parent / f"{path.name}.~{n}~").exists():
        n += 1
    return path.parent / f"{path.name}.~{n}~"


def write_edition(src: Path, dst: Path, names: list[str] | None = None, force: bool = False) -> list[Written]:
    """Write the learner's edition of every ``*.ipynb`` in ``src`` (or only ``names``) into ``dst``."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"no teacher's notebooks at {src}: pass the folder that holds them (e.g. notebooks)")
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    todo = sorted(src.glob("*.ipynb")) if not names else [src / n for n in names]
    done: list[Written] = []
    for path in todo:
        if not path.exists():
            have = sorted(p.name for p in src.glob("*.ipynb"))
            raise FileNotFoundError(f"{path} does not exist; the teacher's notebooks are {have}")
        new = learner_notebook(nbformat.read(path, as_version=4), path.name)
        target = dst / path.name
        if target.exists():
            try:
                current = fingerprint(nbformat.read(target, as_version=4))
            except Exception:  # unreadable: treat as the learner's own work, never overwrite it silently
                current = None
            if current == fingerprint(new):
                manifest[path.name] = current
                done.append(Written(target, "unchanged"))
                continue
            if current != manifest.get(path.name) and not force:
                done.append(Written(target, "skipped", "you changed it since it was written; yours is kept "
                                    "(delete it, or run with --force to keep a backup and get a fresh copy)"))
                continue
            if current != manifest.get(path.name):
                target.rename(_backup_name(target))
        atomic_write_bytes(target, nbformat.writes(new).encode() + b"\n")
        manifest[path.name] = fingerprint(new)
        done.append(Written(target, "written"))
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the learner's edition (solutions replaced by stubs).")
    ap.add_argument("src", nargs="?", default=str(ROOT / "notebooks"), help="the teacher's notebooks")
    ap.add_argument("dst", nargs="?", default=str(ROOT / "learner"), help="where the learner's edition goes")
    ap.add_argument("--only", nargs="*", default=None, help="notebook file names (default: all)")
    ap.add_argument("--force", action="store_true", help="overwrite changed notebooks (a backup is kept)")
    args = ap.parse_args(argv)
    try:
        done = write_edition(Path(args.src), Path(args.dst), args.only, force=args.force)
    except (EditionError, FileNotFoundError) as e:
        print(f"editions: {e}", file=sys.stderr)
        return 2
    for w in done:
        print(f"{w.action:9} {w.path}" + (f": {w.reason}" if w.reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
