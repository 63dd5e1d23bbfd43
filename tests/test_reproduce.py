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
