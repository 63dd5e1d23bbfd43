"""The compare stage: the table, its verdicts and ratios, the report files and the MLflow run."""

from __future__ import annotations

import csv
import json

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline import compare
from pipeline.config import compose, to_dict, validate
from pipeline.reporting import comparison

OURS = {
    "test_cross_entropy": 0.1333,
    "test_macro_f1": 0.9585,
    "test_micro_accuracy": 0.99196,
    "test_micro_precision": 0.9657,
    "test_micro_recall": 0.9535,
    "test_top1_accuracy": 0.9589,
    "train_seconds": 1.25,
}


def row(key="numpy", library="this NumPy MLP", unit="CPU, 2 cores", **changes):
    metrics = {**OURS, **changes}
    return comparison.measured_row(
        key, library, metrics, epochs=5, batch_size=32, learning_rate=0.1, unit=unit
    )


def test_reference_rows_are_the_reference_documents():
    numpy_row, tf_row = comparison.REFERENCE_ROWS
    assert [numpy_row[k] for k in ("cross_entropy", "accuracy", "precision", "recall")] == [
        0.166,
        0.990,
        0.950,
        0.950,
    ]
    assert [tf_row[k] for k in ("cross_entropy", "accuracy", "precision", "recall")] == [
        0.290,
        0.984,
        0.941,
        0.895,
    ]
    assert numpy_row["train_seconds"] == pytest.approx(17.95 * 60)
    assert tf_row["train_seconds"] == pytest.approx(6.64 * 60)
    assert (numpy_row["processing_unit"], tf_row["processing_unit"]) == ("CPU", "GPU")
    assert all(r["source"] == comparison.AS_REPORTED for r in comparison.REFERENCE_ROWS)
    assert all(
        (r["epochs"], r["batch_size"], r["learning_rate"]) == (5, 32, 0.1)
        for r in comparison.REFERENCE_ROWS
    )


def test_ratios_and_verdicts():
    tf = row("tensorflow", "TensorFlow/Keras", train_seconds=5.0, test_cross_entropy=0.1334)
    result = comparison.build_comparison(row(), tf)
    assert result["speedup_vs_tensorflow"] == pytest.approx(4.0)
    assert result["speedup_vs_reference_numpy"] == pytest.approx(17.95 * 60 / 1.25)
    assert result["speedup_vs_reference_tensorflow"] == pytest.approx(6.64 * 60 / 1.25)
    assert result["numpy_faster_than_tensorflow"] is True
    assert result["numpy_matches_or_beats_tensorflow"] is True
    assert result["numpy_matches_or_beats_reference_numpy"] is True
    assert result["numpy_matches_or_beats_reference_tensorflow"] is True
    assert [r["key"] for r in result["table"]] == [
        "reference_numpy",
        "reference_tensorflow",
        "numpy",
        "tensorflow",
    ]
    against_tf = {
        v["column"]: v["verdict"] for v in result["quality"] if v["against"] == "tensorflow"
    }
    assert set(against_tf) == {c for c, _, _ in comparison.QUALITY}
    assert against_tf["cross_entropy"] == "matches"  # 1e-4 apart: within half a third decimal
    # The reference rows report four quality columns; only those are compared.
    assert {v["column"] for v in result["quality"] if v["against"] == "reference_numpy"} == {
        "cross_entropy",
        "accuracy",
        "precision",
        "recall",
    }


def test_a_column_where_tensorflow_is_ahead_is_reported_as_such():
    tf = row("tensorflow", "TensorFlow/Keras", test_micro_recall=0.96, test_cross_entropy=0.12)
    result = comparison.build_comparison(row(), tf)
    assert result["numpy_matches_or_beats_tensorflow"] is False
    behind = {v["column"] for v in result["quality"] if v["verdict"] == "behind"}
    assert behind == {"recall", "cross_entropy"}  # lower cross-entropy is better
    line = comparison.quality_line(result)
    assert line.startswith("TensorFlow/Keras is ahead of this NumPy MLP on")
    assert "recall (0.9535 vs 0.9600)" in line


