"""A small, exact and fast NumPy multilayer perceptron.

Imports NumPy only. See ``mlp.network`` for the math and its notation.
"""

from mlp import metrics, regularization, schedules
from mlp.callbacks import Callback
from mlp.network import MLP, DivergenceError, ModelFileError
from mlp.optimizers import SGD, Adam, Optimizer
from mlp.rules import ParameterError
from mlp.schedules import CosineDecay, ExponentialDecay, StepDecay
from mlp.stopping import EarlyStopping

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "Callback",
    "CosineDecay",
    "DivergenceError",
    "EarlyStopping",
    "ExponentialDecay",
    "ModelFileError",
    "Optimizer",
    "ParameterError",
    "StepDecay",
    "metrics",
    "regularization",
    "schedules",
]
