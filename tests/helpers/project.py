"""The project itself: its root, clones of it, and its commands run as a user runs them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def project_files() -> list[str]:
    """The project's files as git sees them (tracked, and new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def copy_working_tree(dest: Path) -> Path:
    """The working tree's files (committed or not) copied into ``dest``."""
    for name in project_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def clone_working_tree(dest: Path) -> Path:
    """A git clone of the project carrying the working tree's files (committed or not)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return copy_working_tree(dest)


def command_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a command of this project in a subprocess: this checkout's code
    first on the path, no MLflow settings from outside (``tracking_uri`` when given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env


def write_params(folder: Path, *overrides: str) -> Path:
    """``folder/params.yaml``: the composed defaults with ``overrides``, validated."""
    import yaml

    from pipeline.config import compose, to_dict, validate

    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(validate(compose(list(overrides))))))
    return path


def full_params(**sections: dict | int) -> dict:
    """The composed defaults as a plain dict, each of ``sections`` merged into its section (a
    params file has every section: a missing one is an error)."""
    from pipeline.config import compose, to_dict, validate

    config = to_dict(validate(compose()))
    for name, value in sections.items():
        config[name] = {**config[name], **value} if isinstance(value, dict) else value
    return config


def train_command(folder: Path, name: str = "") -> list[str]:
    """``python -m pipeline.train`` on ``folder``'s params, data and outputs (``name``: a
    suffix for the model and reports folders, for several trainings in one folder)."""
    return [
        sys.executable, "-m", "pipeline.train",
        "--params", str(folder / "params.yaml"),
        "--data", str(folder / "data/mnist.npz"),
        "--model", str(folder / f"models{name}/model.npz"),
        "--reports", str(folder / f"reports{name}"),
    ]  # fmt: skip


def runs_of(uri: str, experiment: str = "mnist-mlp") -> list:
    """Every run of ``experiment`` in the store ``uri`` (none when it does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def model_files(uri: str, run_id: str) -> set[str]:
    """The files of the READY MLflow model that run ``run_id`` of ``uri`` logged, found through
    the run's outputs (``list_artifacts(run_id, "model")`` would look the model up in MLflow's
    global tracking URI, not in ``uri``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (output,) = client.get_run(run_id).outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.status == "READY", model.status
    return {a.path for a in client.list_logged_model_artifacts(model.model_id)}


def wait_for_an_epoch(process: subprocess.Popen, uri: str, timeout: float = 120) -> None:
    """Until a training in ``process`` has logged its first epoch to ``uri`` (a store with its
    tables: polling an empty file would race the process creating them)."""
    import time

    deadline = time.monotonic() + timeout
    while not any(r.data.metrics.get("train_loss") is not None for r in runs_of(uri)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)


@contextlib.contextmanager
def training_in_progress(folder: Path, uri: str, **popen: Any) -> Iterator[subprocess.Popen]:
    """A ``python -m pipeline.train`` in ``folder`` that runs for minutes (500 epochs of 5000
    tiny images), tracked in ``uri``, from the moment its first epoch is logged; killed when the
    block ends. ``popen``: more arguments for :class:`subprocess.Popen` (``stdout``, ...)."""
    from helpers.data import write_split

    write_split(folder / "data", n_train=5000)
    write_params(folder, "train.epochs=500", "train.batch_size=8")
    process = subprocess.Popen(train_command(folder), env=command_env(uri), **popen)
    try:
        wait_for_an_epoch(process, uri)
        yield process
    finally:
        process.kill()


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``python -m <module> ARGS`` in ``cwd``, as a user would run it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=dict(env) if env is not None else command_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
