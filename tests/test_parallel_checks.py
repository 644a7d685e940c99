"""Lesson 10's checks: the reference passes, a stub is "not written", a crash is named, and each typical mistake
in average_gradients (run in 2 real gloo processes) gets the hint that names it. The learner's functions are made
the way a notebook makes them: source compiled under an ipykernel cell's file name, known only to linecache."""

from __future__ import annotations

import hashlib
import linecache
import textwrap
from dataclasses import replace

import pytest
import torch

from lessons_lib.parallel import checks, lab, reference


def cell(source: str, name: str = "average_gradients"):
    """The function ``name`` defined by a notebook cell holding ``source`` (IPython's way: a cell file name that
    exists only in linecache, and the notebook's imports in its globals)."""
    source = textwrap.dedent(source)
    filename = f"/tmp/ipykernel_4242/{hashlib.sha1(source.encode()).hexdigest()[:10]}.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    ns = {"__name__": "__main__", "torch": torch, "dist": torch.distributed}
    exec(compile(source, filename, "exec"), ns)
    return ns[name]


RIGHT = """
def average_gradients(model, world_size):
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size
"""

BUGS = {  # name: (the learner's cell, a distinctive part of the hint it must get)
    "no division": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad)
        """, "summed but did not divide by the world size (gradients are world_size× too large)"),
    "divided twice": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                p.grad /= world_size
        """, "divided twice"),
    "parameters": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.data)
                p.data /= world_size
        """, "averaged the parameters instead of the gradients"),
    "copy": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                g = p.grad.clone()
                dist.all_reduce(g)
                g /= world_size
        """, "called all_reduce on a copy (the .grad was not updated in place)"),
    "max": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.MAX)
                p.grad /= world_size
        """, "used ReduceOp.MAX"),
    "product": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.PRODUCT)
        """, "used ReduceOp.PRODUCT"),
    "one parameter skipped": ("""
        def average_gradients(model, world_size):
            for p in list(model.parameters())[1:]:
                dist.all_reduce(p.grad)
                p.grad /= world_size
        """, "one parameter skipped: 0.weight"),
    "reduce to rank 0": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.reduce(p.grad, dst=0)
                p.grad /= world_size
        """, "only rank 0's gradients were reduced"),
    "division on rank 0 only": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad)
                if dist.get_rank() == 0:
                    p.grad /= world_size
        """, "only rank 0's gradients were reduced"),
    "all_reduce on rank 0 only (hangs)": ("""
        def average_gradients(model, world_size):
            if dist.get_rank() == 0:
                for p in model.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
        """, "not every process called all_reduce (the collective waits forever)"),
    "changes the weights": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world_size
                p.data.mul_(2)
        """, "changed the parameters"),
    "never averages": ("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                p.grad.mul_(1)
        """, "no all_reduce was called"),
}


def test_the_reference_passes(capsys):
    r = checks.check_average_gradients(reference.average_gradients)
    assert r.status == "correct", r.message
    assert "Correct." in capsys.readouterr().out


def test_a_notebook_cell_passes_and_so_does_reduce_op_avg():
    assert checks.check_average_gradients(cell(RIGHT)).status == "correct"
    avg = cell("""
        def average_gradients(model, world_size):
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        """)
    assert checks.check_average_gradients(avg).status == "correct"  # gloo has AVG in the torch this course pins


def test_a_flat_buffer_is_right_too():
    flat = cell("""
        def average_gradients(model, world_size):
            grads = [p.grad for p in model.parameters()]
            buf = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(buf)
            buf /= world_size
            i = 0
            for g in grads:
                g.copy_(buf[i: i + g.numel()].view_as(g))
                i += g.numel()
        """)
    assert checks.check_average_gradients(flat).status == "correct"


def test_a_stub_is_not_written():
    stub = cell("""
        def average_gradients(model, world_size):
            # YOUR CODE HERE
            raise NotImplementedError('for each parameter: all_reduce its .grad (SUM), then divide by world_size')
        """)
    r = checks.check_average_gradients(stub)
    assert r.status == "not_written" and "all_reduce its .grad" in r.message
    assert checks.check_average_gradients(...).status == "not_written"


def test_a_crash_is_named_with_the_learners_line():
    crash = cell("""
        def average_gradients(model, world_size):
            for p in model.params():
                pass
        """)
    r = checks.check_average_gradients(crash)
    assert r.status == "wrong"
    assert "raised AttributeError" in r.message and "'Sequential' object has no attribute 'params'" in r.message
    assert "line 3 of your cell: `for p in model.params():`" in r.message


