"""The configuration schema, and its validation before any work starts.

``conf/`` (Hydra) is the source of truth; DVC composes it into ``params.yaml``. Both the DVC stage
scripts (which read ``params.yaml``) and the Hydra entry points (which compose ``conf/`` with
overrides) pass what they read through :func:`validate`, which merges it onto the structured
config below (OmegaConf dataclasses): a wrong type or an unknown key stops there. Then every value
is checked, with a message naming the key, the value and what is allowed: the pipeline's own
rules here (using :mod:`mlp.rules`, the library's), and the model's and optimiser's by building
them once with the library itself, so nothing the library would refuse gets past this point.

(The dataclasses are not registered in Hydra's ConfigStore: DVC composes ``conf/`` in its own
process, which never imports this module, so ``conf/`` cannot name them in a defaults list.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlp import SGD, Adam, EarlyStopping, rules, schedules
from mlp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from mlp.initializers import INITIALIZERS
from mlp.losses import LOSSES
from mlp.rules import ParameterError
from pipeline.errors import UsageError
from pipeline.names import (
    CONF_DIR,
    DEVICES,
    DTYPES,
    MNIST_COUNTS,
    OPTIMIZERS,
    PARAMS,
    SCHEDULES,
)
from pipeline.threads import AUTO

#: What ``train.batch_parts`` may be.
BATCH_PARTS_RULE = (
    "must be auto (two blocks for large networks on batches of 128 or more, else one) or an "
    "integer >= 1"
)
#: What ``train.blas_threads`` may be.
BLAS_THREADS_RULE = (
    "must be auto (the count follows the layer and batch sizes), an integer >= 1, "
    "or null (the BLAS library's default)"
)


class ConfigError(UsageError, ValueError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""


@dataclass
class FileConfig:
    filename: str
    sha256: str


@dataclass
class DataConfig:
    mirrors: list[str] = field(default_factory=list)
    files: dict[str, FileConfig] = field(default_factory=dict)
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    validation_size: int = 5000
    split_seed: int = 0
    train_limit: int | None = None


@dataclass
class ModelConfig:
    name: str = "reference"
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 16])
    hidden_activation: str = "tanh"
    output_activation: str = "softmax"
    loss: str = "cross_entropy"
    init: str = "xavier_normal"
    # Inverted dropout while training: the rate of every hidden layer's outputs, and of the inputs.
    dropout: float = 0.0
    input_dropout: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8


@dataclass
class ScheduleConfig:
    """The learning rate per epoch (:mod:`mlp.schedules`); ``none``: constant."""

    name: str = "none"
    step_size: int = 10
    gamma: float = 0.5
    warmup_epochs: int = 0
    final_fraction: float = 0.0


@dataclass
class EarlyStoppingConfig:
    """Stop when a validation metric stops improving (:class:`mlp.EarlyStopping`)."""

    enabled: bool = False
    monitor: str = "val_accuracy"
    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    shuffle: bool = True
    dtype: str = "float32"
    # "auto" (pipeline.threads: from the layer and batch sizes) or an integer >= 1 (forced).
    batch_parts: Any = "auto"
    # "auto" (pipeline.threads: from the layer and batch sizes), an integer >= 1 (forced), or
    # None (no limit: the BLAS library's default).
    blas_threads: Any = "auto"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    max_norm: float | None = None


@dataclass
class BaselineConfig:
    same_batches: bool = True
    device: str = "cpu"


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "mnist-mlp"


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _fail(key: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(f"invalid config: {key} = {value!r}: {allowed}")


def _check(key: str, rule: Callable[..., Any], value: Any, *args: Any) -> None:
    """``rule(key, value, *args)`` from :mod:`mlp.rules`, its refusal as a :class:`ConfigError`."""
    try:
        rule(key, value, *args)
    except ParameterError as exc:
        _fail(key, value, exc.rule)


def _check_values(cfg: Config) -> None:
    """The rules only the pipeline knows; :func:`_check_buildable` asks the library the rest."""
    if cfg.seed < 0:
        _fail("seed", cfg.seed, "must be an integer >= 0")

    d = cfg.data
    train_images = MNIST_COUNTS["train"]
    if d.split_seed < 0:
        _fail("data.split_seed", d.split_seed, "must be an integer >= 0")
    if not 0 <= d.validation_size < train_images:
        _fail("data.validation_size", d.validation_size, f"must be in [0, {train_images})")
    if d.train_limit is not None:
        _check("data.train_limit", rules.positive_int, d.train_limit)
    _check("data.timeout", rules.positive, d.timeout)
    _check("data.retries", rules.positive_int, d.retries)
    _check("data.backoff", rules.non_negative, d.backoff)

    m = cfg.model
    if not m.hidden_sizes:
        _fail("model.hidden_sizes", list(m.hidden_sizes), "needs at least one hidden layer size")
    for size in m.hidden_sizes:
        try:
            rules.positive_int("model.hidden_sizes", size)
        except ParameterError as exc:
            _fail("model.hidden_sizes", list(m.hidden_sizes), f"every size {exc.rule}")
    _check("model.hidden_activation", rules.one_of, m.hidden_activation, HIDDEN_ACTIVATIONS)
    _check("model.output_activation", rules.one_of, m.output_activation, tuple(ACTIVATIONS))
    _check("model.loss", rules.one_of, m.loss, tuple(LOSSES))
    _check("model.init", rules.one_of, m.init, tuple(INITIALIZERS))

    o = cfg.optimizer
    _check("optimizer.name", rules.one_of, o.name, OPTIMIZERS)
    if o.name == "momentum" and o.momentum == 0:
        _fail("optimizer.momentum", o.momentum, "the momentum optimizer needs momentum > 0")

    t = cfg.train
    _check("train.epochs", rules.positive_int, t.epochs)
    _check("train.batch_size", rules.positive_int, t.batch_size)
    _check("train.dtype", rules.one_of, t.dtype, DTYPES)
    if t.batch_parts != AUTO and (
        isinstance(t.batch_parts, bool) or not isinstance(t.batch_parts, int) or t.batch_parts < 1
    ):
        _fail("train.batch_parts", t.batch_parts, BATCH_PARTS_RULE)
    if t.blas_threads is not None and t.blas_threads != AUTO:
        if isinstance(t.blas_threads, bool) or not isinstance(t.blas_threads, int):
            _fail("train.blas_threads", t.blas_threads, BLAS_THREADS_RULE)
        try:
            rules.positive_int("train.blas_threads", t.blas_threads)
        except ParameterError:
            _fail("train.blas_threads", t.blas_threads, BLAS_THREADS_RULE)
    _check("train.schedule.name", rules.one_of, t.schedule.name, SCHEDULES)
    if t.early_stopping.enabled and d.validation_size == 0:
        _fail(
            "train.early_stopping.enabled",
            True,
            "early stopping watches the validation split: needs data.validation_size > 0",
        )

    _check("baseline.device", rules.one_of, cfg.baseline.device, DEVICES)
    if not cfg.tracking.experiment.strip():
        _fail("tracking.experiment", cfg.tracking.experiment, "must name an MLflow experiment")


#: The library's argument names -> the config keys they come from.
_LIBRARY_KEYS = {
    "layer_sizes": "model.hidden_sizes",
    "activations": "model.hidden_activation",
    "loss": "model.loss",
    "init": "model.init",
    "dtype": "train.dtype",
    "dropout": "model.dropout",
    "input_dropout": "model.input_dropout",
    "max_norm": "train.max_norm",
}


def _check_buildable(cfg: Config) -> None:
    """Build the configured network, optimiser and training options once, so that every value
    the library would refuse is refused here, before any run starts, named by its config key."""
    from pipeline.training.build import (
        build_early_stopping,
        build_model,
        build_optimizer,
        build_schedule,
        fit_options,
    )

    for section, build in (
        ("optimizer", build_optimizer),
        ("model", build_model),
        ("train.schedule", build_schedule),
        ("train.early_stopping", build_early_stopping),
        ("train", fit_options),
        # The fields of the options not in use too: a NaN or infinite value anywhere in the
        # config is refused before any run, not logged or left for a later run to trip on.
        ("optimizer", _unused_optimizer_fields),
        ("train.schedule", _unused_schedule_fields),
        ("train.early_stopping", _unused_early_stopping_fields),
    ):
        try:
            build(cfg)
        except ParameterError as exc:
            key = _LIBRARY_KEYS.get(exc.name, f"{section}.{exc.name}")
            value = OmegaConf.select(OmegaConf.structured(cfg), key, default=exc.value)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            _fail(key, value, exc.rule)
        except ValueError as exc:
            raise ConfigError(f"invalid config: {section}: {exc}") from None


def _unused_optimizer_fields(cfg: Config) -> None:
    o = cfg.optimizer
    Adam(o.learning_rate, o.beta1, o.beta2, o.epsilon, weight_decay=o.weight_decay)
    SGD(o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)


def _unused_schedule_fields(cfg: Config) -> None:
    s = cfg.train.schedule
    schedules.StepDecay(s.step_size, s.gamma)
    schedules.CosineDecay(s.warmup_epochs, s.final_fraction)


def _unused_early_stopping_fields(cfg: Config) -> None:
    e = cfg.train.early_stopping
    EarlyStopping(e.monitor, e.patience, e.min_delta, e.restore_best)


def validate(raw: dict | DictConfig) -> Config:
    """Check ``raw`` (a composed config) against the schema; return it as a typed ``Config``.

    Keys the schema does not know (Hydra's own ``hydra`` node aside) are errors: a typo must not
    silently fall back to a default.
    """
    if isinstance(raw, DictConfig):
        # Drop Hydra's own node before resolving: its interpolations (hydra.job.num, ...) only
        # resolve inside a running Hydra job.
        try:
            raw = OmegaConf.to_container(
                OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]), resolve=True
            )
        except OmegaConfBaseException as exc:
            raise invalid_config(exc) from None
    raw = {k: v for k, v in dict(raw).items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
    except OmegaConfBaseException as exc:
        raise invalid_config(exc) from None
    cfg: Config = OmegaConf.to_object(merged)
    _check_values(cfg)
    _check_buildable(cfg)
    return cfg


def invalid_config(exc: OmegaConfBaseException) -> ConfigError:
    """The usage error for a config OmegaConf cannot resolve or merge (an interpolation to a
    key that does not exist, a value of the wrong type), naming the key."""
    key = getattr(exc, "full_key", None) or "config"
    return ConfigError(f"invalid config: {key}: {str(exc).splitlines()[0]}")


def to_dict(cfg: Config) -> dict[str, Any]:
    """A plain nested dict of ``cfg`` (for logging and writing)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/`` with Hydra overrides, as ``dvc exp run -S`` and the entry points do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


#: The top-level sections every params file has (a missing one is an error, not a default).
SECTIONS = tuple(f.name for f in fields(Config))


def load_params(path: str | Path = PARAMS) -> Config:
    """Read and validate ``params.yaml`` (what DVC stage scripts do).

    Everything wrong with the file is one :class:`ConfigError` naming it: missing or unreadable,
    not YAML (a syntax error, a duplicate key, not UTF-8), not a mapping (empty, a list, a
    scalar), a missing or unknown section, an interpolation that does not resolve, or a value
    the schema refuses.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path} not found: run from the project root, or regenerate it with "
            "`python -m pipeline.params`"
        )
    raw = _read_yaml(path)
    regenerate = "fix it, or regenerate it with `python -m pipeline.params`"
    if raw is None:
        raise ConfigError(f"invalid config: {path} is empty: {regenerate}")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config: {path} holds a {type(raw).__name__}, not a mapping of the "
            f"sections {', '.join(SECTIONS)}: {regenerate}"
        )
    unknown = sorted(str(k) for k in raw if k not in SECTIONS and k != "hydra")
    if unknown:
        raise ConfigError(
            f"invalid config: {path} has unknown section(s) {', '.join(unknown)} (the sections "
            f"are {', '.join(SECTIONS)}): {regenerate}"
        )
    missing = [k for k in SECTIONS if k not in raw]
    if missing:
        raise ConfigError(
            f"invalid config: {path} lacks the section(s) {', '.join(missing)}; nothing falls "
            f"back to a default: {regenerate}"
        )
    try:
        return validate(OmegaConf.create(raw))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {path})") from None
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"invalid config: {path}: {reason}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML as OmegaConf reads it (``1e-3`` is a float), refusing a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", mark
                )
            if isinstance(key, (str, int, float, bool)) or key is None:
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; every way it cannot be read is a :class:`ConfigError`
    naming the file (and the line, for YAML errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"invalid config: {path} is not UTF-8 text (byte {exc.start}): is it the right file?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"invalid config: cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid config: {path} is not valid YAML{where}: {problem}") from None
