"""Activation functions, each with its forward pass and its backward pass.

Row-major batches: ``z`` has shape ``(batch, units)``. Forward passes work *in place* on the
pre-activation ``z`` and return it (it becomes the layer's activation ``a``). Backward passes turn
``grad = dC/da`` into ``dC/dz`` given the layer's *output* ``a`` (seed 002, BP2.2: the Jacobian of
an element-wise activation is diagonal, so the product is a Hadamard product); element-wise ones
work in place on ``grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlp import rules


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    backward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    elementwise: bool = True


def _tanh(z: np.ndarray) -> np.ndarray:
    # np.tanh never overflows for large |z| (it saturates at +-1), so the two-sided amendment of
    # seed 002 (eqs. 84-87) is what it already computes.
    return np.tanh(z, out=z)


def _tanh_backward(a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    # d tanh(z)/dz = 1 - tanh(z)^2 = 1 - a^2 (seed 002, eq. 82)
    d = np.multiply(a, a)
    np.subtract(1, d, out=d)
    grad *= d
    return grad


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Stable for large |z| both ways (seed 002, eqs. 73 and 75): exp is only taken of -|z| <= 0,
    # 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) for z < 0.
    e = np.exp(-np.abs(z))
    numerator = np.where(z >= 0, 1, e).astype(z.dtype, copy=False)
    e += 1
    return np.divide(numerator, e, out=z)


def _sigmoid_backward(a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    # d sigma(z)/dz = a (1 - a) (seed 002, eq. 74)
    grad *= a * (1 - a)
    return grad


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0, out=z)


def _relu_backward(a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    # f'(z) = 1 if z > 0 else 0 (seed 002, eq. 78); a > 0 exactly when z > 0.
    grad *= a > 0
    return grad


def _linear(z: np.ndarray) -> np.ndarray:
    return z


def _linear_backward(a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad


def _softmax(z: np.ndarray) -> np.ndarray:
    # Max-subtracted (seed 002, eq. 90): exp never sees a positive argument.
    # (ufunc reductions called directly: at batch size 32 the wrappers of z.max/z.sum cost as
    # much as the arithmetic.)
    z -= np.maximum.reduce(z, axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= np.add.reduce(z, axis=1, keepdims=True)
    return z


def _softmax_backward(a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    # J^T g with J = diag(a) - a a^T (seed 002, eq. 89), for every row at once, without forming
    # the Jacobian: a * (g - <g, a>).
    return a * (grad - np.sum(grad * a, axis=1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _tanh_backward),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_backward),
    "relu": Activation("relu", _relu, _relu_backward),
    "linear": Activation("linear", _linear, _linear_backward),
    "softmax": Activation("softmax", _softmax, _softmax_backward, elementwise=False),
}

#: Activations allowed in hidden layers (softmax is for the output layer only).
HIDDEN_ACTIVATIONS = tuple(name for name, act in ACTIVATIONS.items() if act.elementwise)


def get(name: str) -> Activation:
    """The activation called ``name``; a :class:`~mlp.rules.ParameterError` (``activations must be
    one of ...``, named after :class:`mlp.MLP`'s argument) listing the known ones otherwise."""
    return ACTIVATIONS[rules.one_of("activations", name, ACTIVATIONS)]
