"""DVC stage ``compare``: the NumPy MLP against TensorFlow/Keras, and against the reference table.

Reads ``params.yaml`` (``model``, ``optimizer``, ``train``, ``seed``, ``tracking``),
``reports/metrics.json`` and ``reports/train/`` (ours), and ``reports/baseline/`` (TensorFlow's);
writes ``reports/comparison.md``, ``.json`` and ``.png`` (:mod:`pipeline.reporting.comparison`).
One MLflow run (``stage=compare``) holds the three files, and the ratios as metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import cli, tracking
from pipeline.config import Config
from pipeline.names import BASELINE_REPORTS, REPORTS, TRAIN_REPORTS
from pipeline.reporting.comparison import compare, comparison_metrics, quality_line, speed_line

log = logging.getLogger("pipeline.compare")


def run(
    cfg: Config,
    reports: Path = REPORTS,
    train_reports: Path = TRAIN_REPORTS,
    baseline: Path = BASELINE_REPORTS,
) -> tuple[dict, str]:
    """Write the comparison into ``reports`` and log it; returns it and its MLflow run's id."""
    comparison, files = compare(cfg, reports, train_reports, baseline)
    compared_runs = {
        f"{row['key']}_mlflow_run_id": row["mlflow_run_id"]
        for row in comparison["table"]
        if row.get("mlflow_run_id")
    }
    with tracking.start_config_run(
        cfg, stage="compare", run_name="numpy vs tensorflow", tags=compared_runs
    ) as mlflow_run:
        mlflow_run.log_metrics(comparison_metrics(comparison))
        for path in files:
            mlflow_run.log_file(path, "comparison")
    log.info("%s", speed_line(comparison).replace("**", ""))
    log.info("%s (MLflow run %s)", quality_line(comparison), mlflow_run.id)
    return comparison, mlflow_run.id


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.compare",
        "Compare this NumPy MLP with the TensorFlow/Keras baseline and the reference's "
        "reported results: a Markdown/JSON table, a figure and an MLflow run (DVC stage).",
        paths={
            "--reports": (REPORTS, "our reports, and where to write"),
            "--train-reports": (TRAIN_REPORTS, "the train stage's reports"),
            "--baseline": (BASELINE_REPORTS, "the baseline stage's reports"),
        },
    )
    return cli.run_stage(arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
