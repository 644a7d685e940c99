"""Benchmark of lesson 09 (randomized hashing), all ratios measured in this one run.

1. At 5% active units on MNIST-1D (40 -> 1000 -> 10): the hidden layer's multiplications with hashing and table
   rebuilds counted, as a fraction of the dense layer's (goal <= 10%), and the test-accuracy gap to the dense
   network (goal: within 1 point).
2. Wall time of one training step (forward, backward, Adam), LSH per-example and LSH batch-union vs the batched
   dense layer, for the lesson's layer and a wider one.
3. The from-scratch (numpy) lookup of ``lessons_lib.hashing.reference`` against the CSR tables of core ``lsh``
   on the same codes: equal counts, and the time of each.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--threads N] [--epochs E] [--device cpu|gpu|auto]``.
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
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seed = seed_everything()
    dev = str(pick_device(args.device))
    t0 = time.perf_counter()
    d = lab.DEFAULTS
    print(f"bench_hashing: seed {seed}, device {dev}, {torch.get_num_threads()} torch thread(s), "
          f"{args.epochs} epochs, K={d.K}, L={d.L}, pool_dim={d.pool_dim}")

    data = load("mnist1d", seed=seed)
    cfg = {"width": 1000, "epochs": args.epochs, "batch_size": 128, "lr": 3e-3}
    dense = lab.run_one("dense", 1.0, data=data, device=dev, seed=seed, **cfg)
    lsh_run = lab.run_one("lsh", 0.05, data=data, device=dev, seed=seed, **cfg)
    rnd = lab.run_one("random", 0.05, data=data, device=dev, seed=seed, **cfg)
    print()
    print(lab.results_table([dense, lsh_run, rnd]))
    m = lsh_run.mults
    gap = dense.test_acc - lsh_run.test_acc
    print()
    print(f"multiplication fraction at 5% active (layer {m.layer:.3f} + hashing {m.selection:.3f} "
          f"+ rebuilds {m.rebuild:.3f}) = {m.total:.3f} of dense   goal <= 0.10: "
          f"{'MET' if m.total <= 0.10 else 'MISSED'}")
    print(f"test accuracy: LSH {lsh_run.test_acc:.3f}, dense {dense.test_acc:.3f}, random {rnd.test_acc:.3f}; "
          f"LSH - dense = {-100 * gap:+.1f} points   goal >= -1 point: {'MET' if gap <= 0.01 else 'MISSED'}")
    ov = lab.overlap_with_topk(lsh_run.model, data.x_val.to(dev))
    print(f"overlap of the LSH pick with the exact top-k: {ov.overlap:.3f} (chance {ov.chance:.3f}) = "
          f"{ov.overlap / ov.chance:.1f}x chance")

    print()
    print("wall time of one training step, batch 128, 5% active (median of 15 after 3 warm-up, device synchronized)")
    for n_in, width in ((40, 1000), (256, 4096)):
        t = lab.step_timings(width=width, n_in=n_in, batch_size=128, active_fraction=0.05, device=dev, repeats=15,
                             seed=seed)
        dm = t.dense.median
        print(f"  {n_in:4d} -> {width:5d}: dense {1e3 * dm:7.2f} ms | LSH per-example "
              f"{1e3 * t.per_example.median:7.2f} ms = {t.per_example.median / dm:5.2f}x dense | "
              f"LSH batch union {1e3 * t.union.median:7.2f} ms = {t.union.median / dm:5.2f}x dense")
    print()
    bench_lookup(seed)
    print(f"\nbench_hashing done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
