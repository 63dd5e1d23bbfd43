"""Faults, interruption, concurrency and reproducibility of the train stage."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline import train
from pipeline.config import compose, validate

from helpers.data import write_split
from helpers.mlflow_server import free_port
from helpers.project import (
    command_env,
    model_files,
    runs_of,
    train_command,
    training_in_progress,
    write_params,
)


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)]
)
def test_interrupted_training_is_killed_in_mlflow_and_leaves_no_outputs(
    tmp_path, store_uri, sig, code
):
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with training_in_progress(tmp_path, store_uri, **pipes) as process:
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    (run,) = runs_of(store_uri)
    assert run.info.status == "KILLED"
    assert not (tmp_path / "models/model.npz").exists()
    assert not (tmp_path / "reports/metrics.json").exists()
    assert not (tmp_path / "reports/history.csv").exists()


def test_unreachable_tracking_server_fails_fast_before_training(tmp_path):
    write_split(tmp_path / "data")
    write_params(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        train_command(tmp_path), env=command_env(uri), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "not reachable" in result.stderr and uri in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models/model.npz").exists()


def test_same_seed_and_config_give_bit_identical_models_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_split(tmp_path / "data")
    cfg = validate(compose([f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "train.epochs=2"]))
    results = []
    for name in ("a", "b"):
        result = train.run(cfg, data, tmp_path / name / "model.npz", tmp_path / name).metrics
        result.pop("train_seconds")
        result.pop("other_processes_cores")  # measurements of the machine, not of the training
        results.append(result)
    assert results[0] == results[1]
    assert (tmp_path / "a/model.npz").read_bytes() == (tmp_path / "b/model.npz").read_bytes()
    history = [(tmp_path / n / "history.csv").read_text().splitlines() for n in ("a", "b")]
    strip_seconds = [[line.rsplit(",", 1)[0] for line in h] for h in history]
    assert strip_seconds[0] == strip_seconds[1]


def _train_concurrently(tmp_path: Path, uri: str, n: int = 8) -> None:
    write_split(tmp_path / "data")
    write_params(tmp_path, "train.epochs=2")
    processes = [
        subprocess.Popen(
            train_command(tmp_path, str(i)),
            env=command_env(uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    failures = []
    for i, process in enumerate(processes):
        _, stderr = process.communicate(timeout=600)
        if process.returncode:
            failures.append((i, stderr[-2000:]))
    assert not failures


def _check_concurrent_runs(uri: str, tmp_path: Path, n: int = 8) -> None:
    runs = runs_of(uri)
    assert len(runs) == n
    client = MlflowClient(uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        for metric in ("train_loss", "val_accuracy", "epoch_seconds"):
            history = client.get_metric_history(run.info.run_id, metric)
            rows = [(m.step, m.timestamp, m.value) for m in history]  # shown when it fails
            assert [m.step for m in history] == [1, 2], (run.info.run_id, metric, rows)
        assert "train_seconds" in run.data.metrics
        assert "MLmodel" in model_files(uri, run.info.run_id)
    records = [json.loads((tmp_path / f"reports{i}/run.json").read_text()) for i in range(n)]
    assert {r["run_id"] for r in records} == {run.info.run_id for run in runs}
    # each registered its model: n versions of mnist-mlp, one per run
    versions = client.search_model_versions("name = 'mnist-mlp'")
    assert sorted(int(v.version) for v in versions) == list(range(1, n + 1))
    assert {v.run_id for v in versions} == {r["run_id"] for r in records}


@pytest.mark.slow
def test_eight_concurrent_trainings_into_one_sqlite_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _train_concurrently(tmp_path, uri)
    _check_concurrent_runs(uri, tmp_path)


@pytest.mark.slow
def test_eight_concurrent_trainings_against_a_tracking_server_lose_nothing(tmp_path, server):
    _train_concurrently(tmp_path, server["url"])
    _check_concurrent_runs(server["url"], tmp_path)
