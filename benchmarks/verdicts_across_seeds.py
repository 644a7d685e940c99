"""Run notebooks under several course seeds and compare their claims' verdicts.

A verdict that flips between "holds" and "does not hold" when only the seed changes is not evidence (a flip to or
from "inconclusive" is allowed: that is what the third verdict is for). Usage::

    python benchmarks/verdicts_across_seeds.py notebooks/03_dropout.ipynb --seeds 0 1 2

Prints each claim's verdict per seed and the flips; exits 1 when there is a flip. Notebooks are executed in a fresh
kernel each (outputs discarded; the committed notebooks are not touched).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lessons_lib.course_map import claims_from_notebook  # noqa: E402

SETTLED = {"✓ holds here": "holds", "✗ does not hold here": "does not hold"}


def verdicts(path: Path, seed: int) -> dict[str, str]:
    """{claim: verdict line} of ``path`` executed with LESSONS_SEED=seed."""
    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("LESSONS_SEED")
    os.environ["LESSONS_SEED"] = str(seed)
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
    finally:
        if old is None:
            os.environ.pop("LESSONS_SEED", None)
        else:
            os.environ["LESSONS_SEED"] = old
    return {r.claim: r.verdict for r in claims_from_notebook(nb)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args(argv)
    flips = 0
    for name in args.notebooks:
        path = Path(name)
        by_seed = {s: verdicts(path, s) for s in args.seeds}
        print(f"== {path.name} (seeds {', '.join(map(str, args.seeds))})")
        claims = list(dict.fromkeys(c for v in by_seed.values() for c in v))
        for claim in claims:
            row = [by_seed[s].get(claim, "(missing)") for s in args.seeds]
            settled = {SETTLED[v] for v in row if v in SETTLED}
            flip = len(settled) > 1
            flips += flip
            print(f"{'FLIP ' if flip else '     '}{claim[:90]}")
            print("      " + " | ".join(row))
    print(f"{flips} claim(s) flip between holds and does not hold")
    return 1 if flips else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
