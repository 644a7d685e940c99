"""Benchmark of lesson 10 (parallel training), all ratios measured in this one run.

1. DDP (gloo, one thread per process), dense, global batch 64 and 512: examples/s with N processes over 1
   process, and the share of training time spent in the all-reduce.
2. DDP at a global batch of 16, dense vs sparse (LSH 5% per example): bytes all-reduced per step and
   all-reduce time per step.
3. Hogwild at batch 1, dense vs sparse, and independent processes (nothing shared, the machine's ceiling):
   speed-up with N processes; the seed's goal is near-linear (here: >= 0.8 N).
4. Gradient averaging by hand (reference.average_gradients: one all-reduce per parameter) vs DDP (one all-reduce
   per bucket) at a global batch of 64: all-reduce time per step, and the same updates (val loss).

Every configuration runs ``--repeats`` times, interleaved, and keeps its fastest run (timings on a shared
machine wobble by +-20% from run to run). Run: ``.venv/bin/python benchmarks/bench_parallel.py [--processes N]
[--repeats R]``. Goals that are missed are printed as such; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import time

from lessons_lib import processes
from lessons_lib.parallel import lab as par
from lessons_lib.seeds import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=min(2, processes.cpu_cores()))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    seed = seed_everything()
    n = args.processes
    t0 = time.perf_counter()
    print(f"bench_parallel: seed {seed}, {n} processes on {processes.cpu_cores()} cores, best of {args.repeats} "
          f"interleaved runs per configuration, start method {processes.start_method()}")
    ddp = par.sweep(par.ddp_configs(n, seed), repeats=args.repeats, progress=False)
    hog = par.sweep(par.hogwild_configs(n, seed), repeats=args.repeats, progress=False)
    (by_hand,) = par.sweep([par.manual_config(n, seed)], repeats=args.repeats, progress=False)
    print(par.results_table(ddp + hog + [by_hand]))
    print()
    for b in (64, 512):
        r = par.pick(ddp, "ddp", "dense", n, b)
        print(f"DDP dense, batch {b:3d}: {n} processes vs 1: {par.speedup(ddp, 'ddp', 'dense', n, b):.2f}x examples/s; "
              f"all-reduce {r.comm_fraction:.0%} of training time")
    d, s = par.pick(ddp, "ddp", "dense", n, 16), par.pick(ddp, "ddp", "sparse", n, 16)
    print(f"DDP batch 16, sparse vs dense: {d.sync_bytes_per_step / s.sync_bytes_per_step:.1f}x fewer bytes per step "
          f"({s.units_per_step:.0f} of {s.config.width} units), all-reduce time "
          f"{s.comm_per_step / d.comm_per_step:.2f}x "
          f"({1e3 * s.comm_per_step:.2f} vs {1e3 * d.comm_per_step:.2f} ms/step)")
    ceiling = par.speedup(hog, "independent", "dense", n)
    for u in par.UPDATES:
        sp = par.speedup(hog, "hogwild", u, n)
        verdict = "goal met" if sp >= 0.8 * n else "goal NOT met"
        print(f"Hogwild {u:6s}: {n} processes vs 1: {sp:.2f}x (near-linear goal >= {0.8 * n:.1f}x: {verdict}); "
              f"{sp / ceiling:.0%} of the independent-process ceiling ({ceiling:.2f}x)")
    d64 = par.pick(ddp, "ddp", "dense", n, 64)
    print(f"Averaging by hand vs DDP, batch 64, {n} processes: all-reduce {1e3 * by_hand.comm_per_step:.2f} vs "
          f"{1e3 * d64.comm_per_step:.2f} ms/step ({by_hand.comm_per_step / d64.comm_per_step:.2f}x; one all-reduce "
          f"per parameter vs {d64.collectives_per_step:.0f} per step), val loss differs by "
          f"{par.val_loss_gap(by_hand, d64):.1e}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
