"""Optimiser steps against the update rules computed by hand, step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlp import SGD, Adam, Optimizer
from mlp.rules import ParameterError


def _problem(seed: int = 0):
    """A weight matrix and a bias vector, with three gradients for each (one per step)."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 4)), rng.normal(size=4)]
    grads = [[rng.normal(size=p.shape) for p in params] for _ in range(3)]
    return params, grads


def _run(optimizer: Optimizer, params, grads_per_step):
    """Step ``optimizer`` on copies; returns the parameters after every step."""
    live = [p.copy() for p in params]
    ids = [id(p) for p in live]
    history = []
    for grads in grads_per_step:
        optimizer.step(live, [g.copy() for g in grads])  # grads are scratch for the optimiser
        history.append([p.copy() for p in live])
    assert [id(p) for p in live] == ids  # updated in place, the model keeps its arrays
    return history


def _assert_steps(actual, expected, rtol=1e-14):
    for step, (got, want) in enumerate(zip(actual, expected, strict=True), start=1):
        for p, q in zip(got, want, strict=True):
            np.testing.assert_allclose(p, q, rtol=rtol, atol=1e-15, err_msg=f"step {step}")


# --------------------------------------------------------------------------------------- SGD
def test_sgd_step_is_exactly_w_minus_lr_g():
    params, grads = _problem()
    lr = 0.05
    after = _run(SGD(lr), params, grads[:1])[0]
    for p, p0, g in zip(after, params, grads[0], strict=True):
        assert np.array_equal(p, p0 - lr * g)


def test_sgd_three_steps():
    params, grads = _problem(1)
    lr = 0.3
    expected, current = [], [p.copy() for p in params]
    for g_step in grads:
        current = [p - lr * g for p, g in zip(current, g_step, strict=True)]
        expected.append(current)
    _assert_steps(_run(SGD(lr), params, grads), expected)


def test_step_works_in_float32_in_place():
    params, grads = _problem(2)
    params32 = [p.astype(np.float32) for p in params]
    grads32 = [g.astype(np.float32) for g in grads[0]]
    live = [p.copy() for p in params32]
    SGD(0.1).step(live, [g.copy() for g in grads32])
    for p, p0, g in zip(live, params32, grads32, strict=True):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, p0 - np.float32(0.1) * g, rtol=1e-6)


def test_momentum_three_steps():
    params, grads = _problem(3)
    lr, mu = 0.1, 0.9
    velocity = [np.zeros_like(p) for p in params]
    current, expected = [p.copy() for p in params], []
    for g_step in grads:
        # v = mu v - lr g;  theta += v
        velocity = [mu * v - lr * g for v, g in zip(velocity, g_step, strict=True)]
        current = [p + v for p, v in zip(current, velocity, strict=True)]
        expected.append(current)
    actual = _run(SGD(lr, momentum=mu), params, grads)
    _assert_steps(actual, expected)
    # Momentum matters from the second step on.
    plain = _run(SGD(lr), params, grads)
    _assert_steps(actual[:1], plain[:1])
    assert not np.allclose(actual[1][0], plain[1][0])


def test_nesterov_three_steps():
    params, grads = _problem(4)
    lr, mu = 0.1, 0.8
    velocity = [np.zeros_like(p) for p in params]
    current, expected = [p.copy() for p in params], []
    for g_step in grads:
        # v = mu v - lr g;  theta += mu v - lr g  (Sutskever et al. 2013, Keras' form)
        velocity = [mu * v - lr * g for v, g in zip(velocity, g_step, strict=True)]
        current = [p + mu * v - lr * g for p, v, g in zip(current, velocity, g_step, strict=True)]
        expected.append(current)
    actual = _run(SGD(lr, momentum=mu, nesterov=True), params, grads)
    _assert_steps(actual, expected, rtol=1e-13)
    classical = _run(SGD(lr, momentum=mu), params, grads)
    assert not np.allclose(actual[0][0], classical[0][0])


def test_optimizer_state_is_per_parameter_position():
    """Velocities belong to positions in the list: two arrays do not share one."""
    params, grads = _problem(5)
    lr, mu = 0.1, 0.5
    together = _run(SGD(lr, momentum=mu), params, grads)
    alone_W = _run(SGD(lr, momentum=mu), params[:1], [g[:1] for g in grads])
    alone_b = _run(SGD(lr, momentum=mu), params[1:], [g[1:] for g in grads])
    for step in range(3):
        np.testing.assert_array_equal(together[step][0], alone_W[step][0])
        np.testing.assert_array_equal(together[step][1], alone_b[step][0])


# --------------------------------------------------------------------------------------- Adam
@pytest.mark.parametrize(
    ("lr", "beta1", "beta2", "epsilon"),
    [(0.001, 0.9, 0.999, 1e-8), (0.05, 0.7, 0.95, 1e-3)],
)
def test_adam_three_steps_with_bias_correction(lr, beta1, beta2, epsilon):
    params, grads = _problem(6)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    current, expected = [p.copy() for p in params], []
    for t, g_step in enumerate(grads, start=1):
        new = []
        for i, (p, g) in enumerate(zip(current, g_step, strict=True)):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            new.append(p - lr * m_hat / (np.sqrt(v_hat) + epsilon))
        current = new
        expected.append(current)
    optimizer = Adam(lr, beta1=beta1, beta2=beta2, epsilon=epsilon)
    _assert_steps(_run(optimizer, params, grads), expected, rtol=1e-12)
    assert optimizer.t == 3


