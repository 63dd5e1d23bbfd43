"""A run can be reproduced from what MLflow recorded: config, commit, versions, data digests."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import reproduce, train
from pipeline.config import Config, compose, load_params, to_dict, validate
from pipeline.data.dataset import processed_digest
from pipeline.errors import UsageError
from pipeline.tracking.provenance import installed_version, run_tags
from pipeline.training.run import SPLIT_TAG

from helpers.project import command_env, run_module, runs_of


def _trained(project: Path, *overrides: str) -> tuple[str, str, Config]:
    """The train stage run in ``project`` for two epochs with ``overrides``, into the project's
    store: the store's URI, the run's id and the configuration."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=2", *overrides]))
    train.run(cfg)
    return uri, json.loads((project / "reports/train/run.json").read_text())["run_id"], cfg


def _written_params(project: Path, capsys, uri: str, run_id: str, *report_lines: str) -> Config:
    """``pipeline.reproduce RUN_ID --write-params``: its report holds ``report_lines``; the
    configuration it wrote."""
    assert reproduce.main([run_id, "--uri", uri, "--write-params"]) == 0
    out = capsys.readouterr().out
    for line in report_lines:
        assert line in out
    return load_params(project / "params.yaml")


def test_a_run_is_reproduced_from_its_mlflow_record_alone(project, capsys):
    tmp_path = project
    uri, run_id, cfg = _trained(project, "seed=7", "model.hidden_sizes=[24]", "optimizer=adam")

    recorded = reproduce.recipe(run_id, uri, summary=tmp_path / "data/processed/summary.json")
    assert recorded["config"] == to_dict(cfg)
    assert recorded["versions"]["numpy"] == {"recorded": np.__version__,
                                             "installed": np.__version__}  # fmt: skip
    assert recorded["digests"]["train-images-idx3-ubyte"]["recorded"] == "ab" * 32
    assert recorded["digests"]["train-images-idx3-ubyte"]["local"] == "ab" * 32
    assert len(recorded["commit"]) == 40 or recorded["commit"] == "unknown"

    rebuilt = _written_params(
        project, capsys, uri, run_id, f"git checkout {recorded['commit']}", "numpy: recorded"
    )
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
    """A run trained on 2 BLAS threads (auto, on a two-core machine: a very large product on
    batches too small to split), reproduced where auto would pick 1 (a process limited to one
    thread): the report says so, --write-params forces the recorded 2, and the retraining gives
    the very same model bits."""
    import pytest
    from threadpoolctl import threadpool_info, threadpool_limits

    pool = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    if pool < 2:
        pytest.skip("needs a BLAS pool of two threads")
    uri, run_id, cfg = _trained(project, "model.hidden_sizes=[4096]", "train.batch_size=64")
    assert cfg.train.blas_threads == "auto"
    first = (project / "models/model.npz").read_bytes()

    # Here, on this machine: auto gives the same count; the params keep `auto`.
    recorded = reproduce.recipe(run_id, uri, summary=project / "data/processed/summary.json")
    assert recorded["threads"] == {"configured": "auto", "recorded": 2, "here": 2}
    assert reproduce.params_to_write(recorded)["train"]["blas_threads"] == "auto"

    with threadpool_limits(1, user_api="blas"):  # elsewhere: auto would pick 1
        rebuilt = _written_params(
            project, capsys, uri, run_id,
            "BLAS threads: recorded 2, train.blas_threads: auto gives 1 here",
            "DIFFERS: --write-params sets train.blas_threads: 2",
        )  # fmt: skip
        assert rebuilt.train.blas_threads == 2
        train.run(rebuilt)
    assert (project / "models/model.npz").read_bytes() == first


