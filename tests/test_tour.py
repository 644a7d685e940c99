from lessons_lib.timing import Timing
from lessons_lib.tour import lab as tour


def test_noise_demo_mean_is_pulled_up_median_is_not():
    t = tour.noise_demo(repeats=100, burst_every=10, burst_seconds=0.003)
    # 10 of 100 calls carry a 3 ms sleep: the mean moves by ~0.3 ms, the median stays with the bulk
    assert t.mean > t.median + 0.0002
    assert t.median < 0.003


def test_sync_demo_on_cpu_agrees():
    r = tour.sync_demo("cpu", size=256, repeats=5)
    assert r.without_sync > 0 and r.with_sync > 0
    assert 0.3 < r.ratio < 3


def test_warmup_demo_shapes():
    w = tour.warmup_demo(size=64, n_first=2)
    assert len(w.first_calls) == 2 and len(w.steady.times) == 30


def test_experiment_runs_with_each_optimizer():
    for opt, lr in (("adam", 3e-3), ("sgd", 5e-2)):
        h = tour.experiment(epochs=3, optimizer=opt, lr=lr)
        assert len(h) == 3 and h.val_acc[-1] > 0.8 and h.config["lr"] == lr


def test_claims_verdicts():
    warm = tour.WarmupResult([0.01], Timing([0.005] * 3, []))
    noisy = Timing([1.0] * 9 + [10.0], [])
    flat = Timing([1.0] * 10, [])
    cpu = tour.SyncResult("cpu", 1.0, 1.0)
    holds = [r.holds for r in tour.claims(warm, cpu, noisy, None).rows]
    assert holds == [True, True, True, None]
    holds = [r.holds for r in tour.claims(warm, cpu, flat, tour.SyncResult("cuda", 0.001, 0.01)).rows]
    assert holds == [True, False, True, True]