def test_adam_first_step_moves_every_entry_by_about_lr():
    """With bias correction m_hat = g and v_hat = g^2 at t = 1, so the step is lr * sign(g)."""
    params, grads = _problem(7)
    lr = 0.01
    after = _run(Adam(lr, epsilon=1e-12), params, grads[:1])[0]
    for p, p0, g in zip(after, params, grads[0], strict=True):
        np.testing.assert_allclose(p0 - p, lr * np.sign(g), rtol=1e-9)


# --------------------------------------------------------------------------------------- decay
def test_sgd_weight_decay_applies_to_matrices_only():
    params, grads = _problem(8)
    lr, decay = 0.1, 0.01
    W, b = params
    gW, gb = grads[0]
    after_W, after_b = _run(SGD(lr, weight_decay=decay), params, grads[:1])[0]
    np.testing.assert_allclose(after_W, W - lr * (gW + decay * W), rtol=1e-14)
    np.testing.assert_array_equal(after_b, b - lr * gb)  # biases: no decay at all


def test_adam_weight_decay_is_l2_on_the_gradient_of_matrices_only():
    params, grads = _problem(9)
    lr, decay, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    W, b = params
    gW, gb = grads[0]
    after_W, after_b = _run(Adam(lr, weight_decay=decay, epsilon=eps), params, grads[:1])[0]
    for after, p, g in ((after_W, W, gW + decay * W), (after_b, b, gb)):
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g * g / (1 - b2)
        np.testing.assert_allclose(after, p - lr * m_hat / (np.sqrt(v_hat) + eps), rtol=1e-12)


def test_zero_weight_decay_changes_nothing():
    params, grads = _problem(10)
    a = _run(SGD(0.1, weight_decay=0.0), params, grads)
    b = _run(SGD(0.1), params, grads)
    for x, y in zip(a, b, strict=True):
        for p, q in zip(x, y, strict=True):
            np.testing.assert_array_equal(p, q)


# --------------------------------------------------------------------------------------- errors
def _raises_parameter_error(name: str, value, build) -> ParameterError:
    """``build()`` raises a ParameterError naming the constructor argument ``name``."""
    with pytest.raises(ParameterError, match=name) as info:
        build()
    assert info.value.name == name
    assert info.value.value is value
    return info.value


@pytest.mark.parametrize("lr", [0.0, -0.1, math.nan, math.inf])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_invalid_learning_rate_raises(cls, lr):
    error = _raises_parameter_error("learning_rate", lr, lambda: cls(lr))
    assert error.rule == "must be a finite number > 0"


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, math.nan])
def test_invalid_momentum_raises(momentum):
    error = _raises_parameter_error("momentum", momentum, lambda: SGD(0.1, momentum=momentum))
    assert error.rule == "must be in [0, 1)"


def test_nesterov_without_momentum_raises():
    error = _raises_parameter_error("nesterov", True, lambda: SGD(0.1, nesterov=True))
    assert str(error) == "nesterov needs momentum > 0, got True"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta1": 1.0}, "beta1"),
        ({"beta1": -0.1}, "beta1"),
        ({"beta2": 1.0}, "beta2"),
        ({"beta2": math.nan}, "beta2"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1e-8}, "epsilon"),
    ],
)
def test_invalid_adam_hyper_parameters_raise(kwargs, name):
    _raises_parameter_error(name, kwargs[name], lambda: Adam(0.001, **kwargs))


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_negative_weight_decay_raises(cls):
    error = _raises_parameter_error("weight_decay", -0.1, lambda: cls(0.01, weight_decay=-0.1))
    assert error.rule == "must be a finite number >= 0"


@pytest.mark.parametrize("decay", [math.nan, math.inf])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_non_finite_weight_decay_raises(cls, decay):
    """Regression: NaN and inf once passed a `< 0` check and poisoned every weight matrix."""
    _raises_parameter_error("weight_decay", decay, lambda: cls(0.01, weight_decay=decay))


def test_parameter_errors_are_value_errors():
    with pytest.raises(ValueError, match=r"^learning_rate must be a finite number > 0, got 0$"):
        SGD(0)


# ------------------------------------------------------------- the folded step (fit's contract)
class _Custom(Optimizer):
    def step(self, params, grads):
        pass


def test_only_plain_sgd_folds_its_learning_rate():
    assert SGD(0.1)._fold_scale() == 0.1
    assert SGD(0.1, momentum=0.9)._fold_scale() is None
    assert SGD(0.1, weight_decay=1e-4)._fold_scale() is None
    assert Adam(0.01)._fold_scale() is None
    assert _Custom()._fold_scale() is None  # an optimiser of one's own gets plain step calls


def test_folded_step_subtracts_the_scaled_gradient_and_nothing_else():
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    update = np.array([[0.5, -0.5], [0.25, 0.0]])
    SGD(0.3)._step_scaled([W], [update.copy()])
    np.testing.assert_array_equal(W, [[0.5, 2.5], [2.75, 4.0]])
    with pytest.raises(ValueError, match="plain SGD"):
        SGD(0.3, momentum=0.5)._step_scaled([W], [update])
    with pytest.raises(NotImplementedError):
        _Custom()._step_scaled([W], [update])


def test_the_folded_step_is_not_public_api():
    for optimizer in (SGD(0.1), Adam(0.01)):
        assert not hasattr(optimizer, "fold_scale")
        assert not hasattr(optimizer, "step_scaled")