@pytest.mark.parametrize("bug", list(BUGS))
def test_each_typical_mistake_gets_its_hint(bug):
    source, hint = BUGS[bug]
    r = checks.check_average_gradients(cell(source))
    assert r.status == "wrong"
    assert hint in r.message, r.message


def test_a_function_that_cannot_be_sent_is_refused_clearly():
    r = checks.check_average_gradients(lambda model, world_size: None)
    assert r.status == "wrong" and "cannot be sent to the worker processes" in r.message and "lambda" in r.message
    uses_net = cell("""
        net = torch.nn.Linear(2, 2)

        def average_gradients(model, world_size):
            for p in net.parameters():
                dist.all_reduce(p.grad)
        """)
    r = checks.check_average_gradients(uses_net)
    assert r.status == "wrong" and "reads `net` (Linear) from your notebook" in r.message


def test_a_function_that_never_returns_is_stopped():
    sleeps = cell("""
        import time

        def average_gradients(model, world_size):
            time.sleep(600)
        """)
    r = checks.check_average_gradients(sleeps)
    assert r.status == "wrong" and f"did not return within {checks.TIMEOUT_S:.0f} s" in r.message


@pytest.mark.parametrize("seed", ["1", "12345"])
def test_checks_hold_for_any_seed(monkeypatch, seed):
    monkeypatch.setenv("LESSONS_SEED", seed)
    assert checks.check_average_gradients(reference.average_gradients).status == "correct"
    source, hint = BUGS["no division"]
    assert hint in checks.check_average_gradients(cell(source)).message


# --- answers read off the lesson's objects -----------------------------------------------------------------
@pytest.fixture(scope="module")
def nets():
    from lessons_lib.data import load

    data = load("mnist1d", seed=0)
    dense = lab.UnitMajorNet(40, 1000, 10, update="dense", seed=0)
    sparse = lab.UnitMajorNet(40, 1000, 10, update="sparse", seed=0)
    for net in (dense, sparse):
        torch.nn.functional.cross_entropy(net(data.x_train[:1]), data.y_train[:1]).backward()
    return dense, sparse


def test_dense_bytes_from_the_measured_net(nets):
    dense, _ = nets
    assert checks.check_dense_bytes((1000 * 41 + 1000 * 10 + 10) * 4, dense)
    for wrong, hint in [(1000 * 41 + 1000 * 10 + 10, "each float32 takes 4 bytes"),
                        ((1000 * 40 + 1000 * 10 + 10) * 4, "also holds its bias"),
                        ((1000 * 41 + 1000 * 10) * 4, "the output bias travels too"),
                        (12345, "count the hidden rows")]:
        r = checks.check_dense_bytes(wrong, dense)
        assert r.status == "wrong" and hint in r.message
    assert checks.check_dense_bytes(..., dense).status == "not_written"
    with pytest.raises(ValueError, match="backward pass"):
        checks.check_dense_bytes(1, lab.UnitMajorNet(4, 8, 2))


def test_sparse_bytes_from_the_measured_net(nets):
    _, sparse = nets
    assert sparse.last_units == 50
    assert checks.check_sparse_bytes(50 * (8 + 41 * 4) + 50 * (8 + 10 * 4) + 10 * 4, sparse)
    for wrong, hint in [(50 * 41 * 4 + 50 * 10 * 4 + 40, "also sends each row's index"),
                        (50 * (4 + 41 * 4) + 50 * (4 + 10 * 4) + 40, "int64: 8 bytes each"),  # int32 indices
                        (50 * 8 + 50 * 41 * 4 + 50 * 10 * 4 + 40, "sends its own row indices"),  # one table's
                        (50 * (8 + 41 * 4) + 50 * (8 + 10 * 4), "the output bias is dense"),
                        ((1000 * 41 + 1000 * 10 + 10) * 4, "that is the dense gradient")]:
        r = checks.check_sparse_bytes(wrong, sparse)
        assert r.status == "wrong" and hint in r.message, (wrong, r.message)


def test_examples_per_process_from_the_run():
    from lessons_lib.history import History

    cfg = lab.RunConfig(mode="ddp", processes=2, batch_size=64)
    run = lab.ParallelResult(cfg, History(), [reference.RankStats(r, steps=62, examples=62 * 32) for r in (0, 1)])
    assert checks.check_examples_per_process(32, run)
    assert "global batch" in checks.check_examples_per_process(64, run).message
    assert "split one global batch" in checks.check_examples_per_process(128, run).message
    four = lab.ParallelResult(replace(cfg, processes=4), History(),
                              [reference.RankStats(r, steps=62, examples=62 * 16) for r in range(4)])
    assert checks.check_examples_per_process(16, four) and not checks.check_examples_per_process(32, four)
