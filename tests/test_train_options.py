"""The training options of the config (schedule, early stopping, dropout, max-norm) in a tracked
run of the train stage, on the tiny synthetic split."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mlp import MLP
from pipeline import train
from pipeline.config import compose, validate
from pipeline.data.dataset import load_dataset
from pipeline.names import PROCESSED


def test_schedule_and_early_stopping_reach_the_history_and_mlflow(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    cfg = validate(
        compose(
            [
                f"tracking.uri={uri}",
                "train.epochs=40",
                "train.batch_size=16",
                "train.schedule.name=step",
                "train.schedule.step_size=2",
                "train.schedule.gamma=0.5",
                "train.early_stopping.enabled=true",
                "train.early_stopping.patience=3",
                "model.dropout=0.2",
                "train.max_norm=4",
            ]
        )
    )
    result = train.run(cfg)
    metrics = result.metrics
    best, stopped = metrics["best_epoch"], metrics["stopped_epoch"]
    assert stopped < 40, "the tiny split is learnt at once: validation accuracy stops improving"
    assert stopped - best == 3

    with open(project / "reports/train/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == stopped
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates == [0.1 * 0.5 ** ((e - 1) // 2) for e in range(1, stopped + 1)]
    # the model kept is the best epoch's: its validation metrics are the run's final ones
    assert metrics["final_val_accuracy"] == float(rows[best - 1]["val_accuracy"])
    net = MLP.load(project / "models/model.npz")
    split = load_dataset(project / PROCESSED)
    kept_accuracy = np.mean(net.predict(split.X_val) == split.y_val)
    assert kept_accuracy == pytest.approx(metrics["final_val_accuracy"])
    assert max(np.linalg.norm(W, axis=0).max() for W in net.weights) <= 4 * (1 + 1e-6)

    client = MlflowClient(uri)
    curve = client.get_metric_history(result.run_id, "learning_rate")
    assert [(m.step, m.value) for m in curve] == list(enumerate(rates, start=1))
    logged = client.get_run(result.run_id).data
    assert logged.metrics["best_epoch"] == best and logged.metrics["stopped_epoch"] == stopped
    assert logged.params["model.dropout"] == "0.2"
    assert logged.params["train.early_stopping.patience"] == "3"
