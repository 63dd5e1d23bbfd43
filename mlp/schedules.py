"""Learning-rate schedules: the rate of each epoch, as a factor of the optimiser's own rate.

``MLP.fit(..., schedule=s)`` sets ``optimizer.learning_rate = base * s.factor(epoch, epochs)``
before every epoch (``epoch`` 1-based, ``epochs`` the number ``fit`` was asked for), whatever the
optimiser, and records the rate in the history (``learning_rate``). ``base`` is the optimiser's
rate when ``fit`` starts; ``fit`` puts it back when it returns.

- :class:`StepDecay`: ``gamma ** ((epoch - 1) // step_size)``, a drop every ``step_size`` epochs;
- :class:`ExponentialDecay`: ``gamma ** (epoch - 1)``;
- :class:`CosineDecay`: half a cosine from 1 down to ``final_fraction`` over the epochs after an
  optional linear warm-up (``epoch / warmup_epochs`` during the first ``warmup_epochs``).
"""

from __future__ import annotations

import math

from mlp import rules


class Schedule:
    """The interface: :meth:`factor` and :meth:`config`."""

    def factor(self, epoch: int, epochs: int) -> float:
        """The multiple of the base learning rate for ``epoch`` (1-based) of ``epochs``."""
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments and ``name``, to log or to rebuild the schedule."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = rules.positive_int("step_size", step_size)
        self.gamma = rules.fraction("gamma", gamma, allow_zero=False)

    def factor(self, epoch: int, epochs: int) -> float:
        return self.gamma ** ((epoch - 1) // self.step_size)

    def config(self) -> dict:
        return {"name": "step", "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """Multiply the rate by ``gamma`` after every epoch."""

    def __init__(self, gamma: float):
        self.gamma = rules.fraction("gamma", gamma, allow_zero=False)

    def factor(self, epoch: int, epochs: int) -> float:
        return self.gamma ** (epoch - 1)

    def config(self) -> dict:
        return {"name": "exponential", "gamma": self.gamma}


class CosineDecay(Schedule):
    """Linear warm-up over ``warmup_epochs`` (``epoch / warmup_epochs``), then half a cosine
    from 1 to ``final_fraction``: epoch ``warmup_epochs + 1 + t`` of ``T = epochs -
    warmup_epochs`` decay epochs gets ``f + (1 - f) (1 + cos(pi t / T)) / 2`` (the last epoch
    stays just above ``f``, so no epoch trains at the floor)."""

    def __init__(self, warmup_epochs: int = 0, final_fraction: float = 0.0):
        self.warmup_epochs = rules.non_negative_int("warmup_epochs", warmup_epochs)
        self.final_fraction = rules.fraction("final_fraction", final_fraction, allow_zero=True)

    def factor(self, epoch: int, epochs: int) -> float:
        warmup = self.warmup_epochs
        if epoch <= warmup:
            return epoch / warmup
        decay_epochs = max(epochs - warmup, 1)
        t = epoch - warmup - 1
        f = self.final_fraction
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t / decay_epochs))

    def config(self) -> dict:
        return {
            "name": "cosine",
            "warmup_epochs": self.warmup_epochs,
            "final_fraction": self.final_fraction,
        }


#: Schedule names (``name`` in their configs) -> classes.
SCHEDULES: dict[str, type[Schedule]] = {
    "step": StepDecay,
    "exponential": ExponentialDecay,
    "cosine": CosineDecay,
}


def get(name: str, **kwargs) -> Schedule:
    """The schedule called ``name``, built from ``kwargs`` (its constructor's arguments)."""
    return SCHEDULES[rules.one_of("schedule", name, SCHEDULES)](**kwargs)
