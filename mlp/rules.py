"""The value rules of the library's arguments, declared once.

Each rule returns the value in the type the library uses (``float``, ``int`` or ``str``) or raises
:class:`ParameterError`, which names the argument, the value and the rule it breaks. The library
checks its own arguments with these (optimiser hyper-parameters, ``fit``'s ``epochs`` and
``batch_size``, the network's ``dtype``, ``loss``, ``init`` and activation names); a caller that
validates a configuration before building anything can apply the same rules and so refuse exactly
what the library would refuse.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


class ParameterError(ValueError):
    """An argument outside its allowed range. Attributes: ``name``, ``value``, ``rule``.

    ``str(error)`` reads ``"{name} {rule}, got {value!r}"``, e.g.
    ``learning_rate must be a finite number > 0, got 0.0``.
    """

    def __init__(self, name: str, value: Any, rule: str):
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name} {rule}, got {value!r}")

    def __reduce__(self):  # picklable with its attributes (parallel sweeps send errors back)
        return (type(self), (self.name, self.value, self.rule))


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools are not), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def positive(name: str, value: Any) -> float:
    """A finite number ``> 0``."""
    number = _real(value)
    if number is None or not (math.isfinite(number) and number > 0):
        raise ParameterError(name, value, "must be a finite number > 0")
    return number


def non_negative(name: str, value: Any) -> float:
    """A finite number ``>= 0``."""
    number = _real(value)
    if number is None or not (math.isfinite(number) and number >= 0):
        raise ParameterError(name, value, "must be a finite number >= 0")
    return number


def fraction(name: str, value: Any, *, allow_zero: bool) -> float:
    """A number in ``[0, 1)`` (``allow_zero=True``) or ``(0, 1)``."""
    number = _real(value)
    # Written so that NaN fails every comparison and is refused.
    if number is None or not ((number >= 0 if allow_zero else number > 0) and number < 1):
        raise ParameterError(name, value, f"must be in {'[0, 1)' if allow_zero else '(0, 1)'}")
    return number


def positive_int(name: str, value: Any) -> int:
    """An integer ``>= 1`` (Python or NumPy integer; bools and integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(name, value, "must be an integer >= 1")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """An integer ``>= 0`` (Python or NumPy integer; bools and integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ParameterError(name, value, "must be an integer >= 0")
    return int(value)


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of the strings ``choices`` (a registry's keys, say)."""
    choices = tuple(choices)
    if not (isinstance(value, str) and value in choices):
        raise ParameterError(name, value, f"must be one of {', '.join(choices)}")
    return value
