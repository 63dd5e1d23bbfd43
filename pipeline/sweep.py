"""Hydra multirun sweeps: every point of a grid trained in parallel, each a tracked MLflow run.

    python -m pipeline.sweep --multirun model=reference,wide optimizer.learning_rate=0.01,0.1,0.5
    python -m pipeline.sweep +sweep=default     # the grid of conf/sweep/default.yaml (DVC stage)
    python -m pipeline.sweep model=wide         # one configuration
    python -m pipeline.sweep --help

How the pieces fit:

- :func:`main` completes the command line with three Hydra defaults unless it names its own:
  ``hydra/launcher=local`` (joblib, one process per core: ``conf/hydra/launcher/local.yaml``),
  ``hydra/callbacks=sweep`` (:class:`SweepCallback`) and ``hydra/help=sweep``.
- :meth:`SweepCallback.on_multirun_start` runs in the main process before the launcher starts
  any job: it validates the base config, starts the sweep's MLflow parent run and writes its id
  and store to ``<sweep dir>/sweep.json``. A file rather than an environment variable, so that it
  reaches jobs started by any launcher (loky workers, SLURM jobs, Ray workers) the same way.
- :func:`run_point` is Hydra's task function, run once per point in whichever process the
  launcher chose. It validates the point's config, trains it with the same function as the DVC
  ``train`` stage as a child of the parent run, saves the model and history in the job's folder
  and writes ``result.json`` there. A point that diverges or fails ends its child run FAILED with
  the reason as a tag; the function still returns normally, so the other points go on.
- :meth:`SweepCallback.on_multirun_end` collects every ``result.json``, writes the summary to
  ``reports/sweep/<grid>/`` (``<grid>``: the chosen ``sweep`` config, or ``adhoc``), logs it to
  the parent run and ends that. The exit status is 1 only when every point failed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from pipeline import plots, sweep_summary, tracking
from pipeline.common import safe_name, write_json
from pipeline.config import CONF_DIR, ConfigError, TrackingConfig, to_dict, validate
from pipeline.progress import ProgressBar
from pipeline.sweep_summary import FAILED, FINISHED, RESULT_FILE
from pipeline.train import run_name, write_history
from pipeline.training import (
    N_CLASSES,
    PROCESSED,
    SUMMARY,
    data_digests,
    final_metrics,
    history_rows,
    load_dataset,
    test_metrics,
    train_model,
)

log = logging.getLogger("pipeline.sweep")

#: Summaries go to ``REPORTS / <grid>``, relative to the directory the sweep was started from.
REPORTS = Path("reports/sweep")
SWEEP_FILE = "sweep.json"
ADHOC = "adhoc"
N_INPUTS = 784
#: Hydra config groups :func:`main` chooses unless the command line chooses them.
DEFAULT_CHOICES = {"hydra/launcher": "local", "hydra/callbacks": "sweep", "hydra/help": "sweep"}


class SweepFailed(RuntimeError):
    """Every point of a sweep failed (the parent run's ``failure_reason``)."""


# ---------------------------------------------------------------------------- one point
def run_point(cfg: DictConfig) -> dict[str, Any]:
    """Hydra's task function: train the point ``cfg`` and return its row of the summary.

    Never raises for a failed point (a diverged or invalid configuration, a missing file): the
    row, also written to ``<job dir>/result.json``, says ``status: FAILED`` and why.
    """
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    cwd = Path(hc.runtime.cwd)
    job_dir = Path(hc.runtime.output_dir)
    sweep = read_sweep_file(sweep_dir_of(hc)) if multirun else {}
    row: dict[str, Any] = {
        "job": int(hc.job.num) if multirun else 0,
        "overrides": list(hc.overrides.task),
        "status": FAILED,
        "reason": None,
        "run_id": None,
        "parent_run_id": sweep.get("parent_run_id"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job_dir": str(job_dir),
    }
    started = time.perf_counter()
    previous_handler = signal.getsignal(signal.SIGTERM)
    installed = tracking.install_sigterm_handler()
    try:
        _train_point(
            cfg, row, data_path=cwd / PROCESSED, job_dir=job_dir, sweep=sweep, multirun=multirun
        )
        row["status"] = FINISHED
    except Exception as exc:
        row["reason"] = f"{type(exc).__name__}: {exc}"
        log.error("point #%s %s failed: %s", row["job"], " ".join(row["overrides"]), row["reason"])
    except BaseException as exc:  # interrupted: record it, then let it stop the sweep
        row["status"], row["reason"] = "KILLED", f"{type(exc).__name__}: {exc}"
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
    return {
        str(key): OmegaConf.to_container(value, resolve=True)
        if OmegaConf.is_config(value)
        else value
        for key, value in cfg.items_ex(resolve=True)
        if key != "hydra"
    }


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


def _blas_threads(configured: int | None) -> int | None:
    """BLAS threads this point trains with (joblib's workers start limited to cores/n_jobs)."""
    if configured is not None:
        return configured
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def _train_point(
    cfg: DictConfig,
    row: dict[str, Any],
    *,
    data_path: Path,
    job_dir: Path,
    sweep: dict[str, Any],
    multirun: bool,
) -> None:
    """Validate, train, evaluate, save and track one point; fill ``row`` as it goes."""
    raw = plain_config(cfg)
    row.update(_describe(raw))
    try:
        config = validate(raw)
        invalid = None
    except ConfigError as exc:
        if not multirun:  # a single run: stop before any work, like the DVC stages
            raise
        config, invalid = None, exc

    # The parent's store and experiment: a child elsewhere would not be linked to it.
    own = config.tracking if config is not None else TrackingConfig()
    start_run = partial(
        tracking.start_run,
        stage="sweep",
        experiment=sweep.get("experiment") or own.experiment,
        uri=sweep.get("tracking_uri") or own.uri,
        data_digests=_data_digests(data_path),
        parent_run_id=sweep.get("parent_run_id"),
        tags={
            "sweep.name": sweep.get("name", ""),
            "sweep.job": row["job"],
            "sweep.overrides": " ".join(row["overrides"]) or "(none)",
            "pid": row["pid"],
            "host": row["host"],
            "blas.threads": _blas_threads(config.train.blas_threads if config else None),
        },
    )
    if config is None:  # still a child run, so the sweep shows the point and why it failed
        with start_run(raw, run_name=f"point {row['job']}: invalid config") as run:
            row["run_id"] = run.info.run_id
            raise invalid

    plain = to_dict(config)
    row["config"] = plain
    with start_run(plain, run_name=run_name(config)) as run:
        row["run_id"] = run.info.run_id
        data = load_dataset(data_path, config.data.train_limit)
        callbacks = [tracking.MlflowCallback()]
        if not multirun:
            callbacks.append(ProgressBar())  # parallel points would garble each other's bars
        net, history = train_model(config, data, callbacks)
        row["layer_sizes"] = list(net.layer_sizes)
        history_table = history_rows(history)
        last = history_table[-1]
        metrics = {
            **final_metrics(history),
            **test_metrics(data.y_test, net.forward(data.X_test)),
        }
        tracking.with_retry(tracking.mlflow.log_metrics, metrics)
        model_path = net.save(job_dir / "model.npz")
        history_path = write_history(history_table, job_dir / "history.csv")
        curves = plots.learning_curves(
            history_table, job_dir / "learning_curves.png", run_name(config)
        )
        tracking.log_artifact_file(model_path, "model")
        tracking.log_artifact_file(history_path, "reports")
        tracking.log_artifact_file(curves, "reports")
        row.update(
            val_top1_accuracy=last.get("val_accuracy"),
            val_cross_entropy=last.get("val_loss"),
            test_top1_accuracy=metrics["test_top1_accuracy"],
            test_cross_entropy=metrics["test_cross_entropy"],
            train_seconds=metrics["train_seconds"],
        )


def _data_digests(path: Path) -> dict[str, str]:
    """The dataset digests the preprocess stage wrote beside ``path`` (none if absent)."""
    try:
        return data_digests(path.with_name(SUMMARY.name))
    except (OSError, ValueError, AttributeError):
        return {}


# ---------------------------------------------------------------------------- the whole sweep
def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The sweep's folder (``hydra.sweep.dir``), absolute."""
    return (Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir)).absolute()


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    """What :meth:`SweepCallback.on_multirun_start` left for the jobs (empty without it)."""
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        log.warning("%s not found: this point is not linked to a sweep run", path)
        return {}
    return json.loads(path.read_text())


def _grid(hydra_cfg: DictConfig) -> dict[str, str]:
    """The swept keys and their values as written: ``hydra.sweeper.params`` and the command
    line's sweep overrides (which win)."""
    grid = {
        str(k): str(v) for k, v in (OmegaConf.select(hydra_cfg, "sweeper.params") or {}).items()
    }
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    except Exception:  # Hydra has already accepted them; this is only for the record
        return grid
    for override in parsed:
        if override.is_sweep_override():
            grid[override.get_key_element()] = (override.input_line or "").partition("=")[2]
    return grid


@dataclass
class _OpenSweep:
    """A sweep whose parent run is open in this process."""

    stack: contextlib.ExitStack
    run_id: str
    reports: Path
    name: str
    started: float


# Keyed by sweep folder. Module state, not the callback's: Hydra pickles its callbacks along with
# every job it sends to a worker process, and an open MLflow run cannot be pickled.
_OPEN: dict[Path, _OpenSweep] = {}


def start_sweep(config: DictConfig, reports: str | Path = REPORTS) -> str:
    """Check the base config and the data, start the parent run, write ``sweep.json``.

    Returns the parent run's id.
    """
    hc = config.hydra
    cwd = Path(hc.runtime.cwd)
    sweep_dir = sweep_dir_of(hc)
    name = safe_name(OmegaConf.select(hc, "runtime.choices.sweep") or ADHOC)
    base = validate(plain_config(config))
    data_path = cwd / PROCESSED
    if not data_path.exists():
        raise FileNotFoundError(f"{data_path} not found: run `dvc repro preprocess` first")
    overrides = list(hc.overrides.task)
    target = str(OmegaConf.select(hc, "launcher._target_") or "")
    module, _, attribute = target.rpartition(".")
    try:
        getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        choice = OmegaConf.select(hc, "runtime.choices") or {}
        raise ConfigError(
            f"hydra/launcher={choice.get('hydra/launcher')}: cannot load {target}; install its "
            "Hydra plugin (see conf/hydra/launcher/ and the README)"
        ) from None
    launcher = target.rsplit(".", 1)[-1]
    parent_config = {
        "sweep": {
            "name": name,
            "overrides": " ".join(overrides),
            "grid": _grid(hc),
            "launcher": launcher,
        }
    }
    stack = contextlib.ExitStack()
    run = stack.enter_context(
        tracking.start_run(
            parent_config,
            stage="sweep",
            run_name=f"sweep {name}",
            experiment=base.tracking.experiment,
            uri=base.tracking.uri,
            data_digests=_data_digests(data_path),
            tags={"sweep.name": name, "sweep.dir": str(sweep_dir), "sweep.launcher": launcher},
        )
    )
    run_id = run.info.run_id
    _OPEN[sweep_dir] = _OpenSweep(stack, run_id, cwd / reports / name, name, time.perf_counter())
    try:
        client = tracking.MlflowClient(tracking.mlflow.get_tracking_uri())
        base_yaml = yaml.safe_dump(to_dict(base), sort_keys=False, default_flow_style=None)
        tracking.with_retry(client.log_text, run_id, base_yaml, "base_config.yaml")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            sweep_dir / SWEEP_FILE,
            {
                "parent_run_id": run_id,
                "tracking_uri": tracking.mlflow.get_tracking_uri(),
                "experiment": base.tracking.experiment,
                "name": name,
            },
        )
    except BaseException as exc:
        finish_sweep(sweep_dir, error=exc, summarize=False)
        raise
    log.info("sweep %r: MLflow parent run %s, points in %s", name, run_id, sweep_dir)
    return run_id