def test_verdict_directions():
    assert comparison.verdict(0.97, 0.95, higher_is_better=True) == "beats"
    assert comparison.verdict(0.95, 0.97, higher_is_better=True) == "behind"
    assert comparison.verdict(0.13, 0.29, higher_is_better=False) == "beats"
    assert comparison.verdict(0.9501, 0.9500, higher_is_better=True) == "matches"


def test_markdown_marks_reported_rows_and_the_best_values():
    tf = row("tensorflow", "TensorFlow/Keras", train_seconds=5.0)
    result = comparison.build_comparison(row(), tf)
    text = comparison.markdown(result, {"configuration": "Configuration: 784-32-16-10."})
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].split(" | ")[4:10] == [
        "Cross-entropy",
        "Accuracy",
        "Precision",
        "Recall",
        "Top-1 accuracy",
        "Macro F1",
    ]
    assert len(lines) == 5
    assert lines[1].startswith("| their NumPy (as reported) | 5 | 32 | 0.1 | 0.166 | 0.990 |")
    assert "| – | – | 17.95 min | CPU |" in lines[1]
    assert lines[2].startswith("| TensorFlow (as reported) |")
    assert lines[3].startswith("| this NumPy MLP (measured here) | 5 | 32 | 0.1 | **0.133** |")
    assert "| **1.25 s** | CPU, 2 cores |" in lines[3]
    assert "| 5.00 s | CPU, 2 cores |" in lines[4]
    assert "**4.0x faster** than TensorFlow" in text
    assert "862x faster than the reference's NumPy (17.95 min, CPU)" in text
    assert "Configuration: 784-32-16-10." in text


def test_a_slower_time_is_worded_as_slower():
    assert comparison.times(4.0) == "4.0x faster"
    assert comparison.times(1 / 5.2) == "5.2x slower"
    assert comparison.times(862.0) == "862x faster"
    tf = row("tensorflow", "TensorFlow/Keras", train_seconds=0.25)  # TensorFlow 5x faster
    text = comparison.markdown(comparison.build_comparison(row(), tf))
    assert "**5.0x slower** than TensorFlow" in text
    assert "0.2x" not in text


def test_a_busy_machine_is_reported_instead_of_a_speed_ratio():
    ours = row(train_seconds=35.0, other_processes_cores=1.7)  # trained while others ran
    tf = row("tensorflow", "TensorFlow/Keras", train_seconds=7.0, other_processes_cores=0.05)
    result = comparison.build_comparison(ours, tf)
    assert result["timings_comparable"] is False
    assert result["numpy_other_processes_cores"] == 1.7
    text = comparison.markdown(result)
    assert "The machine was busy: these times are not a speed comparison." in text
    assert "kept 1.70 cores busy on average while this NumPy MLP trained (35.0 s)" in text
    assert "0.05 while TensorFlow/Keras trained (7.00 s)" in text
    assert "than TensorFlow," not in text and "slower" not in text  # no ratio as fact
    # quiet during both: the ratio, and the loads that make it fair
    quiet = comparison.build_comparison(
        row(other_processes_cores=0.02),
        row("tensorflow", "TensorFlow/Keras", train_seconds=5.0, other_processes_cores=0.1),
    )
    assert quiet["timings_comparable"] is True
    line = comparison.speed_line(quiet)
    assert "**4.0x faster** than TensorFlow" in line
    assert "at most 0.10 cores busy during either training" in line
    # not recorded (reports of an older run): the ratio, saying the load is unknown
    unknown = comparison.build_comparison(row(), row("tensorflow", "TensorFlow/Keras"))
    assert "timings_comparable" not in unknown
    assert "was not recorded" in comparison.speed_line(unknown)


def test_format_seconds():
    assert comparison.format_seconds(1.2345) == "1.23 s"
    assert comparison.format_seconds(12.34) == "12.3 s"
    assert comparison.format_seconds(17.95 * 60) == "17.95 min"


