"""A sweep as DVC experiments: `dvc exp run --queue -S a,b` then `dvc queue start -j 2` (slow).

In a temporary clone of the project (with the working tree's files) on real MNIST: both queued
experiments run in DVC's temporary copies of the project, `dvc exp show` lists them, and their
MLflow runs land in the clone's own store (not in a store inside a temporary copy).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers.data import mnist_mirror
from helpers.project import clone_working_tree

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture
def clone(tmp_path):
    """A git clone of the project with the working tree's files, committed, and its data."""
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("real MNIST not available: set MNIST_MIRROR to a folder with the four files")
    project = clone_working_tree(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        MNIST_MIRROR=str(mirror),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    run(["dvc", "repro", "preprocess"], project, env)
    run(["git", "add", "-A"], project, env)
    # (--allow-empty: in a clean clone the working tree may have nothing new to commit)
    run(["git", "commit", "-qm", "baseline for the experiments", "--allow-empty"], project, env)
    return project, env


def test_queued_experiments_are_a_sweep_tracked_in_the_projects_store(clone):
    project, env = clone
    run(
        [
            "dvc", "exp", "run", "--queue", "evaluate",
            "-S", "optimizer.learning_rate=0.05,0.1", "-S", "train.epochs=1",
            "-S", "data.train_limit=5000",
        ],
        project,
        env,
    )  # fmt: skip
    run(["dvc", "queue", "start", "-j", "2"], project, env)
    deadline = time.monotonic() + 900
    while True:
        status = run(["dvc", "queue", "status"], project, env)
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 2, status

    shown = run(["dvc", "exp", "show", "--csv"], project, env)
    rows = [line for line in shown.splitlines() if ",0.05," in line or ",0.1," in line]
    assert len(rows) >= 2, shown

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    queued = [r for r in runs if "dvc.exp_name" in r.data.tags]
    assert {float(r.data.params["optimizer.learning_rate"]) for r in queued} == {0.05, 0.1}
    assert {r.info.status for r in queued} == {"FINISHED"}
    assert all(r.data.params["train.epochs"] == "1" for r in queued)
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    # their artifacts and models are the project's too, not the temporary copies'
    inside = (project / "mlartifacts").as_uri() + "/"
    assert all(r.info.artifact_uri.startswith(inside) for r in queued)
    versions = client.search_model_versions("name = 'mnist-mlp'")
    assert {r.info.run_id for r in queued} <= {v.run_id for v in versions}
