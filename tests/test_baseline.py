"""The baseline stage on a tiny synthetic split, tracked in a temporary MLflow store."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline import baseline
from pipeline.config import compose, to_dict, validate
from pipeline.data.dataset import load_dataset
from pipeline.names import TEST_METRICS
from pipeline.training import keras_model
from pipeline.training.build import run_name
from pipeline.training.frameworks import train_numpy
from pipeline.training.results import metrics_on_test_set

from helpers.project import model_files

keras_model.import_tensorflow("cpu")

OUTPUTS = (
    "models/baseline.keras",
    "reports/baseline/metrics.json",
    "reports/baseline/history.csv",
    "reports/baseline/info.json",
    "reports/baseline/learning_curves.png",
)


@pytest.fixture
def config(project, store_uri, request):
    def make(*overrides):
        experiment = f"tracking.experiment={request.node.name}"
        return validate(
            compose([f"tracking.uri={store_uri}", experiment, "train.epochs=3", *overrides])
        )

    return make


def only_run(cfg):
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    (recorded,) = client.search_runs([experiment.experiment_id])
    return client, recorded


def write_params(project, cfg):
    path = project / "params.yaml"
    OmegaConf.save(OmegaConf.create(to_dict(cfg)), path)
    return path


def test_baseline_writes_what_train_writes_and_one_mlflow_run(project, config):
    cfg = config("train.batch_size=16")
    result = baseline.run(cfg)

    # The metric names of reports/metrics.json, the columns of reports/train/history.csv.
    written = json.loads((project / "reports/baseline/metrics.json").read_text())
    assert written == result.metrics
    assert {*TEST_METRICS, "train_seconds"} <= set(written)
    assert written["train_seconds"] > 0
    with open(project / "reports/baseline/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"]
    assert list(rows[0]) == columns
    info = json.loads((project / "reports/baseline/info.json").read_text())
    assert info["same_batches"] is True
    assert info["processing_unit"].startswith("CPU, ")
    assert (info["epochs"], info["batch_size"], info["learning_rate"]) == (3, 16, 0.1)

    # The same computation as the NumPy model: same start, same batches, same metrics.
    data = load_dataset(project / "data/processed/mnist.npz")
    net, history = train_numpy(cfg, data)
    ours = metrics_on_test_set(data.y_test, net.forward(data.X_test))
    for name in TEST_METRICS:
        assert written[name] == pytest.approx(ours[name], abs=1e-5), name
    np.testing.assert_allclose([float(r["train_loss"]) for r in rows], history["loss"], rtol=1e-5)

    # The saved model is the trained one.
    model = keras_model.load_keras_model(project / "models/baseline.keras")
    probs = keras_model.predict_proba(model, data.X_test, "float32")
    assert metrics_on_test_set(data.y_test, probs) == pytest.approx(
        {k: written[k] for k in TEST_METRICS}
    )

    client, recorded = only_run(cfg)
    assert recorded.info.run_id == info["mlflow_run_id"]
    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["stage"] == "baseline"
    assert recorded.data.tags["library"] == "tensorflow"
    assert recorded.info.run_name == f"tensorflow {run_name(cfg)}"  # the NumPy run's, prefixed
    assert recorded.data.params["train.batch_size"] == "16"
    for name in (*TEST_METRICS, "train_seconds"):
        assert name in recorded.data.metrics, name
    assert not [name for name in recorded.data.metrics if name.startswith("final_")]
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        assert len(client.get_metric_history(recorded.info.run_id, name)) == 3, name
    artifacts = {a.path for a in client.list_artifacts(recorded.info.run_id, "reports")}
    assert "reports/history.csv" in artifacts
    # The run's "model" is an MLflow model in the Keras flavor (tests/test_models.py loads it).
    files = model_files(cfg.tracking.uri, recorded.info.run_id)
    assert "MLmodel" in files and "data" in files
    assert result.model_id and result.model_version is None  # logged, not registered


def test_own_shuffle_when_same_batches_is_off(project, config):
    cfg = config("baseline.same_batches=false", "train.epochs=1")
    baseline.run(cfg)
    info = json.loads((project / "reports/baseline/info.json").read_text())
    assert info["same_batches"] is False
    assert "own shuffle" in info["batches"]


def test_diverging_baseline_writes_nothing_and_is_marked_failed(project, config):
    cfg = config("model.hidden_activation=linear", "optimizer.learning_rate=1e5")
    (project / "models").mkdir()
    (project / "models/baseline.keras").write_bytes(b"an older model")
    with pytest.raises(keras_model.BaselineError, match="diverged"):
        baseline.run(cfg)
    for path in OUTPUTS:
        assert not (project / path).exists(), path
    _, recorded = only_run(cfg)
    assert recorded.info.status == "FAILED"


def test_gpu_without_a_gpu_is_a_clear_error_before_any_run(project, config, capsys):
    cfg = config("baseline.device=gpu")
    assert baseline.main(["--params", str(write_params(project, cfg))]) == 2
    err = capsys.readouterr().err
    assert "sees no GPU" in err and "baseline.device=cpu" in err
    assert "Traceback" not in err
    client = MlflowClient(cfg.tracking.uri)
    assert client.get_experiment_by_name(cfg.tracking.experiment) is None  # no run was started


def test_missing_data_says_which_stage_to_run(project, config, capsys):
    params = write_params(project, config())
    assert baseline.main(["--params", str(params), "--data", str(project / "nope.npz")]) == 2
    assert "dvc repro preprocess" in capsys.readouterr().err


def test_options_keras_cannot_reproduce_are_refused_before_any_run(project, config, capsys):
    for override, named in (
        ("model.dropout=0.5", "model.dropout"),
        ("model.input_dropout=0.2", "model.input_dropout"),
        ("train.early_stopping.enabled=true", "train.early_stopping.enabled"),
    ):
        cfg = config(override)
        assert baseline.main(["--params", str(write_params(project, cfg))]) == 2
        err = capsys.readouterr().err
        assert named in err and "error:" in err and "Traceback" not in err
        client = MlflowClient(cfg.tracking.uri)
        assert client.get_experiment_by_name(cfg.tracking.experiment) is None  # no run started
        assert not (project / "models/baseline.keras").exists()


@pytest.mark.slow  # a fresh process that imports TensorFlow: minutes on a busy machine
def test_tensorflow_gets_the_thread_policys_count_in_a_fresh_process(project, config):
    """TensorFlow takes its thread counts only before its first operation, so the stage runs
    in a process of its own: the reference network gets one thread, as the NumPy MLP does."""
    import subprocess
    import sys

    cfg = config()
    params = write_params(project, cfg)
    process = subprocess.run(
        [sys.executable, "-m", "pipeline.baseline", "--params", str(params)],
        cwd=project, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    info = json.loads((project / "reports/baseline/info.json").read_text())
    assert info["threads"] == 1
    _, recorded = only_run(cfg)
    assert recorded.data.tags["tensorflow.threads"] == "1"
    assert "TensorFlow already runs" not in process.stderr
