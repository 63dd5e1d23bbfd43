"""DVC stage ``train``: train the configured model on the preprocessed split, tracked in MLflow.

Reads ``params.yaml`` (``seed``, ``model``, ``optimizer``, ``train``, ``data.train_limit``,
``tracking``) and ``data/processed/``; writes ``models/model.npz``, the per-epoch history
``reports/train/history.csv``, ``reports/train/metrics.json`` and ``reports/train/run.json`` (the
MLflow run, which the ``evaluate`` stage completes, and its model). The model is logged to MLflow
and registered as a new version of ``mnist-mlp``. Nothing is written unless training finished:
a diverged or interrupted run leaves no model behind.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import cli
from pipeline.config import Config
from pipeline.names import MODEL, PROCESSED, TRAIN_REPORTS
from pipeline.training.progress import ProgressBar
from pipeline.training.run import Outputs, RunResult, train_and_record


def run(
    cfg: Config, data: Path = PROCESSED, model: Path = MODEL, reports: Path = TRAIN_REPORTS
) -> RunResult:
    """Train ``cfg`` on ``data``: the model to ``model``, history, metrics, run to ``reports``."""
    return train_and_record(
        cfg,
        data,
        Outputs(model, reports, run_record=True),
        stage="train",
        register=True,
        callbacks=[ProgressBar()],
    )


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.train",
        "Train the configured MLP on the preprocessed MNIST split (DVC stage).",
        paths={
            "--data": (PROCESSED, "preprocessed split"),
            "--model": (MODEL, "where to write the model"),
            "--reports": (TRAIN_REPORTS, "folder for the history, metrics and run record"),
        },
    )
    return cli.run_stage(
        arguments,
        run,
        argv,
        failed="No model was written; the MLflow run is marked FAILED.",
        interrupted="no model was written; the MLflow run is marked KILLED.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
