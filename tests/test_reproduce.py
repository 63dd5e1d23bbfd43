"""A run can be reproduced from what MLflow recorded: config, commit, versions, data digests."""

from __future__ import annotations

import json

import numpy as np
import yaml

from pipeline import reproduce, train
from pipeline.config import compose, load_params, to_dict, validate


def test_a_run_is_reproduced_from_its_mlflow_record_alone(project, capsys):
    tmp_path = project
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=2", "seed=7",
                            "model.hidden_sizes=[24]", "optimizer=adam"]))  # fmt: skip
    train.run(cfg)
    run_id = json.loads((tmp_path / "reports/train/run.json").read_text())["run_id"]

    recorded = reproduce.recipe(run_id, uri, summary=tmp_path / "data/processed/summary.json")
    assert recorded["config"] == to_dict(cfg)
    assert recorded["versions"]["numpy"] == {"recorded": np.__version__,
                                             "installed": np.__version__}  # fmt: skip
    assert recorded["digests"]["train-images-idx3-ubyte"]["recorded"] == "ab" * 32
    assert recorded["digests"]["train-images-idx3-ubyte"]["local"] == "ab" * 32
    assert len(recorded["commit"]) == 40 or recorded["commit"] == "unknown"

    assert reproduce.main([run_id, "--uri", uri, "--write-params"]) == 0
    out = capsys.readouterr().out
    assert f"git checkout {recorded['commit']}" in out
    assert "numpy: recorded" in out
    rebuilt = load_params(tmp_path / "params.yaml")
    assert rebuilt == cfg

    # Retraining from the written params gives the very same model.
    first = (tmp_path / "models/model.npz").read_bytes()
    train.run(rebuilt)
    assert (tmp_path / "models/model.npz").read_bytes() == first
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["seed"] == 7


def test_unknown_run_is_a_clear_error(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert reproduce.main(["0123456789abcdef", "--uri", uri]) == 2
    assert "cannot read run 0123456789abcdef" in capsys.readouterr().err


def test_the_runs_blas_thread_count_is_compared_and_forced_where_it_would_differ(project, capsys):
    """A run trained on 2 BLAS threads (auto, on a two-core machine), reproduced where auto
    would pick 1 (a process limited to one thread): the report says so, --write-params forces
    the recorded 2, and the retraining gives the very same model bits."""
    import pytest
    from threadpoolctl import threadpool_info, threadpool_limits

    pool = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    if pool < 2:
        pytest.skip("needs a BLAS pool of two threads")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=2", "model.hidden_sizes=[1024]",
                            "train.batch_size=256"]))  # fmt: skip
    assert cfg.train.blas_threads == "auto"
    train.run(cfg)
    run_id = json.loads((project / "reports/train/run.json").read_text())["run_id"]
    first = (project / "models/model.npz").read_bytes()

    # Here, on this machine: auto gives the same count; the params keep `auto`.
    recorded = reproduce.recipe(run_id, uri, summary=project / "data/processed/summary.json")
    assert recorded["threads"] == {"configured": "auto", "recorded": 2, "here": 2}
    assert reproduce.params_to_write(recorded)["train"]["blas_threads"] == "auto"

    with threadpool_limits(1, user_api="blas"):  # elsewhere: auto would pick 1
        assert reproduce.main([run_id, "--uri", uri, "--write-params"]) == 0
        out = capsys.readouterr().out
        assert "BLAS threads: recorded 2, train.blas_threads: auto gives 1 here" in out
        assert "DIFFERS: --write-params sets train.blas_threads: 2" in out
        rebuilt = load_params(project / "params.yaml")
        assert rebuilt.train.blas_threads == 2
        train.run(rebuilt)
    assert (project / "models/model.npz").read_bytes() == first
