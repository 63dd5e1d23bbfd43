"""DVC stage ``baseline``: the configured network in TensorFlow/Keras, for the comparison.

The same layer sizes, activations, loss, optimiser and hyper-parameters as the ``train`` stage
(all read from the same config, see :mod:`pipeline.training.keras_model`), on the same split,
started from the *same initial weights* (copied from the :class:`mlp.MLP` the same seed builds)
and, with ``baseline.same_batches``, fed the very batches the NumPy model sees, in the same order.
Timed the same way (wall seconds of the training steps of each epoch, validation excluded) and
scored with the same :mod:`mlp.metrics` functions on its predicted probabilities.

Reads ``params.yaml`` (``seed``, ``model``, ``optimizer``, ``train``, ``baseline``,
``data.train_limit``, ``tracking``) and ``data/processed/``; writes ``models/baseline.keras`` and,
under ``reports/baseline/``: ``metrics.json`` (``train_seconds`` and the test metrics under the
names of ``reports/metrics.json``), ``history.csv`` (the columns of
``reports/train/history.csv``), ``info.json`` (library versions, processing unit, how the batches
were fed and the graph compiled) and ``learning_curves.png``. One MLflow run, tagged
``library=tensorflow``, with the metric names of the NumPy runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import cli
from pipeline.config import Config
from pipeline.names import BASELINE_MODEL, BASELINE_REPORTS, PROCESSED, TEST_METRICS
from pipeline.training.keras_model import Keras
from pipeline.training.run import Outputs, RunResult, train_and_record

log = logging.getLogger("pipeline.baseline")


def run(
    cfg: Config,
    data: Path = PROCESSED,
    model: Path = BASELINE_MODEL,
    reports: Path = BASELINE_REPORTS,
) -> RunResult:
    """Train, score and save the Keras baseline of ``cfg``; reports (and ``info.json``) to
    ``reports``."""
    result = train_and_record(
        cfg,
        data,
        Outputs(model, reports, curves=True),
        stage="baseline",
        framework=Keras(),
        score_test_set=True,
    )
    log.info(", ".join(f"{k}={result.metrics[k]:.4f}" for k in TEST_METRICS))
    return result


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.baseline",
        "Train the configured network in TensorFlow/Keras from the NumPy model's initial "
        "weights (and, with baseline.same_batches, its batches), evaluate it on the test set "
        "with the same metrics (DVC stage).",
        paths={
            "--data": (PROCESSED, "preprocessed split"),
            "--model": (BASELINE_MODEL, "where to write the Keras model"),
            "--reports": (BASELINE_REPORTS, "folder for the reports"),
        },
    )
    return cli.run_stage(
        arguments,
        run,
        argv,
        failed="No baseline was written; the MLflow run is marked FAILED.",
        interrupted="no baseline was written; the MLflow run is marked KILLED.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
