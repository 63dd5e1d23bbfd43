"""Hydra multirun sweeps (pipeline.sweep): the conf/ pieces, the summary, and tiny real sweeps.

The sweeps run ``python -m pipeline.sweep`` as a subprocess in ``tmp_path`` (its own
``data/processed/mnist.npz``, MLflow store, sweep and report folders), so nothing is written
into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline import sweep
from pipeline.config import validate
from pipeline.names import CONF_DIR
from pipeline.reporting import sweep_summary
from pipeline.sweeps import parent as sweep_parent
from pipeline.sweeps import state as sweep_state
from pipeline.sweeps.points import plain_config

from helpers.project import command_env, run_module
from helpers.rows import summary_row


# ---------------------------------------------------------------------------- helpers
@pytest.fixture
def bright_project(project) -> Path:
    """As :func:`project`, with images in [0, 10] (as unscaled inputs would be): there ReLU
    layers overflow within a few steps at learning rate 1e5; with images in [0, 1] they only
    die, and training goes on at chance level."""
    path = project / "data/processed/mnist.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for key in ("X_train", "X_val", "X_test"):
        arrays[key] = arrays[key] * np.float32(10)
    np.savez(path, **arrays)
    return project


def run_sweep(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m pipeline.sweep ARGS`` in ``project`` with its own MLflow store."""
    env = command_env(f"sqlite:///{project / 'mlflow.db'}")
    return run_module("pipeline.sweep", *args, cwd=project, env=env, timeout=timeout)


