"""DVC stage ``train``: train the configured model on the preprocessed split, tracked in MLflow.

Reads ``params.yaml`` (``seed``, ``model``, ``optimizer``, ``train``, ``data.train_limit``,
``tracking``) and ``data/processed/``; writes ``models/model.npz``, the per-epoch history
``reports/train/history.csv``, ``reports/train/metrics.json`` and ``reports/train/run.json`` (the
MLflow run, which the ``evaluate`` stage completes). Nothing is written unless training finished:
a diverged or interrupted run leaves no model behind.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

from mlp import DivergenceError
from pipeline import tracking
from pipeline.common import atomic_write, setup_logging, write_json
from pipeline.config import Config, ConfigError, load_params, to_dict
from pipeline.progress import ProgressBar
from pipeline.training import (
    final_metrics,
    history_rows,
    load_dataset,
    stage_parser,
    train_model,
)

log = logging.getLogger("pipeline.train")

MODEL = Path("models/model.npz")
REPORTS = Path("reports/train")


def run_name(cfg: Config) -> str:
    sizes = "-".join(map(str, cfg.model.hidden_sizes))
    return f"{cfg.model.name} {sizes} {cfg.optimizer.name} lr={cfg.optimizer.learning_rate:g}"


def write_history(rows: list[dict[str, float]], path: Path) -> Path:
    with atomic_write(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(
    cfg: Config,
    *,
    data_path: Path,
    model_path: Path = MODEL,
    reports: Path = REPORTS,
    parent_run_id: str | None = None,
    stage: str = "train",
) -> dict[str, float]:
    """Train, save and track one configuration; returns the final training metrics."""
    outputs = [model_path, reports / "history.csv", reports / "metrics.json", reports / "run.json"]
    for stale in outputs:  # a failed run must not leave an older run's files looking like its own
        stale.unlink(missing_ok=True)
    data = load_dataset(data_path, cfg.data.train_limit)
    tracking.install_sigterm_handler()
    with tracking.start_run(
        to_dict(cfg),
        stage=stage,
        run_name=run_name(cfg),
        experiment=cfg.tracking.experiment,
        uri=cfg.tracking.uri,
        data_digests=data.digests,
        parent_run_id=parent_run_id,
    ) as active:
        log.info(
            "training %s on %d images (validation %d), %d epochs",
            run_name(cfg),
            len(data.y_train),
            len(data.y_val),
            cfg.train.epochs,
        )
        net, history = train_model(cfg, data, [ProgressBar(), tracking.MlflowCallback()])
        rows = history_rows(history)
        result = final_metrics(history)
        tracking.with_retry(tracking.mlflow.log_metrics, result)
        net.save(model_path)
        write_history(rows, reports / "history.csv")
        write_json(reports / "metrics.json", result)
        tracking.log_artifact_file(model_path, "model")
        tracking.log_artifact_file(reports / "history.csv", "reports")
        write_json(
            reports / "run.json",
            {"run_id": active.info.run_id, "tracking_uri": tracking.mlflow.get_tracking_uri()},
        )
    log.info("trained in %.2f s; model written to %s", result["train_seconds"], model_path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "python -m pipeline.train",
        "Train the configured MLP on the preprocessed MNIST split (DVC stage).",
        MODEL,
        REPORTS,
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_params(args.params)
        run(cfg, data_path=args.data, model_path=args.model, reports=args.reports)
    except (ConfigError, tracking.TrackingUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(
            f"error: {exc}\nNo model was written; the MLflow run is marked FAILED.", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: no model was written; the MLflow run is marked KILLED.", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
