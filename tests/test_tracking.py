"""pipeline.tracking on the embedded SQLite store, and the training progress bar."""

from __future__ import annotations

import ast
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

import mlp
from pipeline import tracking
from pipeline.errors import Terminated, install_sigterm_handler
from pipeline.tracking import provenance, store
from pipeline.training.progress import ProgressBar

from helpers.mlflow_server import free_port
from helpers.project import ROOT, command_env

pytestmark = pytest.mark.usefixtures("clean_mlflow_state")

CONFIG = {
    "seed": 0,
    "model": {"layer_sizes": [8, 6, 3], "activations": ["tanh", "softmax"]},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "train": {"epochs": 2, "batch_size": 32, "shuffle": True, "blas_threads": None},
}


@pytest.fixture
def uri(store_uri) -> str:
    return store_uri


@pytest.fixture
def store_dir(store_uri) -> Path:
    return Path(store_uri.removeprefix("sqlite:///")).parent


def _data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    return X, y


# ---------------------------------------------------------------------------- where the store is
def test_project_root_is_the_repository():
    assert store.project_root() == ROOT
    assert (ROOT / ".dvc").is_dir()


def test_default_uri_is_absolute_sqlite_in_the_project_root():
    assert tracking.resolve_tracking_uri() == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert tracking.resolve_tracking_uri(None, ROOT).startswith("sqlite:////")


def test_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_tracking_uri("sqlite:///other.db", tmp_path) == (
        "http://tracking.example:5000"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/env.db")
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/rel/env.db"


def test_configured_uri_relative_sqlite_made_absolute(tmp_path):
    assert tracking.resolve_tracking_uri("sqlite:///runs/m.db", tmp_path) == (
        f"sqlite:///{tmp_path}/runs/m.db"
    )
    absolute = f"sqlite:///{tmp_path}/abs.db"
    assert tracking.resolve_tracking_uri(absolute, tmp_path / "elsewhere") == absolute
    assert tracking.resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.parametrize("copy", [".dvc/tmp/exps/tmpa1b2c3", ".dvc/tmp/exps/standalone/tmpz9"])
def test_dvc_experiment_copy_uses_the_real_repository(tmp_path, copy):
    repo = tmp_path / "repo"
    root = repo / copy
    assert store.store_root(root) == repo
    assert tracking.resolve_tracking_uri(None, root) == f"sqlite:///{repo}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", root) == f"sqlite:///{repo}/x.db"
    assert store.store_root(repo) == repo


