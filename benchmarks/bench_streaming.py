"""Benchmark for lesson 08 on the full 500k letters set: generation time, peak RSS growth while streaming one
epoch (goal <= 10% of the set's 392 MB), and streaming throughput vs in-memory (goal >= 80%). The disk path
streams through the library's reference.MemmapImages (lessons_lib/big_data/reference.py).

Prints ratios measured in this one run. Run by hand: ``make bench`` or
``.venv/bin/python benchmarks/bench_streaming.py [--n 500000] [--regenerate] [--workers 0]``.
The set is written under ``data/`` (392 MB + manifest) and reused by the notebook's size knob; without
``--regenerate`` an existing valid set is reused and its generation time is taken from that run's manifest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lessons_lib import letters as L
from lessons_lib.big_data import lab, reference
from lessons_lib.device import hardware_report
from lessons_lib.memcap import PeakRSS
from lessons_lib.models import mlp
from lessons_lib.seeds import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=L.MAX_IMAGES)
    ap.add_argument("--regenerate", action="store_true", help="generate the set again even if it is on disk")
    ap.add_argument("--workers", type=int, default=0)
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
    set_bytes = ls.nbytes
    print(f"\nletters set: {a.n:,} images, {set_bytes / 1e6:.0f} MB as uint8; generation "
          f"{gen:.1f} s ({a.n / gen:,.0f} images/s){'' if fresh else ' (from the manifest of an earlier run)'}; "
          f"sha256 verification {verify:.1f} s")

    lab.warmup(a.width, a.batch_size)
    runs = {}
    for source in ("disk", "memory"):
        seed_everything(seed)
        model = mlp(reference.PIXELS, [a.width], 10)
        with PeakRSS() as mem:
            train, val = lab.make_loaders(ls, source, batch_size=a.batch_size, workers=a.workers, seed=seed)
            h = lab.fit_stream(model, train, val, epochs=1, seed=seed)
            del train, val
        runs[source] = (h, mem.growth)
        print(f"{source:6}: one epoch {h.seconds[0]:.1f} s, {h.samples_per_s[0]:,.0f} samples/s, val acc "
              f"{h.val_acc[0]:.4f}, peak RSS growth {mem.growth / 1e6:.1f} MB")
    (hd, gd), (hm, gm) = runs["disk"], runs["memory"]
    ratio = hd.samples_per_s[0] / hm.samples_per_s[0]
    print(f"\nstreaming peak RSS growth / set size: {gd / set_bytes:.3f} (goal <= 0.10) -> "
          f"{'met' if gd / set_bytes <= 0.10 else 'NOT met'}")
    print(f"in-memory peak RSS growth / set size: {gm / set_bytes:.2f}")
    print(f"streaming / in-memory throughput: {ratio:.2f} (goal >= 0.80) -> {'met' if ratio >= 0.8 else 'NOT met'}")
    print(f"same validation accuracy: {np.isclose(hd.val_acc[0], hm.val_acc[0], atol=0.005)} "
          f"(|difference| {abs(hd.val_acc[0] - hm.val_acc[0]):.4f})")
    print(f"\nbenchmark wall time {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
