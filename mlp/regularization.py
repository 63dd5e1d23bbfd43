"""Regularisation during training: inverted dropout and the max-norm constraint.

Both act inside :meth:`mlp.MLP.fit` only; ``forward``, ``predict``, ``loss`` and validation use the
whole network with its weights as they are.

**Dropout** (Srivastava et al., 2014, inverted form). In a training step, each unit ``j`` of the
layer ``A^l`` that feeds layer ``l + 1`` is kept with probability ``q_l = 1 - rate_l`` and scaled
by ``1 / q_l``, so that its expected value is unchanged and nothing needs rescaling at test time.
With the mask ``M^l`` (entries ``0`` or ``1 / q_l``, one row per example), for ``l = 0..N-1``
(``l = 0`` is the input):

    Z^{l+1} = (A^l * M^l) @ W^{l+1} + b^{l+1}
    dC/dW^{l+1} = (A^l * M^l).T @ Delta^{l+1}
    Delta^l = (Delta^{l+1} @ W^{l+1}.T) * M^l * f_l'(Z^l)      (l >= 1)

The masks are drawn from the network's one generator (``MLP.rng``), after the epoch's
permutation and in step order, so a run with dropout is as reproducible as one without.
:func:`masked_loss` and :func:`masked_gradients` compute the cost and its gradient for fixed
masks (what a gradient check needs).

**Max-norm** (Srivastava et al., 2014, section 5.1): after every step, each unit's incoming weight
vector (a column of ``W^l``, shape ``(n_{l-1}, n_l)``) longer than ``c`` is scaled back to length
``c``: ``w_j <- w_j * c / max(||w_j||, c)``. Biases are not constrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp import rules

if TYPE_CHECKING:
    from mlp.network import MLP

Masks = Sequence[np.ndarray | None]


def dropout_rates(
    n_hidden: int, dropout: float | Sequence[float] = 0.0, input_dropout: float = 0.0
) -> list[float]:
    """The rate of every layer input ``A^0 .. A^{N-1}``: ``input_dropout`` for the input, then
    ``dropout`` (one rate for every hidden layer, or one per hidden layer), each in ``[0, 1)``."""
    if isinstance(dropout, (str, bytes)):
        raise rules.ParameterError("dropout", dropout, "must be a rate or one rate per layer")
    if isinstance(dropout, Sequence) or isinstance(dropout, np.ndarray):
        hidden = list(dropout)
        if len(hidden) != n_hidden:
            raise rules.ParameterError(
                "dropout", hidden, f"needs one rate per hidden layer ({n_hidden})"
            )
    else:
        hidden = [dropout] * n_hidden
    rates = [rules.fraction("input_dropout", input_dropout, allow_zero=True)]
    rates += [rules.fraction("dropout", rate, allow_zero=True) for rate in hidden]
    return rates


def draw_masks(
    rng: np.random.Generator, rates: Sequence[float], shapes: Sequence[tuple[int, int]], dtype
) -> list[np.ndarray | None]:
    """One mask per layer input (``None`` where the rate is 0): entries ``0`` or ``1 / (1 -
    rate)``, drawn from ``rng`` in layer order."""
    masks: list[np.ndarray | None] = []
    for rate, shape in zip(rates, shapes, strict=True):
        if rate:
            mask = rng.random(shape, dtype=np.dtype(dtype))
            _to_mask(mask, rate)
            masks.append(mask)
        else:
            masks.append(None)
    return masks


def _to_mask(uniform: np.ndarray, rate: float) -> np.ndarray:
    """Uniform draws in ``[0, 1)`` -> the inverted-dropout mask, in place."""
    np.greater_equal(uniform, rate, out=uniform, casting="unsafe")
    uniform *= 1 / (1 - rate)
    return uniform


def forward(
    net: MLP,
    X: np.ndarray,
    masks: Masks,
    activations: list[np.ndarray] | None = None,
    kept: list[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(outputs, inputs)`` of a step with ``masks``: ``outputs = [A^0 = X, ..., A^N]`` (the
    layers' activations, unmasked) and ``inputs[l] = A^l * M^l`` (``A^l`` itself where
    ``masks[l]`` is ``None``). ``activations`` and ``kept`` (one array per layer, as
    ``MLP._forward``'s buffers) receive them instead of new arrays."""
    outputs, inputs = [X], []
    a = X
    for layer, (W, b, act) in enumerate(zip(net.weights, net.biases, net._acts, strict=True)):
        mask = masks[layer]
        if mask is not None:
            a = np.multiply(a, mask, out=None if kept is None else kept[layer])
        inputs.append(a)
        z = a @ W if activations is None else np.matmul(a, W, out=activations[layer])
        z += b
        a = act.forward(z)
        outputs.append(a)
    return outputs, inputs


