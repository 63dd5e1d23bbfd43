"""The hand-checked example network of seed 002 ("Tests"): 3 inputs, 2 sigmoid hidden units,
2 softmax outputs, categorical cross-entropy.

The expected values are computed here from the seed's scalar formulas, element by element: the
pre-activations (eq. 3), sigmoid (eq. 5), softmax (eq. 24), the loss (eq. 15), and the gradients as
the chains of small Jacobians of eqs. 92-103. Nothing in the expected values comes from the
library. Weights are written in the seed's layout ``W^l: n_l x n_{l-1}`` (row ``i`` holds the
weights *into* unit ``i``); the library stores the transpose, ``(fan_in, fan_out)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlp import MLP

# Seed layout: W1[i][k] connects input k to hidden unit i (eq. 3).
W1 = [[0.2, -0.4, 0.7], [-0.5, 0.3, 0.1]]
B1 = [0.1, -0.2]
W2 = [[0.6, -0.3], [-0.8, 0.5]]
B2 = [0.05, -0.1]
X_ONE = [0.9, -1.3, 0.4]

# A batch of M = 4 examples (eqs. 16-19, 59, 62) with their classes.
X_BATCH = [[0.9, -1.3, 0.4], [-0.2, 0.5, 1.1], [1.5, 0.3, -0.7], [0.0, -0.6, -0.4]]
LABELS_BATCH = [0, 1, 1, 0]

RTOL, ATOL = 1e-12, 1e-15


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))  # eq. 5


def hand_example(x: list[float], y: list[float]) -> dict[str, np.ndarray | float]:
    """Forward and backward pass of the seed example for one input ``x`` and target ``y``.

    Gradients are returned in the seed's layout (``dW1`` is 2 x 3, ``dW2`` is 2 x 2).
    """
    # Forward: eq. 3 for the pre-activations, eq. 5 and eq. 24 for the activations.
    z1 = [sum(x[k] * W1[i][k] for k in range(3)) + B1[i] for i in range(2)]
    a1 = [_sigmoid(z) for z in z1]
    z2 = [sum(a1[k] * W2[i][k] for k in range(2)) + B2[i] for i in range(2)]
    denominator = sum(math.exp(z) for z in z2)
    a2 = [math.exp(z) / denominator for z in z2]
    loss = -sum(y[i] * math.log(a2[i]) for i in range(2))  # eq. 15

    # Backward: the factors of eqs. 92-103, each a small explicit matrix.
    dL_da2 = np.array([[-y[0] / a2[0], -y[1] / a2[1]]])  # eq. 93, a 1 x 2 row
    da2_dz2 = np.array(  # eq. 94, Jacobian of the softmax
        [
            [a2[0] * (1 - a2[0]), -a2[0] * a2[1]],
            [-a2[1] * a2[0], a2[1] * (1 - a2[1])],
        ]
    )
    # eq. 95: d z^2 / d (w_11, w_12, w_21, w_22)
    dz2_dW2 = np.array([[a1[0], a1[1], 0.0, 0.0], [0.0, 0.0, a1[0], a1[1]]])
    dz2_db2 = np.array([[1.0, 0.0], [0.0, 1.0]])  # eq. 97
    dz2_da1 = np.array(W2)  # eq. 99
    da1_dz1 = np.array([[a1[0] * (1 - a1[0]), 0.0], [0.0, a1[1] * (1 - a1[1])]])  # eq. 100
    # eq. 101: d z^1 / d (w_11, w_12, w_13, w_21, w_22, w_23)
    dz1_dW1 = np.array([[x[0], x[1], x[2], 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, x[0], x[1], x[2]]])
    dz1_db1 = np.array([[1.0, 0.0], [0.0, 1.0]])  # eq. 103

    dW2 = dL_da2 @ da2_dz2 @ dz2_dW2  # eq. 92, a 1 x 4 row
    db2 = dL_da2 @ da2_dz2 @ dz2_db2  # eq. 96
    dW1 = dL_da2 @ da2_dz2 @ dz2_da1 @ da1_dz1 @ dz1_dW1  # eq. 98, a 1 x 6 row
    db1 = dL_da2 @ da2_dz2 @ dz2_da1 @ da1_dz1 @ dz1_db1  # eq. 102
    return {
        "z1": np.array(z1),
        "a1": np.array(a1),
        "z2": np.array(z2),
        "a2": np.array(a2),
        "loss": loss,
        # The rows stack back into matrices in the order of eqs. 95 and 101 (row-major).
        "dW1": dW1.reshape(2, 3),
        "db1": db1.reshape(2),
        "dW2": dW2.reshape(2, 2),
        "db2": db2.reshape(2),
    }


def _one_hot(label: int) -> list[float]:
    return [1.0 if i == label else 0.0 for i in range(2)]


def _seed_network() -> MLP:
    net = MLP([3, 2, 2], ["sigmoid", "softmax"], loss="cross_entropy", seed=123, dtype="float64")
    net.weights[0][...] = np.array(W1).T
    net.biases[0][...] = B1
    net.weights[1][...] = np.array(W2).T
    net.biases[1][...] = B2
    return net


def _linear_layer(W: list[list[float]], b: list[float]) -> MLP:
    """A one-layer network with identity activation: its output is the pre-activation."""
    W_seed = np.array(W)
    net = MLP([W_seed.shape[1], W_seed.shape[0]], ["linear"], loss="sse", dtype="float64")
    net.weights[0][...] = W_seed.T
    net.biases[0][...] = b
    return net


def test_weights_are_live_arrays_in_fan_in_fan_out_layout():
    net = _seed_network()
    assert [W.shape for W in net.weights] == [(3, 2), (2, 2)]
    assert [b.shape for b in net.biases] == [(2,), (2,)]
    # Setting a weight in place changes what the network computes.
    before = net.forward([X_ONE])
    net.weights[0][0, 1] += 0.5  # input 1 -> hidden unit 2, w^1_{2,1} in the seed's notation
    assert not np.array_equal(net.forward([X_ONE]), before)


def test_forward_matches_hand_computation():
    net = _seed_network()
    expected = hand_example(X_ONE, _one_hot(0))
    X = np.array([X_ONE])
    a0, a1, a2 = net._forward(X)
    np.testing.assert_array_equal(a0, X)
    np.testing.assert_allclose(a1[0], expected["a1"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a2[0], expected["a2"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(net.forward(X)[0], expected["a2"], rtol=RTOL, atol=ATOL)
    assert net.forward(X).dtype == np.float64
    assert math.isclose(net.forward(X)[0].sum(), 1.0, rel_tol=1e-15)


def test_pre_activations_match_hand_computation():
    """z^1 and z^2 (eq. 3), read through linear twins of each layer, and through the inverses
    of the activations of the real network."""
    net = _seed_network()
    expected = hand_example(X_ONE, _one_hot(0))
    z1 = _linear_layer(W1, B1).forward([X_ONE])[0]
    np.testing.assert_allclose(z1, expected["z1"], rtol=RTOL, atol=ATOL)
    a1 = net._forward(np.array([X_ONE]))[1]
    z2 = _linear_layer(W2, B2).forward(a1)[0]
    np.testing.assert_allclose(z2, expected["z2"], rtol=RTOL, atol=ATOL)
    # The network's activations invert to the same pre-activations: logit for the sigmoid, and
    # log-ratios for the softmax (which fixes z^2 up to an additive constant).
    np.testing.assert_allclose(np.log(a1[0] / (1 - a1[0])), expected["z1"], rtol=1e-10)
    a2 = net.forward([X_ONE])[0]
    assert math.isclose(
        math.log(a2[0] / a2[1]), expected["z2"][0] - expected["z2"][1], rel_tol=1e-10
    )


@pytest.mark.parametrize(
    "target",
    [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]],
    ids=["class0", "class1", "soft"],
)
def test_loss_and_gradients_match_hand_computation(target):
    net = _seed_network()
    expected = hand_example(X_ONE, target)
    X, Y = np.array([X_ONE]), np.array([target])
    assert math.isclose(net.loss(X, Y), expected["loss"], rel_tol=RTOL)
    dW, db = net.gradients(X, Y)
    np.testing.assert_allclose(dW[0], expected["dW1"].T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db[0], expected["db1"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dW[1], expected["dW2"].T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db[1], expected["db2"], rtol=RTOL, atol=ATOL)
    # The example is not degenerate: every gradient has non-zero entries.
    assert all(np.abs(g).min() > 1e-4 for g in (*dW, *db))


@pytest.mark.parametrize("label", [0, 1])
def test_integer_label_equals_one_hot_target(label):
    net = _seed_network()
    expected = hand_example(X_ONE, _one_hot(label))
    assert math.isclose(net.loss([X_ONE], [label]), expected["loss"], rel_tol=RTOL)
    dW, db = net.gradients([X_ONE], [label])
    np.testing.assert_allclose(dW[0], expected["dW1"].T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db[1], expected["db2"], rtol=RTOL, atol=ATOL)


def test_gradients_leave_the_parameters_untouched():
    net = _seed_network()
    before = [p.copy() for p in (*net.weights, *net.biases)]
    net.gradients([X_ONE], [0])
    for p, q in zip((*net.weights, *net.biases), before, strict=True):
        np.testing.assert_array_equal(p, q)


def test_batch_forward_is_per_example():
    """eqs. 16-17: every row of a batch goes through the network independently."""
    net = _seed_network()
    out = net.forward(X_BATCH)
    assert out.shape == (4, 2)
    for m, x in enumerate(X_BATCH):
        np.testing.assert_allclose(out[m], hand_example(x, [1.0, 0.0])["a2"], rtol=RTOL)


@pytest.mark.parametrize("target_form", ["labels", "one_hot"])
def test_batch_cost_and_gradients_are_means_over_examples(target_form):
    """eq. 19 (cost = mean loss), eqs. 59 and 62 (gradients = mean of per-example gradients)."""
    net = _seed_network()
    per_example = [
        hand_example(x, _one_hot(label)) for x, label in zip(X_BATCH, LABELS_BATCH, strict=True)
    ]
    M = len(X_BATCH)
    expected_cost = sum(e["loss"] for e in per_example) / M
    expected = {key: sum(e[key] for e in per_example) / M for key in ("dW1", "db1", "dW2", "db2")}

    targets = (
        np.array(LABELS_BATCH)
        if target_form == "labels"
        else np.array([_one_hot(label) for label in LABELS_BATCH])
    )
    X = np.array(X_BATCH)
    assert math.isclose(net.loss(X, targets), expected_cost, rel_tol=RTOL)
    dW, db = net.gradients(X, targets)
    np.testing.assert_allclose(dW[0], expected["dW1"].T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db[0], expected["db1"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dW[1], expected["dW2"].T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db[1], expected["db2"], rtol=RTOL, atol=ATOL)
