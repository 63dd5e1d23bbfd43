"""The train and evaluate stages on a tiny synthetic split, tracked in a temporary MLflow store."""

from __future__ import annotations

import csv
import json

import pytest
from mlflow.tracking import MlflowClient

from mlp import MLP, DivergenceError
from pipeline import evaluate, train
from pipeline.config import compose, validate

from helpers.project import model_files


def config(project, *overrides):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return validate(compose([f"tracking.uri={uri}", "train.epochs=3", *overrides]))


def test_train_then_evaluate_writes_reports_and_one_mlflow_run(project):
    cfg = config(project, "train.batch_size=16")
    result = train.run(cfg)
    assert result.metrics["train_seconds"] > 0

    model = MLP.load(project / "models/model.npz")
    assert model.layer_sizes == [784, 32, 16, 10]
    with open(project / "reports/train/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "epoch_seconds",
    }

    metrics, run_id = evaluate.run(cfg)
    written = json.loads((project / "reports/metrics.json").read_text())
    assert written == metrics
    assert set(written) == {
        "test_top1_accuracy",
        "test_cross_entropy",
        "test_micro_accuracy",
        "test_micro_precision",
        "test_micro_recall",
        "test_macro_f1",
        "train_seconds",
        "other_processes_cores",  # how busy the machine was: `compare` needs it
    }
    assert written["other_processes_cores"] >= 0
    assert written["test_top1_accuracy"] > 0.5  # it learned (chance is 0.1)
    for name in (
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "learning_curves.png",
        "per_class.csv",
        "predictions.csv",
    ):
        assert (project / "reports/evaluate" / name).stat().st_size > 0
    with open(project / "reports/evaluate/confusion_matrix.csv") as fh:
        counts = [list(map(int, row[1:])) for row in list(csv.reader(fh))[1:]]
    assert sum(map(sum, counts)) == 200
    assert run_id == json.loads((project / "reports/train/run.json").read_text())["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # evaluate completed the training run
    recorded = runs[0]
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["optimizer.learning_rate"] == "0.1"
    assert recorded.data.params["model.hidden_sizes"] in ("[32, 16]", "[32,16]")
    assert recorded.data.metrics["test_top1_accuracy"] == pytest.approx(
        metrics["test_top1_accuracy"]
    )
    assert len(client.get_metric_history(run_id, "train_loss")) == 3
    assert recorded.data.tags["stage"] == "train"
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts
    # The run's "model" is its MLflow model (tests/test_models.py loads it).
    assert "MLmodel" in model_files(cfg.tracking.uri, run_id)


def test_diverging_run_writes_no_model_and_is_marked_failed(project):
    # Linear hidden layers have nothing to saturate: at this learning rate the weights overflow.
    cfg = config(project, "model.hidden_activation=linear", "optimizer.learning_rate=1e5")
    (project / "models").mkdir()
    (project / "models/model.npz").write_bytes(b"an older model")
    with pytest.raises(DivergenceError):
        train.run(cfg)
    assert not (project / "models/model.npz").exists()
    assert not (project / "reports/train/metrics.json").exists()
    client = MlflowClient(cfg.tracking.uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    assert recorded.info.status == "FAILED"
    assert int(recorded.data.tags["diverged_epoch"]) >= 1


def test_train_main_reports_a_bad_config_without_a_traceback(project, capsys):
    (project / "params.yaml").write_text("train:\n  epochs: 0\n")
    assert train.main(["--params", str(project / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "train.epochs = 0" in err
    assert "Traceback" not in err
    assert not (project / "models").exists()  # stopped before any work
    assert not (project / "mlruns").exists() and not (project / "mlartifacts").exists()


def test_training_respects_the_configured_blas_threads(project):
    from threadpoolctl import threadpool_info

    from mlp import Callback
    from pipeline.data.dataset import load_dataset
    from pipeline.training.frameworks import train_numpy

    seen = []

    class Probe(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    data = load_dataset(project / "data/processed/mnist.npz")
    train_numpy(config(project, "train.blas_threads=1", "train.epochs=2"), data, [Probe()])
    assert seen == [{1}, {1}]
