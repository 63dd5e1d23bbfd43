"""Sweeps on Ray, for real: a cluster started by ``ray start --head`` on 127.0.0.1 (joined with
``hydra/launcher=ray``, ``address: auto`` found through ``RAY_ADDRESS``) and the plugin's local
mode (``hydra/launcher=ray_local``).

The parent/child link, the summary, FAILED points and exit codes must be those of the joblib
launcher, and a point must give the same numbers on either launcher. Skipped, saying so, when the
``cluster`` extra is not installed (``make cluster-install``); under CI (``CI=true``), which
installs it, a missing extra fails instead.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_sweep import run_sweep, runs_of

from pipeline.sweeps import launchers

from helpers.mlflow_server import free_port

RAY = Path(sys.executable).with_name("ray")


def _require_cluster_extra() -> None:
    try:
        import hydra_plugins.hydra_ray_launcher.ray_launcher  # noqa: F401
    except ImportError:
        message = (
            "the cluster extra (Ray, hydra-ray-launcher) is not installed: make cluster-install"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs it: {message}")
        pytest.skip(message)


def test_a_missing_plugin_is_named_with_what_to_install(tmp_path):
    """Whether or not Ray is installed: a launcher class that cannot be imported."""
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.create(
        {
            "launcher": {"_target_": "hydra_plugins.absent_ray_launcher.RayLauncher"},
            "runtime": {"choices": {"hydra/launcher": "ray"}},
        }
    )
    with pytest.raises(launchers.ConfigError, match="make cluster-install"):
        launchers.check(hydra_cfg)


def test_no_cluster_is_a_usage_error_naming_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    with pytest.raises(launchers.NoCluster, match="ray start --head"):
        launchers.check_ray_cluster("auto")
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(launchers, "RAY_CURRENT_CLUSTER", tmp_path / "absent")
    with pytest.raises(launchers.NoCluster, match="no running Ray cluster"):
        launchers.check_ray_cluster("auto")


# ---------------------------------------------------------------------------- real Ray
@contextlib.contextmanager
def ray_head(base: Path) -> Iterator[dict[str, str]]:
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, in its own session, its session
    files in a folder of its own; yields its address and that folder; stops it by its own process
    group (``ray stop`` would stop every Ray instance of the machine)."""
    port = free_port()
    # Short: Ray's Unix sockets live under it.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    log = (base / "ray-head.log").open("wb")
    process = subprocess.Popen(
        [
            str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={temp_dir}",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # Its own HOME: a ~/.ray/auth_token (Ray's local mode leaves one) would turn on token
        # authentication, which the sweep's driver does not use.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))},
            "HOME": temp_dir,
        },
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (base / "ray-head.log").read_text()[-3000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "ray start --head: no answer after 120 s"
            time.sleep(0.5)
        yield {"address": address, "temp_dir": temp_dir}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    _require_cluster_extra()
    with ray_head(tmp_path_factory.mktemp("ray")) as address:
        yield address


#: Two points: a valid one and one whose config is invalid (no hidden layer), which fails.
GRID = ("model.hidden_sizes=[16],[]", "optimizer.learning_rate=0.1", "train.epochs=1", "seed=3")


def _sweep(project: Path, launcher: str, *more: str):
    folder = project / f"multirun-{launcher}"
    result = run_sweep(
        project,
        "--multirun",
        *GRID,
        *more,
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={folder}",
        timeout=300,
    )
    return result, folder


def _rows(project: Path) -> dict[str, dict]:
    with open(project / "reports/sweep/adhoc/summary.csv") as fh:
        return {r["status"]: r for r in csv.DictReader(fh)}


def _check_like_joblib(project: Path, result, folder: Path) -> dict:
    """What every launcher leaves: exit 0, one FINISHED parent, both children linked to it, one
    FINISHED and one FAILED (why: the config), the summary with both; returns the finished
    point's result.json."""
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = runs_of(project)
    (parent,) = [p for p in parents if p.data.tags.get("sweep.dir") == str(folder)]
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(mine) == 2
    status = {c.info.status: c for c in mine}
    assert set(status) == {"FINISHED", "FAILED"}
    assert "hidden_sizes" in status["FAILED"].data.tags["failure_reason"]
    assert parent.data.metrics["points_finished"] == 1 and parent.data.metrics["points_failed"] == 1
    rows = _rows(project)
    assert rows["FAILED"]["reason"] and rows["FINISHED"]["test_top1_accuracy"]
    (finished,) = [
        json.loads(p.read_text())
        for p in folder.rglob("result.json")
        if json.loads(p.read_text())["status"] == "FINISHED"
    ]
    assert finished["parent_run_id"] == parent.info.run_id
    return finished


@pytest.mark.slow
def test_a_sweep_on_a_ray_cluster_behaves_as_on_joblib(project, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster["address"])  # what `address: auto` joins
    ray_run, ray_folder = _sweep(project, "ray")
    on_ray = _check_like_joblib(project, ray_run, ray_folder)
    # The point ran in a worker process of the cluster: Ray kept its log, named by its pid.
    logs = Path(ray_cluster["temp_dir"]) / "session_latest/logs"
    assert list(logs.glob(f"worker-*-{on_ray['pid']}.out")), sorted(p.name for p in logs.glob("*"))

    joblib_run, joblib_folder = _sweep(project, "local")
    on_joblib = _check_like_joblib(project, joblib_run, joblib_folder)
    assert on_joblib["pid"] != on_ray["pid"]
    # The same point gives the same numbers (same seed, one BLAS thread on both launchers).
    for key in (
        "val_top1_accuracy",
        "val_cross_entropy",
        "test_top1_accuracy",
        "test_cross_entropy",
    ):
        assert on_ray[key] == on_joblib[key], key
    with (
        np.load(Path(on_ray["job_dir"]) / "model.npz") as a,
        np.load(Path(on_joblib["job_dir"]) / "model.npz") as b,
    ):
        assert a.files == b.files
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name


@pytest.mark.slow
def test_every_point_failed_on_ray_exits_1(project, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster["address"])
    result = run_sweep(
        project,
        "--multirun",
        "model.hidden_sizes=[],[0]",
        "hydra/launcher=ray",
        f"hydra.sweep.dir={project / 'multirun'}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "every point of the sweep failed" in result.stderr
    _, parents, children = runs_of(project)
    assert parents[0].info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert "warning" not in result.stderr.lower(), result.stderr


@pytest.mark.slow
def test_a_sweep_in_rays_local_mode(project, monkeypatch, tmp_path):
    """A private instance, even where RAY_ADDRESS names a cluster (here: a dead one)."""
    _require_cluster_extra()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray's local mode writes ~/.ray/auth_token
    result, folder = _sweep(project, "ray_local", "hydra.launcher.ray.init.num_cpus=2")
    _check_like_joblib(project, result, folder)
