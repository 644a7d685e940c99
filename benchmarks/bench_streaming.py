"""Benchmark for lesson 08 on the full 500k letters set: generation time, then rounds of one epoch per path (from
memory, from disk with the file in the page cache, from disk after dropping it from the page cache): peak RSS
growth while streaming (goal <= 10% of the set's 392 MB) and streaming throughput vs in-memory (goal >= 80%), each
as median and range over the rounds with a three-valued verdict; and the seed's naive path (float64 + split copies)
measured at 500k in a fresh process (needs ~7 GB free; skipped with the reason otherwise). The disk path streams
through the library's reference.MemmapImages (lessons_lib/big_data/reference.py).

Run by hand: ``make bench`` or
``.venv/bin/python benchmarks/bench_streaming.py [--n 500000] [--rounds 3] [--regenerate] [--no-cold] [--no-naive]``.
The set is written under ``data/`` (392 MB + manifest, ``letters_v2_*``) and reused by the notebook's size knob;
without ``--regenerate`` an existing valid set is reused and its generation time is taken from that run's manifest.
"""

from __future__ import annotations

import argparse
import time

import torch

from lessons_lib import letters as L
from lessons_lib.big_data import measure
from lessons_lib.device import hardware_report
from lessons_lib.seeds import seed_everything
from lessons_lib.stats import verdict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=L.MAX_IMAGES)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of one epoch per path (median and range)")
    ap.add_argument("--regenerate", action="store_true", help="generate the set again even if it is on disk")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold page-cache epochs")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive path (float64 + split) at this size")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    a = ap.parse_args()
    t_all = time.perf_counter()
    torch.set_num_threads(1)  # one intra-op thread: steadier on a shared machine; the ratio is what counts
    print(hardware_report())
    seed = seed_everything(0)

    p = L.paths(a.n, seed)
    fresh = a.regenerate or not p.manifest.exists()
    if fresh:
        t0 = time.perf_counter()
        m = L.generate_letters(a.n, seed, overwrite=True, progress=True)
        gen = time.perf_counter() - t0
    else:
        m = L.generate_letters(a.n, seed)
        gen = m["seconds"]
    t0 = time.perf_counter()
    ls = L.load_letters(a.n, seed, verify=True)
    verify = time.perf_counter() - t0
    print(f"\nletters set v{L.VERSION}: {a.n:,} images, {ls.nbytes / 1e6:.0f} MB as uint8; generation "
          f"{gen:.1f} s ({a.n / gen:,.0f} images/s){'' if fresh else ' (from the manifest of an earlier run)'}; "
          f"sha256 verification {verify:.1f} s\n")

    paths = measure.measure_paths(ls, rounds=a.rounds, cold=not a.no_cold, width=a.width, batch_size=a.batch_size,
                                  seed=seed, progress=True)
    print("\n" + paths.table())
    frac = paths.fraction(measure.WARM)
    print(f"\nstreaming peak RSS growth / set size: {frac.format('.3f')} (goal <= 0.10) -> "
          f"{verdict(frac, 0.10, 'below')}")
    print(f"in-memory peak RSS growth / set size: {paths.fraction(measure.MEMORY).format('.2f')}")
    for src in (measure.WARM, measure.COLD):
        r = paths.ratio(src)
        if r is not None:
            print(f"{src} / in-memory throughput: {r.format('.2f')} (goal >= 0.80) -> {verdict(r, 0.8, 'above')}")
    if paths.cold_skipped:
        print(f"cold page cache: not measured ({paths.cold_skipped})")
    if not a.no_naive:
        naive = measure.naive_peak(ls, seed)
        if naive.growth is None:
            print(f"\nnaive path at {a.n:,} images: not run ({naive.skipped})")
        else:
            print(f"\nnaive path at {a.n:,} images (float64 {naive.array_bytes / 1e9:.2f} GB + shuffled split, fresh "
                  f"process): peak RSS growth {naive.growth / 1e9:.2f} GB, {'more' if naive.growth > 8e9 else 'less'} "
                  "than the seed's 8 GB machine")
    print(f"\nbenchmark wall time {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
