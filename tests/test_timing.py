import time

import pytest
import torch

from lessons_lib import timing
from lessons_lib.device import available_devices


def test_time_it_counts_warmup_and_repeats_and_returns_seconds_per_call():
    calls = []
    t = timing.time_it(lambda: (calls.append(1), time.sleep(0.002)), warmup=2, repeats=5, number=3)
    assert len(calls) == 2 + 5 * 3
    assert len(t.times) == 5 and len(t.warmup_times) == 2
    assert 0.0018 < t.median < 0.02
    assert t.iqr >= 0 and t.min <= t.median


def test_median_ignores_an_outlier_the_mean_does_not():
    t = timing.Timing(times=[1.0, 1.0, 1.0, 1.0, 100.0], warmup_times=[])
    assert t.median == 1.0 and t.mean == pytest.approx(20.8)


def test_timer_synchronizes(monkeypatch):
    synced = []
    monkeypatch.setattr(timing, "synchronize", lambda dev: synced.append(str(dev)))
    timing.time_it(lambda: None, device="cpu", warmup=1, repeats=2)
    assert synced == ["cpu"] * 6  # before and after each of the 3 timed blocks
    synced.clear()
    with timing.Stopwatch("cpu") as sw:
        pass
    assert synced == ["cpu", "cpu"] and sw.seconds >= 0


@pytest.mark.parametrize("dev", available_devices())
def test_time_it_on_every_device(dev):
    a = torch.randn(256, 256, device=dev)
    t = timing.time_it(lambda: a @ a, device=dev, warmup=1, repeats=3)
    assert t.median > 0 and t.device.startswith(dev)


def test_bad_arguments():
    with pytest.raises(ValueError):
        timing.time_it(lambda: None, repeats=0)


@pytest.mark.parametrize("s, text", [(1.5e-6, "1.5 µs"), (0.0123, "12.3 ms"), (4.2, "4.2 s"), (250e-3, "250 ms")])
def test_format_seconds(s, text):
    assert timing.format_seconds(s) == text
