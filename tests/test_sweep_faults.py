"""Sweeps that keep their promises under faults: concurrent sweeps, workers killed from outside,
a sweep killed with ``kill -9``, interrupted sweeps and hand runs of the DVC grid.

Every sweep here is a real ``python -m pipeline.sweep`` subprocess in ``tmp_path`` (its own
``data/processed``, MLflow store, sweep and report folders); the kills are real signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers.data import write_split
from helpers.project import ROOT, command_env, run_module


def sweep_env(project: Path, **extra: str) -> dict[str, str]:
    env = command_env(f"sqlite:///{project / 'mlflow.db'}", **extra)
    env.pop("DVC_STAGE", None)
    return env


def start_sweep(project: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweep", *args],
        cwd=project,
        env=sweep_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def runs(project: Path) -> tuple[MlflowClient, list, list]:
    """``(client, parents, children)`` of the project's store."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    found = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def wait_until(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the sweep ended before {what}: {process.returncode}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def child_training(project: Path, job: int) -> bool:
    """Whether the child run of point ``job`` has logged an epoch."""
    try:
        _, _, children = runs(project)
    except Exception:  # the store is being created
        return False
    return any(
        c.data.tags.get("sweep.job") == str(job) and "train_loss" in c.data.metrics
        for c in children
    )


