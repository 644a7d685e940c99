"""Benchmark of lesson 10 (parallel training), all ratios measured in this one run.

1. DDP (gloo, one thread per process), dense, global batch 64 and 512: examples/s with N processes over 1
   process, and the share of training time spent in the all-reduce.
2. DDP at a global batch of 16, dense vs sparse (LSH 5% per example): bytes all-reduced per step and
   all-reduce time per step.
3. Hogwild at batch 1, dense vs sparse, and independent processes (nothing shared, the machine's ceiling):
   speed-up with N processes; the seed's goal is near-linear (here: >= 0.8 N).
4. Gradient averaging by hand (reference.average_gradients: one all-reduce per parameter) vs DDP (one all-reduce
   per bucket) at a global batch of 64: all-reduce time per step, and the same updates (val loss).

Every configuration runs ``--repeats`` times in interleaved rounds, each round with its own seed (timings on a
shared machine wobble by +-20% from run to run); ratios are taken within a round and reported as median and range,
with a verdict (holds / does not hold / inconclusive: the range straddles the goal). Run:
``.venv/bin/python benchmarks/bench_parallel.py [--processes N] [--repeats R]``. The exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import time

from lessons_lib import processes
from lessons_lib.parallel import lab as par
from lessons_lib.seeds import seed_everything
from lessons_lib.stats import verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=min(2, processes.cpu_cores()))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    seed = seed_everything()
    n = args.processes
    t0 = time.perf_counter()
    print(f"bench_parallel: seed {seed}, {n} processes on {processes.cpu_cores()} cores, {args.repeats} interleaved "
          f"rounds per configuration (one seed each), start method {processes.start_method()}")
    seeds = par.repeat_seeds(args.repeats, seed)
    ddp = par.sweep(par.ddp_configs(n, seed), repeats=args.repeats, seeds=seeds, progress=False)
    hog = par.sweep(par.hogwild_configs(n, seed), repeats=args.repeats, seeds=seeds, progress=False)
    (by_hand,) = par.sweep([par.manual_config(n, seed)], repeats=args.repeats, seeds=seeds, progress=False)
    print(par.results_table(ddp + hog + [by_hand]))
    print()
    x = "x"
    for b in (64, 512):
        r, sp = par.pick(ddp, "ddp", "dense", n, b), par.speedup(ddp, "ddp", "dense", n, b)
        print(f"DDP dense, batch {b:3d}: {n} processes vs 1: {sp.format('.2f', unit=x)} examples/s "
              f"(faster: {verdict(sp, 1.0)}); all-reduce {par.spread(r, lambda r: r.comm_fraction).format('.0%')} "
              "of training time")
    d, s = par.pick(ddp, "ddp", "dense", n, 16), par.pick(ddp, "ddp", "sparse", n, 16)
    fewer = par.paired(d, s, lambda a, b: a.sync_bytes_per_step / b.sync_bytes_per_step)
    slower = par.paired(s, d, lambda a, b: a.comm_per_step / b.comm_per_step)
    print(f"DDP batch 16, sparse vs dense: {fewer.format('.1f', unit=x)} fewer bytes per step, all-reduce time "
          f"{slower.format('.2f', unit=x)} (less time: {verdict(slower, 1.0, 'below')})")
    ceiling = par.speedup(hog, "independent", "dense", n)
    for u in par.UPDATES:
        sp = par.speedup(hog, "hogwild", u, n)
        print(f"Hogwild {u:6s}: {n} processes vs 1: {sp.format('.2f', unit=x)} (near-linear goal >= {0.8 * n:.1f}x: "
              f"{verdict(sp, 0.8 * n)}); independent-process ceiling {ceiling.format('.2f', unit=x)}")
    d64 = par.pick(ddp, "ddp", "dense", n, 64)
    ratio = par.paired(by_hand, d64, lambda a, b: a.comm_per_step / b.comm_per_step)
    print(f"Averaging by hand vs DDP, batch 64, {n} processes: all-reduce time {ratio.format('.2f', unit=x)} (one "
          f"all-reduce per parameter vs {len(d64.bucket_bytes)} bucket(s) of {d64.bucket_bytes} bytes, cap "
          f"{d64.bucket_cap_bytes:,}), val loss differs by at most "
          f"{max(par.val_loss_gap(a, b) for a, b in zip(by_hand.runs, d64.runs)):.1e}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
