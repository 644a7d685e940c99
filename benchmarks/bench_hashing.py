"""Benchmark of lesson 09 (randomized hashing), all ratios measured in this one run.

1. At 5% active units on MNIST-1D (40 -> 1000 -> 10): the hidden layer's multiplications with hashing and table
   rebuilds counted, as a fraction of the dense layer's (goal <= 10%), and the test-accuracy gap to the dense
   network (goal: within 1 point), over ``--runs`` seeds paired by seed (mean and 95% interval; verdict holds /
   does not hold / inconclusive).
2. Wall time of one training step (forward, backward, Adam), LSH per-example and LSH batch-union vs the batched
   dense layer, for the lesson's layer and a wider one: ratios per interleaved round, median and range.
3. The from-scratch (numpy) lookup of ``lessons_lib.hashing.reference`` against the CSR tables of core ``lsh``
   on the same codes: equal counts, and the time of each.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--threads N] [--epochs E] [--runs R] [--device cpu|gpu|auto]``.
Goals that are missed are printed as such; the exit status is 0 either way (these are measurements).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lessons_lib import lsh
from lessons_lib.data import load
from lessons_lib.device import pick_device
from lessons_lib.hashing import lab, reference
from lessons_lib.seeds import numpy_rng, seed_everything
from lessons_lib.stats import mean_interval, verdict
from lessons_lib.timing import time_interleaved


def bench_lookup(seed: int, n_units: int = 1000, L: int = 50, K: int = 6, batch: int = 128) -> None:
    """The from-scratch lookup vs the CSR tables, same random codes: counts equal, time per batch of queries."""
    rng = numpy_rng(seed, stream=95)
    units, queries = rng.integers(0, 2**K, (n_units, L)), rng.integers(0, 2**K, (batch, L))
    tables = lsh.BucketTables(K, L)
    tu, tq = torch.as_tensor(units), torch.as_tensor(queries)
    counts, _ = reference.active_units(units, queries, 50)
    assert np.array_equal(counts, tables.build(tu).query_counts(tq).numpy()), "the two lookups disagree"
    t = time_interleaved({"reference (numpy, per table)": lambda: reference.active_units(units, queries, 50),
                          "core CSR (build + query)": lambda: tables.build(tu).query_counts(tq)}, rounds=15)
    ref, csr = t["reference (numpy, per table)"].median, t["core CSR (build + query)"].median
    print(f"lookup of {batch} queries in L={L} tables of {n_units} units: reference {1e3 * ref:.2f} ms, core CSR "
          f"{1e3 * csr:.2f} ms ({ref / csr:.1f}x); counts equal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared 2-core box)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3, help="seeds per configuration (>= 2 for an interval)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seed = seed_everything()
    dev = str(pick_device(args.device))
    t0 = time.perf_counter()
    d = lab.DEFAULTS
    print(f"bench_hashing: seed {seed}, device {dev}, {torch.get_num_threads()} torch thread(s), "
          f"{args.epochs} epochs, {args.runs} seeds, K={d.K}, L={d.L}, pool_dim={d.pool_dim}")

    data = load("mnist1d", seed=seed)
    cfg = {"width": 1000, "epochs": args.epochs, "batch_size": 128, "lr": 3e-3}
    sweep = lab.fraction_sweep((0.05,), ("lsh", "random"), seeds=args.runs, data=data, device=dev, extra=(), **cfg)
    print()
    print(lab.results_table(sweep))
    m = sweep.first("lsh", 0.05).mults
    gap = sweep.paired_gap(("dense", None), ("lsh", 0.05))
    vs_random = sweep.paired_gap(("lsh", 0.05), ("random", 0.05))
    print()
    print(f"multiplication fraction at 5% active (layer {m.layer:.3f} + hashing {m.selection:.3f} "
          f"+ rebuilds {m.rebuild:.3f}) = {m.total:.3f} of dense (a count)   goal <= 0.10: "
          f"{'MET' if m.total <= 0.10 else 'MISSED'}")
    print(f"test accuracy dense - LSH: {gap.format('.1f', 100)} points, paired by seed   goal <= 1 point: "
          f"{verdict(gap, 0.01, 'below')}")
    print(f"test accuracy LSH - random: {vs_random.format('.1f', 100)} points   LSH better: "
          f"{verdict(vs_random, 0.0, 'above')}")
    ov = mean_interval([lab.overlap_with_topk(r.model, data.x_val.to(dev)).overlap for r in sweep.runs("lsh", 0.05)])
    print(f"overlap of the LSH pick with the exact top-k: {ov.format('.3f')} (chance 0.050)")

    print()
    print("wall time of one training step, batch 128, 5% active (15 interleaved rounds after 3 warm-up, device "
          "synchronized); ratios per round: median (range)")
    for n_in, width in ((40, 1000), (256, 4096)):
        t = lab.step_timings(width=width, n_in=n_in, batch_size=128, active_fraction=0.05, device=dev, rounds=15,
                             seed=seed)
        print(f"  {n_in:4d} -> {width:5d}: dense {1e3 * t.dense.median:7.2f} ms | LSH per-example "
              f"{1e3 * t.per_example.median:7.2f} ms = {t.ratio('per_example').format('.2f', unit='x')} dense | "
              f"LSH batch union {1e3 * t.union.median:7.2f} ms = {t.ratio('union').format('.2f', unit='x')} dense")
    print()
    bench_lookup(seed)
    print(f"\nbench_hashing done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