@pytest.fixture
def compared(project):
    """A project with the reports of the evaluate, train and baseline stages, as they write
    them."""
    reports = project / "reports"
    (reports / "train").mkdir(parents=True)
    (reports / "baseline").mkdir()
    # ours trained while other processes kept a core and a half busy; TensorFlow on a quiet machine
    (reports / "metrics.json").write_text(json.dumps({**OURS, "other_processes_cores": 1.5}))
    (reports / "baseline/metrics.json").write_text(
        json.dumps({**OURS, "train_seconds": 5.0, "other_processes_cores": 0.0})
    )
    (reports / "baseline/info.json").write_text(
        json.dumps(
            {
                "processing_unit": "CPU, 2 cores",
                "epochs": 3,
                "batch_size": 32,
                "learning_rate": 0.1,
                "jit_compile": False,
                "steps_per_execution": 32,
                "batches": "the NumPy MLP's",
                "tensorflow_version": "2.21.0",
                "keras_version": "3.15.1",
                "mlflow_run_id": "0123abcd",
            }
        )
    )
    header = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"]
    for folder, seconds in (("train", 0.4), ("baseline", 1.7)):
        with open(reports / folder / "history.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for epoch in (1, 2, 3):
                writer.writerow([epoch, 1 / epoch, 0.8 + epoch / 100, 1.1 / epoch, 0.8, seconds])
    return project


def test_compare_stage_writes_the_report_and_one_mlflow_run(compared):
    project = compared
    uri = f"sqlite:///{project / 'mlflow.db'}"
    cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=3"]))
    result, run_id = compare.run(cfg)
    files = ("comparison.md", "comparison.json", "comparison.png")
    written = json.loads((project / "reports/comparison.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["speedup_vs_tensorflow"] == pytest.approx(4.0)
    assert written["table"][3]["mlflow_run_id"] == "0123abcd"
    # What `dvc metrics show` shows: the top-level scalars, no strings.
    scalars = {k for k, v in written.items() if not isinstance(v, list)}
    assert all(isinstance(written[k], (int, float)) for k in scalars)
    assert "speedup_vs_reference_numpy" in scalars
    assert (project / "reports/comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (project / "reports/comparison.md").read_text()
    assert "its first epoch" in text.lower() and "3 epochs" in text

    client = MlflowClient(uri)
    recorded = client.get_run(run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["stage"] == "compare"
    assert recorded.data.tags["tensorflow_mlflow_run_id"] == "0123abcd"
    assert recorded.data.metrics["speedup_vs_tensorflow"] == pytest.approx(4.0)
    assert recorded.data.metrics["numpy_matches_or_beats_tensorflow"] == 1.0
    # The compared numbers are the compared runs' own metrics, not repeated under other names.
    assert not {"tensorflow_top1_accuracy", "numpy_train_seconds"} & set(recorded.data.metrics)
    assert "numpy_other_processes_cores" not in recorded.data.metrics
    assert recorded.data.tags["timings"] == "machine busy: not comparable"
    assert recorded.data.metrics["timings_comparable"] == 0.0
    assert "The machine was busy" in recorded.data.tags["mlflow.note.content"]
    experiment = recorded.info.experiment_id
    description = recorded.data.tags["mlflow.note.content"]
    assert f"[TensorFlow/Keras run](#/experiments/{experiment}/runs/0123abcd)" in description
    artifacts = {a.path for a in client.list_artifacts(run_id, "comparison")}
    assert artifacts == {f"comparison/{name}" for name in files}


def test_missing_baseline_says_which_stage_to_run(compared, capsys):
    project = compared
    (project / "reports/baseline/metrics.json").unlink()
    params = project / "params.yaml"
    cfg = validate(compose([f"tracking.uri=sqlite:///{project / 'mlflow.db'}"]))
    OmegaConf.save(OmegaConf.create(to_dict(cfg)), params)
    assert compare.main(["--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "dvc repro baseline" in err and "Traceback" not in err
    assert not (project / "reports/comparison.json").exists()
