"""The yardstick: a bare, hand-written NumPy loop of the reference network's math.

784-32-16-10 (any two hidden layers), tanh hidden layers, softmax + cross-entropy, plain SGD,
written the way a textbook would: fancy-indexed batches, no buffers, no bookkeeping. The library
must train at least as fast as this (``make bench``).
"""

from __future__ import annotations

import numpy as np


def train_bare(
    X: np.ndarray,
    y: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
) -> None:
    """SGD on a tanh-tanh-softmax network, updating ``weights``/``biases`` in place."""
    W1, W2, W3 = weights
    b1, b2, b3 = biases
    n = X.shape[0]
    Y = np.zeros((n, W3.shape[1]), dtype=X.dtype)
    Y[np.arange(n), y] = 1
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            a0, yb = X[idx], Y[idx]
            a1 = np.tanh(a0 @ W1 + b1)
            a2 = np.tanh(a1 @ W2 + b2)
            z3 = a2 @ W3 + b3
            e = np.exp(z3 - z3.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            d3 = (p - yb) / len(idx)
            d2 = (d3 @ W3.T) * (1 - a2**2)
            d1 = (d2 @ W2.T) * (1 - a1**2)
            W3 -= learning_rate * (a2.T @ d3)
            b3 -= learning_rate * d3.sum(axis=0)
            W2 -= learning_rate * (a1.T @ d2)
            b2 -= learning_rate * d2.sum(axis=0)
            W1 -= learning_rate * (a0.T @ d1)
            b1 -= learning_rate * d1.sum(axis=0)