def finish_sweep(
    sweep_dir: Path, error: BaseException | None = None, *, summarize: bool = True
) -> int:
    """Write the summary of the sweep in ``sweep_dir``, log it to the parent run and end that
    (FINISHED; FAILED when every point failed or ``error`` is an exception; KILLED when it is an
    interrupt). Returns the exit status: 1 when every point failed, else 0."""
    state = _OPEN.pop(sweep_dir, None)
    if state is None:
        return 0
    status = 1
    try:
        if summarize:
            status = _summarize(sweep_dir, state, "stopped" if error else "finished")
    except Exception as exc:
        print(f"error: could not write the summary of the sweep: {exc}", file=sys.stderr)
        error = error or exc
    if error is None and status:
        error = SweepFailed("every point of the sweep failed")
        print(f"error: {error}", file=sys.stderr)
    if error is None:
        state.stack.close()
    else:
        _end_orphans(state.run_id, error)
        state.stack.__exit__(type(error), error, error.__traceback__)
    return status


def _end_orphans(parent_run_id: str, error: BaseException) -> None:
    """Children still RUNNING when the sweep stops (their worker was killed) end as the sweep
    does: KILLED on an interrupt, FAILED otherwise. Never raises."""
    killed = isinstance(error, (KeyboardInterrupt, tracking.Terminated))
    try:
        client = tracking.MlflowClient(tracking.mlflow.get_tracking_uri())
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        orphans = tracking.with_retry(
            client.search_runs,
            [experiment_id],
            f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        )
        for run in orphans:
            reason = f"the sweep stopped before this point ended ({type(error).__name__})"
            tracking.with_retry(client.set_tag, run.info.run_id, "failure_reason", reason)
            status = "KILLED" if killed else "FAILED"
            tracking.with_retry(client.set_terminated, run.info.run_id, status)
    except Exception as exc:
        log.warning("could not end the sweep's unfinished runs: %s", exc)