# ---------------------------------------------------------------------------- concurrent sweeps
def test_two_sweeps_started_at_once_share_nothing(project):
    """Two real sweeps started together (the same second, as far as a test can make it): each
    its own folder, its own parent, its own points; neither reports another's."""
    args = ("--multirun", "optimizer.learning_rate=0.01,0.1", "train.epochs=1",
            "data.train_limit=200", "hydra.launcher.n_jobs=1")  # fmt: skip
    first, second = start_sweep(project, *args), start_sweep(project, *args)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    for process, (_, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "already active" not in err

    _, parents, children = runs(project)
    assert len(parents) == 2 and len(children) == 4
    folders = {p.data.tags["sweep.dir"] for p in parents}
    assert len(folders) == 2, folders  # not one shared multirun/<date>/<time>
    assert {Path(f).name.rsplit("-", 1)[1] for f in folders} == {str(first.pid), str(second.pid)}
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["points_finished"] == 2
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 2 and {c.info.status for c in mine} == {"FINISHED"}
        folder = Path(parent.data.tags["sweep.dir"])
        results = [json.loads(p.read_text()) for p in folder.rglob("result.json")]
        assert len(results) == 2
        assert {r["parent_run_id"] for r in results} == {parent.info.run_id}
        assert {r["run_id"] for r in results} == {c.info.run_id for c in mine}


def test_each_sweep_gets_a_folder_of_its_own_unless_the_command_line_names_one():
    from pipeline import sweep

    argv = sweep.with_default_choices(["--multirun", "seed=0,1"], own_sweep_dir=True)
    pid = os.getpid()
    assert f"hydra.sweep.dir=multirun/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}-{pid}" in argv
    assert f"hydra.run.dir=outputs/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}-{pid}" in argv
    named = sweep.with_default_choices(["-m", "seed=0,1", "hydra.sweep.dir=x"], own_sweep_dir=True)
    assert [a for a in named if a.startswith("hydra.sweep.dir=")] == ["hydra.sweep.dir=x"]


def test_a_folder_another_live_sweep_writes_into_is_refused(project):
    """``hydra.sweep.dir`` given twice on purpose: the second sweep stops before any point."""
    folder = project / "multirun/shared"
    folder.mkdir(parents=True)
    from pipeline.tracking.provenance import process_tags

    # This test's process stands for a sweep still running in that folder.
    (folder / ".owner.json").write_text(json.dumps(process_tags()))
    result = run_module(
        "pipeline.sweep", "--multirun", "optimizer.learning_rate=0.01,0.1", "train.epochs=1",
        f"hydra.sweep.dir={folder}", cwd=project, env=sweep_env(project),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "another sweep" in result.stderr and str(os.getpid()) in result.stderr
    assert not list(folder.rglob("result.json"))
    _, parents, children = runs(project)
    assert not parents and not children


# ---------------------------------------------------------------------------- dead workers
@pytest.mark.slow
def test_a_worker_killed_from_outside_fails_only_its_point(project):
    """``kill -9`` of the worker running point 0 (what the out-of-memory killer does): point 0
    ends FAILED saying so, the point loky stopped along with it runs again, every other point
    runs, the summary counts them right and no run stays RUNNING."""
    write_split(project / "data/processed", n_train=2000)
    process = start_sweep(
        project, "--multirun", "train.epochs=400,1", "seed=0,1", "data.train_limit=2000",
        "train.batch_size=16", f"hydra.sweep.dir={project / 'multirun'}",
        "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    # Points 0 and 1 are the long ones (400 epochs); both run at once.
    wait_until(lambda: child_training(project, 0), process, "point 0 trained an epoch")
    note = json.loads((project / "multirun/.points/0.json").read_text())
    os.kill(note["pid"], signal.SIGKILL)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]

    result = json.loads((project / "multirun/0/result.json").read_text())
    assert result["status"] == "FAILED" and result["worker_died"]
    assert f"pid {note['pid']}" in result["reason"] and "killed from outside" in result["reason"]
    _, parents, children = runs(project)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["points"] == 4
    assert parent.data.metrics["points_finished"] == 3
    assert parent.data.metrics["points_failed"] == 1
    assert "RUNNING" not in {c.info.status for c in children}
    point0 = [c for c in children if c.data.tags["sweep.job"] == "0"]
    assert [c.info.status for c in point0] == ["FAILED"]
    assert "killed from outside" in point0[0].data.tags["failure_reason"]
    for job in (1, 2, 3):  # finished, some after a second attempt
        statuses = [c.info.status for c in children if c.data.tags["sweep.job"] == str(job)]
        assert "FINISHED" in statuses, (job, statuses)
        assert json.loads((project / f"multirun/{job}/result.json").read_text())["status"] == (
            "FINISHED"
        )
    markdown = (project / "reports/sweep/adhoc/summary.md").read_text()
    assert "4 points: 3 finished, 1 failed" in markdown and "killed from outside" in markdown


# ---------------------------------------------------------------------------- killed sweeps
def test_a_sweep_killed_with_sigkill_is_ended_by_the_next_command(project):
    """``kill -9`` of a sweep (parent and point in one process): both runs stay RUNNING until
    the next command opens the store, which ends them KILLED; the last summary stays."""
    summary = project / "reports/sweep/adhoc/summary.md"
    summary.parent.mkdir(parents=True)
    summary.write_text("the last complete sweep\n")
    write_split(project / "data/processed", n_train=2000)
    process = start_sweep(
        project, "--multirun", "train.epochs=5000", "seed=0,1", "train.batch_size=16",
        f"hydra.sweep.dir={project / 'multirun'}", "hydra/launcher=basic",
    )  # fmt: skip
    wait_until(lambda: child_training(project, 0), process, "point 0 trained an epoch")
    process.kill()
    process.communicate()
    _, parents, children = runs(project)
    assert {r.info.status for r in [*parents, *children]} == {"RUNNING"}

    opened = run_module("pipeline.tracking", cwd=project, env=sweep_env(project))
    assert opened.returncode == 0, opened.stderr[-3000:]
    _, parents, children = runs(project)
    assert len(parents) == 1 and len(children) == 1
    for run in (*parents, *children):
        assert run.info.status == "KILLED"
        assert f"pid {process.pid}" in run.data.tags["failure_reason"]
    assert summary.read_text() == "the last complete sweep\n"


def test_an_interrupted_sweep_keeps_the_last_complete_summary(project):
    """Ctrl-C during a sweep: its runs end KILLED, its own summary goes into its folder, and
    ``reports/sweep/adhoc/`` keeps the summary of the last sweep that ran to its end."""
    summary = project / "reports/sweep/adhoc/summary.md"
    summary.parent.mkdir(parents=True)
    summary.write_text("the last complete sweep\n")
    write_split(project / "data/processed", n_train=2000)
    process = start_sweep(
        project, "--multirun", "train.epochs=5000", "seed=0,1", "train.batch_size=16",
        f"hydra.sweep.dir={project / 'multirun'}", "hydra/launcher=basic",
    )  # fmt: skip
    wait_until(lambda: child_training(project, 0), process, "point 0 trained an epoch")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    assert summary.read_text() == "the last complete sweep\n"
    assert (project / "multirun/summary/summary.md").exists()
    _, parents, children = runs(project)
    assert {r.info.status for r in [*parents, *children]} == {"KILLED"}


# ---------------------------------------------------------------------------- the DVC grid
@pytest.fixture
def dvc_project(project) -> Path:
    """The project folder with this project's ``dvc.yaml`` and the pinned summary of the
    ``sweep`` stage in ``reports/sweep/default/``."""
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    pinned = project / "reports/sweep/default"
    pinned.mkdir(parents=True)
    for name in ("summary.md", "summary.csv", "best.json"):
        (pinned / name).write_text("pinned by dvc.lock\n")
    return project


def test_the_dvc_grid_run_by_hand_leaves_the_stages_outputs_alone(dvc_project):
    project = dvc_project
    result = run_module(
        "pipeline.sweep", "+sweep=default", "model=reference", "optimizer.learning_rate=0.1",
        "train.epochs=1", "data.train_limit=100", f"hydra.sweep.dir={project / 'multirun'}",
        cwd=project, env=sweep_env(project),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("summary.md", "summary.csv", "best.json"):
        assert (project / "reports/sweep/default" / name).read_text() == "pinned by dvc.lock\n"
    assert "1 points: 1 finished" in (project / "multirun/summary/summary.md").read_text()
    assert not (project / "models/sweep/default").exists()


def test_the_dvc_stages_folder_is_refused_by_hand(dvc_project):
    project = dvc_project
    result = run_module(
        "pipeline.sweep", "+sweep=default", "train.epochs=1",
        "hydra.sweep.dir=models/sweep/default", cwd=project, env=sweep_env(project),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "models/sweep/default" in result.stderr and "output of a DVC stage" in result.stderr
    assert not (project / "models/sweep/default").exists()
    _, parents, _ = runs(project)
    assert not parents
