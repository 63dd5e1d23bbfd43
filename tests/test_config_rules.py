"""Every rule of the config schema refuses what it must and accepts its boundary.

For each rule (the pipeline's own in ``pipeline/config.py``, and the library's from ``mlp.rules``
that the schema applies by building the network, optimiser, schedule and early stopping once),
one or more overrides that break it (the error names the key) and the override at the edge of
what it allows (accepted). A rule is not tested by a message alone: removing it, or moving its
boundary by one step, fails a case here.

The completeness tests read the sources: every key ``pipeline/config.py`` checks, and every
argument name the library checks with :mod:`mlp.rules`, must have a case below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from mlp import rules
from pipeline.config import ConfigError, compose, validate

ROOT = Path(__file__).resolve().parents[1]

#: key -> (overrides each of which breaks the rule, overrides at the edge that it accepts).
#: Overrides separated by spaces set the scene (e.g. the optimiser the rule applies to).
RULES: dict[str, tuple[list[str], list[str]]] = {
    "seed": (["seed=-1"], ["seed=0"]),
    "data.split_seed": (["data.split_seed=-1"], ["data.split_seed=0"]),
    "data.validation_size": (
        ["data.validation_size=-1", "data.validation_size=60000"],
        ["data.validation_size=0", "data.validation_size=59999"],
    ),
    "data.train_limit": (["data.train_limit=0"], ["data.train_limit=1", "data.train_limit=null"]),
    "data.timeout": (
        ["data.timeout=0", "data.timeout=-1", "data.timeout=inf", "data.timeout=nan"],
        ["data.timeout=0.001"],
    ),
    "data.retries": (["data.retries=0"], ["data.retries=1"]),
    "data.backoff": (["data.backoff=-0.001", "data.backoff=inf"], ["data.backoff=0"]),
    "model.hidden_sizes": (
        ["model.hidden_sizes=[]", "model.hidden_sizes=[0]", "model.hidden_sizes=[4,-1]"],
        ["model.hidden_sizes=[1]"],
    ),
    "model.hidden_activation": (
        ["model.hidden_activation=softmax", "model.hidden_activation=swish"],
        [f"model.hidden_activation={a}" for a in ("tanh", "sigmoid", "relu", "linear")],
    ),
    "model.output_activation": (
        ["model.output_activation=swish", "model.output_activation=sigmoid"],
        ["model.loss=sse model.output_activation=sigmoid", "model.output_activation=softmax"],
    ),
    "model.loss": (["model.loss=hinge"], ["model.loss=sse", "model.loss=cross_entropy"]),
    "model.init": (
        ["model.init=zeros"],
        [f"model.init={i}" for i in ("xavier_normal", "xavier_uniform", "he_normal", "he_uniform")],
    ),
    "model.dropout": (
        ["model.dropout=1.0", "model.dropout=-0.001"],
        ["model.dropout=0.0", "model.dropout=0.999"],
    ),
    "model.input_dropout": (
        ["model.input_dropout=1.0", "model.input_dropout=-0.001"],
        ["model.input_dropout=0.0", "model.input_dropout=0.999"],
    ),
    "optimizer.name": (
        ["optimizer.name=rmsprop"],
        ["optimizer.name=sgd", "optimizer=momentum", "optimizer=adam"],
    ),
    "optimizer.learning_rate": (
        [
            "optimizer.learning_rate=0",
            "optimizer.learning_rate=-0.1",
            "optimizer.learning_rate=inf",
            "optimizer.learning_rate=nan",
            "optimizer=adam optimizer.learning_rate=0",
        ],
        ["optimizer.learning_rate=0.000001", "optimizer=adam optimizer.learning_rate=0.000001"],
    ),
    "optimizer.momentum": (
        [
            "optimizer.momentum=1.0",
            "optimizer.momentum=-0.001",
            "optimizer=momentum optimizer.momentum=0",  # the momentum optimizer needs momentum
        ],
        [
            "optimizer.momentum=0",
            "optimizer.momentum=0.999",
            "optimizer=momentum optimizer.momentum=0.001",
        ],
    ),
    "optimizer.nesterov": (
        ["optimizer.nesterov=true"],  # plain SGD: momentum 0
        ["optimizer.nesterov=true optimizer.momentum=0.001", "optimizer.nesterov=false"],
    ),
    "optimizer.weight_decay": (
        ["optimizer.weight_decay=-0.001", "optimizer=adam optimizer.weight_decay=-0.001"],
        ["optimizer.weight_decay=0", "optimizer=adam optimizer.weight_decay=0"],
    ),
    "optimizer.beta1": (
        ["optimizer=adam optimizer.beta1=1.0", "optimizer=adam optimizer.beta1=-0.001"],
        ["optimizer=adam optimizer.beta1=0", "optimizer=adam optimizer.beta1=0.999"],
    ),
    "optimizer.beta2": (
        ["optimizer=adam optimizer.beta2=1.0", "optimizer=adam optimizer.beta2=-0.001"],
        ["optimizer=adam optimizer.beta2=0", "optimizer=adam optimizer.beta2=0.999"],
    ),
    "optimizer.epsilon": (
        ["optimizer=adam optimizer.epsilon=0", "optimizer=adam optimizer.epsilon=-0.1"],
        ["optimizer=adam optimizer.epsilon=0.000000001"],
    ),
    "train.epochs": (["train.epochs=0", "train.epochs=-1"], ["train.epochs=1"]),
    "train.batch_size": (["train.batch_size=0"], ["train.batch_size=1"]),
    "train.dtype": (["train.dtype=float16"], ["train.dtype=float32", "train.dtype=float64"]),
    "train.batch_parts": (
        ["train.batch_parts=0", "train.batch_parts=two", "train.batch_parts=true"],
        ["train.batch_parts=1", "train.batch_parts=3", "train.batch_parts=auto"],
    ),
    "train.blas_threads": (
        ["train.blas_threads=0", "train.blas_threads=many"],
        ["train.blas_threads=1", "train.blas_threads=null", "train.blas_threads=auto"],
    ),
    "train.max_norm": (
        ["train.max_norm=0", "train.max_norm=-1", "train.max_norm=inf"],
        ["train.max_norm=0.000001", "train.max_norm=null"],
    ),
    "train.schedule.name": (
        ["train.schedule.name=linear"],
        [f"train.schedule.name={n}" for n in ("none", "step", "exponential", "cosine")],
    ),
    "train.schedule.step_size": (
        ["train.schedule.name=step train.schedule.step_size=0"],
        ["train.schedule.name=step train.schedule.step_size=1"],
    ),
    "train.schedule.gamma": (
        [
            "train.schedule.name=step train.schedule.gamma=1.0",
            "train.schedule.name=step train.schedule.gamma=0",
            "train.schedule.name=exponential train.schedule.gamma=1.0",
            "train.schedule.name=exponential train.schedule.gamma=0",
        ],
        [
            "train.schedule.name=step train.schedule.gamma=0.999",
            "train.schedule.name=exponential train.schedule.gamma=0.001",
        ],
    ),
    "train.schedule.warmup_epochs": (
        ["train.schedule.name=cosine train.schedule.warmup_epochs=-1"],
        ["train.schedule.name=cosine train.schedule.warmup_epochs=0"],
    ),
    "train.schedule.final_fraction": (
        [
            "train.schedule.name=cosine train.schedule.final_fraction=1.0",
            "train.schedule.name=cosine train.schedule.final_fraction=-0.001",
        ],
        [
            "train.schedule.name=cosine train.schedule.final_fraction=0",
            "train.schedule.name=cosine train.schedule.final_fraction=0.999",
        ],
    ),
    "train.early_stopping.enabled": (
        ["train.early_stopping.enabled=true data.validation_size=0"],
        ["train.early_stopping.enabled=true data.validation_size=1"],
    ),
    "train.early_stopping.monitor": (
        ["train.early_stopping.enabled=true train.early_stopping.monitor=loss"],
        [
            "train.early_stopping.enabled=true train.early_stopping.monitor=val_loss",
            "train.early_stopping.enabled=true train.early_stopping.monitor=val_accuracy",
        ],
    ),
    "train.early_stopping.patience": (
        ["train.early_stopping.enabled=true train.early_stopping.patience=0"],
        ["train.early_stopping.enabled=true train.early_stopping.patience=1"],
    ),
    "train.early_stopping.min_delta": (
        ["train.early_stopping.enabled=true train.early_stopping.min_delta=-0.001"],
        ["train.early_stopping.enabled=true train.early_stopping.min_delta=0"],
    ),
    "baseline.device": (["baseline.device=tpu"], ["baseline.device=cpu", "baseline.device=gpu"]),
    "tracking.experiment": (["tracking.experiment=' '"], ["tracking.experiment=x"]),
}


def overrides(text: str) -> list[str]:
    """``"a=1 b='x y'"`` -> ``["a=1", "b='x y'"]``: split before each ``key=``."""
    return re.split(r" (?=[\w.+~]+=)", text)


REJECTED = [(key, o) for key, (bad, _) in RULES.items() for o in bad]
ACCEPTED = [(key, o) for key, (_, good) in RULES.items() for o in good]


@pytest.mark.parametrize(("key", "override"), REJECTED, ids=[o for _, o in REJECTED])
def test_the_rule_rejects_naming_the_key(key, override):
    with pytest.raises(ConfigError) as error:
        validate(compose(overrides(override)))
    message = str(error.value)
    assert message.startswith("invalid config: ")
    if override == "model.output_activation=sigmoid":  # one rule about a pair of keys
        assert "model: loss 'cross_entropy' needs a 'softmax' output" in message
    else:
        assert f"{key} = " in message or f"{key}: " in message, message


@pytest.mark.parametrize(("key", "override"), ACCEPTED, ids=[o for _, o in ACCEPTED])
def test_the_rule_accepts_its_boundary(key, override):
    validate(compose(overrides(override)))


# ---------------------------------------------------------------------------- completeness
def _config_checked_keys() -> set[str]:
    """The keys ``pipeline/config.py`` names in ``_check(...)`` / ``_fail(...)`` calls."""
    tree = ast.parse((ROOT / "pipeline/config.py").read_text())
    keys = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("_check", "_fail")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    return keys


#: The library's argument names -> the config key a case above exercises them through.
LIBRARY_NAMES = {
    "learning_rate": "optimizer.learning_rate",
    "momentum": "optimizer.momentum",
    "nesterov": "optimizer.nesterov",
    "weight_decay": "optimizer.weight_decay",
    "beta1": "optimizer.beta1",
    "beta2": "optimizer.beta2",
    "epsilon": "optimizer.epsilon",
    "layer_sizes": "model.hidden_sizes",
    "activations": "model.hidden_activation",
    "loss": "model.loss",
    "init": "model.init",
    "dtype": "train.dtype",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "max_norm": "train.max_norm",
    "dropout": "model.dropout",
    "input_dropout": "model.input_dropout",
    "step_size": "train.schedule.step_size",
    "gamma": "train.schedule.gamma",
    "warmup_epochs": "train.schedule.warmup_epochs",
    "final_fraction": "train.schedule.final_fraction",
    "monitor": "train.early_stopping.monitor",
    "patience": "train.early_stopping.patience",
    "min_delta": "train.early_stopping.min_delta",
    # mlp.schedules.get(name): the schema checks the name itself (train.schedule.name)
    "schedule": "train.schedule.name",
    "batch_parts": "train.batch_parts",
}
#: Library arguments no config key sets, and who sets them.
NOT_CONFIGURED = {
    "workers": "pipeline.threads: the cores for the blocks of train.batch_parts",
}


def _library_checked_names() -> set[str]:
    """Argument names the library checks: ``rules.<rule>("name", ...)`` and
    ``ParameterError("name", ...)`` in ``mlp/``."""
    names = set()
    for path in (ROOT / "mlp").glob("*.py"):
        if path.name == "rules.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func, "value", None)
            is_rule = isinstance(owner, ast.Name) and owner.id == "rules"
            if (is_rule or called == "ParameterError") and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    return names


def test_every_rule_of_the_schema_has_cases():
    checked = _config_checked_keys()
    assert {"data.backoff", "optimizer.momentum", "train.blas_threads"} <= checked
    assert not checked - set(RULES), f"rules with no case: {sorted(checked - set(RULES))}"


def test_every_rule_of_the_library_has_cases():
    names = _library_checked_names()
    assert {"nesterov", "beta1", "epsilon", "patience"} <= names
    unmapped = names - set(LIBRARY_NAMES) - set(NOT_CONFIGURED)
    assert not unmapped, f"library rules no config case reaches: {sorted(unmapped)}"
    assert {LIBRARY_NAMES[n] for n in names - set(NOT_CONFIGURED)} <= set(RULES)


# ---------------------------------------------------------------------------- mlp.rules itself
@pytest.mark.parametrize(
    ("rule", "refused", "accepted"),
    [
        (rules.positive, [0, -1e-300, np.inf, np.nan, True, "1"], [5e-324, 1, np.float32(0.5)]),
        (rules.non_negative, [-5e-324, np.inf, np.nan, False], [0, 0.0, 1e300]),
        (rules.positive_int, [0, -1, 1.0, True, np.float64(2)], [1, np.int64(1), 10**12]),
        (rules.non_negative_int, [-1, 0.0, False, np.float64(0)], [0, np.int8(0), 1]),
    ],
)
def test_library_rules_at_their_boundaries(rule, refused, accepted):
    for value in refused:
        with pytest.raises(rules.ParameterError) as error:
            rule("x", value)
        assert error.value.name == "x"
    for value in accepted:
        rule("x", value)


def test_fraction_at_its_boundaries():
    below_one = float(np.nextafter(1.0, 0.0))
    for allow_zero, refused, accepted in (
        (True, [-5e-324, 1.0, np.nan, True], [0.0, 5e-324, below_one]),
        (False, [0.0, 1.0, np.nan], [5e-324, below_one]),
    ):
        for value in refused:
            with pytest.raises(rules.ParameterError, match=re.escape("must be in")):
                rules.fraction("f", value, allow_zero=allow_zero)
        for value in accepted:
            assert rules.fraction("f", value, allow_zero=allow_zero) == value
