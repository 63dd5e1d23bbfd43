"""End to end: `dvc repro` on real MNIST in a temporary clone of the project (slow).

One clone serves the module: its first `dvc repro` meets a tampered mirror and must fail cleanly,
the next one (good mirror) must recover without any manual clean-up and produce everything.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.names import MNIST_FILES

from helpers.data import mnist_mirror
from helpers.project import clone_working_tree, model_files

BIN = Path(sys.executable).parent
FILES = tuple(MNIST_FILES.values())

pytestmark = pytest.mark.slow


def dvc(args: list[str], project: Path, mirror: Path, check: bool = True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MNIST_MIRROR=str(mirror), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    result = subprocess.run(
        ["dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=1500
    )
    if check:
        assert result.returncode == 0, f"dvc {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("real MNIST not available: set MNIST_MIRROR to a folder with the four files")
    base = tmp_path_factory.mktemp("e2e")
    project = clone_working_tree(base / "project")

    # A mirror whose training labels were tampered with: same size, two labels changed.
    tampered = base / "tampered-mirror"
    tampered.mkdir()
    for name in FILES:
        shutil.copy(mirror / name, tampered / name)
    labels = bytearray(gzip.decompress((mirror / FILES[1]).read_bytes()))
    labels[8], labels[9] = (labels[8] + 1) % 10, (labels[9] + 1) % 10
    (tampered / FILES[1]).write_bytes(gzip.compress(bytes(labels)))

    # A clone of a committed tree is clean; with uncommitted files copied in, it is not.
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    )
    failed = dvc(["repro"], project, tampered, check=False)
    raw_after_failure = sorted(p.name for p in (project / "data/raw").glob("*"))
    recovered = dvc(["repro"], project, mirror)
    return {
        "project": project,
        "mirror": mirror,
        "failed": failed,
        "raw_after_failure": raw_after_failure,
        "recovered": recovered,
        "clean_checkout": not status.stdout.strip(),
    }


def test_tampered_download_fails_naming_the_file_and_leaves_nothing_bad(pipeline):
    failed = pipeline["failed"]
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert FILES[1] in output
    assert "digest mismatch" in output
    assert FILES[1] not in pipeline["raw_after_failure"]
    assert not [name for name in pipeline["raw_after_failure"] if name.endswith(".tmp")]


def test_recovery_runs_every_stage_and_reaches_the_target_accuracy(pipeline):
    project = pipeline["project"]
    for stage in ("download", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in pipeline["recovered"].stdout
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["test_top1_accuracy"] >= 0.955
    for name in ("test_cross_entropy", "test_micro_accuracy", "test_micro_precision",
                 "test_micro_recall", "test_macro_f1", "train_seconds"):  # fmt: skip
        assert name in metrics
    shown = dvc(["metrics", "show", "--json"], project, pipeline["mirror"])
    assert "test_top1_accuracy" in shown.stdout
    # numbers only: no run ids or override strings among the metrics
    files = json.loads(shown.stdout)[""]["data"]
    values = [v for f in files.values() for v in _leaves(f["data"])]
    assert values and all(isinstance(v, (int, float)) for v in values), values


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif not isinstance(tree, list):
        yield tree


def test_the_run_is_in_the_projects_mlflow_store(pipeline):
    from mlflow.tracking import MlflowClient

    project = pipeline["project"]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    assert len(runs) == 1
    recorded = runs[0]
    assert recorded.info.status == "FINISHED"
    assert recorded.data.metrics["test_top1_accuracy"] == pytest.approx(
        metrics["test_top1_accuracy"]
    )
    assert len(client.get_metric_history(recorded.info.run_id, "val_loss")) == 5
    assert {"evaluation", "config.yaml"} <= {
        a.path for a in client.list_artifacts(recorded.info.run_id)
    }
    assert "MLmodel" in model_files(f"sqlite:///{project / 'mlflow.db'}", recorded.info.run_id)
    for tag in ("git.commit", "version.numpy", "data.sha256.train-images-idx3-ubyte"):
        assert tag in recorded.data.tags
    # DVC deleted and rewrote the stages' outputs: no change of anyone's
    expected = "false" if pipeline["clean_checkout"] else "true"
    assert recorded.data.tags["git.dirty"] == expected
    # the sweep stage named its best point the champion
    champion = client.get_model_version_by_alias("mnist-mlp", "champion")
    best = json.loads((project / "reports/sweep/default/best_point.json").read_text())
    assert champion.run_id == best["run_id"] and str(champion.version) == best["model_version"]


def test_second_repro_changes_nothing(pipeline):
    project, mirror = pipeline["project"], pipeline["mirror"]
    second = dvc(["repro"], project, mirror)
    assert "Running stage" not in second.stdout
    assert "up to date" in dvc(["status"], project, mirror).stdout


def test_forced_retraining_gives_a_bit_identical_model_and_the_same_metrics(pipeline):
    project, mirror = pipeline["project"], pipeline["mirror"]
    model = (project / "models/model.npz").read_bytes()
    metrics = json.loads((project / "reports/metrics.json").read_text())
    dvc(["repro", "--force", "--single-item", "train"], project, mirror)
    dvc(["repro", "--single-item", "evaluate"], project, mirror)
    assert (project / "models/model.npz").read_bytes() == model
    again = json.loads((project / "reports/metrics.json").read_text())
    for measured in ("train_seconds", "other_processes_cores"):  # the machine's, not the model's
        metrics.pop(measured), again.pop(measured)
    assert again == metrics
