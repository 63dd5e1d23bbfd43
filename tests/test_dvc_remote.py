"""A DVC remote, for real: `dvc push` from one clone, `dvc pull` in a fresh one, nothing retrained.

The first clone trains a small model (`dvc repro train`: download from the local MNIST mirror,
preprocess, one epoch on 2,000 images), commits the lock and pushes the data and the model to a
local-path remote in a temporary folder (an S3, SSH or GCS remote is the same with another URL).
A second `git clone` of it pulls, and `dvc repro` must then find every stage up to date and run
nothing: the same model, byte for byte, and no MLflow run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.data import mnist_mirror
from helpers.project import clone_working_tree, runs_of

BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
pytestmark = pytest.mark.slow

OUTPUTS = ("data/raw", "data/processed", "models/model.npz")


def _env(project: Path, mirror: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        MNIST_MIRROR=str(mirror),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
    )
    return env


def run(args: list[str], project: Path, mirror: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=project, env=_env(project, mirror), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def digests(folder: Path) -> dict[str, str]:
    files = {}
    for output in OUTPUTS:
        path = folder / output
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            files[str(file.relative_to(folder))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return files


def test_push_then_pull_in_a_fresh_clone_needs_no_training(tmp_path):
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("real MNIST not available: set MNIST_MIRROR to a folder with the four files")
    first = clone_working_tree(tmp_path / "first")
    remote = tmp_path / "remote"

    # A small model: one epoch on 2,000 images.
    run(
        [PYTHON, "-m", "pipeline.params", "train.epochs=1", "data.train_limit=2000",
         "--out", str(first / "params.yaml")],
        first, mirror,
    )  # fmt: skip
    run(["dvc", "repro", "train"], first, mirror)
    assert len(runs_of(f"sqlite:///{first / 'mlflow.db'}")) == 1

    # Without a remote, `dvc push` says so: what the README's setup fixes.
    refused = subprocess.run(
        ["dvc", "push"], cwd=first, env=_env(first, mirror), capture_output=True, text=True
    )
    assert refused.returncode != 0 and "no remote" in (refused.stdout + refused.stderr).lower()

    run(["dvc", "remote", "add", "--default", "storage", str(remote)], first, mirror)
    pushed = run(["dvc", "push", "--with-deps", "train"], first, mirror)
    assert "pushed" in pushed.stdout.lower(), pushed.stdout
    assert any(p.is_file() for p in remote.rglob("*"))
    git(first, "add", "-A", "params.yaml", "dvc.lock", ".dvc/config", "reports/train")
    git(first, "commit", "-q", "-m", "A small model, its data in the remote")

    # Another machine: a plain git clone has the lock and the remote's address, no data.
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(first), str(second)], check=True)
    assert not (second / "models/model.npz").exists()
    pulled = run(["dvc", "pull", "--with-deps", "train"], second, mirror)
    assert "fetched" in pulled.stdout.lower() or "added" in pulled.stdout.lower(), pulled.stdout

    pushed_files = digests(first)
    assert {"models/model.npz", "data/processed/mnist.npz"} <= set(pushed_files)
    assert digests(second) == pushed_files  # the data and the model, byte for byte
    repro = run(["dvc", "repro", "train"], second, mirror)
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    for stage in ("download", "preprocess", "train"):
        assert f"Stage '{stage}' didn't change, skipping" in repro.stdout, repro.stdout
    status = run(["dvc", "status", "train"], second, mirror)
    assert "up to date" in status.stdout, status.stdout
    assert digests(second) == digests(first)
    assert runs_of(f"sqlite:///{second / 'mlflow.db'}") == []  # nothing trained, nothing logged