def _summarize(sweep_dir: Path, state: _OpenSweep, ended: str) -> int:
    rows = sweep_summary.load_results(sweep_dir, state.run_id)
    files = sweep_summary.write_summary(rows, state.reports, state.name)
    summary = sweep_summary.best_summary(rows)
    client = tracking.MlflowClient(tracking.mlflow.get_tracking_uri())
    metrics = {
        key: float(value)
        for key, value in summary.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    metrics["sweep_seconds"] = time.perf_counter() - state.started
    now = int(time.time() * 1000)
    tracking.with_retry(
        client.log_batch, state.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
    )
    for key in ("best_run_id", "best_overrides", "best_architecture"):
        if summary.get(key) is not None:
            tracking.with_retry(client.set_tag, state.run_id, key, str(summary[key]))
    for path in files:
        tracking.log_artifact_file(path, "summary", run_id=state.run_id)
    n = sweep_summary.counts(rows)
    log.info(
        "sweep %s: %d points, %d finished, %d failed; summary in %s",
        ended,
        n["points"],
        n["points_finished"],
        n["points_failed"],
        state.reports,
    )
    if summary.get("best_job") is not None:
        log.info(
            "best point #%s %s: validation top-1 %.4f, test top-1 %.4f",
            summary["best_job"],
            summary["best_overrides"],
            summary["best_val_top1_accuracy"],
            summary["best_test_top1_accuracy"],
        )
    return sweep_summary.exit_status(rows)


_USAGE_ERRORS = ("ConfigError", "TrackingUnavailable", "FileNotFoundError")


class SweepCallback(Callback):
    """Hydra callback (``hydra/callbacks=sweep``): the parent run and the summary of a sweep.

    Hydra only warns when a callback raises an ``Exception``; this one turns its errors into
    ``SystemExit`` so that a sweep whose parent run cannot be started does not run untracked, and
    so that the exit status says when every point failed.
    """

    def __init__(self, reports: str = str(REPORTS)) -> None:
        self.reports = reports

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            start_sweep(config, self.reports)
        except Exception as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        status = finish_sweep(sweep_dir_of(config.hydra))
        if status:
            raise SystemExit(status)

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return  # Hydra reports the exception itself
        row = job_return.return_value
        if isinstance(row, dict) and row.get("status") != FINISHED:
            reason = str(row.get("reason"))
            print(f"error: {reason}", file=sys.stderr)
            # as the DVC stages: 2 for what is wrong before training starts, 1 for the training
            raise SystemExit(2 if reason.startswith(_USAGE_ERRORS) else 1)


# ---------------------------------------------------------------------------- command line
def with_default_choices(argv: list[str]) -> list[str]:
    """``argv`` plus :data:`DEFAULT_CHOICES` for the groups it does not choose itself, placed
    next to its other overrides (Hydra wants them in one run)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            overrides = get_args_parser().parse_args(argv).overrides
    except SystemExit:  # bad arguments: Hydra will say so
        return argv
    chosen = {sweep_summary.override_key(o) for o in overrides}
    extra = [f"{group}={name}" for group, name in DEFAULT_CHOICES.items() if group not in chosen]
    if not overrides:
        return [*extra, *argv]
    first = argv.index(overrides[0])
    return [*argv[:first], *extra, *argv[first:]]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.sweep [--multirun] [overrides...]``; see ``--help``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *with_default_choices(argv)]
    tracking.install_sigterm_handler()
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(run_point)
    try:
        app()
    except BaseException as exc:  # the launcher or Hydra gave up: end what is still open
        for sweep_dir in list(_OPEN):
            finish_sweep(sweep_dir, error=exc)
        if isinstance(exc, KeyboardInterrupt):
            print("interrupted: the runs still open are marked KILLED", file=sys.stderr)
            return 130
        raise
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so that launchers pickle `pipeline.sweep.run_point` by
    # reference and the callback shares this module's state.
    from pipeline.sweep import main as _main

    raise SystemExit(_main())
