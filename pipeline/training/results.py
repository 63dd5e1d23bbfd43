"""What a training run measured, under the names reports and MLflow use (:mod:`pipeline.names`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlp import metrics
from pipeline.names import BEST_EPOCH, CURVES, STOPPED_EPOCH, TEST_METRIC_SOURCES, TRAIN_SECONDS

History = Mapping[str, Any]


def history_rows(history: History) -> list[dict[str, float]]:
    """``fit``'s history as one row per epoch (columns: :data:`pipeline.names.CURVES`)."""
    keys = [k for k in CURVES if k in history]
    return [{CURVES[k]: history[k][i] for k in keys} for i in range(len(history["epoch"]))]


def train_seconds(history: History) -> float:
    """Wall seconds spent training (validation passes excluded)."""
    return float(sum(history["seconds"]))


def model_epoch(history: History) -> int:
    """The epoch whose weights the trained model holds: the best one when early stopping
    restored it, else the last one trained (1-based)."""
    if history.get("restored_best"):
        return int(history[BEST_EPOCH])
    return len(history["epoch"])


def final_metrics(history: History) -> dict[str, float]:
    """``train_seconds``, and the row of the model's epoch (:func:`model_epoch`: the last one, or
    the best one early stopping restored) as ``final_train_loss``, ``final_val_loss``...; with
    early stopping also ``best_epoch`` and ``stopped_epoch``."""
    row = history_rows(history)[model_epoch(history) - 1]
    final = {f"final_{k}": v for k, v in row.items() if k not in ("epoch", "epoch_seconds")}
    stopping = {k: int(history[k]) for k in (BEST_EPOCH, STOPPED_EPOCH) if k in history}
    return {TRAIN_SECONDS: train_seconds(history), **final, **stopping}


def metrics_on_test_set(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The metrics of :data:`pipeline.names.TEST_METRICS` for predicted probabilities."""
    report = metrics.classification_report(y_true, probs)
    return {name: report[source] for name, source in TEST_METRIC_SOURCES.items()}
