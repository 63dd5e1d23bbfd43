"""An independent oracle: the library's gradients equal TensorFlow's automatic differentiation.

The TensorFlow side is written by hand from tf ops (no Keras): ``Z = A @ W + b``, the
activation, and the cost as the mean over the batch of ``-sum y log p`` or ``1/2 sum (y - a)^2``,
all in float64; ``tf.GradientTape`` differentiates it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from mlp import MLP

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

RTOL = 1e-10

TF_ACTIVATIONS = {
    "tanh": lambda z: tf.math.tanh(z),
    "sigmoid": lambda z: tf.math.sigmoid(z),
    "relu": lambda z: tf.nn.relu(z),
    "linear": lambda z: z,
    "softmax": lambda z: tf.nn.softmax(z, axis=1),
}

SHAPES = [[4, 5, 3], [6, 8, 5, 4], [3, 7, 6, 5, 2]]
HIDDEN = ["tanh", "relu", "sigmoid"]
OUTPUT_LOSS = [
    ("softmax", "cross_entropy"),
    ("softmax", "sse"),
    ("sigmoid", "sse"),
    ("linear", "sse"),
]
BATCH = 7


def tf_cost_and_gradients(net: MLP, X: np.ndarray, T: np.ndarray):
    """The cost and its gradients w.r.t. copies of the network's parameters, by TensorFlow."""
    weights = [tf.Variable(W.copy(), dtype=tf.float64) for W in net.weights]
    biases = [tf.Variable(b.copy(), dtype=tf.float64) for b in net.biases]
    with tf.GradientTape() as tape:
        a = tf.constant(X, dtype=tf.float64)
        for W, b, name in zip(weights, biases, net.activations, strict=True):
            a = TF_ACTIVATIONS[name](tf.matmul(a, W) + b)
        target = tf.constant(T, dtype=tf.float64)
        if net.loss_name == "cross_entropy":
            per_example = -tf.reduce_sum(target * tf.math.log(a), axis=1)
        else:
            per_example = 0.5 * tf.reduce_sum(tf.square(target - a), axis=1)
        cost = tf.reduce_mean(per_example)
    grad_W, grad_b = tape.gradient(cost, [weights, biases])
    return float(cost.numpy()), [g.numpy() for g in grad_W], [g.numpy() for g in grad_b]


def _assert_close(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    scale = np.abs(expected).max()
    assert scale > 0, f"{name} vanished"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, err_msg=name)


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSS, ids=lambda v: v)
def test_gradients_equal_tensorflow(sizes, hidden, output, loss):
    seed = len(sizes) * 100 + HIDDEN.index(hidden) * 10 + OUTPUT_LOSS.index((output, loss))
    rng = np.random.default_rng(seed)
    activations = [hidden] * (len(sizes) - 2) + [output]
    init = "he_normal" if hidden == "relu" else "xavier_normal"
    net = MLP(sizes, activations, loss=loss, init=init, seed=seed, dtype="float64")
    for b in net.biases:
        b[...] = rng.normal(0.0, 0.3, b.shape)
    X = rng.normal(0.0, 1.0, (BATCH, sizes[0]))
    if loss == "cross_entropy" or output == "softmax":
        y = rng.integers(0, sizes[-1], BATCH)  # labels; TensorFlow gets them one-hot
        T = np.eye(sizes[-1])[y]
    else:
        y = T = rng.normal(0.0, 1.0, (BATCH, sizes[-1]))

    cost, tf_dW, tf_db = tf_cost_and_gradients(net, X, T)
    np.testing.assert_allclose(net.loss(X, y), cost, rtol=1e-12)
    dW, db = net.gradients(X, y)
    for layer in range(len(sizes) - 1):
        _assert_close(dW[layer], tf_dW[layer], f"dW{layer}")
        _assert_close(db[layer], tf_db[layer], f"db{layer}")


def test_soft_targets_equal_tensorflow():
    """Cross-entropy with rows of probabilities as targets (not one-hot)."""
    rng = np.random.default_rng(7)
    net = MLP([5, 6, 4], ["tanh", "softmax"], seed=7, dtype="float64")
    X = rng.normal(0.0, 1.0, (BATCH, 5))
    T = rng.dirichlet(np.ones(4), BATCH)
    cost, tf_dW, tf_db = tf_cost_and_gradients(net, X, T)
    np.testing.assert_allclose(net.loss(X, T), cost, rtol=1e-12)
    dW, db = net.gradients(X, T)
    for layer in range(2):
        _assert_close(dW[layer], tf_dW[layer], f"dW{layer}")
        _assert_close(db[layer], tf_db[layer], f"db{layer}")
