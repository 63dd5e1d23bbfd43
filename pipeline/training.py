"""What every entry point shares: build the configured model, train it, evaluate it.

The DVC ``train`` stage, the Hydra sweep and the TensorFlow baseline all call these, so one
configuration means one network everywhere. Plain values in, plain values out; no MLflow here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlp import MLP, Callback, metrics
from mlp import optimizers as _optimizers
from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]
PROCESSED = Path("data/processed/mnist.npz")
SUMMARY = Path("data/processed/summary.json")
N_CLASSES = 10

#: The test metrics every run reports, in JSON and in MLflow.
TEST_METRICS = (
    "test_top1_accuracy",
    "test_cross_entropy",
    "test_micro_accuracy",
    "test_micro_precision",
    "test_micro_recall",
    "test_macro_f1",
)


@dataclass
class Dataset:
    """The preprocessed split: float32 images ``(n, 784)`` in [0, 1] and int labels ``(n,)``."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    digests: dict[str, str] = field(default_factory=dict)


def load_dataset(
    path: str | Path = PROCESSED, train_limit: int | None = None, summary: str | Path | None = None
) -> Dataset:
    """Load the preprocess stage's ``.npz``; keep only the first ``train_limit`` training images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro preprocess` first")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if train_limit is not None:
        arrays["X_train"] = arrays["X_train"][:train_limit]
        arrays["y_train"] = arrays["y_train"][:train_limit]
    for key in ("y_train", "y_val", "y_test"):
        arrays[key] = arrays[key].astype(np.intp, copy=False)
    summary = Path(summary) if summary is not None else path.with_name(SUMMARY.name)
    return Dataset(**arrays, digests=data_digests(summary))


def data_digests(summary: str | Path = SUMMARY) -> dict[str, str]:
    """The SHA-256 of each source file, from the preprocess stage's summary (none if absent)."""
    summary = Path(summary)
    if not summary.exists():
        return {}
    return dict(json.loads(summary.read_text()).get("sha256", {}))


def build_model(cfg: Config, n_inputs: int = 784, n_classes: int = N_CLASSES) -> MLP:
    """The configured network ``[n_inputs, *hidden_sizes, n_classes]``, seeded by ``cfg.seed``."""
    m = cfg.model
    sizes = [n_inputs, *m.hidden_sizes, n_classes]
    activations = [m.hidden_activation] * len(m.hidden_sizes) + [m.output_activation]
    return MLP(sizes, activations, loss=m.loss, init=m.init, seed=cfg.seed, dtype=cfg.train.dtype)


def build_optimizer(cfg: Config) -> _optimizers.Optimizer:
    """The configured optimiser (``sgd``, ``momentum`` or ``adam``)."""
    o = cfg.optimizer
    if o.name == "adam":
        return _optimizers.Adam(
            o.learning_rate, o.beta1, o.beta2, o.epsilon, weight_decay=o.weight_decay
        )
    return _optimizers.SGD(
        o.learning_rate, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )


def blas_threads(n: int | None):
    """Limit BLAS threads for the duration of a ``with`` block (``None``: leave as is)."""
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def train_model(
    cfg: Config, data: Dataset, callbacks: Sequence[Callback] = ()
) -> tuple[MLP, dict[str, list[float]]]:
    """Build and train the configured model on ``data``; returns it and its history."""
    net = build_model(cfg, data.X_train.shape[1])
    validation = (data.X_val, data.y_val) if len(data.y_val) else None
    with blas_threads(cfg.train.blas_threads):
        history = net.fit(
            data.X_train,
            data.y_train,
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            optimizer=build_optimizer(cfg),
            validation=validation,
            shuffle=cfg.train.shuffle,
            callbacks=callbacks,
        )
    return net, history


def train_seconds(history: dict[str, list[float]]) -> float:
    """Wall seconds spent training (validation passes excluded)."""
    return float(sum(history["seconds"]))


def final_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    """``train_seconds``, and the last epoch's row as ``final_train_loss``, ``final_val_loss``..."""
    last = history_rows(history)[-1]
    final = {f"final_{k}": v for k, v in last.items() if k not in ("epoch", "epoch_seconds")}
    return {"train_seconds": train_seconds(history), **final}


def test_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The ``test_*`` metrics of :data:`TEST_METRICS` for predicted probabilities."""
    report = metrics.classification_report(y_true, probs)
    return {
        "test_top1_accuracy": report["top1_accuracy"],
        "test_cross_entropy": report["cross_entropy"],
        "test_micro_accuracy": report["micro_accuracy"],
        "test_micro_precision": report["micro_precision"],
        "test_micro_recall": report["micro_recall"],
        "test_macro_f1": report["macro_f1"],
    }


def history_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """The history as one row per epoch, with the column names used in reports and MLflow."""
    names = {
        "epoch": "epoch",
        "loss": "train_loss",
        "accuracy": "train_accuracy",
        "val_loss": "val_loss",
        "val_accuracy": "val_accuracy",
        "seconds": "epoch_seconds",
    }
    keys = [k for k in names if k in history]
    return [{names[k]: history[k][i] for k in keys} for i in range(len(history["epoch"]))]


def stage_parser(
    prog: str, description: str, model: Path, reports: Path
) -> argparse.ArgumentParser:
    """The command line shared by the stages that train: params, data, model and reports paths."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--data", type=Path, default=PROCESSED, help="preprocessed split")
    parser.add_argument("--model", type=Path, default=model, help="where to write the model")
    parser.add_argument("--reports", type=Path, default=reports, help="folder for the reports")
    return parser
