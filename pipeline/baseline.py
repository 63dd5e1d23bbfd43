"""DVC stage ``baseline``: the configured network in TensorFlow/Keras, for the comparison.

The same layer sizes, activations, loss, optimiser and hyper-parameters as the ``train`` stage
(all read from the same config, see :mod:`pipeline.keras_model`), on the same split, started from
the *same initial weights* (copied from the :class:`mlp.MLP` that ``build_model`` makes with the
same seed) and, with ``baseline.same_batches``, fed the very batches the NumPy model sees, in the
same order. Timed the same way (wall seconds of the training steps of each epoch, validation
excluded) and evaluated with the same :mod:`mlp.metrics` functions on its predicted probabilities.

Reads ``params.yaml`` (``seed``, ``model``, ``optimizer``, ``train``, ``baseline``,
``data.train_limit``, ``tracking``) and ``data/processed/``; writes ``models/baseline.keras`` and,
under ``reports/baseline/``: ``metrics.json`` (the names of ``reports/metrics.json``),
``history.csv`` (the columns of ``reports/train/history.csv``), ``info.json`` (library versions,
processing unit, how the batches were fed and the graph compiled) and ``learning_curves.png``.
One MLflow run, tagged ``library=tensorflow``, with the metric names of the NumPy runs.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlp import Callback
from pipeline import keras_model, plots, tracking
from pipeline.common import setup_logging, write_json
from pipeline.config import Config, ConfigError, load_params, to_dict
from pipeline.train import run_name, write_history
from pipeline.training import (
    build_model,
    final_metrics,
    history_rows,
    load_dataset,
    stage_parser,
    test_metrics,
)

log = logging.getLogger("pipeline.baseline")

MODEL = Path("models/baseline.keras")
REPORTS = Path("reports/baseline")
LIBRARY = "TensorFlow/Keras"


class EpochLog(Callback):
    """One log line per epoch (the baseline trains without Keras's progress bar, whose per-step
    hook would slow it down)."""

    def on_train_begin(self, model: Any, info: dict[str, int]) -> None:
        self.epochs = info["epochs"]

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = f"epoch {epoch}/{self.epochs}: loss {logs['loss']:.4f}, acc {logs['accuracy']:.4f}"
        if "val_loss" in logs:
            line += f", val_loss {logs['val_loss']:.4f}, val_acc {logs['val_accuracy']:.4f}"
        log.info("%s (%.2f s)", line, logs["seconds"])


def save_keras_model(model, path: Path) -> Path:
    """``model.save`` all-or-nothing: written in a temporary folder beside ``path``, renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        model.save(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(cfg: Config, model, history: dict[str, list[float]], unit: str) -> dict[str, Any]:
    """What ``info.json`` records: the run's settings, how it was fed and compiled, versions."""
    import tensorflow as tf

    same = cfg.baseline.same_batches
    if not cfg.train.shuffle:
        batches = "in the stored order, as the NumPy MLP (train.shuffle is false)"
    elif same:
        batches = (
            "the NumPy MLP's: each epoch's order is its generator's permutation, cut into "
            "consecutive batches (the last one partial), fed through tf.data"
        )
    else:
        batches = f"tf.data's own shuffle (seed {cfg.seed}), reshuffled every epoch"
    return {
        "library": LIBRARY,
        "tensorflow_version": tf.__version__,
        "keras_version": _version("keras"),
        "processing_unit": unit,
        "device": cfg.baseline.device,
        "same_batches": same,
        "batches": batches,
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": keras_model.STEPS_PER_EXECUTION,
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
        "learning_rate": cfg.optimizer.learning_rate,
        "optimizer": cfg.optimizer.name,
        "dtype": cfg.train.dtype,
        "first_epoch_seconds": history["seconds"][0],
    }


def run(
    cfg: Config,
    *,
    data_path: Path,
    model_path: Path = MODEL,
    reports: Path = REPORTS,
) -> dict[str, float]:
    """Train, evaluate, save and track the Keras baseline; returns its test metrics."""
    outputs = [
        model_path,
        reports / "metrics.json",
        reports / "history.csv",
        reports / "info.json",
        reports / "learning_curves.png",
    ]
    for stale in outputs:  # a failed run must not leave an older run's files looking like its own
        stale.unlink(missing_ok=True)
    data = load_dataset(data_path, cfg.data.train_limit)
    keras_model.import_tensorflow(cfg.baseline.device)  # a missing GPU stops here, before MLflow
    unit = keras_model.processing_unit(cfg.baseline.device)
    tracking.install_sigterm_handler()
    tags = {
        "library": "tensorflow",
        "processing_unit": unit,
        "baseline.same_batches": str(cfg.baseline.same_batches).lower(),
    }
    with tracking.start_run(
        to_dict(cfg),
        stage="baseline",
        run_name=f"tensorflow {run_name(cfg)}",
        experiment=cfg.tracking.experiment,
        uri=cfg.tracking.uri,
        data_digests=data.digests,
        tags=tags,
    ) as active:
        log.info(
            "training the Keras baseline %s on %d images (validation %d), %d epochs, %s, %s",
            run_name(cfg),
            len(data.y_train),
            len(data.y_val),
            cfg.train.epochs,
            "the NumPy model's batches" if cfg.baseline.same_batches else "its own shuffle",
            unit,
        )
        net = build_model(cfg, data.X_train.shape[1])
        model, history = keras_model.train_keras(
            cfg, data, net, [EpochLog(), tracking.MlflowCallback()]
        )
        probs = keras_model.predict_proba(model, data.X_test, cfg.train.dtype)
        result = test_metrics(data.y_test, probs)
        final = final_metrics(history)
        result["train_seconds"] = final.pop("train_seconds")
        rows = history_rows(history)
        tracking.with_retry(tracking.mlflow.log_metrics, {**result, **final})
        info = describe(cfg, model, history, unit)
        info.update(
            mlflow_run_id=active.info.run_id, tracking_uri=tracking.mlflow.get_tracking_uri()
        )
        save_keras_model(model, model_path)
        write_history(rows, reports / "history.csv")
        write_json(reports / "info.json", info)
        plots.learning_curves(rows, reports / "learning_curves.png", f"{LIBRARY} baseline ({unit})")
        write_json(reports / "metrics.json", result)
        tracking.log_artifact_file(model_path, "model")
        for name in ("history.csv", "info.json", "learning_curves.png"):
            tracking.log_artifact_file(reports / name, "reports")
    log.info(
        "trained in %.2f s (first epoch %.2f s, with graph tracing); %s",
        result["train_seconds"],
        info["first_epoch_seconds"],
        ", ".join(f"{k}={v:.4f}" for k, v in result.items() if k.startswith("test_")),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "python -m pipeline.baseline",
        (
            "Train the configured network in TensorFlow/Keras from the NumPy model's initial "
            "weights (and, with baseline.same_batches, its batches), evaluate it on the test set "
            "with the same metrics (DVC stage)."
        ),
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
    except keras_model.BaselineError as exc:
        print(f"error: {exc}\nNo baseline was written.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: no baseline was written; the MLflow run is marked KILLED.",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
