"""lessons_lib.numpy_layers: forward/backward pairs checked against centred differences and torch."""

import math

import numpy as np
import pytest
import torch

from lessons_lib.numpy_layers import (
    dropout_backward,
    dropout_forward,
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
    assert set(errors) >= {"linear dx", "linear dw", "relu dx", "softmax-CE dlogits", "dropout dx", "net dW1"}
    for name, err in errors.items():
        assert err < 1e-6, (name, err)


def test_gradient_check_catches_a_wrong_backward():
    from lessons_lib.gradcheck import numerical_gradient_array, relative_error

    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    out, (keep, scale) = dropout_forward(x, 0.5, rng=rng)
    wrong = dout * keep  # forgot the 1/(1-p) scale
    num = numerical_gradient_array(lambda: x * keep * scale, x, dout)
    assert relative_error(wrong, num) > 1e-2


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


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_forward_statistics(p):
    x = np.ones((512, 512))
    out, (keep, scale) = dropout_forward(x, p, rng=np.random.default_rng(3))
    assert scale == pytest.approx(1 / (1 - p))
    assert set(np.unique(out)) <= {0.0, 1 / (1 - p)}
    n = x.size
    assert abs((out == 0).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)  # inverted: the mean is kept
    dout = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_array_equal(dropout_backward(dout, (keep, scale)), dout * keep * scale)


def test_dropout_identity_cases_and_bad_p():
    x = np.arange(12.0).reshape(3, 4)
    g = np.random.default_rng(0)
    state = g.bit_generator.state
    for out, cache in (dropout_forward(x, 0.0, rng=g), dropout_forward(x, 0.5, train=False, rng=g)):
        assert out is x and cache == (None, 1.0)
        assert dropout_backward(x, cache) is x
    assert g.bit_generator.state == state  # no random number drawn
    for bad in (-0.5, 1.0, 2):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropout_forward(x, bad)


def test_linear_shape_errors():
    with pytest.raises(ValueError, match="d_in"):
        linear_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5))
