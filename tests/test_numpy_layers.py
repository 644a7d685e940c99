"""lessons_lib.numpy_layers: the generic layers' forward/backward pairs against centred differences and torch;
no lesson code in core."""

import math

import numpy as np
import pytest
import torch

from lessons_lib.numpy_layers import (
    gradient_check_errors,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_check_all_layers(seed):
    errors = gradient_check_errors(seed=seed)
    assert set(errors) == {"linear dx", "linear dw", "linear db", "relu dx", "softmax-CE dlogits"}
    for name, err in errors.items():
        assert err < 1e-6, (name, err)


def test_gradient_check_catches_a_wrong_backward():
    from lessons_lib.gradcheck import numerical_gradient_array, relative_error

    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((4, 3))
    _, cache = linear_forward(x, w, b)
    num = numerical_gradient_array(lambda: linear_forward(x, w, b)[0], w, dout)
    assert relative_error(linear_backward(dout, cache)[1], num) < 1e-7
    assert relative_error(x.T @ dout / len(x), num) > 1e-2  # averaged over the batch instead of summed


def test_layers_match_torch():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    y = rng.integers(0, 3, 6)
    a, c1 = linear_forward(x, w, b)
    h, c2 = relu_forward(a)
    loss, c3 = softmax_cross_entropy_forward(h, y)
    dh = softmax_cross_entropy_backward(c3)
    dx, dw, db = linear_backward(relu_backward(dh, c2), c1)
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    tl = torch.nn.functional.cross_entropy(torch.relu(tx @ tw + tb), torch.tensor(y))
    tl.backward()
    assert math.isclose(loss, tl.item(), rel_tol=1e-12)
    for mine, ref in ((dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_ce_uniform_logits_and_stability():
    loss, _ = softmax_cross_entropy_forward(np.zeros((5, 10)), np.arange(5))
    assert math.isclose(loss, math.log(10), rel_tol=1e-12)
    loss, cache = softmax_cross_entropy_forward(np.array([[1000.0, 0.0]]), np.array([0]))
    assert loss == pytest.approx(0.0, abs=1e-12) and np.isfinite(softmax_cross_entropy_backward(cache)).all()


def test_linear_shape_errors():
    with pytest.raises(ValueError, match="d_in"):
        linear_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5))


def test_core_layers_import_no_lesson_code():
    import ast
    from pathlib import Path

    import lessons_lib.numpy_layers as nl

    tree = ast.parse(Path(nl.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "numpy", "gradcheck"}, imported
    assert not hasattr(nl, "dropout_forward")
