"""What a training run measured, under the names reports and MLflow use (:mod:`pipeline.names`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mlp import metrics
from pipeline.names import CURVES, TEST_METRIC_SOURCES, TRAIN_SECONDS

History = Mapping[str, Sequence[float]]


def history_rows(history: History) -> list[dict[str, float]]:
    """``fit``'s history as one row per epoch (columns: :data:`pipeline.names.CURVES`)."""
    keys = [k for k in CURVES if k in history]
    return [{CURVES[k]: history[k][i] for k in keys} for i in range(len(history["epoch"]))]


def train_seconds(history: History) -> float:
    """Wall seconds spent training (validation passes excluded)."""
    return float(sum(history["seconds"]))


def final_metrics(history: History) -> dict[str, float]:
    """``train_seconds``, and the last epoch's row as ``final_train_loss``, ``final_val_loss``..."""
    last = history_rows(history)[-1]
    final = {f"final_{k}": v for k, v in last.items() if k not in ("epoch", "epoch_seconds")}
    return {TRAIN_SECONDS: train_seconds(history), **final}


def metrics_on_test_set(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The metrics of :data:`pipeline.names.TEST_METRICS` for predicted probabilities."""
    report = metrics.classification_report(y_true, probs)
    return {name: report[source] for name, source in TEST_METRIC_SOURCES.items()}
