"""The team's tracking server (scripts/tracking-server), for real: PostgreSQL as MLflow's backend
store, the server's proxied artifact store, both under one folder, on 127.0.0.1.

Eight trainings and a small sweep run against it at once; nothing may be lost: every run with its
curves and artifacts, the sweep's parent and children, the registered version and the champion
alias. Stopped and started again, the server still has all of it. Skipped, saying so, without
PostgreSQL (Debian: apt-get install postgresql); under CI (``CI=true``), which installs it, that
fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from helpers.data import write_split
from helpers.mlflow_server import free_port
from helpers.project import ROOT, command_env, model_files, runs_of, train_command, write_params

SCRIPT = ROOT / "scripts/tracking-server"
pytestmark = pytest.mark.slow

TRAININGS = 8
EPOCHS = 2


def _postgres_installed() -> bool:
    return shutil.which("initdb") is not None or any(
        Path("/usr/lib/postgresql").glob("*/bin/initdb")
    )


def script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300
    )
    return result


@pytest.fixture(scope="module")
def team_server():
    if not _postgres_installed():
        message = "PostgreSQL is not installed (Debian: apt-get install -y postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs it: {message}")
        pytest.skip(message)
    # Under /tmp, not pytest's folder: PostgreSQL runs as `postgres` when this is root, and
    # pytest's folders are private to their user.
    folder = Path(tempfile.mkdtemp(prefix="tracking-", dir="/tmp"))
    folder.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKING_"))}
    env.update(
        TRACKING_DIR=str(folder), TRACKING_PORT=str(port), VENV_BIN=str(Path(sys.executable).parent)
    )
    started = script("start", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"url": f"http://127.0.0.1:{port}", "dir": folder, "env": env, "start": started}
    finally:
        stopped = script("stop", env)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


def _check_everything_is_there(url: str, folder: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    runs = runs_of(url)
    trainings = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert len(trainings) == TRAININGS
    for run in trainings:
        assert run.info.status == "FINISHED"
        for curve in ("train_loss", "val_accuracy"):  # one point per epoch, none lost
            assert len(client.get_metric_history(run.info.run_id, curve)) == EPOCHS
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert model_files(url, run.info.run_id)  # the logged model's files
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep" and r not in children]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    champion = client.get_model_version_by_alias("mnist-mlp", "champion")
    assert champion.run_id in {c.info.run_id for c in children}
    assert champion.status == "READY"
    # The artifacts are files under the server's folder, proxied: no client wrote there itself.
    assert any((folder / "artifacts").rglob("config.yaml"))


def test_a_busy_port_is_refused_naming_the_setting(team_server):
    env = {**team_server["env"], "TRACKING_DIR": str(team_server["dir"] / "other")}
    result = script("start", env)  # the same port, another folder
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "TRACKING_PORT" in result.stderr


def test_eight_trainings_and_a_sweep_at_once_lose_nothing(team_server, tmp_path):
    url, folder = team_server["url"], team_server["dir"]
    assert url in team_server["start"].stdout  # it says where it serves
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        assert response.status == 200

    processes = []
    for i in range(TRAININGS):
        work = tmp_path / f"train{i}"
        write_split(work / "data")
        write_params(work, f"train.epochs={EPOCHS}", f"seed={i}")
        processes.append(
            subprocess.Popen(
                train_command(work),
                env=command_env(url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    sweep_project = tmp_path / "sweep"
    write_split(sweep_project / "data/processed")
    processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.sweep",
                "--multirun",
                "optimizer.learning_rate=0.05,0.1",
                "train.epochs=1",
                f"hydra.sweep.dir={sweep_project / 'multirun'}",
                "hydra.launcher.n_jobs=2",
            ],
            cwd=sweep_project,
            env=command_env(url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]

    _check_everything_is_there(url, folder)

    # Stopped and started again: the database and the artifacts are still there.
    env = team_server["env"]
    assert script("stop", env).returncode == 0
    assert script("status", env).returncode != 0
    restarted = script("start", env)
    assert restarted.returncode == 0, restarted.stderr
    _check_everything_is_there(url, folder)
