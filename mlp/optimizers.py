"""Optimisers: ``step(params, grads)`` updates the parameter arrays in place.

The model owns its parameters; an optimiser owns only its own state (velocities, moments), kept per
position in the ``params`` list and created on the first step. ``grads`` are scratch space: a step
may overwrite them.

L2 weight decay adds ``weight_decay * W`` to the gradient of every weight *matrix* (``ndim >= 2``);
biases are not decayed.
"""

from __future__ import annotations

import numpy as np

from mlp import rules


class Optimizer:
    """The interface of an optimiser: :meth:`step` and :meth:`config`.

    Subclass it and implement both to train :meth:`mlp.MLP.fit` with a rule of your own.
    """

    learning_rate: float
    weight_decay: float = 0.0

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Update every array of ``params`` in place from ``grads`` (which it may overwrite)."""
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments, to log or to rebuild the optimiser."""
        raise NotImplementedError

    # The folded step: a private contract between ``MLP.fit`` and the optimisers of this module.
    # Plain SGD's update is ``param -= learning_rate * grad``. When ``_fold_scale()`` returns a
    # factor, ``fit`` multiplies the output error by it (one multiply on a ``(batch, n_out)``
    # array), so backpropagation yields the gradients already scaled, and calls ``_step_scaled``:
    # one subtraction per parameter instead of a multiply and a subtraction over every weight.
    # ``None`` (the default, and what any other optimiser inherits) means ``fit`` calls ``step``.
    def _fold_scale(self) -> float | None:
        return None

    def _step_scaled(self, params: list[np.ndarray], scaled_grads: list[np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no folded step")

    def _decayed(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        if self.weight_decay:
            for p, g in zip(params, grads, strict=True):
                if p.ndim >= 2:
                    g += self.weight_decay * p
        return grads


class SGD(Optimizer):
    """Stochastic gradient descent (seed 002, eqs. 66-67): ``theta -= learning_rate * g``.

    With ``momentum > 0`` it keeps a velocity ``v = momentum * v - learning_rate * g`` and steps
    ``theta += v``; with ``nesterov=True`` it steps ``theta += momentum * v - learning_rate * g``
    (Sutskever et al., 2013; the same form as Keras).
    """

    def __init__(
        self,
        learning_rate: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        self.learning_rate = rules.positive("learning_rate", learning_rate)
        self.momentum = rules.fraction("momentum", momentum, allow_zero=True)
        if nesterov and not self.momentum:
            raise rules.ParameterError("nesterov", nesterov, "needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = rules.non_negative("weight_decay", weight_decay)
        self._velocities: list[np.ndarray] | None = None

    def config(self) -> dict:
        return {
            "name": "sgd",
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _fold_scale(self) -> float | None:
        plain = not self.momentum and not self.weight_decay
        return self.learning_rate if plain else None

    def _step_scaled(self, params: list[np.ndarray], scaled_grads: list[np.ndarray]) -> None:
        if self._fold_scale() is None:
            raise ValueError("_step_scaled is for plain SGD (no momentum, no weight decay)")
        for p, update in zip(params, scaled_grads, strict=True):
            p -= update

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        grads = self._decayed(params, grads)
        lr = self.learning_rate
        if not self.momentum:
            for p, g in zip(params, grads, strict=True):
                g *= lr
                p -= g
            return
        if self._velocities is None:
            self._velocities = [np.zeros_like(p) for p in params]
        mu = self.momentum
        for p, g, v in zip(params, grads, self._velocities, strict=True):
            g *= lr
            v *= mu
            v -= g
            if self.nesterov:
                p += mu * v
                p -= g
            else:
                p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015, Algorithm 1), with bias correction ``1 - beta**t``.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``theta -= learning_rate * m_hat / (sqrt(v_hat) + epsilon)`` with
    ``m_hat = m / (1 - b1^t)`` and ``v_hat = v / (1 - b2^t)``.
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.learning_rate = rules.positive("learning_rate", learning_rate)
        self.beta1 = rules.fraction("beta1", beta1, allow_zero=True)
        self.beta2 = rules.fraction("beta2", beta2, allow_zero=True)
        self.epsilon = rules.positive("epsilon", epsilon)
        self.weight_decay = rules.non_negative("weight_decay", weight_decay)
        self.t = 0
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None

    def config(self) -> dict:
        return {
            "name": "adam",
            "learning_rate": self.learning_rate,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "weight_decay": self.weight_decay,
        }

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        grads = self._decayed(params, grads)
        if self._m is None:
            self._m = [np.zeros_like(p) for p in params]
            self._v = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        m_scale = 1 / (1 - b1**self.t)
        v_scale = 1 / (1 - b2**self.t)
        for p, g, m, v in zip(params, grads, self._m, self._v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = np.sqrt(v * v_scale)
            denom += self.epsilon
            p -= self.learning_rate * (m * m_scale) / denom
