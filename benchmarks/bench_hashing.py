"""Benchmark of lesson 09 (randomized hashing), all ratios measured in this one run.

1. The paper's regime (``paper_regime.LARGE``: row-sparse Adagrad, small batches, tables rebuilt on a thinning
   schedule, enough epochs that dense converges): LSH at 5% against dense, random 5%, the exact top-k oracle and a
   dense net of EQUAL compute; test accuracy mean ± 95% interval over the seeds, gaps paired by seed, verdicts.
2. A wide output layer, SLIDE's regime (``wide_output.LARGE``, 100,000 generated classes): LSH-sampled softmax
   against the dense softmax, random candidates and a dense layer of equal multiplications; precision@1 with
   intervals, multiplications with hashing and rebuilds counted (goal: <= 10% within 1 point of dense).
3. The wall-time crossover (``crossover.LARGE_SWEEP``): one training step of a growing output layer, dense BLAS vs
   the LSH layer (batch union), ratios per interleaved round, and the LSH step's parts.
4. The usual PyTorch recipe (Adam, batches of 128, ``--epochs``) at 5% active on MNIST-1D (40 -> 1000 -> 10): the
   hidden layer's multiplications (goal <= 10%) and the accuracy gap to dense (goal: within 1 point).
5. Wall time of one training step of the hidden layer, LSH per-example and batch-union vs dense, and the
   from-scratch lookup against the CSR tables of core ``lsh``.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--only paper,wide,crossover,adam,steps] [--quick] [--tune]
[--threads N] [--epochs E] [--runs R] [--device cpu|gpu|auto]``. ``--quick`` runs the notebook's DEFAULT sizes
instead of LARGE; ``--tune`` re-tunes the paper regime's learning rates on the validation split first. Goals that
are missed are printed as such; the exit status is 0 either way (these are measurements).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from lessons_lib import lsh
from lessons_lib.data import load
from lessons_lib.device import pick_device
from lessons_lib.hashing import crossover, lab, reference
from lessons_lib.hashing import paper_regime as pr
from lessons_lib.hashing import wide_output as wo
from lessons_lib.seeds import numpy_rng, seed_everything
from lessons_lib.stats import mean_interval, verdict
from lessons_lib.timing import threads, time_interleaved


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


SECTIONS = ("paper", "wide", "crossover", "adam", "steps")


def _claims(rows) -> None:
    for claim, source, measured, v in rows:
        print(f"  [{v or 'not measured'}] {claim}\n      {measured}   ({source})")


def bench_paper(data, quick: bool, tune: bool) -> None:
    cfg = pr.DEFAULT if quick else pr.LARGE
    if tune:
        cfg = dataclasses.replace(cfg, lrs=pr.tune_lr(data, cfg, progress=lambda m: print("  tune:", m)))
    print(f"\n== 1. the paper's regime ({'DEFAULT' if quick else 'LARGE'})")
    comp = pr.compare(data, cfg, progress=lambda m: print("  ", m))
    print(comp.table())
    _claims(pr.claims(comp))


def bench_wide(quick: bool) -> None:
    """The notebook's configuration with five seeds (the notebook runs two), then LARGE (more classes)."""
    configs = (("DEFAULT, 5 seeds", dataclasses.replace(wo.DEFAULT, runs=5)), ("LARGE", wo.LARGE))
    for name, cfg in configs[:1 + (not quick)]:
        print(f"\n== 2. a wide output layer, SLIDE's regime ({name}: {cfg.n_classes:,} classes)")
        with threads(2):
            cmp = wo.compare(cfg)
        print(cmp.table())
        _claims(cmp.claims())


def bench_crossover(quick: bool) -> None:
    cfg = crossover.DEFAULT_SWEEP if quick else crossover.LARGE_SWEEP
    print(f"\n== 3. wall-time crossover ({'DEFAULT' if quick else 'LARGE'} sweep)")
    cx = crossover.sweep(cfg)
    print(cx.table())
    _claims(cx.claims())


def bench_adam(data, args, dev: str) -> None:
    d = lab.DEFAULTS
    print(f"\n== 4. the usual PyTorch recipe: Adam, {args.epochs} epochs, {args.runs} seeds, K={d.K}, L={d.L}, "
          f"pool_dim={d.pool_dim}")
    cfg = {"width": 1000, "epochs": args.epochs, "batch_size": 128, "lr": 3e-3}
    sweep = lab.fraction_sweep((0.05,), ("lsh", "random"), seeds=args.runs, data=data, device=dev, extra=(), **cfg)
    print(lab.results_table(sweep))
    m = sweep.first("lsh", 0.05).mults
    gap = sweep.paired_gap(("dense", None), ("lsh", 0.05))
    vs_random = sweep.paired_gap(("lsh", 0.05), ("random", 0.05))
    print(f"multiplication fraction at 5% active (layer {m.layer:.3f} + hashing {m.selection:.3f} "
          f"+ rebuilds {m.rebuild:.3f}) = {m.total:.3f} of dense (a count)   goal <= 0.10: "
          f"{'MET' if m.total <= 0.10 else 'MISSED'}")
    print(f"test accuracy dense - LSH: {gap.format('.1f', 100)} points, paired by seed   goal <= 1 point: "
          f"{verdict(gap, 0.01, 'below')}")
    print(f"test accuracy LSH - random: {vs_random.format('.1f', 100)} points   LSH better: "
          f"{verdict(vs_random, 0.0, 'above')}")
    ov = mean_interval([lab.overlap_with_topk(r.model, data.x_val.to(dev)).overlap for r in sweep.runs("lsh", 0.05)])
    print(f"overlap of the LSH pick with the exact top-k: {ov.format('.3f')} (chance 0.050)")


def bench_steps(seed: int, dev: str) -> None:
    print("\n== 5. wall time of one training step, batch 128, 5% active (15 interleaved rounds after 3 warm-up, "
          "device synchronized); ratios per round: median (range)")
    for n_in, width in ((40, 1000), (256, 4096)):
        t = lab.step_timings(width=width, n_in=n_in, batch_size=128, active_fraction=0.05, device=dev, rounds=15,
                             seed=seed)
        print(f"  {n_in:4d} -> {width:5d}: dense {1e3 * t.dense.median:7.2f} ms | LSH per-example "
              f"{1e3 * t.per_example.median:7.2f} ms = {t.ratio('per_example').format('.2f', unit='x')} dense | "
              f"LSH batch union {1e3 * t.union.median:7.2f} ms = {t.ratio('union').format('.2f', unit='x')} dense")
    bench_lookup(seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="the notebook's DEFAULT sizes instead of LARGE")
    ap.add_argument("--tune", action="store_true", help="re-tune the paper regime's learning rates (validation)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared 2-core box)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the Adam recipe (section adam)")
    ap.add_argument("--runs", type=int, default=3, help="seeds per configuration of the Adam recipe (>= 2)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only {args.only!r}: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    seed = seed_everything()
    dev = str(pick_device(args.device))
    t0 = time.perf_counter()
    print(f"bench_hashing: seed {seed}, device {dev}, {torch.get_num_threads()} torch thread(s), sections {only}")
    data = load("mnist1d", seed=seed)
    if "paper" in only:
        bench_paper(data, args.quick, args.tune)
    if "wide" in only:
        bench_wide(args.quick)
    if "crossover" in only:
        bench_crossover(args.quick)
    if "adam" in only:
        bench_adam(data, args, dev)
    if "steps" in only:
        bench_steps(seed, dev)
    print(f"\nbench_hashing done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
