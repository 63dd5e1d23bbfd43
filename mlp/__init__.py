"""A small, exact and fast NumPy multilayer perceptron.

Imports NumPy only. See ``mlp.network`` for the math and its notation.
"""

from mlp import metrics
from mlp.callbacks import Callback
from mlp.network import MLP, DivergenceError
from mlp.optimizers import SGD, Adam, Optimizer
from mlp.rules import ParameterError

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "Callback",
    "DivergenceError",
    "Optimizer",
    "ParameterError",
    "metrics",
]
