"""DVC stage ``evaluate``: test-set metrics, confusion matrix, per-class report, learning curves.

Reads the trained model and ``data/processed/``; writes ``reports/metrics.json`` (the ``test_*``
metrics and ``train_seconds``) and, under ``reports/evaluate/``, the confusion matrix (CSV and PNG),
the per-example predictions (for ``dvc plots``), the per-class report and the learning curves. The
same numbers and figures are logged to the training stage's MLflow run (``reports/train/run.json``)
when it is in the store in use, the test metrics linked to its model and the test set, and the
model's registered version is tagged with its test accuracy; else they go to a run of their own.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from mlp import MLP, ModelFileError
from pipeline import cli, tracking
from pipeline.config import Config
from pipeline.data.dataset import load_dataset
from pipeline.errors import InputError
from pipeline.files import read_json
from pipeline.names import (
    EVALUATE_REPORTS,
    MODEL,
    PROCESSED,
    RUN_FILE,
    TEST_METRICS,
    TEST_METRICS_FILE,
    TRAIN_REPORTS,
)
from pipeline.reporting.evaluation import write_evaluation

log = logging.getLogger("pipeline.evaluate")


def _training_run(cfg, train_reports: Path):
    """The ``train`` stage's run to add to and what it recorded (``run.json``), or a run of our
    own (and an empty record) when it is in another store."""
    run_file = train_reports / RUN_FILE
    if run_file.exists():
        recorded = read_json(run_file)
        run = tracking.existing_run(recorded["run_id"], recorded["tracking_uri"], cfg.tracking.uri)
        if run is not None:
            run.set_tags({"evaluated": "true"})
            return contextlib.nullcontext(run), recorded
    own = tracking.start_config_run(
        cfg,
        stage="evaluate",
        run_name="evaluate",
        description="The test-set metrics of the `train` stage's model, whose run is in "
        "another MLflow store.",
    )
    return own, {}


def run(
    cfg: Config,
    model: Path = MODEL,
    data: Path = PROCESSED,
    train_reports: Path = TRAIN_REPORTS,
    reports: Path = EVALUATE_REPORTS,
    metrics: Path = TEST_METRICS_FILE,
) -> tuple[dict[str, float], str]:
    """Evaluate ``model`` on the test set of ``data``; returns the metrics and the MLflow run
    they were logged to."""
    try:
        net = MLP.load(model)
    except ModelFileError as exc:
        raise InputError(f"{exc}: rerun `dvc repro train`") from None
    except FileNotFoundError:
        raise
    except OSError as exc:  # a folder, no permission, an I/O error
        raise InputError(f"{model} cannot be read: {exc.strerror or exc}") from None
    split = load_dataset(data)
    result, files = write_evaluation(
        net.forward(split.X_test), split.y_test, train_reports, reports, metrics
    )
    context, recorded = _training_run(cfg, train_reports)
    with context as mlflow_run:
        mlflow_run.log_datasets(
            {"test": (split.X_test, split.y_test)},
            source=Path(data).as_posix(),
            source_digests=split.digests,
        )
        model_id = recorded.get("model_id")
        # The training run has train_seconds already; a run of our own records it too.
        logged = {k: v for k, v in result.items() if k in TEST_METRICS or not recorded}
        mlflow_run.log_metrics(logged, model_id=model_id)
        for path in files:
            mlflow_run.log_file(path, "evaluation")
        if recorded.get("model_version"):
            test_tags = {"test_top1_accuracy": round(float(result["test_top1_accuracy"]), 6)}
            tracking.tag_model_version(mlflow_run.uri, recorded["model_version"], test_tags)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result.items())
    log.info("%s (MLflow run %s)", summary, mlflow_run.id)
    return result, mlflow_run.id


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.evaluate",
        "Evaluate the trained MLP on the MNIST test set (DVC stage).",
        paths={
            "--model": (MODEL, "the trained model"),
            "--data": (PROCESSED, "preprocessed split"),
            "--train-reports": (TRAIN_REPORTS, "the train stage's reports"),
            "--reports": (EVALUATE_REPORTS, "folder for the reports"),
            "--metrics": (TEST_METRICS_FILE, "where to write the test metrics"),
        },
    )
    return cli.run_stage(
        arguments,
        run,
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
