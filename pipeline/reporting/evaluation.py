"""The test-set report of a trained model: metrics, confusion matrix, per-class scores, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlp import metrics
from pipeline.files import read_history, read_json, write_csv, write_json
from pipeline.names import (
    CURVES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    N_CLASSES,
    OTHER_LOAD,
    TRAIN_SECONDS,
)
from pipeline.reporting import plots
from pipeline.training.results import metrics_on_test_set


def write_evaluation(
    probs: np.ndarray,
    y_test: np.ndarray,
    train_reports: Path,
    reports: Path,
    metrics_path: Path,
) -> tuple[dict[str, float], list[Path]]:
    """Score ``probs`` against ``y_test`` and write every report: ``metrics_path`` (the test
    metrics and the training's ``train_seconds``) and, in ``reports``, the confusion matrix (CSV
    and PNG), the per-example predictions, the per-class report and the learning curves of the
    training in ``train_reports``. Returns the metrics and the files written."""
    predicted = probs.argmax(axis=1)
    result = metrics_on_test_set(y_test, probs)
    train = read_json(train_reports / METRICS_FILE, "train")
    result[TRAIN_SECONDS] = train[TRAIN_SECONDS]
    if OTHER_LOAD in train:  # how busy the machine was meanwhile (`compare` reads it)
        result[OTHER_LOAD] = train[OTHER_LOAD]

    cm = metrics.confusion_matrix(y_test, predicted, N_CLASSES)
    per_class = metrics.per_class(y_test, predicted, N_CLASSES)
    written = [
        write_csv(
            reports / "confusion_matrix.csv",
            ["true", *[f"predicted_{j}" for j in range(N_CLASSES)]],
            [[i, *cm[i].tolist()] for i in range(N_CLASSES)],
        ),
        write_csv(
            reports / "predictions.csv",
            ["actual", "predicted"],
            zip(y_test.tolist(), predicted.tolist(), strict=True),
        ),
        write_csv(
            reports / "per_class.csv",
            ["digit", "precision", "recall", "f1", "support"],
            [
                [
                    d,
                    *(round(float(per_class[k][d]), 6) for k in ("precision", "recall", "f1")),
                    int(per_class["support"][d]),
                ]
                for d in range(N_CLASSES)
            ],
        ),
        plots.confusion_matrix(
            cm,
            reports / "confusion_matrix.png",
            f"Test set: top-1 accuracy {result['test_top1_accuracy']:.4f}",
        ),
    ]
    rows = read_history(train_reports / HISTORY_FILE, "train")
    written.append(plots.learning_curves(rows, reports / CURVES_FILE, "MLP training"))
    write_json(metrics_path, result)
    return result, written