def test_artifact_location_beside_the_sqlite_file(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert store.artifact_location(uri) == (tmp_path / "mlartifacts").as_uri()
    assert store.artifact_location("http://host:5000") is None


# ---------------------------------------------------------------------------- what a run records
def test_flatten_nested_config():
    flat = provenance.flatten(
        {"a": {"b": {"c": 1}, "d": [1, 2]}, "lr": 0.1, "on": True, "x": None, "s": "tanh"}
    )
    assert flat == {
        "a.b.c": "1",
        "a.d": "[1, 2]",
        "lr": "0.1",
        "on": "true",
        "x": "null",
        "s": "tanh",
    }
    assert provenance.flatten({"n": np.int64(3), "v": np.array([1, 2])}) == {
        "n": "3",
        "v": "[1, 2]",
    }


def test_run_tags_outside_git(tmp_path):
    had_tensorflow = "tensorflow" in sys.modules
    tags = provenance.run_tags(tmp_path, {"train_images": "ab" * 32}, stage="train")
    assert tags["git.commit"] == "unknown"
    assert "git.dirty" not in tags
    assert tags["data.sha256.train_images"] == "ab" * 32
    assert tags["stage"] == "train"
    for key in ("python", "numpy", "mlflow", "hydra-core"):
        assert tags[f"version.{key}"]
    assert tags["platform"]
    if not had_tensorflow:
        assert "tensorflow" not in sys.modules, "run_tags must not import TensorFlow"


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def test_git_dirty_ignores_what_the_pipeline_writes(tmp_path):
    """``dvc repro`` deletes a stage's outputs before running it and rewrites dvc.lock: in a
    clean checkout that is no change of anyone's."""
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: x\n    outs:\n      - models/model.npz\n"
        "      - reports/train/run.json:\n          cache: false\n"
        "    metrics:\n      - reports/train/metrics.json:\n          cache: false\n"
        "  sweep:\n    cmd: y\n    outs:\n      - models/sweep/default\n"
    )
    for name in ("README.md", "dvc.lock", "reports/train/metrics.json", "reports/train/run.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("committed\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")

    def dirty() -> str:
        return provenance.run_tags(tmp_path, None, stage="train")["git.dirty"]

    assert dirty() == "false"
    (tmp_path / "reports/train/metrics.json").unlink()  # what DVC does before the stage runs
    (tmp_path / "reports/train/run.json").write_text("rewritten\n")
    (tmp_path / "dvc.lock").write_text("rewritten\n")
    (tmp_path / "models/sweep/default/0").mkdir(parents=True)
    (tmp_path / "models/sweep/default/0/x").write_text("untracked output\n")
    assert dirty() == "false"
    (tmp_path / "README.md").write_text("edited\n")
    assert dirty() == "true"
    _git(tmp_path, "checkout", "README.md")
    (tmp_path / "notes.txt").write_text("a new file\n")
    assert dirty() == "true"


def test_changed_paths_reads_renames_and_spaces():
    porcelain = " M a b.txt\0R  new.py\0old.py\0?? dir/x\0"
    assert provenance.changed_paths(porcelain) == ["a b.txt", "new.py", "old.py", "dir/x"]


def test_knob_params_keep_what_a_person_varies():
    config = {
        "seed": 0,
        "data": {"mirrors": ["m"], "timeout": 30, "validation_size": 5000, "train_limit": None},
        "model": {"name": "reference", "hidden_sizes": [32, 16]},
        "optimizer": {"name": "adam", "learning_rate": 0.1, "momentum": 0.0, "beta1": 0.9},
        "train": {"epochs": 5},
        "baseline": {"device": "cpu"},
        "tracking": {"uri": None},
    }
    assert provenance.knob_params(config) == {
        "seed": "0",
        "data.validation_size": "5000",
        "data.train_limit": "null",
        "model.name": "reference",
        "model.hidden_sizes": "[32, 16]",
        "optimizer.name": "adam",
        "optimizer.learning_rate": "0.1",
        "optimizer.beta1": "0.9",
        "train.epochs": "5",
    }
    sgd = {**config, "optimizer": {**config["optimizer"], "name": "sgd"}}
    assert "optimizer.momentum" in provenance.knob_params(sgd)
    assert "optimizer.beta1" not in provenance.knob_params(sgd)
    # a key a sweep varies stays a parameter; an optimiser's unused field still does not
    also = provenance.knob_params(config, also=["data.timeout", "optimizer"])
    assert also["data.timeout"] == "30" and "optimizer.momentum" not in also


def test_knob_params_keep_only_the_schedule_and_early_stopping_fields_that_act():
    schedule = {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 0}
    stopping = {"enabled": False, "monitor": "val_accuracy", "patience": 3, "min_delta": 0.0}
    config = {
        "optimizer": {"name": "sgd"},
        "train": {"schedule": schedule, "early_stopping": stopping},
    }
    params = provenance.knob_params(config)
    assert {k for k in params if k.startswith("train.")} == {
        "train.schedule.name",
        "train.schedule.step_size",
        "train.schedule.gamma",
        "train.early_stopping.enabled",
    }
    cosine = {"name": "cosine", "step_size": 2, "gamma": 0.5, "warmup_epochs": 3}
    on = {**stopping, "enabled": True}
    params = provenance.knob_params({**config, "train": {"schedule": cosine, "early_stopping": on}})
    assert "train.schedule.warmup_epochs" in params and "train.schedule.gamma" not in params
    assert params["train.early_stopping.patience"] == "3"


def test_run_with_training_logs_params_metrics_tags_and_config(uri, store_dir):
    X, y = _data()
    digests = {"train_images": "0" * 64, "train_labels": "1" * 64}
    with tracking.start_run(
        CONFIG, stage="train", experiment="unit", uri=uri, data_digests=digests, tags={"k": 1}
    ) as run:
        model = mlp.MLP(CONFIG["model"]["layer_sizes"], seed=0)
        model.fit(
            X, y, epochs=2, batch_size=32, optimizer=mlp.SGD(0.1), validation=(X[:50], y[:50]),
            callbacks=[run.epoch_logger()],
        )  # fmt: skip
    client = MlflowClient(uri)
    finished = client.get_run(run.id)
    assert finished.info.status == "FINISHED"
    # Nothing exported that a later resolve_tracking_uri would take for the user's choice.
    assert "MLFLOW_TRACKING_URI" not in os.environ

    params = finished.data.params
    assert params["model.layer_sizes"] == "[8, 6, 3]"
    assert params["optimizer.learning_rate"] == "0.1"
    assert params["train.blas_threads"] == "null"

    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        history = client.get_metric_history(run.id, name)
        assert [m.step for m in history] == [1, 2], name
    losses = [m.value for m in client.get_metric_history(run.id, "train_loss")]
    assert all(np.isfinite(losses))

    tags = finished.data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert tags["git.commit"] == expected
    assert tags["stage"] == "train"
    assert tags["data.sha256.train_images"] == "0" * 64
    assert tags["k"] == "1"
    assert tags["version.mlflow"] == mlflow.__version__

    assert finished.info.artifact_uri.startswith((store_dir / "mlartifacts").as_uri())
    assert [f.path for f in client.list_artifacts(run.id)] == ["config.yaml"]
    local = client.download_artifacts(run.id, "config.yaml", str(store_dir))
    assert yaml.safe_load(Path(local).read_text()) == CONFIG


def test_more_than_100_params_are_logged_in_batches(uri):
    config = {"group": {f"p{i:03d}": i for i in range(250)}}
    with tracking.start_run(config, stage="unit", experiment="unit", uri=uri) as run:
        pass
    params = MlflowClient(uri).get_run(run.id).data.params
    assert len(params) == 250 and params["group.p249"] == "249"


def test_exception_ends_failed_with_reason(uri):
    with pytest.raises(ValueError, match="boom"):
        with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
            raise ValueError("boom")
    finished = MlflowClient(uri).get_run(run.id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags["failure_reason"] == "ValueError: boom"
    assert mlflow.active_run() is None


def test_divergence_ends_failed_with_epoch_and_step(uri):
    with pytest.raises(mlp.DivergenceError):
        with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
            raise mlp.DivergenceError(epoch=2, step=5, steps_per_epoch=7, loss=float("nan"))
    finished = MlflowClient(uri).get_run(run.id)
    assert finished.info.status == "FAILED"
    tags = finished.data.tags
    assert tags["failure_reason"].startswith("DivergenceError: training diverged")
    assert (tags["diverged_epoch"], tags["diverged_step"]) == ("2", "5")


def test_keyboard_interrupt_ends_killed(uri):
    with pytest.raises(KeyboardInterrupt):
        with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
            raise KeyboardInterrupt
    assert MlflowClient(uri).get_run(run.id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_sigterm_ends_killed(uri):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert install_sigterm_handler()
        with pytest.raises(Terminated) as raised:
            with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs between bytecodes
                    pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert raised.value.code == 128 + signal.SIGTERM
    assert MlflowClient(uri).get_run(run.id).info.status == "KILLED"


def test_nested_run_in_the_same_process(uri):
    with tracking.start_run(CONFIG, stage="sweep", experiment="unit", uri=uri) as parent:
        parent_id = parent.id
        with tracking.start_run(
            CONFIG, stage="train", experiment="unit", uri=uri, parent_run_id=parent_id
        ) as child:
            pass
        assert mlflow.active_run().info.run_id == parent_id
    client = MlflowClient(uri)
    assert client.get_run(child.id).data.tags["mlflow.parentRunId"] == parent_id
    assert client.get_run(child.id).info.status == "FINISHED"


def test_child_run_in_another_process_links_to_parent(uri):
    script = textwrap.dedent(
        """
        import sys
        from pipeline import tracking

        uri, parent_id = sys.argv[1], sys.argv[2]
        with tracking.start_run({"point": 1}, stage="sweep-point", experiment="unit", uri=uri,
                                parent_run_id=parent_id) as run:
            pass
        print("CHILD", run.id)
        """
    )
    with tracking.start_run(CONFIG, stage="sweep", experiment="unit", uri=uri) as parent:
        parent_id = parent.id
        env = command_env()
        done = subprocess.run(
            [sys.executable, "-c", script, uri, parent_id],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    child_id = next(
        line.split()[1] for line in done.stdout.splitlines() if line.startswith("CHILD ")
    )
    client = MlflowClient(uri)
    assert client.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    experiment = client.get_experiment_by_name("unit")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert [r.info.run_id for r in children] == [child_id]


def test_a_run_records_files_text_tags_and_metrics(uri, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
        run.log_file(path, "extra")
        run.log_text("some text", "notes/summary.md")
        run.set_tags({"evaluated": True, "long": "x" * 9000})
        run.log_metrics({"a": 1.5, "flag": True}, step=3)
    client = MlflowClient(uri)
    assert [f.path for f in client.list_artifacts(run.id, "extra")] == ["extra/notes.txt"]
    assert [f.path for f in client.list_artifacts(run.id, "notes")] == ["notes/summary.md"]
    recorded = client.get_run(run.id).data
    assert recorded.tags["evaluated"] == "True" and len(recorded.tags["long"]) == 5000
    assert [(m.value, m.step) for m in client.get_metric_history(run.id, "a")] == [(1.5, 3)]
    assert recorded.metrics["flag"] == 1.0


def test_existing_run_only_in_the_store_in_use(uri, tmp_path):
    with tracking.start_run(CONFIG, stage="train", experiment="unit", uri=uri) as run:
        pass
    again = tracking.existing_run(run.id, uri, uri)
    again.log_metrics({"test_top1_accuracy": 0.9})
    assert MlflowClient(uri).get_run(run.id).data.metrics["test_top1_accuracy"] == 0.9
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert tracking.existing_run(run.id, uri, other) is None


def test_only_the_tracking_package_imports_mlflow():
    """The boundary: stage code records through pipeline.tracking's own API."""
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path.is_relative_to(ROOT / "pipeline" / "tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(m == "mlflow" or m.startswith("mlflow.") for m in modules):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------------------------------------- failing fast
def test_unreachable_server_raises_fast():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(tracking.TrackingUnavailable, match="not reachable") as raised:
        tracking.check_tracking_server(url, timeout=2)
    message = str(raised.value)
    assert url in message and "unset MLFLOW_TRACKING_URI" in message
    assert "sqlite:///" in message


def test_start_run_checks_the_server_before_anything(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(tracking.TrackingUnavailable):
        with tracking.start_run(CONFIG, stage="train", experiment="unit"):
            pytest.fail("the run must not start")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_non_http_uris_are_not_checked(uri):
    tracking.check_tracking_server(uri)


def test_retry_on_database_is_locked(monkeypatch):
    monkeypatch.setattr(store.time, "sleep", lambda seconds: None)
    calls = []

    def flaky(value):
        calls.append(value)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return value * 2

    assert store.with_retry(flaky, 21) == 42
    assert len(calls) == 3

    def broken():
        calls.append("broken")
        raise sqlite3.OperationalError("no such table: runs")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.with_retry(broken)
    assert calls == ["broken"]

    def always_locked():
        raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")

    with pytest.raises(mlflow.exceptions.MlflowException):
        store.with_retry(always_locked, tries=3)


def test_a_row_another_process_inserted_first_is_retried(monkeypatch):
    """Two sweep points logging the same dataset at once: MLflow checks, then inserts, so one
    of them hits the other's row; tried again, it finds it."""
    from pipeline.tracking import runs

    monkeypatch.setattr(runs.time, "sleep", lambda seconds: None)
    calls = []

    def racing():
        calls.append(1)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest"
            )
        return "logged"

    assert runs._retry_on_duplicate(racing) == "logged" and len(calls) == 2

    def broken():
        raise mlflow.exceptions.MlflowException("RESOURCE_DOES_NOT_EXIST: no such run")

    with pytest.raises(mlflow.exceptions.MlflowException, match="no such run"):
        runs._retry_on_duplicate(broken)


# ---------------------------------------------------------------------------- progress bar
def test_progress_bar_shows_epochs_and_validation():
    X, y = _data()
    out = io.StringIO()
    mlp.MLP([8, 3]).fit(
        X, y, epochs=2, batch_size=10, validation=(X, y),
        callbacks=[ProgressBar(update_every=3, file=out, disable=False)],
    )  # fmt: skip
    text = out.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text
    assert "20/20" in text
    assert "val_loss=" in text and "val_acc=" in text


def test_progress_bar_quiet_when_not_a_terminal():
    X, y = _data()
    out = io.StringIO()  # not a TTY
    bar = ProgressBar(file=out)
    mlp.MLP([8, 3]).fit(X, y, epochs=2, batch_size=10, callbacks=[bar])
    assert out.getvalue() == ""


def test_mlp_does_not_import_mlflow():
    code = "import sys, mlp; sys.exit('mlflow' in sys.modules or 'tqdm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=command_env()).returncode == 0