def test_the_runs_batch_blocks_are_compared_and_forced_where_they_would_differ(
    project, capsys, monkeypatch
):
    """A run trained in two blocks per batch (auto), reproduced where auto gives one block (a
    checkout whose rule asks for larger blocks) and on one core: the report says so,
    --write-params forces the recorded 2, and the retraining, on one worker instead of two,
    gives the very same model bits."""
    from threadpoolctl import threadpool_limits

    from pipeline import threads

    uri, run_id, _ = _trained(project, "model.hidden_sizes=[1024]", "train.batch_size=256")
    first = (project / "models/model.npz").read_bytes()
    recorded = reproduce.recipe(run_id, uri, summary=project / "data/processed/summary.json")
    assert recorded["parts"] == {"configured": "auto", "recorded": 2, "here": 2}
    assert recorded["threads"]["recorded"] == 1  # one BLAS thread per block

    monkeypatch.setattr(threads, "PART_MIN_ROWS", 1024)
    rebuilt = _written_params(
        project, capsys, uri, run_id,
        "batch blocks: recorded 2, train.batch_parts: auto gives 1 here",
        "DIFFERS: --write-params sets train.batch_parts: 2",
    )  # fmt: skip
    assert rebuilt.train.batch_parts == 2
    with threadpool_limits(1, user_api="blas"):  # one core for the training: one worker
        train.run(rebuilt)
    assert (project / "models/model.npz").read_bytes() == first


def test_a_sweep_point_with_its_own_seed_is_reproduced_bit_for_bit(project, capsys):
    """A point of a sweep over ``seed`` trained on the split in ``data/processed`` (made with
    ``data.split_seed``): following ``pipeline.reproduce`` for it gives the very same model
    file, and every check is ok, TensorFlow's version included."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    swept = run_module(
        "pipeline.sweep", "--multirun", "seed=0,5", "train.epochs=2", "model.hidden_sizes=[24]",
        f"hydra.sweep.dir={project / 'multirun'}", "hydra/launcher=basic",
        cwd=project, env=command_env(uri),
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr[-3000:]
    (row,) = [
        r
        for r in map(json.loads, map(Path.read_text, (project / "multirun").rglob("result.json")))
        if "seed=5" in r["overrides"]
    ]
    child = MlflowClient(uri).get_run(row["run_id"])
    assert child.data.tags[SPLIT_TAG] == processed_digest(project / "data/processed/mnist.npz")

    params = project / "params.yaml"
    assert reproduce.main([row["run_id"], "--uri", uri, "--write-params", "--check",
                           "--params", str(params)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "processed split: sha256" in out and "every recorded check is ok" in out
    assert "DIFFERS" not in out and "NOT" not in out
    if "version.tensorflow" in child.data.tags:
        assert f"tensorflow: recorded {child.data.tags['version.tensorflow']}" in out

    config = load_params(params)
    assert config.seed == 5
    train.run(config)
    assert (project / "models/model.npz").read_bytes() == (
        Path(row["job_dir"]) / "model.npz"
    ).read_bytes()


def test_reproduce_refuses_ok_when_the_processed_split_differs(project, capsys):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    train.run(validate(compose([f"tracking.uri={uri}", "train.epochs=1"])))
    run_id = json.loads((project / "reports/train/run.json").read_text())["run_id"]
    assert reproduce.main([run_id, "--uri", uri, "--check"]) == 0
    capsys.readouterr()

    # Another split (as another data.split_seed or validation size gives) in data/processed.
    path = project / "data/processed/mnist.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["X_train"], arrays["X_val"] = arrays["X_train"][1:], arrays["X_val"]
    np.savez(path, **arrays)
    assert reproduce.main([run_id, "--uri", uri, "--check"]) == 1
    out = capsys.readouterr().out
    assert "processed split: sha256" in out and "DIFFERS" in out
    assert "NOT reproducible as it stands" in out and "every recorded check is ok" not in out
    # without --check the report is the same and the command itself succeeded
    assert reproduce.main([run_id, "--uri", uri]) == 0
    assert "DIFFERS" in capsys.readouterr().out


def test_a_config_that_asks_for_another_split_stops_before_any_run(project):
    """``data/processed`` was split with ``data.split_seed`` 0: a run that says 4 would record
    one split and train on another, so it does not start."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    with pytest.raises(UsageError, match=r"data\.split_seed=0.*data\.split_seed=4"):
        train.run(validate(compose([f"tracking.uri={uri}", "data.split_seed=4"])))
    assert not runs_of(uri)
    assert not (project / "models/model.npz").exists()


def test_versions_are_found_under_every_distribution_name():
    """TensorFlow installs as ``tensorflow`` or ``tensorflow-cpu``: both names are asked, when
    the run records the version and when reproduce compares it."""
    installed = None
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            installed = importlib.metadata.version(name)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    if installed is None:
        pytest.skip("TensorFlow is not installed")
    assert installed_version("tensorflow") == installed
    assert run_tags(None, {}, "test")["version.tensorflow"] == installed
