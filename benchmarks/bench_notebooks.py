"""Every notebook executed in a fresh kernel: wall time and peak memory (PSS, else RSS, of the kernel process tree).

Budgets (COURSE.md): <= 90 s and <= 1.5 GB per notebook on a 2-core CPU; the whole course under nbval
<= 10 minutes. Usage: ``python benchmarks/bench_notebooks.py [notebooks/03*.ipynb ...]``.
Writes ``notebooks/timings.json`` (read by the course map) through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TIME_BUDGET_S, MEMORY_BUDGET_GB = 90.0, 1.5


def _memory(q: psutil.Process) -> int:
    """Proportional set size where the OS reports it (Linux): pages shared between processes (torch's
    libraries in a kernel and the training processes it starts) are split between them instead of counted
    once per process. RSS elsewhere."""
    try:
        return q.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return q.memory_info().rss


def _tree_rss(pid: int) -> int:
    """Memory of the kernel and every process it started (see :func:`_memory`)."""
    try:
        p = psutil.Process(pid)
        total = 0
        for q in [p, *p.children(recursive=True)]:
            try:
                total += _memory(q)
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.Error:
        return 0


def run_notebook(path: Path, in_place: bool = False) -> tuple[float, float]:
    """(seconds, peak GB) of executing ``path`` top to bottom in a fresh kernel; ``in_place`` writes the executed
    notebook back (outputs and widget state, as ``make notebooks`` does), else the outputs are discarded."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            km = client.km
            if km is not None and km.has_kernel and getattr(km, "provisioner", None) is not None:
                pid = getattr(km.provisioner, "pid", None) or getattr(km.provisioner.process, "pid", None)
                if pid:
                    peak[0] = max(peak[0], _tree_rss(pid))
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        t.join()
    if in_place:
        nbformat.write(nb, path)
    return seconds, peak[0] / 1e9


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Run notebooks in a fresh kernel each; print seconds and peak memory "
                                 "(PSS over the kernel's process tree) and update notebooks/timings.json.")
    ap.add_argument("notebooks", nargs="*", help="notebook paths (default: every lesson notebook)")
    ap.add_argument("--in-place", action="store_true", help="also write each executed notebook back")
    args = ap.parse_args(argv)
    paths = args.notebooks
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)} (give paths like notebooks/03_dropout.ipynb)")
    nbs = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    results, bad = {}, 0
    print(f"{'notebook':<34} {'seconds':>8} {'peak GB':>8}  verdict")
    for nb in nbs:
        s, gb = run_notebook(nb, in_place=args.in_place)
        ok = s <= TIME_BUDGET_S and gb <= MEMORY_BUDGET_GB
        bad += not ok
        results[nb.name] = {"seconds": round(s, 1), "peak_gb": round(gb, 3)}
        print(f"{nb.name:<34} {s:8.1f} {gb:8.3f}  {'ok' if ok else 'OVER BUDGET'}")
    total = sum(r["seconds"] for r in results.values())
    print(f"{'total':<34} {total:8.1f}")
    out = ROOT / "notebooks" / "timings.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(results)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
