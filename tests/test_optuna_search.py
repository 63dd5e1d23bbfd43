"""The Optuna search: Hydra's Optuna sweeper drives the sweep, each trial returns its validation
top-1 accuracy, and the study's history is summarised beside the sweep's."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.names import CONF_DIR
from pipeline.reporting import study

from helpers.project import command_env, run_module

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def _row(job, status="FINISHED", val=None, **params):
    overrides = [f"{key}={value}" for key, value in params.items()]
    return {"job": job, "status": status, "val_top1_accuracy": val, "overrides": overrides}


def test_history_importances_and_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for job in range(24):
        lr = float(rng.uniform(0.01, 0.3))
        noise = str(rng.integers(0, 3))
        rows.append(_row(job, val=0.9 + lr / 10, lr=lr, seed=noise))  # the objective is lr's
    rows[5] = _row(5, status="FAILED", lr=0.2, seed="1")
    trials = study.history(rows, ["lr", "seed"])
    assert [t["trial"] for t in trials] == list(range(24))
    assert math.isnan(trials[5]["objective"]) and trials[5]["status"] == "FAILED"
    finished = [t["objective"] for t in trials if not math.isnan(t["objective"])]
    assert trials[-1]["best_so_far"] == max(finished)
    assert all(a["best_so_far"] <= b["best_so_far"] for a, b in itertools.pairwise(trials[1:]))
    weights = study.importances(trials, ["lr", "seed"])
    assert list(weights) == ["lr", "seed"]  # largest first
    assert weights["lr"] > 0.8 and weights["seed"] < 0.3
    assert study.importances(trials[:2], ["lr"]) == {}  # too few trials

    files = study.write_study(rows, tmp_path, ["lr", "seed"], "demo")
    assert [f.name for f in files] == ["study.csv", "study.png", "importances.json"]
    with open(tmp_path / "study.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 24 and table[5]["status"] == "FAILED"
    assert json.loads((tmp_path / "importances.json").read_text()).keys() == {"lr", "seed"}
    assert (tmp_path / "study.png").stat().st_size > 5000


def test_optuna_search_trials_are_children_and_the_parent_records_the_best(project):
    """Four trials on the tiny split, two at a time in worker processes; the learning rate is
    searched over a value that trains and one that diverges (linear hidden layers, no max-norm:
    nothing bounds the weights)."""
    env = command_env(f"sqlite:///{project / 'mlflow.db'}")
    result = run_module(
        "pipeline.sweep",
        "--multirun",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.n_startup_trials=4",
        "optimizer.learning_rate=choice(0.01,1e5)",  # replaces the search's interval
        "model.hidden_sizes=choice([16],[8,8])",
        "train.epochs=2",
        "model.hidden_activation=linear",
        "train.max_norm=null",
        f"hydra.sweep.dir={project / 'multirun'}",
        cwd=project,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.name"] == "mnist_optuna"
    search = yaml.safe_load((CONF_DIR / "hparams_search/mnist_optuna.yaml").read_text())
    momentum = search["hydra"]["sweeper"]["params"]["optimizer.momentum"]
    assert parent.data.params["optimizer.momentum"] == momentum  # the search space

    reports = project / "reports/sweep/mnist_optuna"
    with open(reports / "study.csv") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 4
    rates = {float(t["optimizer.learning_rate"]) for t in trials}
    assert rates == {0.01, 1e5}, "the seeded sampler tried both rates"
    for trial in trials:
        diverging = float(trial["optimizer.learning_rate"]) == 1e5
        assert trial["status"] == ("FAILED" if diverging else "FINISHED")
    by_job = {int(c.data.tags["sweep.job"]): c for c in children}
    for trial in trials:
        child = by_job[int(trial["trial"])]
        assert child.info.status == trial["status"]
        if trial["status"] == "FINISHED":  # the objective: the last epoch's validation accuracy
            assert float(trial["objective"]) == child.data.metrics["val_accuracy"]

    # Optuna's best trial is the sweep's best point, recorded by the parent
    optuna_result = yaml.safe_load((project / "multirun/optimization_results.yaml").read_text())
    best = json.loads((reports / "best.json").read_text())
    named = json.loads((reports / "best_point.json").read_text())
    assert optuna_result["best_value"] == best["best_val_top1_accuracy"]
    assert parent.data.tags["best_run_id"] == named["run_id"]
    assert parent.data.tags["best_trial"] == str(best["best_job"]) == str(named["job"])
    # the best point's numbers, under its children's names
    assert parent.data.metrics["val_accuracy"] == best["best_val_top1_accuracy"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/study.png", "summary/study.csv", "summary/importances.json"} <= logged


@pytest.mark.slow
def test_a_search_whose_every_trial_failed_ends_as_a_grid_does(project):
    """Optuna has no best trial to report: exit 1, one error line, the parent FAILED."""
    result = run_module(
        "pipeline.sweep",
        "--multirun",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=2",
        "optimizer.learning_rate=choice(1e5)",
        "model.hidden_sizes=choice([16])",
        "model.hidden_activation=linear",
        "train.batch_size=choice(16)",
        "train.max_norm=null",
        "train.epochs=1",
        f"hydra.sweep.dir={project / 'multirun'}",
        cwd=project,
        env=command_env(f"sqlite:///{project / 'mlflow.db'}"),
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: every point of the sweep failed" in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    assert {r.info.status for r in runs if r is not parent} == {"FAILED"}
    assert "0 finished, 2 failed" in (project / "reports/sweep/mnist_optuna/summary.md").read_text()
