"""Loss functions: the per-example loss, summed or averaged over a batch, and the output error.

The cost of a batch is the mean loss over its ``M`` examples (seed 002, eq. 19). ``output_delta``
returns the error at the output layer, ``dC/dz^L`` of that *mean* cost (seed 002, BP1.2), so the
factor ``1/M`` is already in it.

Targets are either integer class labels of shape ``(M,)`` or a 2-D array ``(M, n_out)`` (one-hot
rows, probabilities, or regression targets for ``sse``).

Valid pairs with the output activation, and why:

* ``cross_entropy`` + ``softmax``: the only pair. Categorical cross-entropy needs outputs that are
  a probability distribution over the classes; the fused error is ``p - y`` (seed 002, eq. 32).
  Any other output activation (tanh, relu and linear can be <= 0, sigmoid outputs do not sum to 1)
  is refused.
* ``sse`` + any output activation: ``1/2 sum (y - a)^2`` (seed 002, eq. 71), its error
  ``a - y`` (eq. 72) taken through the activation's backward pass.
"""

from __future__ import annotations

import numpy as np

from mlp import rules
from mlp.activations import Activation


def one_hot(labels: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    """Integer labels ``(M,)`` as one-hot rows ``(M, n_classes)`` of ``dtype``."""
    dense = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    dense[np.arange(labels.shape[0]), labels] = 1
    return dense


def _dense(target: np.ndarray, output: np.ndarray) -> np.ndarray:
    """2-D targets as they are; integer labels as one-hot rows shaped and typed like ``output``."""
    return target if target.ndim == 2 else one_hot(target, output.shape[1], output.dtype)


class Loss:
    name: str = ""

    def check_output_activation(self, activation: Activation) -> None:
        """Raise ``ValueError`` when this loss cannot be paired with ``activation``."""

    def sum(self, output: np.ndarray, target: np.ndarray) -> float:
        """Sum over the batch of the per-example loss."""
        raise NotImplementedError

    def value(self, output: np.ndarray, target: np.ndarray) -> float:
        """Mean loss over the batch: the cost ``C``."""
        return self.sum(output, target) / output.shape[0]

    def output_delta(
        self,
        output: np.ndarray,
        target: np.ndarray,
        activation: Activation,
        scale: float = 1.0,
        batch_rows: int | None = None,
    ) -> np.ndarray:
        """``scale * dC/dz`` at the output layer, shape ``(M, n_out)``. May overwrite ``output``.

        ``scale`` lets a caller fold a constant factor (plain SGD's learning rate) into the error,
        so that backpropagation yields ``scale *`` every gradient at no extra cost.
        ``batch_rows``: ``output`` is a block of the rows of a batch of this many (the mean is
        over the whole batch); default ``M``.
        """
        raise NotImplementedError


class CrossEntropy(Loss):
    """Categorical cross-entropy ``-sum_i y_i log p_i`` (seed 002, eq. 15) with softmax outputs."""

    name = "cross_entropy"

    def check_output_activation(self, activation: Activation) -> None:
        if activation.name != "softmax":
            raise ValueError(
                "loss 'cross_entropy' needs a 'softmax' output layer (its outputs must be a "
                f"probability distribution), got {activation.name!r}; use 'softmax' for the last "
                "activation, or loss 'sse'"
            )

    def sum(self, output: np.ndarray, target: np.ndarray) -> float:
        # Probabilities clipped by the dtype's eps so a confident mistake costs -log(eps), not inf.
        eps = np.finfo(output.dtype).eps
        if target.ndim == 1:
            p = output[np.arange(target.shape[0]), target]
            return float(-np.log(np.clip(p, eps, 1 - eps)).sum())
        return float(-(target * np.log(np.clip(output, eps, 1 - eps))).sum())

    def output_delta(
        self,
        output: np.ndarray,
        target: np.ndarray,
        activation: Activation,
        scale: float = 1.0,
        batch_rows: int | None = None,
    ) -> np.ndarray:
        # Fused softmax + cross-entropy error: (p - y) / M, computed in place in the output.
        m = output.shape[0]
        if target.ndim == 1:
            output[np.arange(m), target] -= 1
        else:
            output -= target
        output *= scale / (batch_rows or m)
        return output


class SumSquaredError(Loss):
    """Sum of squared errors ``1/2 sum_i (y_i - a_i)^2`` (seed 002, eq. 71)."""

    name = "sse"

    def sum(self, output: np.ndarray, target: np.ndarray) -> float:
        diff = output - _dense(target, output)
        return float(0.5 * np.sum(diff * diff))

    def output_delta(
        self,
        output: np.ndarray,
        target: np.ndarray,
        activation: Activation,
        scale: float = 1.0,
        batch_rows: int | None = None,
    ) -> np.ndarray:
        grad = output - _dense(target, output)  # dL/da = a - y (eq. 72)
        grad *= scale / (batch_rows or output.shape[0])
        return activation.backward(output, grad)


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (CrossEntropy(), SumSquaredError())}


def get(name: str) -> Loss:
    """The loss called ``name``; a :class:`~mlp.rules.ParameterError` (``loss must be one of
    ...``) listing the known ones otherwise."""
    return LOSSES[rules.one_of("loss", name, LOSSES)]