def runs_of(project: Path):
    """``(parents, children)``: the sweep runs and the point runs in the project's store."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def hydra_compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


# ---------------------------------------------------------------------------- conf/
def test_default_grid_composes_as_a_multirun_over_architectures_and_learning_rates():
    cfg = hydra_compose(["+sweep=default"])
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = cfg.hydra.sweeper.params
    assert params["model"] == "reference,wide,wider,widest"
    rates = [float(r) for r in params["optimizer.learning_rate"].split(",")]
    assert min(rates) == 0.01 and max(rates) == 0.5
    for name in params["model"].split(","):  # every architecture is a valid config
        sizes = validate(plain_config(hydra_compose([f"model={name}"]))).model.hidden_sizes
        assert max(sizes) <= 512
    # the sweep config adds nothing to the training config: params.yaml stays as it is
    assert plain_config(cfg) == plain_config(hydra_compose([]))


def test_best_grid_composes_wide_relu_networks():
    cfg = hydra_compose(["+sweep=best"])
    assert cfg.hydra.mode == RunMode.MULTIRUN
    models = cfg.hydra.sweeper.params["model"].split(",")
    for name in models:
        config = validate(plain_config(hydra_compose(["+sweep=best", f"model={name}"])))
        assert config.model.hidden_activation == "relu"
        assert config.optimizer.momentum == 0.9
        assert min(config.model.hidden_sizes) >= 256
        assert config.train.epochs >= 10


def test_local_launcher_is_joblib_one_process_per_core():
    launcher = hydra_compose(["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.mnist_mlp.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == -1


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = hydra_compose(["hydra/launcher=slurm", "hydra.launcher.partition=cpu"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "cpu" and launcher["cpus_per_task"] >= 1
    assert "OPENBLAS_NUM_THREADS=${hydra.launcher.cpus_per_task}" in " ".join(launcher["setup"])


@pytest.mark.parametrize(("name", "address"), [("ray", "auto"), ("ray_local", "local")])
def test_ray_launcher_configs_have_the_plugins_keys(name, address):
    """The files need no plugin to compose (the sweep checks for it before any point)."""
    raw = yaml.safe_load((CONF_DIR / f"hydra/launcher/{name}.yaml").read_text())
    assert raw["_target_"] == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert set(raw["ray"]) == {"init", "remote"}
    launcher = hydra_compose([f"hydra/launcher={name}"]).hydra.launcher
    assert launcher.ray.remote.num_cpus == 1
    assert launcher.ray.init.address == address
    if address == "auto":  # Ray refuses an object store size when it joins a cluster
        assert launcher.ray.init.object_store_memory is None


@pytest.mark.parametrize(
    "value",
    [
        "0123abcd",
        "sqlite:////tmp/a b/mlflow.db",
        "http://127.0.0.1:5050",
        "it's ${x} a\\b, [c]=d",
        "a\\'b\\",
        "\\${oc.env:HOME}",
    ],
)
def test_what_the_parent_tells_its_points_travels_in_each_jobs_config(value):
    """The parent's entries in the master config's Hydra overrides compose, for every job, into
    ``hydra.job.env_set``, exactly as they were (quotes, interpolations, grammar characters)."""
    cfg = hydra_compose(["+hydra.job.env_set.OTHER=1"])
    sweep = {"parent_run_id": "0123abcd", "tracking_uri": value, "experiment": value, "name": "n"}
    sweep_state.add_to_jobs(cfg, sweep)
    sweep_state.add_to_jobs(cfg, {**sweep, "parent_run_id": "fedc"})  # a second sweep replaces
    job = hydra_compose([*OmegaConf.to_container(cfg.hydra.overrides.hydra), "model=wide"]).hydra
    assert sweep_state.sweep_of_job(job) == {**sweep, "parent_run_id": "fedc"}
    assert job.job.env_set.OTHER == "1"
    assert sum("SWEEP_PARENT_RUN_ID" in o for o in job.overrides.hydra) == 1


def test_callback_and_help_compose():
    cfg = hydra_compose(["hydra/callbacks=sweep", "hydra/help=sweep"])
    assert cfg.hydra.callbacks.sweep._target_ == "pipeline.sweeps.parent.SweepCallback"
    template = cfg.hydra.help.template
    for word in ("model", "optimizer", "data", "+sweep", "hydra/launcher", "learning_rate"):
        assert word in template


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--multirun", "model=a,b"],
            [
                "--multirun",
                "hydra/launcher=local",
                "hydra/callbacks=sweep",
                "hydra/help=sweep",
                "model=a,b",
            ],
        ),
        (
            ["model=a", "hydra/launcher=slurm", "-m"],
            ["hydra/callbacks=sweep", "hydra/help=sweep", "model=a", "hydra/launcher=slurm", "-m"],
        ),
        (
            ["--help"],
            ["hydra/launcher=local", "hydra/callbacks=sweep", "hydra/help=sweep", "--help"],
        ),
    ],
)
def test_default_choices_join_the_command_lines_overrides(argv, expected):
    assert sweep.with_default_choices(argv) == expected


# ---------------------------------------------------------------------------- the summary
def _row(job, model, lr, status="FINISHED", val=None, **extra):
    scores = {}
    if val is not None:
        scores = {
            "val_top1_accuracy": val,
            "val_cross_entropy": 1 - val,
            "test_top1_accuracy": val - 0.01,
            "test_cross_entropy": 1.1 - val,
        }
    return summary_row(
        job, model, lr, status, extra_overrides=("train.epochs=1",), **scores, **extra
    )


ROWS = [
    _row(0, "reference", 0.01, val=0.90),
    _row(1, "reference", 0.1, val=0.95),
    _row(2, "wide", 0.01, val=0.93),
    _row(3, "wide", 0.1, status="FAILED"),
]


def test_best_point_is_chosen_on_validation_accuracy():
    assert sweep_summary.best_point(ROWS)["job"] == 1
    tied = [*ROWS, _row(4, "wide", 0.5, val=0.95)]
    tied[-1]["val_cross_entropy"] = 0.01  # same accuracy, lower loss wins
    assert sweep_summary.best_point(tied)["job"] == 4
    assert sweep_summary.best_point([ROWS[3]]) is None


def test_exit_status_is_non_zero_only_when_every_point_failed():
    assert sweep_summary.exit_status(ROWS) == 0
    assert sweep_summary.exit_status([ROWS[3]]) == 1
    assert sweep_summary.exit_status([]) == 1


def test_varying_and_shared_overrides():
    rows = [
        {**ROWS[0], "overrides": [*ROWS[0]["overrides"], "seed=0"]},
        {**ROWS[1], "overrides": [*ROWS[1]["overrides"], "seed=1"]},
    ]
    varying, common = sweep_summary.varying_overrides(rows)
    assert varying == {"optimizer.learning_rate", "seed"}
    assert common == ["model=reference", "train.epochs=1"]
    assert sweep_summary.other_overrides(rows[1], varying) == "seed=1"


def test_summary_files(tmp_path):
    files = sweep_summary.write_summary(ROWS, tmp_path, "test")
    assert {f.name for f in files} == {
        "summary.csv",
        "summary.md",
        "heatmap.png",
        "best.json",
        "best_point.json",
        "best_config.yaml",
    }
    with open(tmp_path / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["status"] for r in table] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    assert table[2]["architecture"] == "wide 784-128-64-10 tanh"
    assert table[3]["reason"].startswith("DivergenceError")
    markdown = (tmp_path / "summary.md").read_text()
    assert "4 points: 3 finished, 1 failed" in markdown
    assert "## Failed points" in markdown and "DivergenceError" in markdown
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_job"] == 1 and best["points_failed"] == 1
    # A DVC metric: `dvc metrics show` lists numbers only; the names are in best_point.json.
    assert all(isinstance(v, (int, float)) for v in best.values()), best
    named = json.loads((tmp_path / "best_point.json").read_text())
    assert named["job"] == 1 and named["overrides"] == " ".join(ROWS[1]["overrides"])
    assert yaml.safe_load((tmp_path / "best_config.yaml").read_text()) == {
        "model": {"name": "reference"}
    }
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_results_keeps_only_this_sweeps_points(tmp_path):
    for job, parent in ((0, "p1"), (1, "p2"), (2, "p1")):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "result.json").write_text(
            json.dumps({"job": job, "parent_run_id": parent})
        )
    assert [r["job"] for r in sweep_summary.load_results(tmp_path, "p1")] == [0, 2]


def test_champion_moves_only_to_a_better_model_on_the_same_validation_data(
    store_uri, clean_mlflow_state
):
    """``models:/mnist-mlp@champion`` names the best model sweeps have found: a worse (or
    equal) best point of a later sweep leaves it; one validated on other data replaces it."""
    from pipeline import tracking

    client = MlflowClient(store_uri)
    experiment = client.create_experiment("unit")

    def version(val: float, data: str = "d1") -> str:
        run = client.create_run(experiment)
        model = client.create_logged_model(experiment, "model", source_run_id=run.info.run_id)
        tags = {"val_top1_accuracy": val, "validation_data": data}
        return tracking.register_model(
            store_uri, run.info.run_id, model_id=model.model_id, tags=tags
        )

    def champion() -> str:
        return tracking.champion(store_uri)[0]

    assert tracking.champion(store_uri) is None
    first = version(0.95)
    assert sweep_parent.promote(store_uri, first) and champion() == first
    assert not sweep_parent.promote(store_uri, version(0.94)) and champion() == first
    assert not sweep_parent.promote(store_uri, version(0.95)) and champion() == first  # a tie
    better = version(0.96)
    assert sweep_parent.promote(store_uri, better) and champion() == better
    other_data = version(0.90, data="d2")
    assert sweep_parent.promote(store_uri, other_data) and champion() == other_data


# ---------------------------------------------------------------------------- real sweeps
def test_tiny_sweep_in_parallel_processes(project):
    """2 x 2 points with joblib (2 workers): one parent, four children, the summary."""
    before = {p.name for p in project.iterdir()}
    result = run_sweep(
        project,
        "--multirun",
        "model=reference,wide",
        "optimizer.learning_rate=0.01,0.1",
        "train.epochs=1",
        "data.train_limit=200",
        f"hydra.sweep.dir={project / 'multirun'}",
        "hydra.launcher.n_jobs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client, parents, children = runs_of(project)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # The grid as parameters; the best point's numbers under the children's names.
    assert parent.data.params == {
        "model": "reference,wide",
        "optimizer.learning_rate": "0.01,0.1",
    }
    assert parent.data.metrics["points_finished"] == 4
    best_child = client.get_run(parent.data.tags["best_run_id"])
    for name in ("val_accuracy", "val_loss", "test_top1_accuracy", "train_seconds"):
        assert parent.data.metrics[name] == best_child.data.metrics[name], name
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert child.data.params["train.epochs"] == "1"
        assert "test_top1_accuracy" in child.data.metrics
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [1]
    # the joblib launcher really ran the points in separate worker processes
    pids = {c.data.tags["pid"] for c in children}
    assert len(pids) > 1 and str(os.getpid()) not in pids
    # ... each with its BLAS limited to its share of the cores
    threads = {c.data.tags["blas.threads"] for c in children} - {"None"}
    assert all(int(n) <= max(1, joblib.cpu_count() // 2) for n in threads)

    reports = project / "reports/sweep/adhoc"
    with open(reports / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    assert {(r["model"], float(r["learning_rate"])) for r in table} == {
        (m, lr) for m in ("reference", "wide") for lr in (0.01, 0.1)
    }
    assert all(r["status"] == "FINISHED" and 0 <= float(r["val_top1_accuracy"]) <= 1 for r in table)
    assert "4 points: 4 finished, 0 failed" in (reports / "summary.md").read_text()
    assert (reports / "heatmap.png").stat().st_size > 1000
    best = json.loads((reports / "best_point.json").read_text())
    assert best["run_id"] == best_child.info.run_id
    # The best point's model: a new version of mnist-mlp, now the champion.
    assert (best["registered_model"], best["champion"]) == ("mnist-mlp", True)
    version = client.get_model_version_by_alias("mnist-mlp", "champion")
    assert version.version == int(best["model_version"]) and version.run_id == best["run_id"]
    assert float(version.tags["val_top1_accuracy"]) == pytest.approx(
        best_child.data.metrics["val_accuracy"]
    )
    assert float(version.tags["test_top1_accuracy"]) == pytest.approx(
        best_child.data.metrics["test_top1_accuracy"]
    )
    assert "validation top-1" in version.description and "test top-1" in version.description
    assert parent.data.tags["best_model_version"] == best["model_version"]
    assert validate(yaml.safe_load((reports / "best_config.yaml").read_text()))
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/heatmap.png" in logged and "summary/summary.csv" in logged
    for job in range(4):  # each point's outputs in its own job folder
        assert (project / "multirun" / str(job) / "model.npz").exists()
        assert (project / "multirun" / str(job) / "history.csv").exists()
    # and nothing outside the project's own folders
    written = {p.name for p in project.iterdir()} - before
    assert written <= {"multirun", "reports", "mlflow.db", "mlflow.db.lock", "mlartifacts"}, written


def test_a_diverging_point_fails_alone(bright_project):
    """ReLU at learning rate 1e5 overflows; its child is FAILED, the sweep still finishes."""
    project = bright_project
    result = run_sweep(
        project,
        "--multirun",
        "model.hidden_activation=relu",
        "optimizer.learning_rate=0.01,1e5",
        "train.epochs=1",
        f"hydra.sweep.dir={project / 'multirun'}",
        "hydra/launcher=basic",  # one after the other, in this process: parent and child nested
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = runs_of(project)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    status = {float(c.data.params["optimizer.learning_rate"]): c for c in children}
    assert status[0.01].info.status == "FINISHED"
    assert status[1e5].info.status == "FAILED"
    assert "diverged" in status[1e5].data.tags["failure_reason"]
    assert status[1e5].data.tags["diverged_epoch"] == "1"
    with open(project / "reports/sweep/adhoc/summary.csv") as fh:
        table = {float(r["learning_rate"]): r for r in csv.DictReader(fh)}
    assert table[1e5]["status"] == "FAILED" and "diverged" in table[1e5]["reason"]
    assert table[0.01]["status"] == "FINISHED"
    assert "## Failed points" in (project / "reports/sweep/adhoc/summary.md").read_text()


def test_parent_fails_and_exit_status_is_1_when_every_point_failed(
    project, monkeypatch, clean_mlflow_state
):
    """The callback in this process, with one failed point's result written by hand."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = hydra_compose([f"hydra.sweep.dir={project / 'multirun'}"])
    callback = sweep_parent.SweepCallback()
    callback.on_multirun_start(cfg)
    job = hydra_compose(OmegaConf.to_container(cfg.hydra.overrides.hydra)).hydra
    parent_id = sweep_state.sweep_of_job(job)["parent_run_id"]
    point = project / "multirun/0"
    point.mkdir(parents=True)
    failed = _row(0, "reference", 1e5, status="FAILED", parent_run_id=parent_id)
    (point / "result.json").write_text(json.dumps(failed))
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(cfg)
    assert exit_info.value.code == 1
    parent = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert "every point" in parent.data.tags["failure_reason"]
    assert parent.data.metrics["points_failed"] == 1
    assert "0 finished, 1 failed" in (project / "reports/sweep/adhoc/summary.md").read_text()