def backward(
    net: MLP,
    outputs: list[np.ndarray],
    inputs: list[np.ndarray],
    masks: Masks,
    delta: np.ndarray,
    dW: list[np.ndarray],
    db: list[np.ndarray],
    errors: list[np.ndarray] | None = None,
    ones: np.ndarray | None = None,
) -> None:
    """Fill ``dW``/``db`` from the output error ``delta`` for the step :func:`forward` computed;
    ``errors`` (one array per hidden layer) receive the hidden errors."""
    if ones is None:
        ones = np.ones(delta.shape[0], delta.dtype)
    for layer in range(len(net.weights) - 1, -1, -1):
        np.matmul(inputs[layer].T, delta, out=dW[layer])
        np.matmul(ones, delta, out=db[layer])
        if layer:
            W_T = net.weights[layer].T
            delta = delta @ W_T if errors is None else np.matmul(delta, W_T, out=errors[layer - 1])
            if masks[layer] is not None:
                delta *= masks[layer]
            delta = net._acts[layer - 1].backward(outputs[layer], delta)


def masked_loss(net: MLP, X: Any, y: Any, masks: Masks) -> float:
    """The mean cost of a training step on ``(X, y)`` with the dropout ``masks`` fixed."""
    X = net._check_X(X)
    y = net._check_y(y, X.shape[0])
    outputs, _ = forward(net, X, masks)
    return net._loss.value(outputs[-1], y)


def masked_gradients(
    net: MLP, X: Any, y: Any, masks: Masks
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(dW, db)``: the gradient of :func:`masked_loss` w.r.t. every weight and bias array."""
    X = net._check_X(X)
    y = net._check_y(y, X.shape[0])
    outputs, inputs = forward(net, X, masks)
    delta = net._loss.output_delta(outputs[-1], y, net._acts[-1])
    dW = [np.empty_like(W) for W in net.weights]
    db = [np.empty_like(b) for b in net.biases]
    backward(net, outputs, inputs, masks, delta, dW, db)
    return dW, db


class DropoutStep:
    """What :meth:`MLP.fit` keeps for dropout: the rates, and the mask and masked-input arrays of
    a full batch (and views of them for the last, smaller one), refilled every step.

    A step first draws the whole batch's masks (:meth:`draw`, from the network's generator, in
    layer order), then runs the forward and backward passes on the batch or on blocks of its rows
    (``rows``), each block with its rows of the masks."""

    def __init__(self, net: MLP, rates: Sequence[float], batch_size: int, last_size: int):
        self.net, self.rng, self.rates = net, net.rng, list(rates)
        dtype, sizes = net.dtype, net.layer_sizes[:-1]
        full = [np.empty((batch_size, k), dtype) if r else None for r, k in zip(rates, sizes)]
        self._masks = {batch_size: full, last_size: [_rows(m, slice(0, last_size)) for m in full]}
        kept = [np.empty((batch_size, k), dtype) for k in sizes]
        self._kept = {batch_size: kept, last_size: [k[:last_size] for k in kept]}
        self.masks: list[np.ndarray | None] = full
        self.kept: list[np.ndarray] = kept

    def draw(self, m: int) -> None:
        """Draw the masks of a batch of ``m`` rows."""
        self.masks, self.kept = self._masks[m], self._kept[m]
        for mask, rate in zip(self.masks, self.rates, strict=True):
            if mask is not None:
                self.rng.random(out=mask, dtype=mask.dtype)
                _to_mask(mask, rate)

    def forward(
        self, X: np.ndarray, activations: list[np.ndarray], rows: slice
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The masked forward pass of the batch's ``rows`` (``X`` holds them): ``(outputs,
        inputs)`` as :func:`forward`."""
        masks = [_rows(mask, rows) for mask in self.masks]
        return forward(self.net, X, masks, activations, [k[rows] for k in self.kept])

    def backward(self, outputs, inputs, rows: slice, delta, dW, db, errors, ones) -> None:
        """The backward pass of the ``rows`` whose :meth:`forward` gave ``outputs, inputs``."""
        masks = [_rows(mask, rows) for mask in self.masks]
        backward(self.net, outputs, inputs, masks, delta, dW, db, errors, ones)


def _rows(array: np.ndarray | None, rows: slice) -> np.ndarray | None:
    """``array[rows]``, or ``None`` for no array (a layer without dropout)."""
    return None if array is None else array[rows]


def max_norm(weights: Sequence[np.ndarray], limit: float) -> None:
    """Scale every column of every weight matrix longer than ``limit`` back to ``limit``, in
    place."""
    for W in weights:
        norms = np.sqrt(np.einsum("ij,ij->j", W, W))
        if norms.max() > limit:
            np.maximum(norms, limit, out=norms)
            np.divide(limit, norms, out=norms)
            W *= norms
