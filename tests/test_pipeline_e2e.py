"""End to end: `dvc repro` on real MNIST in a temporary clone of the project (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def mnist_mirror() -> Path | None:
    configured = os.environ.get("MNIST_MIRROR")
    folder = Path(configured) if configured else ROOT.parent / "shared" / "mnist"
    return folder if (folder / "train-images-idx3-ubyte.gz").exists() else None


def clone_working_tree(dest: Path) -> Path:
    """A git clone of the project carrying the working tree's files (committed or not)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_dvc_repro_trains_and_evaluates_real_mnist(tmp_path):
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("real MNIST not available: set MNIST_MIRROR to a folder with the four files")
    project = clone_working_tree(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MNIST_MIRROR=str(mirror), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")

    first = run(["dvc", "repro"], project, env)
    for stage in ("download", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout

    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["test_top1_accuracy"] >= 0.955
    for name in (
        "test_cross_entropy",
        "test_micro_accuracy",
        "test_micro_precision",
        "test_micro_recall",
        "test_macro_f1",
        "train_seconds",
    ):
        assert name in metrics
    shown = run(["dvc", "metrics", "show", "--json"], project, env)
    assert "test_top1_accuracy" in shown.stdout

    # The run is in the project's embedded MLflow store, with the test metrics and artifacts.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    recorded = runs[0]
    assert recorded.info.status == "FINISHED"
    assert recorded.data.metrics["test_top1_accuracy"] == pytest.approx(
        metrics["test_top1_accuracy"]
    )
    assert len(client.get_metric_history(recorded.info.run_id, "val_loss")) == 5
    artifacts = {a.path for a in client.list_artifacts(recorded.info.run_id)}
    assert {"model", "evaluation", "config.yaml"} <= artifacts

    second = run(["dvc", "repro"], project, env)
    assert "Running stage" not in second.stdout
    status = run(["dvc", "status"], project, env)
    assert "up to date" in status.stdout