@pytest.mark.slow
def test_exit_status_when_every_point_failed(bright_project):
    project = bright_project
    result = run_sweep(
        project,
        "--multirun",
        "model.hidden_activation=relu",
        "optimizer.learning_rate=1e5",
        "train.epochs=1",
        f"hydra.sweep.dir={project / 'multirun'}",
        "hydra/launcher=basic",
    )
    assert result.returncode == 1
    assert "every point of the sweep failed" in result.stderr
    _, parents, children = runs_of(project)
    assert parents[0].info.status == "FAILED" and children[0].info.status == "FAILED"
    assert "0 finished, 1 failed" in (project / "reports/sweep/adhoc/summary.md").read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.learning_rate=0.01,0.1", "model.hidden_sizes=[]"], "model.hidden_sizes"),
        # an interpolation to a key that does not exist: the key, not a traceback
        (["model=reference,wide", "seed=${nope}"], "invalid config: seed: Interpolation key"),
        pytest.param(
            ["model=reference,wide", "hydra/launcher=ray"],
            "hydra/launcher=ray",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_bad_sweep_stops_before_any_point(project, overrides, message, monkeypatch):
    """An invalid config, or a Ray launcher whose plugin is missing or whose cluster does not
    answer (RAY_ADDRESS names a closed port): exit 2, nothing tracked."""
    from helpers.mlflow_server import free_port

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    result = run_sweep(project, "--multirun", *overrides)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(project.rglob("result.json"))
    _, parents, children = runs_of(project)
    assert not parents and not children


@pytest.mark.slow
def test_without_multirun_one_configuration(project):
    result = run_sweep(project, "model=wide", "train.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = runs_of(project)
    assert len(parents) == 1 and not children
    assert parents[0].data.params["model.name"] == "wide"
    assert list((project / "outputs").rglob("model.npz"))
    assert not (project / "reports").exists()


@pytest.mark.slow
def test_help_explains_groups_and_keys(tmp_path):
    result = run_sweep(tmp_path, "--help")
    assert result.returncode == 0
    for text in ("python -m pipeline.sweep", "hydra/launcher", "+sweep", "optimizer.learning_rate"):
        assert text in result.stdout


@pytest.mark.slow
def test_submitit_launcher_links_children_too(project):
    """submitit's local executor runs each point as its own submitted job, as on SLURM."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_sweep(
        project,
        "--multirun",
        "model=reference,wide",
        "train.epochs=1",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={project / 'multirun'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = runs_of(project)
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert "2 points: 2 finished" in (project / "reports/sweep/adhoc/summary.md").read_text()
