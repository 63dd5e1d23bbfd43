"""The pipeline's decisions and the numbers it reports, checked where they could go wrong.

- The best point of a sweep is chosen on validation data, never on the test set: every fixture
  here has rows whose validation and test rankings disagree, so ranking on a test column (or on
  the wrong validation column) picks another point and fails.
- Every number in a summary, report or comparison table is the number of the run or file it came
  from: the fixtures give every column of every row a distinct value, so a cell filled from the
  wrong column or the wrong row fails.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import compare
from pipeline.config import compose, validate
from pipeline.reporting import comparison, study, sweep_summary
from pipeline.sweeps import parent as sweep_parent

from helpers.rows import summary_row


def _row(job, val, val_ce, test, test_ce, seconds, model="reference", lr=0.1, status="FINISHED"):
    return summary_row(
        job,
        model,
        lr,
        status,
        val_top1_accuracy=val,
        val_cross_entropy=val_ce,
        test_top1_accuracy=test,
        test_cross_entropy=test_ce,
        train_seconds=seconds,
        run_id=f"run{job}",
        config={"model": {"name": model}, "job": job},
    )


# Validation top-1 ranks 2 > 0 > 1 > 3; test top-1 ranks 1 > 3 > 0 > 2 (the reverse);
# validation CE ranks 1 < 0 < 3 < 2 and test CE 3 < 2 < 0 < 1. The fastest point is 3.
# Job 4 failed, with the best numbers of all: a failed point is never the best.
ROWS = [
    _row(0, val=0.951, val_ce=0.171, test=0.942, test_ce=0.183, seconds=3.1, lr=0.01),
    _row(1, val=0.947, val_ce=0.162, test=0.968, test_ce=0.197, seconds=2.2, lr=0.1),
    _row(2, val=0.963, val_ce=0.188, test=0.931, test_ce=0.176, seconds=4.3, model="wide"),
    _row(3, val=0.902, val_ce=0.177, test=0.955, test_ce=0.154, seconds=1.4, model="wide", lr=0.5),
    _row(4, val=0.999, val_ce=0.01, test=0.999, test_ce=0.01, seconds=0.5, status="FAILED"),
]
BEST = ROWS[2]


def test_the_rankings_of_the_fixture_disagree():
    """Guard of the fixture itself: every other column would choose another point."""
    finished = [r for r in ROWS if r["status"] == "FINISHED"]
    for column, higher in (
        ("test_top1_accuracy", True),
        ("val_cross_entropy", False),
        ("test_cross_entropy", False),
        ("train_seconds", False),
    ):
        pick = (max if higher else min)(finished, key=lambda r, c=column: r[c])
        assert pick is not BEST, column


def test_best_point_is_chosen_on_validation_accuracy_when_the_test_set_disagrees():
    assert sweep_summary.best_point(ROWS) is BEST
    assert sweep_summary.best_point(list(reversed(ROWS))) is BEST


def test_validation_ties_break_on_validation_cross_entropy_not_on_test_numbers():
    a = _row(0, val=0.95, val_ce=0.20, test=0.99, test_ce=0.01, seconds=1)
    b = _row(1, val=0.95, val_ce=0.19, test=0.90, test_ce=0.50, seconds=9)
    assert sweep_summary.best_point([a, b]) is b
    assert sweep_summary.best_point([b, a]) is b
    c = _row(2, val=0.95, val_ce=0.19, test=0.99, test_ce=0.01, seconds=1)
    assert sweep_summary.best_point([c, b]) is b  # a full tie: the earlier job
    # a point without a validation number is never the best
    d = _row(3, val=None, val_ce=None, test=1.0, test_ce=0.0, seconds=1)
    assert sweep_summary.best_point([d, a]) is a
    assert sweep_summary.best_point([d]) is None


def test_every_summary_file_reports_the_validation_best_with_its_own_numbers(tmp_path):
    sweep_summary.write_summary(ROWS, tmp_path, "disagree")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best == {
        "points": 5,
        "points_finished": 4,
        "points_failed": 1,
        "best_job": 2,
        "best_learning_rate": 0.1,
        "best_val_top1_accuracy": 0.963,
        "best_val_cross_entropy": 0.188,
        "best_test_top1_accuracy": 0.931,
        "best_test_cross_entropy": 0.176,
        "best_train_seconds": 4.3,
    }
    named = json.loads((tmp_path / "best_point.json").read_text())
    assert (named["job"], named["run_id"]) == (2, "run2")
    assert named["overrides"] == "model=wide optimizer.learning_rate=0.1"
    assert named["architecture"] == "wide 784-128-64-10 tanh"
    assert yaml.safe_load((tmp_path / "best_config.yaml").read_text()) == BEST["config"]

    markdown = (tmp_path / "summary.md").read_text()
    assert "Best point, on validation top-1 accuracy: #2 wide 784-128-64-10 tanh" in markdown
    assert "validation 0.9630, test 0.9310 (MLflow run `run2`)" in markdown
    marked = [line for line in markdown.splitlines() if "**(best)**" in line]
    assert len(marked) == 1 and marked[0].startswith("| 2 |")

    # summary.csv: every cell of every row is its row's value
    with open(tmp_path / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["job"]) for r in table] == [0, 1, 2, 3, 4]
    for written, row in zip(table, ROWS, strict=True):
        for column in (
            "learning_rate",
            "val_top1_accuracy",
            "val_cross_entropy",
            "test_top1_accuracy",
            "test_cross_entropy",
            "train_seconds",
        ):
            assert float(written[column]) == row[column], (row["job"], column)
        assert written["status"] == row["status"] and written["run_id"] == row["run_id"]

    # summary.md: every number of the table is its row's, in its column
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "|---" not in line]
    header, *cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert header[4:9] == ["val top-1", "val CE", "test top-1", "test CE", "seconds"]
    for cell, row in zip(cells, ROWS, strict=True):
        assert int(cell[0]) == row["job"]
        assert float(cell[2]) == row["learning_rate"]
        assert [float(c) for c in cell[4:8]] == [
            row["val_top1_accuracy"],
            row["val_cross_entropy"],
            row["test_top1_accuracy"],
            row["test_cross_entropy"],
        ]
        assert float(cell[8]) == pytest.approx(row["train_seconds"], abs=0.05)


def test_the_search_history_follows_the_validation_objective():
    trials = study.history(ROWS, ["model"])
    assert [t["objective"] for t in trials[:4]] == [0.951, 0.947, 0.963, 0.902]
    assert math.isnan(trials[4]["objective"])  # failed: no objective, whatever it recorded
    assert [t["best_so_far"] for t in trials] == [0.951, 0.951, 0.963, 0.963, 0.963]


def test_the_champion_moves_on_validation_accuracy_even_when_the_test_set_disagrees(
    store_uri, clean_mlflow_state
):
    from pipeline import tracking

    client = MlflowClient(store_uri)
    experiment = client.create_experiment("unit")

    def version(val: float, test: float) -> str:
        run = client.create_run(experiment)
        model = client.create_logged_model(experiment, "model", source_run_id=run.info.run_id)
        tags = {"val_top1_accuracy": val, "test_top1_accuracy": test, "validation_data": "d"}
        return tracking.register_model(
            store_uri, run.info.run_id, model_id=model.model_id, tags=tags
        )

    first = version(val=0.95, test=0.90)
    assert sweep_parent.promote(store_uri, first)
    # better on test, worse on validation: stays
    assert not sweep_parent.promote(store_uri, version(val=0.94, test=0.99))
    assert tracking.champion(store_uri)[0] == first
    # better on validation, worse on test: moves
    better = version(val=0.96, test=0.80)
    assert sweep_parent.promote(store_uri, better)
    assert tracking.champion(store_uri)[0] == better


# ---------------------------------------------------------------------------- the comparison
#: Every metric of both measured rows distinct, and distinct from each other row's.
OURS = {
    "test_cross_entropy": 0.1312,
    "test_macro_f1": 0.9571,
    "test_micro_accuracy": 0.99183,
    "test_micro_precision": 0.9644,
    "test_micro_recall": 0.9522,
    "test_top1_accuracy": 0.9593,
    "train_seconds": 1.37,
}
THEIRS = {
    "test_cross_entropy": 0.1427,
    "test_macro_f1": 0.9468,
    "test_micro_accuracy": 0.98871,
    "test_micro_precision": 0.9536,
    "test_micro_recall": 0.9419,
    "test_top1_accuracy": 0.9482,
    "train_seconds": 6.85,
}
COLUMNS = {
    "cross_entropy": "test_cross_entropy",
    "accuracy": "test_micro_accuracy",
    "precision": "test_micro_precision",
    "recall": "test_micro_recall",
    "top1_accuracy": "test_top1_accuracy",
    "macro_f1": "test_macro_f1",
    "train_seconds": "train_seconds",
}


@pytest.fixture
def compared(project):
    reports = project / "reports"
    (reports / "train").mkdir(parents=True)
    (reports / "baseline").mkdir()
    (reports / "metrics.json").write_text(json.dumps(OURS))
    (reports / "baseline/metrics.json").write_text(json.dumps(THEIRS))
    (reports / "baseline/info.json").write_text(
        json.dumps(
            {
                "processing_unit": "CPU, 2 cores",
                "epochs": 3,
                "batch_size": 128,
                "learning_rate": 0.02,
                "mlflow_run_id": "tfrun",
            }
        )
    )
    header = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"]
    for folder, seconds in (("train", 0.6), ("baseline", 3.4)):
        with open(reports / folder / "history.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for epoch in (1, 2):
                writer.writerow([epoch, 1 / epoch, 0.8 + epoch / 100, 1.1 / epoch, 0.8, seconds])
    return project


def test_every_number_of_the_comparison_is_its_sources(compared):
    uri = f"sqlite:///{compared / 'mlflow.db'}"
    cfg = validate(
        compose(
            [
                f"tracking.uri={uri}",
                "train.epochs=2",
                "train.batch_size=64",
                "optimizer.learning_rate=0.05",
            ]
        )
    )
    _, run_id = compare.run(cfg)
    written = json.loads((compared / "reports/comparison.json").read_text())
    ref_numpy, ref_tf, ours, theirs = written["table"]
    assert (ours["key"], theirs["key"]) == ("numpy", "tensorflow")
    for column, source in COLUMNS.items():
        assert ours[column] == OURS[source], column
        assert theirs[column] == THEIRS[source], column
    for got, reference in zip((ref_numpy, ref_tf), comparison.REFERENCE_ROWS, strict=True):
        assert got == json.loads(json.dumps(reference))
    assert written["numpy_train_seconds"] == OURS["train_seconds"]
    assert written["tensorflow_train_seconds"] == THEIRS["train_seconds"]
    assert written["speedup_vs_tensorflow"] == THEIRS["train_seconds"] / OURS["train_seconds"]
    assert written["speedup_vs_reference_numpy"] == ref_numpy["train_seconds"] / 1.37
    assert written["speedup_vs_reference_tensorflow"] == ref_tf["train_seconds"] / 1.37
    for verdict in written["quality"]:
        other = {"tensorflow": theirs, "reference_numpy": ref_numpy}.get(verdict["against"], ref_tf)
        assert verdict["ours"] == ours[verdict["column"]]
        assert verdict["theirs"] == other[verdict["column"]]
        assert verdict["difference"] == ours[verdict["column"]] - other[verdict["column"]]

    # comparison.md: each row's cells, in the order of the header
    text = (compared / "reports/comparison.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, *cells = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines]
    assert header[4:10] == [title for _, title, _ in comparison.QUALITY]
    by_label = {cell[0]: cell for cell in cells}
    for label, metrics, setting in (
        ("this NumPy MLP (measured here)", OURS, ["2", "64", "0.05"]),  # params.yaml's
        ("TensorFlow/Keras (measured here)", THEIRS, ["3", "128", "0.02"]),  # info.json's
    ):
        cell = by_label[label]
        assert cell[1:4] == setting, label
        for i, (column, _, _) in enumerate(comparison.QUALITY):
            assert cell[4 + i] == f"{metrics[COLUMNS[column]]:.3f}", (label, column)
        assert cell[10] == comparison.format_seconds(metrics["train_seconds"]), label

    # the MLflow run's ratios are the file's
    logged = MlflowClient(uri).get_run(run_id).data.metrics
    for key in ("speedup_vs_tensorflow", "speedup_vs_reference_numpy"):
        assert logged[key] == pytest.approx(written[key], rel=1e-12)
    assert logged["numpy_matches_or_beats_tensorflow"] == 1.0
