"""lessons_lib.memcap: peak RSS around a block, and a child process (capped or not) that runs a named function."""

import numpy as np
import pytest

from lessons_lib import memcap

needs_cap = pytest.mark.skipif(memcap.cap_supported() is not None, reason="needs Linux 4.7+ for RLIMIT_DATA")


def test_peak_rss_sees_an_allocation():
    with memcap.PeakRSS() as m:
        a = np.ones(100_000_000 // 8)
        del a
    assert m.growth >= 90e6
    with memcap.PeakRSS() as m:
        pass
    assert m.growth < 20e6


# Targets the child runs (this test module is importable as tests.test_memcap from the repository root).
def allocate(megabytes: int) -> dict:
    a = np.ones(int(megabytes * 1e6) // 8)
    return {"sum": float(a.sum())}


def fails() -> None:
    raise ValueError("nothing to do with memory")


def test_a_child_returns_what_its_target_returns():
    run = memcap.run_child(f"{__name__}:allocate", {"megabytes": 1}, timeout=60)
    assert run.ok and run.reported and run.value == {"sum": 125_000.0} and not run.memory_error
    if memcap.status_bytes("VmData") is not None:
        assert run.vmdata and run.vmhwm
    bad = memcap.run_child(f"{__name__}:fails", timeout=60)
    assert not bad.ok and bad.reported and not bad.memory_error and "ValueError: nothing to do" in bad.error
    with pytest.raises(ValueError, match="package.module:function"):
        memcap.run_child("no_colon_here")


@needs_cap
def test_a_capped_child_dies_of_memory_error_and_says_so():
    kwargs = {"megabytes": 200}
    ok = memcap.run_capped(f"{__name__}:allocate", kwargs, budget_bytes=400_000_000,
                           baseline_kwargs={"megabytes": 0}, timeout=60)
    assert ok.ok and ok.cap_bytes == ok.baseline_bytes + 400_000_000
    dies = memcap.run_capped(f"{__name__}:allocate", kwargs, budget_bytes=50_000_000,
                             baseline_kwargs={"megabytes": 0}, timeout=60)
    assert not dies.ok and dies.reported and dies.memory_error and "MemoryError" in dies.error
    starved = memcap.run_child(f"{__name__}:allocate", kwargs, cap_bytes=1_000_000, timeout=60)
    assert not starved.ok and not starved.reported  # could not even start Python
    with pytest.raises(ValueError, match="budget_bytes must be > 0"):
        memcap.run_capped(f"{__name__}:allocate", kwargs, budget_bytes=0)
