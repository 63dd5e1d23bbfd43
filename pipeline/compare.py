"""DVC stage ``compare``: the NumPy MLP against TensorFlow/Keras, and against the reference table.

Reads ``params.yaml`` (``model``, ``optimizer``, ``train``, ``seed``, ``tracking``),
``reports/metrics.json`` and ``reports/train/`` (ours), and ``reports/baseline/`` (TensorFlow's);
writes ``reports/comparison.md``, ``.json`` and ``.png`` (:mod:`pipeline.reporting.comparison`).
One MLflow run (``stage=compare``) holds the three files and the ratios and verdicts as metrics
(the compared numbers themselves are the train and baseline runs' own metrics, which its
description links to).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import cli, tracking
from pipeline.config import Config
from pipeline.names import BASELINE_REPORTS, REPORTS, TRAIN_REPORTS
from pipeline.reporting.comparison import (
    MEASURED,
    QUALITY,
    compare,
    comparison_metrics,
    quality_line,
    speed_line,
)

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
    comparable = comparison.get("timings_comparable")
    timings = {None: "load not recorded", True: "comparable", False: "machine busy: not comparable"}
    with tracking.start_config_run(
        cfg,
        stage="compare",
        run_name="numpy vs tensorflow",
        tags={**compared_runs, "timings": timings[comparable]},
    ) as mlflow_run:
        mlflow_run.log_metrics(own_metrics(comparison))
        for path in files:
            mlflow_run.log_file(path, "comparison")
        mlflow_run.describe(_description(comparison, mlflow_run))
    log.info("%s", speed_line(comparison).replace("**", ""))
    log.info("%s (MLflow run %s)", quality_line(comparison), mlflow_run.id)
    return comparison, mlflow_run.id


def own_metrics(comparison: dict) -> dict[str, float]:
    """The comparison's ratios and verdicts; not the compared rows' numbers (their test metrics
    and training seconds), which the train and baseline runs hold under their own names."""
    columns = [column for column, _, _ in QUALITY] + ["train_seconds", "other_processes_cores"]
    copies = {
        f"{row['key']}_{column}"
        for row in comparison["table"]
        if row["source"] == MEASURED
        for column in columns
    }
    return {k: v for k, v in comparison_metrics(comparison).items() if k not in copies}


def _description(comparison: dict, run: tracking.Run) -> str:
    """The compare run's description: what it compares, with links to the compared runs."""
    links = [
        run.link(row["mlflow_run_id"], f"{row['library']} run")
        for row in comparison["table"]
        if row.get("mlflow_run_id")
    ]
    return (
        "This NumPy MLP against TensorFlow/Keras on the same configuration, and against the "
        "reference's reported results (`comparison.md` in the artifacts). "
        + (f"The compared runs: {', '.join(links)}. " if links else "")
        + speed_line(comparison).replace("**", "")
    )


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
