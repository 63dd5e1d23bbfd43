"""The libraries a configuration can be trained with, behind one small interface.

:func:`pipeline.training.run.train_and_record` trains any of them the same way; a framework only
says how to train, predict, save and describe itself, and which MLflow flavor its models are
logged in (:mod:`pipeline.tracking.models`):

- :data:`NUMPY`: this project's :class:`mlp.MLP` (the ``train`` stage and every sweep point);
- :class:`pipeline.training.keras_model.Keras`: the same network in TensorFlow/Keras, from the
  same initial weights and, with ``baseline.same_batches``, the same batches (the ``baseline``
  stage).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlp import MLP, Callback
from pipeline.names import BATCH_PARTS_TAG, BLAS_THREADS_TAG, N_CLASSES, N_INPUTS, WORKERS_TAG
from pipeline.threads import Plan, resolve_plan
from pipeline.training.build import build_model, build_optimizer, fit_options

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.data.dataset import Dataset

History = dict[str, list[float]]


class Framework(Protocol):
    """What :func:`~pipeline.training.run.train_and_record` needs of a library."""

    #: ``library`` tag of the run, and the word used in logs.
    name: str
    #: The MLflow flavor its models are logged in: ``"mlp"`` (pyfunc) or ``"keras"``.
    model_flavor: str

    def prepare(self, cfg: Config) -> None:
        """Fail early (before any run starts) when the library cannot train ``cfg`` here."""

    def tags(self, cfg: Config) -> dict[str, str]:
        """Extra tags for the run."""

    def train(
        self, cfg: Config, data: Dataset, callbacks: Sequence[Callback]
    ) -> tuple[Any, History]:
        """Train the configured network; returns the model and ``MLP.fit``'s history keys."""

    def predict_proba(self, cfg: Config, model: Any, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``."""

    def save(self, model: Any, path: Path) -> Path:
        """Write the model to ``path`` all-or-nothing."""

    def describe(self, cfg: Config, model: Any, history: History) -> dict[str, Any] | None:
        """What to write to ``info.json`` beside the model (``None``: nothing)."""


# ---------------------------------------------------------------------------- NumPy
def blas_threads(n: int | None):
    """Limit BLAS threads for the duration of a ``with`` block (``None``: leave as is)."""
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def layer_sizes(cfg: Config) -> list[int]:
    """The configured network's layer sizes, input first."""
    return [N_INPUTS, *cfg.model.hidden_sizes, N_CLASSES]


def training_plan(cfg: Config) -> Plan:
    """How a training of ``cfg`` computes in this process (:mod:`pipeline.threads`: blocks per
    batch, the threads sharing them, the BLAS threads of each)."""
    t = cfg.train
    return resolve_plan(t.blas_threads, t.batch_parts, layer_sizes(cfg), t.batch_size)


def training_threads(cfg: Config) -> int | None:
    """The BLAS threads each thread of a training of ``cfg`` uses in this process
    (``train.blas_threads`` auto, forced or the library's default); ``None``: no BLAS visible."""
    return training_plan(cfg).blas_threads


def thread_limit(cfg: Config, plan: Plan | None = None) -> int | None:
    """The limit to put on the BLAS pools around a training of ``cfg`` (``None``: none);
    ``plan``: its :func:`training_plan`, when already made."""
    if cfg.train.blas_threads is None:
        return None
    return (plan or training_plan(cfg)).blas_threads


def plan_tags(plan: Plan) -> dict[str, str]:
    """The run tags of ``plan``: BLAS threads (when known), blocks per batch, workers."""
    tags = {BATCH_PARTS_TAG: str(plan.batch_parts), WORKERS_TAG: str(plan.workers)}
    if plan.blas_threads:
        tags[BLAS_THREADS_TAG] = str(plan.blas_threads)
    return tags


def train_numpy(
    cfg: Config, data: Dataset, callbacks: Sequence[Callback] = ()
) -> tuple[MLP, History]:
    """Build and train the configured :class:`mlp.MLP` on ``data``; returns it and its history."""
    net = build_model(cfg, data.X_train.shape[1])
    plan = training_plan(cfg)
    with blas_threads(thread_limit(cfg, plan)):
        history = net.fit(
            data.X_train,
            data.y_train,
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            optimizer=build_optimizer(cfg),
            validation=data.validation,
            shuffle=cfg.train.shuffle,
            callbacks=callbacks,
            batch_parts=plan.batch_parts,
            workers=plan.workers,
            **fit_options(cfg),
        )
    return net, history


class NumPyMLP:
    """This project's NumPy MLP."""

    name = "numpy"
    model_flavor = "mlp"

    def prepare(self, cfg: Config) -> None:
        pass

    def tags(self, cfg: Config) -> dict[str, str]:
        return {"library": self.name, **plan_tags(training_plan(cfg))}

    def train(self, cfg: Config, data: Dataset, callbacks: Sequence[Callback]):
        return train_numpy(cfg, data, callbacks)

    def predict_proba(self, cfg: Config, model: MLP, X: np.ndarray) -> np.ndarray:
        return model.forward(X)

    def save(self, model: MLP, path: Path) -> Path:
        return model.save(path)

    def describe(self, cfg: Config, model: MLP, history: History) -> None:
        return None


NUMPY = NumPyMLP()
