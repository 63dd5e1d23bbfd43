"""The store looks after itself when a command opens it: runs whose process died end KILLED, and
a copied or moved project keeps its artifacts inside itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mlp import MLP
from pipeline import tracking, train
from pipeline.config import compose, validate
from pipeline.tracking import portable, reaper
from pipeline.tracking.provenance import process_tags

from helpers.data import write_split
from helpers.project import (
    ROOT,
    clone_working_tree,
    command_env,
    run_module,
    runs_of,
    train_command,
    training_in_progress,
    write_params,
)

pytestmark = pytest.mark.usefixtures("clean_mlflow_state")


# ---------------------------------------------------------------------------- stale runs
def test_a_training_killed_with_sigkill_is_ended_killed_by_the_next_command(tmp_path, store_uri):
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with training_in_progress(tmp_path, store_uri, **quiet) as process:
        process.kill()  # SIGKILL: nothing of it runs again, its run stays RUNNING
        process.wait(timeout=60)
    (run,) = runs_of(store_uri)
    assert run.info.status == "RUNNING"

    # the next command of the project that opens the store
    done = run_module("pipeline.reproduce", run.info.run_id, "--uri", store_uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(store_uri)
    assert run.info.status == "KILLED"
    reason = run.data.tags["failure_reason"]
    assert f"pid {process.pid} on {socket.gethostname()}" in reason


def test_live_runs_and_other_hosts_runs_are_left_alone(store_uri):
    client = MlflowClient(store_uri)
    experiment = client.create_experiment("unit")
    me = process_tags()

    def running(**tags: str) -> str:
        return client.create_run(experiment, tags=tags).info.run_id

    alive = running(**me)
    elsewhere = running(host="another-host", pid="1", **{"process.started": "1970-01-01T00:00Z"})
    untagged = running()
    reused = running(host=me["host"], pid=me["pid"], **{"process.started": "2001-01-01T00:00Z"})
    gone = running(host=me["host"], pid=str(_a_dead_pid()))
    unfinished = client.create_logged_model(experiment, "model", source_run_id=gone)  # PENDING

    assert sorted(reaper.reap_stale_runs(client)) == sorted([reused, gone])
    assert client.get_logged_model(unfinished.model_id).status == "FAILED"
    status = {rid: client.get_run(rid).info.status for rid in (alive, elsewhere, untagged)}
    assert set(status.values()) == {"RUNNING"}
    assert client.get_run(reused).info.status == "KILLED"
    assert "pid" in client.get_run(gone).data.tags["failure_reason"]


def test_a_run_open_in_this_process_survives_another_command_opening_the_store(store_uri):
    script = "import sys; from pipeline import tracking; tracking.open_store(sys.argv[1])"
    with tracking.start_run({"a": 1}, stage="unit", experiment="unit", uri=store_uri) as run:
        done = subprocess.run(
            [sys.executable, "-c", script, store_uri],
            cwd=ROOT, env=command_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert MlflowClient(store_uri).get_run(run.id).info.status == "RUNNING"
    assert MlflowClient(store_uri).get_run(run.id).info.status == "FINISHED"


def _a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------------------- copied projects
def _config(folder: Path):
    return validate(compose([f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", "train.epochs=2"]))


def test_a_moved_project_writes_and_reads_its_artifacts_inside_itself(
    project, tmp_path_factory, monkeypatch
):
    first = train.run(_config(project))
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(project, moved)
    shutil.rmtree(project)  # a move: the old folder is gone

    monkeypatch.chdir(moved)
    uri = f"sqlite:///{moved / 'mlflow.db'}"
    second = train.run(_config(moved))
    client = MlflowClient(uri)
    inside = (moved / "mlartifacts").as_uri() + "/"
    for run_id in (first.run_id, second.run_id):
        assert client.get_run(run_id).info.artifact_uri.startswith(inside), run_id
    for model_id in (first.model_id, second.model_id):
        assert client.get_logged_model(model_id).artifact_location.startswith(inside)
    for version in client.search_model_versions("name = 'mnist-mlp'"):
        assert version.source.startswith("models:/m-")
    assert not project.exists()  # nothing recreated the old folder

    # the first run's model still loads, from the moved folder
    mlflow.set_tracking_uri(uri)
    X = np.load(moved / "data/processed/mnist.npz")["X_test"]
    probs = mlflow.pyfunc.load_model(f"models:/mnist-mlp/{first.model_version}").predict(X)
    assert probs.shape == (len(X), 10)
    assert portable.relocate_artifacts(uri) == []  # done once, then nothing to do


def test_relocation_rewrites_only_locations_under_another_mlartifacts(tmp_path, store_uri):
    client = MlflowClient(store_uri)
    elsewhere = "file:///somewhere/else/mlartifacts"
    ours = client.create_experiment("ours", elsewhere)
    other = client.create_experiment("other", "file:///data/team-artifacts")
    run = client.create_run(ours)
    kept = client.create_run(other)
    assert portable.relocate_artifacts(store_uri) == [elsewhere]
    beside = (Path(store_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    assert client.get_experiment(ours).artifact_location == beside
    assert client.get_run(run.info.run_id).info.artifact_uri == (
        f"{beside}/{run.info.run_id}/artifacts"
    )
    assert client.get_experiment(other).artifact_location == "file:///data/team-artifacts"
    assert client.get_run(kept.info.run_id).info.artifact_uri.startswith(
        "file:///data/team-artifacts/"
    )


def test_make_ui_opens_the_store_first(tmp_path, store_uri):
    """``python -m pipeline.tracking``: what every command does on opening the store."""
    client = MlflowClient(store_uri)
    moved = client.create_experiment("moved", "file:///old/project/mlartifacts")
    done = run_module("pipeline.tracking", "--uri", store_uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "artifacts moved from file:///old/project/mlartifacts" in done.stderr
    assert client.get_experiment(moved).artifact_location.endswith("/store/mlartifacts")


@pytest.mark.slow
def test_a_copied_project_folder_keeps_writing_into_itself(tmp_path):
    """The real thing: a project (code, data, store) trained in, copied with ``cp -a``, trained
    in again with its default store: the copy's runs and models live in the copy only."""
    original = clone_working_tree(tmp_path / "original")
    write_split(original / "data")
    write_params(original, "train.epochs=2")

    def train_in(folder: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PYTHONPATH"] = str(folder)  # the folder's own code: its default store is its own
        done = subprocess.run(
            train_command(folder), cwd=folder, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((folder / "reports/run.json").read_text())

    first = train_in(original)
    assert first["tracking_uri"] == f"sqlite:///{original / 'mlflow.db'}"
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    before = sorted(p.relative_to(original) for p in (original / "mlartifacts").rglob("*"))

    second = train_in(copy)
    assert second["tracking_uri"] == f"sqlite:///{copy / 'mlflow.db'}"
    client = MlflowClient(second["tracking_uri"])
    inside = (copy / "mlartifacts").as_uri() + "/"
    for record in (first, second):
        assert client.get_run(record["run_id"]).info.artifact_uri.startswith(inside)
        assert client.get_logged_model(record["model_id"]).artifact_location.startswith(inside)
    after = sorted(p.relative_to(original) for p in (original / "mlartifacts").rglob("*"))
    assert after == before  # the original got nothing from the copy
    assert MLP.load(copy / "models/model.npz").layer_sizes == [784, 32, 16, 10]
