"""Scale-out figures for lesson 10 (issue: outgrow one machine), measured in one run on this machine.

* the elastic restart: an uninterrupted 2-process torchrun job vs the same job with rank 1 killed mid-epoch and
  restarted by ``torchrun --max-restarts 1``: wall seconds each, the difference, epochs redone, equal weights;
* two "nodes" (two torchrun launchers, c10d rendezvous) vs one node: wall seconds, equal weights;
* ZeRO: Adam state bytes per process with and without ZeroRedundancyOptimizer at a wider model;
* no_sync accumulation: all-reduce bytes per example for k = 1, 4;
* the alpha-beta fit of gloo all-reduce over message sizes (2 processes; 3 and 4 as an out-of-sample check,
  oversubscribed on 2 cores), and the cluster predictions.

    .venv/bin/python benchmarks/bench_scaleout.py [--epochs 3] [--width 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lessons_lib.parallel import comm_model as cm
from lessons_lib.parallel import elastic


def job(name: str, extra: list[str], args, **kw) -> tuple[float, list[dict], dict]:
    out = Path(tempfile.mkdtemp(prefix=f"scaleout_{name}_"))
    t0 = time.perf_counter()
    done = elastic.run_torchrun(["--epochs", str(args.epochs), "--width", str(args.width), "--out", str(out), *extra],
                                timeout=1800, **kw)
    wall = time.perf_counter() - t0
    bad = [c for c in done if c.returncode != 0]
    if bad:
        raise SystemExit(f"{name}: torchrun failed\n{bad[0].stderr[-3000:]}")
    return wall, json.loads((out / elastic.SUMMARY).read_text()), torch.load(out / elastic.FINAL, weights_only=True)


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    w1, s1, m1 = job("one", [], args)
    w2, s2, m2 = job("two", [], args, nodes=2, procs_per_node=1)
    crash_epoch = args.epochs - 1
    wk, sk, mk = job("killed", ["--crash-rank", "1", "--crash-epoch", str(crash_epoch), "--crash-step", "15"], args,
                     max_restarts=1)
    wz, sz, mz = job("zero", ["--zero"], args)
    wa, sa, _ = job("acc4", ["--accumulate", "4"], args)
    print(f"one node, 2 processes: {w1:.1f} s wall; two nodes x 1 process: {w2:.1f} s; "
          f"same final weights: {same(m1, m2)}")
    print(f"killed mid-epoch {crash_epoch} and restarted: {wk:.1f} s wall vs {w1:.1f} s uninterrupted "
          f"(restart cost {wk - w1:+.1f} s); resumed at epoch {sk[0]['start_epoch']} after {sk[0]['restarts']} "
          f"restart(s), epochs redone <= 1: {crash_epoch - sk[0]['start_epoch'] <= 0}; same final weights: "
          f"{same(m1, mk)}")
    full = s1[0]["optimizer_state_bytes"]
    shares = [s["optimizer_state_bytes"] for s in sz]
    print(f"Adam state per process: {full / 1e6:.2f} MB plain; with ZeRO {', '.join(f'{b / 1e6:.2f}' for b in shares)}"
          f" MB (ratio {max(shares) / full:.2f} of plain for the larger share); max |weight difference| "
          f"{max((mz[k] - m1[k]).abs().max().item() for k in m1):.2e}")
    b1 = s1[0]["allreduce_bytes"] / s1[0]["examples"]
    b4 = sa[0]["allreduce_bytes"] / sa[0]["examples"]
    print(f"all-reduce bytes per example: {b1:,.0f} (k=1), {b4:,.0f} (k=4): ratio {b1 / b4:.2f}")

    timings = cm.measure((2,), sizes_bytes=tuple(4 << (2 * i) for i in range(12)), repeats=9)
    f = cm.fit(timings)
    print(f"alpha-beta fit on {f.points} sizes, 2 processes: alpha = {f.alpha * 1e6:.1f} us, beta = "
          f"{f.beta / 1e9:.3f} GB/s, relative error rms {f.rms_relative_error:.0%}, max {f.max_relative_error:.0%}")
    for t in cm.measure((3, 4), sizes_bytes=(4096, 1 << 20, 1 << 24), repeats=5):
        print(f"  out of sample: {t.processes} processes, {t.nbytes:>10,} B: measured {t.seconds * 1e3:8.2f} ms, "
              f"model {f.seconds(t.processes, t.nbytes) * 1e3:8.2f} ms")
    for p in cm.predict():
        print(f"  {p.gpus:>4} GPUs  {p.link:<42} all-reduce {p.comm_s * 1e3:8.1f} ms  "
              f"sparse 5% {p.sparse_comm_s * 1e3:8.1f} ms  compute {p.compute_s * 1e3:6.1f} ms  "
              f"efficiency {p.efficiency:.0%}")


if __name__ == "__main__":
    main()
