"""The value rules of ``mlp.rules``: each refuses its boundary and what lies beyond, accepts the
boundary it allows, and says which argument, which value and which rule."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import mlp
from mlp import rules
from mlp.rules import ParameterError

POSITIVE = "must be a finite number > 0"
NON_NEGATIVE = "must be a finite number >= 0"


def _refused(check, value, rule: str, **kwargs) -> None:
    with pytest.raises(ParameterError) as info:
        check("some_name", value, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.name == "some_name"
    assert error.value is value
    assert error.rule == rule
    assert str(error) == f"some_name {rule}, got {value!r}"


@pytest.mark.parametrize("value", [0, 0.0, -0.0, -1e-300, -3, math.nan, math.inf, -math.inf])
def test_positive_refuses(value):
    _refused(rules.positive, value, POSITIVE)


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1], 1j])
def test_positive_refuses_what_is_not_a_real_number(value):
    _refused(rules.positive, value, POSITIVE)


@pytest.mark.parametrize("value", [5e-324, 1e-12, 1, 0.5, 1e308, np.float32(0.1), np.int64(2)])
def test_positive_accepts_finite_numbers_above_zero(value):
    result = rules.positive("x", value)
    assert type(result) is float
    assert result == float(value)


@pytest.mark.parametrize("value", [-5e-324, -1, math.nan, math.inf, -math.inf, True, "0"])
def test_non_negative_refuses(value):
    _refused(rules.non_negative, value, NON_NEGATIVE)


@pytest.mark.parametrize("value", [0, 0.0, 5e-324, 2, np.float64(1e-4)])
def test_non_negative_accepts_zero_and_above(value):
    result = rules.non_negative("x", value)
    assert type(result) is float
    assert result == float(value)


@pytest.mark.parametrize("value", [-1e-12, 1, 1.0, 1.5, math.nan, math.inf, -math.inf, False])
def test_fraction_with_zero_refuses(value):
    _refused(rules.fraction, value, "must be in [0, 1)", allow_zero=True)


@pytest.mark.parametrize("value", [0, 0.0, 1e-300, 0.5, 1 - 2**-53])
def test_fraction_with_zero_accepts_zero_up_to_below_one(value):
    assert rules.fraction("x", value, allow_zero=True) == value


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1, 1.0, math.nan, math.inf, True])
def test_fraction_without_zero_refuses(value):
    _refused(rules.fraction, value, "must be in (0, 1)", allow_zero=False)


@pytest.mark.parametrize("value", [5e-324, 0.5, 1 - 2**-53])
def test_fraction_without_zero_accepts_the_open_interval(value):
    assert rules.fraction("x", value, allow_zero=False) == value


@pytest.mark.parametrize(
    "value", [0, -1, True, False, np.bool_(True), 1.0, 2.5, math.nan, math.inf, "3", None]
)
def test_positive_int_refuses(value):
    _refused(rules.positive_int, value, "must be an integer >= 1")


@pytest.mark.parametrize("value", [1, 2, 10**20, np.int64(1), np.uint8(7)])
def test_positive_int_accepts_integers_from_one(value):
    result = rules.positive_int("x", value)
    assert type(result) is int
    assert result == value


@pytest.mark.parametrize("value", ["c", "A", "", None, 1, ["a"], ("a",)])
def test_one_of_refuses(value):
    _refused(rules.one_of, value, "must be one of a, b", choices=("a", "b"))


def test_one_of_accepts_a_choice_from_any_iterable_of_names():
    assert rules.one_of("x", "b", ("a", "b")) == "b"
    assert rules.one_of("x", "b", {"a": 1, "b": 2}) == "b"  # a registry's keys
    assert rules.one_of("x", "a", (name for name in "ab")) == "a"


def test_parameter_error_is_exported_and_survives_pickling():
    assert mlp.ParameterError is ParameterError
    error = ParameterError("learning_rate", 0.0, POSITIVE)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.value, copy.rule) == ("learning_rate", 0.0, POSITIVE)
    assert str(copy) == str(error) == "learning_rate must be a finite number > 0, got 0.0"
