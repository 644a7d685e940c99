"""Outgrowing one machine (lesson 10): two torchrun "nodes" on this box train to the same weights as one node;
DistributedSampler shards; a process killed mid-epoch is restarted by torchrun and resumes from the checkpoint
with the same final weights; no_sync accumulation; ZeRO's ~1/N optimizer state. Real processes, gloo on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lessons_lib.parallel import elastic

ARGS = ["--epochs", "2", "--width", "32", "--batch-size", "64", "--seed", "3"]


def _run(tmp_path_factory, name: str, *extra: str, nodes: int = 1, procs: int = 2, restarts: int = 0):
    out = tmp_path_factory.mktemp(name)
    done = elastic.run_torchrun([*ARGS, "--out", str(out), *extra], nodes=nodes, procs_per_node=procs,
                                max_restarts=restarts, timeout=600)
    for c in done:
        assert c.returncode == 0, f"{name}: torchrun exited {c.returncode}\n{c.stderr[-3000:]}"
    summary = json.loads((out / elastic.SUMMARY).read_text())
    weights = torch.load(out / elastic.FINAL, weights_only=True)
    return summary, weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        "one_node": _run(tmp_path_factory, "one"),
        "two_nodes": _run(tmp_path_factory, "two", nodes=2, procs=1),
        "killed": _run(tmp_path_factory, "killed", "--crash-rank", "1", "--crash-epoch", "1", "--crash-step", "10",
                       nodes=2, procs=1, restarts=1),  # two machines, one of them loses its process
        "killed_one_node": _run(tmp_path_factory, "killed1", "--crash-rank", "0", "--crash-epoch", "1",
                                "--crash-step", "5", restarts=1),
        "accumulate4": _run(tmp_path_factory, "acc", "--accumulate", "4"),
        "zero": _run(tmp_path_factory, "zero", "--zero"),
    }


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the sampler, no processes needed ---------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(1000, 2), (999, 4), (10, 3)])
def test_an_epochs_shards_are_disjoint_and_cover_the_data(n, world):
    dropped = elastic.epoch_shards(n, world, epoch=2, seed=0, drop_last=True)
    flat = [i for s in dropped for i in s]
    assert len(flat) == len(set(flat)) == n - n % world  # no overlap; only the tail that does not divide is dropped
    padded = elastic.epoch_shards(n, world, epoch=2, seed=0, drop_last=False)
    flat = [i for s in padded for i in s]
    assert set(flat) == set(range(n))  # everything, and (-n) % world examples twice
    assert len(flat) - len(set(flat)) == (-n) % world
    assert len({len(s) for s in padded}) == 1  # every process takes the same number of steps


def test_without_set_epoch_every_epoch_repeats_the_first_order():
    e0 = elastic.epoch_shards(100, 2, epoch=0, seed=0, set_epoch=False)
    assert elastic.epoch_shards(100, 2, epoch=5, seed=0, set_epoch=False) == e0
    assert elastic.epoch_shards(100, 2, epoch=5, seed=0) != elastic.epoch_shards(100, 2, epoch=0, seed=0)


def test_no_sync_accumulation_equals_the_large_batch_gradient():
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lessons_lib import processes

    torch.manual_seed(0)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    nn.functional.cross_entropy(net(x), y).backward()  # the large batch, one process, no DDP
    big = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    port = processes.free_port()
    with processes.process_group("gloo", f"tcp://127.0.0.1:{port}", 0, 1, 30):
        def accumulate() -> tuple[list[torch.Tensor], int]:
            calls = []
            ddp = DDP(net)
            ddp.register_comm_hook(calls, _record)  # world size 1: the "all-reduce" returns the bucket as it is
            for i, (xb, yb) in enumerate(zip(x.chunk(4), y.chunk(4))):
                ctx = ddp.no_sync() if i < 3 else torch.enable_grad()
                with ctx:
                    (nn.functional.cross_entropy(ddp(xb), yb) / 4).backward()
            return [p.grad.clone() for p in net.parameters()], len(calls)

        acc, allreduces = accumulate()
    assert allreduces == 1  # one bucket, communicated once for 4 micro-batches
    for a, b in zip(acc, big):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _record(calls, bucket):  # DDP inspects a hook's annotations, so it has none
    calls.append(bucket.buffer().numel())
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


# --- real torchrun jobs ---------------------------------------------------------------------------------------
def test_two_nodes_train_to_the_same_weights_as_one_node(runs):
    one, w_one = runs["one_node"]
    two, w_two = runs["two_nodes"]
    assert _same(w_one, w_two)
    assert sorted(s["rank"] for s in two) == [0, 1]
    assert [s["local_rank"] for s in two] == [0, 0]  # each "machine" has its own local rank 0
    assert sorted(s["local_rank"] for s in one) == [0, 1]


def test_a_process_killed_mid_epoch_resumes_from_the_checkpoint_with_the_same_weights(runs):
    killed, w_killed = runs["killed"]
    _, w_one = runs["one_node"]
    assert all(s["restarts"] == 1 and s["start_epoch"] == 1 for s in killed)  # epoch 0 kept, epoch 1 redone
    assert _same(w_killed, w_one)  # bitwise: same data order (seed, epoch), same states, deterministic CPU
    killed1, w_killed1 = runs["killed_one_node"]  # rank 0 (the checkpoint writer) killed, on one machine
    assert all(s["restarts"] == 1 and s["start_epoch"] == 1 for s in killed1) and _same(w_killed1, w_one)


def test_accumulation_sends_a_quarter_of_the_bytes_per_example(runs):
    one, _ = runs["one_node"]
    acc, _ = runs["accumulate4"]
    per_example = [s["allreduce_bytes"] / s["examples"] for s in one]
    per_example4 = [s["allreduce_bytes"] / s["examples"] for s in acc]
    for a, b in zip(per_example, per_example4):
        assert b == pytest.approx(a / 4, rel=0.05)


def test_zero_keeps_about_half_the_optimizer_state_per_process_and_trains_alike(runs):
    one, w_one = runs["one_node"]
    zero, w_zero = runs["zero"]
    full = one[0]["optimizer_state_bytes"]
    shares = [s["optimizer_state_bytes"] for s in zero]
    assert sum(shares) == pytest.approx(full, rel=0.01)
    assert max(shares) <= 0.75 * full  # ~1/2 each (ZeRO partitions whole parameters, so not exactly half)
    for k in w_one:
        torch.testing.assert_close(w_zero[k], w_one[k], rtol=1e-4, atol=1e-5)


# --- the alpha-beta model ----------------------------------------------------------------------------------
def test_fit_recovers_alpha_and_beta_from_ring_timings():
    from lessons_lib.parallel import comm_model as cm

    alpha, beta = 40e-6, 2e9
    pts = [cm.AllReduceTiming(n, b, cm.ring_seconds(n, b, beta, alpha)) for n in (2, 3, 4) for b in (4, 4096, 1 << 22)]
    f = cm.fit(pts)
    assert f.alpha == pytest.approx(alpha, rel=1e-6) and f.beta == pytest.approx(beta, rel=1e-6)
    assert f.rms_relative_error < 1e-9
    # the formula itself: 2 processes, 1 GB at 1 GB/s: each sends half, twice -> 1 s, plus 2 latencies
    assert cm.ring_seconds(2, 1e9, 1e9, 1e-3) == pytest.approx(1.0 + 2e-3)
    assert cm.ring_seconds(1, 1e9, 1e9, 1e-3) == 0.0


def test_predictions_show_where_compute_stops_hiding_communication():
    from lessons_lib.parallel import comm_model as cm

    rows = cm.predict(params=1e9, tokens_per_gpu=8192, flops_per_s=300e12)
    assert {r.gpus for r in rows} == {8, 64, 512}
    assert not any("NVLink" in r.link and r.gpus > 8 for r in rows)  # NVLink does not leave the server
    eth = cm.LINKS[2]
    tokens = cm.break_even_tokens(1e9, 2, eth, 64, 300e12)
    at = cm.predict(params=1e9, tokens_per_gpu=tokens, flops_per_s=300e12, gpus=(64,), links=(eth,))[0]
    assert at.comm_s == pytest.approx(at.compute_s, rel=1e-9) and at.efficiency == pytest.approx(1.0)
    below = cm.predict(params=1e9, tokens_per_gpu=tokens / 2, flops_per_s=300e12, gpus=(64,), links=(eth,))[0]
    assert not below.hidden and below.efficiency == pytest.approx(0.5, rel=1e-6)
    # sparse all-gather beats the dense ring only while n * f < 2
    f = 0.05
    for n, wins in ((8, True), (39, True), (41, False), (512, False)):
        assert (cm.sparse_allgather_seconds(n, 1e9, f, 1e9, 0, 0) < cm.ring_seconds(n, 1e9, 1e9, 0)) == wins


def test_measured_allreduce_times_are_real_and_grow_with_size():
    from lessons_lib.parallel import comm_model as cm

    t = cm.measure((2,), sizes_bytes=(64, 1 << 23), repeats=3)
    assert [x.nbytes for x in t] == [64, 1 << 23] and all(x.seconds > 0 for x in t)
    assert t[1].seconds > t[0].seconds


def test_devices_follow_the_local_rank_not_the_global_rank(monkeypatch):
    """On the second machine RANK 1 is LOCAL_RANK 0: cuda:RANK would name a GPU that does not exist there."""
    import inspect

    from lessons_lib.parallel import lab

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a 1-GPU machine of a 2-machine job
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    for k, v in {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    assert elastic.who_am_i() == (1, 0, 2, torch.device("cuda:0"))
    src = inspect.getsource(lab.ddp_worker)  # the lesson's own DDP worker picks its GPU the same way
    assert "LOCAL_RANK" in src and 'f"cuda:{rank}"' not in src
