"""The configured network and optimiser, built from a :class:`~pipeline.config.Config`: one
configuration means one network in every entry point (and, copied, in Keras)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlp import MLP, SGD, Adam, Optimizer
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


def run_name(cfg: Config) -> str:
    """``"reference 32-16 sgd lr=0.1"``: what a person reads in a list of runs."""
    sizes = "-".join(map(str, cfg.model.hidden_sizes))
    return f"{cfg.model.name} {sizes} {cfg.optimizer.name} lr={cfg.optimizer.learning_rate:g}"
