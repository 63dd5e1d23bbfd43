"""The configured network and optimiser, built from a :class:`~pipeline.config.Config`: one
configuration means one network in every entry point (and, copied, in Keras)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlp import MLP, SGD, Adam, EarlyStopping, Optimizer, schedules
from mlp.regularization import dropout_rates
from mlp.rules import positive
from pipeline.names import N_CLASSES, N_INPUTS

if TYPE_CHECKING:
    from pipeline.config import Config


def build_model(cfg: Config, n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES) -> MLP:
    """The configured network ``[n_inputs, *hidden_sizes, n_classes]``, seeded by ``cfg.seed``."""
    m = cfg.model
    sizes = [n_inputs, *m.hidden_sizes, n_classes]
    activations = [m.hidden_activation] * len(m.hidden_sizes) + [m.output_activation]
    return MLP(sizes, activations, loss=m.loss, init=m.init, seed=cfg.seed, dtype=cfg.train.dtype)


def build_optimizer(cfg: Config) -> Optimizer:
    """The configured optimiser: ``sgd`` and ``momentum`` are :class:`mlp.SGD` (with
    ``optimizer.momentum`` and ``nesterov``), ``adam`` is :class:`mlp.Adam`."""
    o = cfg.optimizer
    if o.name == "adam":
        return Adam(o.learning_rate, o.beta1, o.beta2, o.epsilon, weight_decay=o.weight_decay)
    return SGD(
        o.learning_rate, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )


def build_schedule(cfg: Config) -> schedules.Schedule | None:
    """The configured learning-rate schedule (``train.schedule``); ``None`` for ``none``."""
    s = cfg.train.schedule
    if s.name == "step":
        return schedules.StepDecay(s.step_size, s.gamma)
    if s.name == "exponential":
        return schedules.ExponentialDecay(s.gamma)
    if s.name == "cosine":
        return schedules.CosineDecay(s.warmup_epochs, s.final_fraction)
    return None


def build_early_stopping(cfg: Config) -> EarlyStopping | None:
    """The configured early stopping (``train.early_stopping``); ``None`` unless enabled."""
    e = cfg.train.early_stopping
    if not e.enabled:
        return None
    return EarlyStopping(e.monitor, e.patience, e.min_delta, e.restore_best)


def fit_options(cfg: Config) -> dict[str, Any]:
    """The keyword arguments of :meth:`mlp.MLP.fit` beyond data, epochs, batches and optimiser:
    the schedule, dropout, max-norm and early stopping of ``cfg`` (each off by default)."""
    m, t = cfg.model, cfg.train
    dropout_rates(len(m.hidden_sizes), m.dropout, m.input_dropout)  # refused here, named
    return {
        "schedule": build_schedule(cfg),
        "dropout": m.dropout,
        "input_dropout": m.input_dropout,
        "max_norm": None if t.max_norm is None else positive("max_norm", t.max_norm),
        "early_stopping": build_early_stopping(cfg),
    }


def run_name(cfg: Config) -> str:
    """``"reference 32-16 sgd lr=0.1"``: what a person reads in a list of runs."""
    sizes = "-".join(map(str, cfg.model.hidden_sizes))
    return f"{cfg.model.name} {sizes} {cfg.optimizer.name} lr={cfg.optimizer.learning_rate:g}"
