"""The configuration schema, and its validation before any work starts.

``conf/`` (Hydra) is the source of truth; DVC composes it into ``params.yaml``. Both the DVC stage
scripts (which read ``params.yaml``) and the Hydra entry points (which compose ``conf/`` with
overrides) pass what they read through :func:`validate`, which merges it onto the dataclasses
below (registered in Hydra's ConfigStore as ``schema``): a wrong type or an unknown key stops there,
and so does an impossible value, with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from mlp.initializers import INITIALIZERS
from mlp.losses import LOSSES

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
OPTIMIZER_NAMES = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
MNIST_TRAIN_IMAGES = 60_000


class ConfigError(ValueError):
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
    train_limit: int | None = None


@dataclass
class ModelConfig:
    name: str = "reference"
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 16])
    hidden_activation: str = "tanh"
    output_activation: str = "softmax"
    loss: str = "cross_entropy"
    init: str = "xavier_normal"


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
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    shuffle: bool = True
    dtype: str = "float32"
    blas_threads: int | None = None


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


def register_schema() -> None:
    """Register the schema in Hydra's ConfigStore (for ``@hydra.main`` apps and tests)."""
    ConfigStore.instance().store(name="schema", node=Config)


register_schema()


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid config: {key} = {value!r}: {allowed}")


def _check_values(cfg: Config) -> None:
    if cfg.seed < 0:
        _fail("seed", cfg.seed, "must be an integer >= 0")

    d = cfg.data
    if not 0 <= d.validation_size < MNIST_TRAIN_IMAGES:
        _fail("data.validation_size", d.validation_size, f"must be in [0, {MNIST_TRAIN_IMAGES})")
    if d.train_limit is not None and d.train_limit < 1:
        _fail("data.train_limit", d.train_limit, "must be null (all images) or an integer >= 1")
    if d.timeout <= 0:
        _fail("data.timeout", d.timeout, "must be > 0 seconds")
    if d.retries < 1:
        _fail("data.retries", d.retries, "must be an integer >= 1")
    if d.backoff < 0:
        _fail("data.backoff", d.backoff, "must be >= 0 seconds")

    m = cfg.model
    if not m.hidden_sizes:
        _fail("model.hidden_sizes", list(m.hidden_sizes), "needs at least one hidden layer size")
    for size in m.hidden_sizes:
        if size < 1:
            _fail("model.hidden_sizes", list(m.hidden_sizes), "every size must be >= 1")
    if m.hidden_activation not in HIDDEN_ACTIVATIONS:
        _fail(
            "model.hidden_activation", m.hidden_activation, f"must be one of {HIDDEN_ACTIVATIONS}"
        )
    if m.output_activation not in ACTIVATIONS:
        _fail(
            "model.output_activation", m.output_activation, f"must be one of {tuple(ACTIVATIONS)}"
        )
    if m.loss not in LOSSES:
        _fail("model.loss", m.loss, f"must be one of {tuple(LOSSES)}")
    if m.loss == "cross_entropy" and m.output_activation != "softmax":
        _fail("model.output_activation", m.output_activation, "cross_entropy needs 'softmax'")
    if m.init not in INITIALIZERS:
        _fail("model.init", m.init, f"must be one of {tuple(INITIALIZERS)}")

    o = cfg.optimizer
    if o.name not in OPTIMIZER_NAMES:
        _fail("optimizer.name", o.name, f"must be one of {OPTIMIZER_NAMES}")
    if not o.learning_rate > 0 or o.learning_rate == float("inf"):
        _fail("optimizer.learning_rate", o.learning_rate, "must be a finite number > 0")
    if not 0 <= o.momentum < 1:
        _fail("optimizer.momentum", o.momentum, "must be in [0, 1)")
    if o.name == "momentum" and o.momentum == 0:
        _fail("optimizer.momentum", o.momentum, "the momentum optimizer needs momentum > 0")
    if o.nesterov and o.momentum == 0:
        _fail("optimizer.nesterov", o.nesterov, "needs optimizer.momentum > 0")
    if o.weight_decay < 0:
        _fail("optimizer.weight_decay", o.weight_decay, "must be >= 0")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(o, key) < 1:
            _fail(f"optimizer.{key}", getattr(o, key), "must be in [0, 1)")
    if not o.epsilon > 0:
        _fail("optimizer.epsilon", o.epsilon, "must be > 0")

    t = cfg.train
    if t.epochs < 1:
        _fail("train.epochs", t.epochs, "must be an integer >= 1")
    if t.batch_size < 1:
        _fail("train.batch_size", t.batch_size, "must be an integer >= 1")
    if t.dtype not in DTYPES:
        _fail("train.dtype", t.dtype, f"must be one of {DTYPES}")
    if t.blas_threads is not None and t.blas_threads < 1:
        _fail("train.blas_threads", t.blas_threads, "must be null (library default) or >= 1")

    if cfg.baseline.device not in ("cpu", "gpu"):
        _fail("baseline.device", cfg.baseline.device, "must be one of ('cpu', 'gpu')")


def validate(raw: dict | DictConfig) -> Config:
    """Check ``raw`` (a composed config) against the schema; return it as a typed ``Config``.

    Keys the schema does not know (Hydra's own ``hydra`` node aside) are errors: a typo must not
    silently fall back to a default.
    """
    if isinstance(raw, DictConfig):
        # Drop Hydra's own node before resolving: its interpolations (hydra.job.num, ...) only
        # resolve inside a running Hydra job.
        raw = OmegaConf.to_container(
            OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]), resolve=True
        )
    raw = {k: v for k, v in dict(raw).items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"invalid config: {key}: {reason}") from None
    cfg: Config = OmegaConf.to_object(merged)
    _check_values(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """A plain nested dict of ``cfg`` (for logging and writing)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/`` with Hydra overrides, as ``dvc exp run -S`` and the entry points do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def load_params(path: str | Path = "params.yaml") -> Config:
    """Read and validate ``params.yaml`` (what DVC stage scripts do)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path} not found: run from the project root, or regenerate it with "
            "`python -m pipeline.params`"
        )
    return validate(OmegaConf.load(path))
