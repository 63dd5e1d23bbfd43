"""Weight initialisers by name.

Each draws a ``(fan_in, fan_out)`` matrix in float64 from the given ``np.random.Generator``; the
network casts it to its dtype, so a float32 and a float64 network with the same seed start from
the same weights (up to the cast). Biases start at zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlp import rules

Initializer = Callable[[np.random.Generator, int, int], np.ndarray]


def xavier_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot & Bengio (2010): U(-l, l) with l = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def xavier_normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot & Bengio (2010): N(0, s^2) with s = sqrt(2 / (fan_in + fan_out))."""
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def he_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """He et al. (2015): U(-l, l) with l = sqrt(6 / fan_in); suited to relu layers."""
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def he_normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """He et al. (2015): N(0, s^2) with s = sqrt(2 / fan_in); suited to relu layers."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


INITIALIZERS: dict[str, Initializer] = {
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
}


def get(name: str) -> Initializer:
    """The initialiser called ``name``; a :class:`~mlp.rules.ParameterError` (``init must be one
    of ...``) listing the known ones otherwise."""
    return INITIALIZERS[rules.one_of("init", name, INITIALIZERS)]
