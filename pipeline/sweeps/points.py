"""One point of a sweep: Hydra's task function, run in whichever process the launcher chose.

:func:`run_point` validates the point's config and trains it with the one run path of every
entry point (:func:`pipeline.training.run.train_and_record`) as a child of the sweep's MLflow
parent run, writing the model, history and learning curves into the job's folder, and
``result.json``, the point's row of the summary. A point that diverges or fails ends its child
run FAILED with the reason as a tag; the function still returns normally, so the other points
go on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import cli, tracking
from pipeline.config import ConfigError, TrackingConfig, invalid_config, to_dict, validate
from pipeline.data.dataset import data_digests
from pipeline.errors import install_sigterm_handler
from pipeline.files import write_json
from pipeline.names import BLAS_THREADS_TAG, N_CLASSES, N_INPUTS, PROCESSED, RESULT_FILE, SUMMARY
from pipeline.reporting.sweep_summary import FAILED, FINISHED, override_key
from pipeline.sweeps.state import sweep_of_job, task_overrides
from pipeline.threads import blas_pool_size
from pipeline.training.frameworks import training_threads
from pipeline.training.progress import ProgressBar
from pipeline.training.run import Outputs, train_and_record

log = logging.getLogger("pipeline.sweep")

MODEL_FILE = "model.npz"
#: The class name of Hydra's Optuna sweeper (``hydra.sweeper._target_``).
OPTUNA_SWEEPER = "OptunaSweeper"


def run_point(cfg: DictConfig) -> dict[str, Any] | float | None:
    """Hydra's task function: train the point ``cfg`` and return its row of the summary, or,
    when Optuna's sweeper drives the sweep, the objective it maximises: the point's validation
    top-1 accuracy (``None`` for a failed point, which Optuna records as a failed trial).

    Never raises for a failed point (a diverged or invalid configuration, a missing file): the
    row, also written to ``<job dir>/result.json``, says ``status: FAILED``, why, and the exit
    code the failure stands for.
    """
    row = _run(cfg)
    if is_optuna(HydraConfig.get()):
        return row.get("val_top1_accuracy") if row["status"] == FINISHED else None
    return row


def is_optuna(hydra_cfg: DictConfig) -> bool:
    """Whether the sweep is driven by Hydra's Optuna sweeper (its task function must return
    the objective)."""
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_") or "")
    return target.endswith(OPTUNA_SWEEPER)


def _run(cfg: DictConfig) -> dict[str, Any]:
    """Train the point; its row of the summary, also written to ``result.json``."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    cwd = Path(hc.runtime.cwd)
    job_dir = Path(hc.runtime.output_dir)
    sweep = sweep_of_job(hc) if multirun else {}
    row: dict[str, Any] = {
        "job": int(hc.job.num) if multirun else 0,
        "overrides": task_overrides(hc),
        "status": FAILED,
        "reason": None,
        "exit_code": None,
        "run_id": None,
        "parent_run_id": sweep.get("parent_run_id"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job_dir": str(job_dir),
    }
    started = time.perf_counter()
    previous_handler = signal.getsignal(signal.SIGTERM)
    installed = install_sigterm_handler()
    try:
        _train_point(
            cfg, row, data_path=cwd / PROCESSED, job_dir=job_dir, sweep=sweep, multirun=multirun
        )
        row["status"], row["exit_code"] = FINISHED, cli.OK
    except Exception as exc:
        row["reason"] = f"{type(exc).__name__}: {exc}"
        row["exit_code"] = cli.exit_code(exc)
        log.error("point #%s %s failed: %s", row["job"], " ".join(row["overrides"]), row["reason"])
    except BaseException as exc:  # interrupted: record it, then let it stop the sweep
        row["status"], row["reason"] = "KILLED", f"{type(exc).__name__}: {exc}"
        row["exit_code"] = cli.exit_code(exc)
        raise
    finally:
        if installed:  # loky reuses worker processes: leave them as we found them
            signal.signal(signal.SIGTERM, previous_handler)
        row["seconds"] = time.perf_counter() - started
        write_json(job_dir / RESULT_FILE, row)
    if row["status"] == FINISHED:
        log.info(
            "point #%s %s: validation top-1 %.4f, test top-1 %.4f, %.1f s",
            row["job"],
            " ".join(row["overrides"]),
            row["val_top1_accuracy"] if row["val_top1_accuracy"] is not None else float("nan"),
            row["test_top1_accuracy"],
            row["train_seconds"],
        )
    return row


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` without Hydra's own node, resolved, as plain containers. (Resolving the ``hydra``
    node itself fails outside a job: ``hydra.sweep.subdir`` needs ``hydra.job.num``.)"""
    try:
        return {
            str(key): OmegaConf.to_container(value, resolve=True)
            if OmegaConf.is_config(value)
            else value
            for key, value in cfg.items_ex(resolve=True)
            if key != "hydra"
        }
    except OmegaConfBaseException as exc:  # e.g. seed=${nope}: a usage error naming the key
        raise invalid_config(exc) from None


def _describe(config: dict[str, Any]) -> dict[str, Any]:
    """The summary's view of a (possibly invalid) config: model, sizes, optimizer, rate."""
    model = config.get("model") or {}
    optimizer = config.get("optimizer") or {}
    hidden = model.get("hidden_sizes") or []
    return {
        "model": model.get("name"),
        "layer_sizes": [N_INPUTS, *hidden, N_CLASSES] if isinstance(hidden, list) else None,
        "hidden_activation": model.get("hidden_activation"),
        "optimizer": optimizer.get("name"),
        "learning_rate": optimizer.get("learning_rate"),
    }


def _train_point(
    cfg: DictConfig,
    row: dict[str, Any],
    *,
    data_path: Path,
    job_dir: Path,
    sweep: dict[str, Any],
    multirun: bool,
) -> None:
    """Validate, train, score, save and track one point; fill ``row`` as it goes."""
    raw = plain_config(cfg)
    row.update(_describe(raw))
    try:
        config, invalid = validate(raw), None
    except ConfigError as exc:
        if not multirun:  # a single run stops before any work, like the DVC stages
            raise
        config, invalid = None, exc

    # The parent's store and experiment: a child elsewhere would not be linked to it.
    own = config.tracking if config is not None else TrackingConfig()
    where = {
        "experiment": sweep.get("experiment") or own.experiment,
        "uri": sweep.get("tracking_uri") or own.uri,
        "parent_run_id": sweep.get("parent_run_id"),
    }
    tags = {
        "sweep.name": sweep.get("name", ""),
        "sweep.job": row["job"],
        "sweep.overrides": " ".join(row["overrides"]) or "(none)",
        "pid": row["pid"],
        "host": row["host"],
        # The count the training uses: auto's choice within the launcher's per-worker limit.
        BLAS_THREADS_TAG: training_threads(config) if config else blas_pool_size(),
    }
    if config is None:  # still a child run, so the sweep shows the point and why it failed
        with tracking.start_run(
            raw,
            stage="sweep",
            run_name=f"point {row['job']}: invalid config",
            data_digests=data_digests(data_path.with_name(SUMMARY.name)),
            tags=tags,
            **where,
        ) as run:
            row["run_id"] = run.id
            raise invalid

    row["config"] = to_dict(config)
    result = train_and_record(
        config,
        data_path,
        Outputs(job_dir / MODEL_FILE, job_dir, curves=True),
        stage="sweep",
        score_test_set=True,
        tags=tags,
        param_keys=[override_key(o) for o in row["overrides"]],  # the grid's keys stay params
        callbacks=[] if multirun else [ProgressBar()],  # parallel bars would garble each other
        on_start=lambda run: row.update(run_id=run.id),
        **where,
    )
    # The validation metrics of the weights the model keeps (the best epoch's, when early
    # stopping restored them).
    row.update(
        layer_sizes=list(result.model.layer_sizes),
        val_top1_accuracy=result.metrics.get("final_val_accuracy"),
        val_cross_entropy=result.metrics.get("final_val_loss"),
        test_top1_accuracy=result.metrics["test_top1_accuracy"],
        test_cross_entropy=result.metrics["test_cross_entropy"],
        train_seconds=result.metrics["train_seconds"],
    )
