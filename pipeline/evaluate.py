"""DVC stage ``evaluate``: test-set metrics, confusion matrix, per-class report, learning curves.

Reads the trained model and ``data/processed/``; writes ``reports/metrics.json`` (the ``test_*``
metrics and ``train_seconds``) and, under ``reports/evaluate/``, the confusion matrix (CSV and PNG),
the per-example predictions (for ``dvc plots``), the per-class report and the learning curves. The
same numbers and figures are logged to the training stage's MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from mlp import MLP, metrics
from pipeline import plots, tracking
from pipeline.common import atomic_write, setup_logging, write_json
from pipeline.config import ConfigError, load_params, to_dict
from pipeline.training import N_CLASSES, load_dataset, test_metrics

log = logging.getLogger("pipeline.evaluate")

REPORTS = Path("reports/evaluate")
METRICS = Path("reports/metrics.json")


def write_csv(path: Path, header: list[str], rows) -> Path:
    with atomic_write(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def evaluate(
    model_path: Path, data_path: Path, train_reports: Path, reports: Path, metrics_path: Path
) -> tuple[dict[str, float], list[Path]]:
    """Compute and write every report; returns the metrics and the files written."""
    net = MLP.load(model_path)
    data = load_dataset(data_path)
    probs = net.forward(data.X_test)
    predicted = probs.argmax(axis=1)
    result = test_metrics(data.y_test, probs)
    train = json.loads((train_reports / "metrics.json").read_text())
    result["train_seconds"] = train["train_seconds"]

    cm = metrics.confusion_matrix(data.y_test, predicted, N_CLASSES)
    per_class = metrics.per_class(data.y_test, predicted, N_CLASSES)
    written = [
        write_csv(
            reports / "confusion_matrix.csv",
            ["true", *[f"predicted_{j}" for j in range(N_CLASSES)]],
            [[i, *cm[i].tolist()] for i in range(N_CLASSES)],
        ),
        write_csv(
            reports / "predictions.csv",
            ["actual", "predicted"],
            zip(data.y_test.tolist(), predicted.tolist(), strict=True),
        ),
        write_csv(
            reports / "per_class.csv",
            ["digit", "precision", "recall", "f1", "support"],
            [
                [
                    d,
                    *(round(float(per_class[k][d]), 6) for k in ("precision", "recall", "f1")),
                    int(per_class["support"][d]),
                ]
                for d in range(N_CLASSES)
            ],
        ),
        plots.confusion_matrix(
            cm,
            reports / "confusion_matrix.png",
            f"Test set: top-1 accuracy {result['test_top1_accuracy']:.4f}",
        ),
    ]
    with (train_reports / "history.csv").open() as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    written.append(plots.learning_curves(rows, reports / "learning_curves.png", "MLP training"))
    write_json(metrics_path, result)
    return result, written


def track(cfg, result: dict[str, float], files: list[Path], train_reports: Path) -> str:
    """Log to the training run when it is in the current store, else to a run of our own."""
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri)
    tracking.check_tracking_server(uri)
    run_file = train_reports / "run.json"
    run_id = None
    if run_file.exists():
        recorded = json.loads(run_file.read_text())
        if recorded.get("tracking_uri") == uri:
            run_id = recorded["run_id"]
    if run_id is not None:
        tracking.mlflow.set_tracking_uri(uri)
        client = tracking.store_client(uri)
        tracking.with_retry(client.log_batch, run_id, metrics=_metric_list(result))
        tracking.with_retry(client.set_tag, run_id, "evaluated", "true")
        for path in files:
            tracking.log_artifact_file(path, "evaluation", run_id=run_id)
        return run_id
    with tracking.start_run(
        to_dict(cfg),
        stage="evaluate",
        run_name="evaluate",
        experiment=cfg.tracking.experiment,
        uri=cfg.tracking.uri,
    ) as active:
        tracking.with_retry(tracking.mlflow.log_metrics, result)
        for path in files:
            tracking.log_artifact_file(path, "evaluation")
        return active.info.run_id


def _metric_list(result: dict[str, float]):
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, 0) for key, value in result.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Evaluate the trained MLP on the MNIST test set (DVC stage).",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--model", type=Path, default=Path("models/model.npz"))
    parser.add_argument("--data", type=Path, default=Path("data/processed/mnist.npz"))
    parser.add_argument("--train-reports", type=Path, default=Path("reports/train"))
    parser.add_argument("--reports", type=Path, default=REPORTS)
    parser.add_argument("--metrics", type=Path, default=METRICS)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_params(args.params)
        result, files = evaluate(
            args.model, args.data, args.train_reports, args.reports, args.metrics
        )
        run_id = track(cfg, result, files, args.train_reports)
    except (ConfigError, tracking.TrackingUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result.items())
    log.info("%s (MLflow run %s)", summary, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
