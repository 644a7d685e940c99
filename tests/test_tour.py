from lessons_lib.stats import median_range
from lessons_lib.timing import Timing
from lessons_lib.tour import lab as tour


def test_noise_demo_pulls_the_mean_not_the_median():
    n = tour.noise_demo(calls=100, repeats=3, burst_every=10, burst_seconds=0.003)
    assert len(n.noisy) == len(n.quiet) == 3 and all(len(t.times) == 100 for t in n.noisy + n.quiet)
    # 10 of 100 calls carry a 3 ms sleep: the mean moves by ~0.3 ms, the median stays with the bulk
    assert all(t.mean > t.median + 0.0002 for t in n.noisy)
    assert n.mean_over_median.low > 1.2 and n.mean_shift.low > 1.2
    assert n.median_shift.high < 1.5 and n.pooled.median < 0.003 and len(n.pooled.times) == 300


def test_sync_demo_on_cpu_agrees():
    r = tour.sync_demo("cpu", size=128, calls=5, repeats=3)
    assert len(r.with_sync) == len(r.without_sync) == 3 and r.calls == 5
    assert min(r.without_sync) > 0 and min(r.with_sync) > 0
    assert 0.3 < r.ratios.median < 3


def test_warmup_is_measured_in_fresh_processes():
    w = tour.warmup_demo(size=64, n_first=2, repeats=2)
    assert len(w.fresh_first) == len(w.fresh_steady) == len(w.warm_first) == 2
    assert all(len(f) == 2 for f in w.fresh_first)
    # a process where nothing has run pays its one-off costs on the first call: far more than 10% here
    assert w.ratios.low > 1.1 and w.ratios.n == 2


def test_experiment_runs_with_each_optimizer():
    for opt, lr in (("adam", 3e-3), ("sgd", 5e-2)):
        h = tour.experiment(epochs=3, optimizer=opt, lr=lr)
        assert len(h) == 3 and h.val_acc[-1] > 0.8 and h.config["lr"] == lr


def test_within_is_three_valued():
    assert tour.within(median_range([1.0, 1.1]), 0.8, 1.25) == "holds"
    assert tour.within(median_range([1.0, 1.3]), 0.8, 1.25) == "inconclusive"
    assert tour.within(median_range([1.3, 1.4]), 0.8, 1.25) == "does not hold"
    assert tour.within(median_range([0.5, 0.7]), 0.8, 1.25) == "does not hold"


def _noise(noisy_ms, quiet_ms):
    t = lambda ms: Timing([v / 1e3 for v in ms], [])  # noqa: E731
    return tour.NoiseResult([t(m) for m in noisy_ms], [t(m) for m in quiet_ms], 25, 0.004)


def test_claims_verdicts_follow_the_repeats():
    warm = tour.WarmupResult([[0.01], [0.02]], [0.005, 0.005], [0.005, 0.006], [0.005, 0.005])
    noisy = _noise([[1.0] * 9 + [10.0]] * 3, [[1.0] * 10] * 3)
    cpu = tour.SyncResult("cpu", [1.0, 1.0], [1.0, 1.1])
    rows = tour.claims(warm, cpu, noisy, None).rows
    assert [r.verdict for r in rows] == ["holds", "holds", "holds", "holds", "not measurable"]
    assert "fresh processes: 3.00x (range 2.00–4.00x, 2 repeats)" in rows[0].measured
    # one repeat on each side of a threshold: inconclusive, never a verdict another repeat could flip
    warm_mixed = tour.WarmupResult([[0.01], [0.005]], [0.005, 0.005], [0.005], [0.005])
    flat_and_noisy = _noise([[1.0] * 10, [1.0] * 9 + [10.0]], [[1.0] * 10] * 2)
    slow_median = _noise([[1.2] * 10, [1.0] * 10], [[1.0] * 10] * 2)
    gpu = tour.SyncResult("cuda", [0.001, 0.001], [0.01, 0.0015])
    v = [r.verdict for r in tour.claims(warm_mixed, cpu, flat_and_noisy, gpu).rows]
    assert v == ["inconclusive", "inconclusive", "holds", "holds", "inconclusive"]
    assert tour.claims(warm, cpu, slow_median, None).rows[2].verdict == "inconclusive"
    flat = _noise([[1.0] * 10] * 2, [[1.0] * 10] * 2)
    slow_sync = tour.SyncResult("cpu", [1.0, 1.0], [2.0, 2.0])
    v = [r.verdict for r in tour.claims(tour.WarmupResult([[0.005]], [0.005], [0.005], [0.005]), slow_sync, flat,
                                        tour.SyncResult("cuda", [0.01], [0.01])).rows]
    assert v == ["does not hold", "does not hold", "holds", "does not hold", "does not hold"]

