"""The sweep as a whole: its MLflow parent run and its summary (``hydra/callbacks=sweep``).

:meth:`SweepCallback.on_multirun_start` runs in the main process before the launcher starts any
point: it validates the base config, starts the parent run and writes its id and store to
``<sweep dir>/sweep.json`` (:mod:`pipeline.sweeps.state`), a file rather than an environment
variable so that it reaches points started by any launcher. :meth:`~SweepCallback.on_multirun_end`
collects every point's ``result.json``, writes the summary to ``reports/sweep/<grid>/``
(``<grid>``: the chosen ``sweep`` config, or ``adhoc``), logs it to the parent run and ends that.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import cli, tracking
from pipeline.config import ConfigError, to_dict, validate
from pipeline.data.dataset import data_digests
from pipeline.errors import PipelineError
from pipeline.files import require, safe_name, write_json
from pipeline.names import PROCESSED, SUMMARY, SWEEP_REPORTS
from pipeline.reporting import study, sweep_summary
from pipeline.reporting.sweep_summary import FINISHED
from pipeline.sweeps.points import is_optuna, plain_config
from pipeline.sweeps.state import SWEEP_FILE, sweep_dir_of

log = logging.getLogger("pipeline.sweep")

ADHOC = "adhoc"


class SweepFailed(PipelineError):
    """Every point of a sweep failed (the parent run's ``failure_reason``)."""


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
    run: tracking.Run
    reports: Path
    name: str
    started: float
    #: The searched keys when Optuna's sweeper drives the sweep (its study is summarised too).
    search: list[str] | None = None


# Keyed by sweep folder. Module state, not the callback's: Hydra pickles its callbacks along with
# every job it sends to a worker process, and an open MLflow run cannot be pickled.
_OPEN: dict[Path, _OpenSweep] = {}


def _check_launcher(hydra_cfg: DictConfig) -> str:
    """The launcher's class name; a :class:`ConfigError` when its plugin is not installed."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_") or "")
    module, _, attribute = target.rpartition(".")
    try:
        getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        choice = OmegaConf.select(hydra_cfg, "runtime.choices") or {}
        raise ConfigError(
            f"hydra/launcher={choice.get('hydra/launcher')}: cannot load {target}; install its "
            "Hydra plugin (see conf/hydra/launcher/ and the README)"
        ) from None
    return attribute


def start_sweep(config: DictConfig, reports: str | Path = SWEEP_REPORTS) -> str:
    """Check the base config, the data and the launcher, start the parent run, write
    ``sweep.json``. Returns the parent run's id."""
    hc = config.hydra
    cwd = Path(hc.runtime.cwd)
    sweep_dir = sweep_dir_of(hc)
    choices = OmegaConf.select(hc, "runtime.choices") or {}
    name = safe_name(choices.get("sweep") or choices.get("hparams_search") or ADHOC)
    base = validate(plain_config(config))
    data_path = require(cwd / PROCESSED, "preprocess")
    launcher = _check_launcher(hc)
    parent_config = {
        "sweep": {
            "name": name,
            "overrides": " ".join(hc.overrides.task),
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
            data_digests=data_digests(data_path.with_name(SUMMARY.name)),
            tags={"sweep.name": name, "sweep.dir": str(sweep_dir), "sweep.launcher": launcher},
        )
    )
    search = list(parent_config["sweep"]["grid"]) if is_optuna(hc) else None
    _OPEN[sweep_dir] = _OpenSweep(
        stack, run, cwd / reports / name, name, time.perf_counter(), search
    )
    try:
        base_yaml = yaml.safe_dump(to_dict(base), sort_keys=False, default_flow_style=None)
        run.log_text(base_yaml, "base_config.yaml")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            sweep_dir / SWEEP_FILE,
            {
                "parent_run_id": run.id,
                "tracking_uri": run.uri,
                "experiment": base.tracking.experiment,
                "name": name,
            },
        )
    except BaseException as exc:
        finish_sweep(sweep_dir, error=exc, summarize=False)
        raise
    log.info("sweep %r: MLflow parent run %s, points in %s", name, run.id, sweep_dir)
    return run.id


def finish_sweep(
    sweep_dir: Path, error: BaseException | None = None, *, summarize: bool = True
) -> int:
    """Write the summary of the sweep in ``sweep_dir``, log it to the parent run and end that
    (FINISHED; FAILED when every point failed or ``error`` is an exception; KILLED when it is an
    interrupt). Returns the exit status: 1 when every point failed, else 0."""
    state = _OPEN.pop(sweep_dir, None)
    if state is None:
        return cli.OK
    status = cli.FAILED
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
        tracking.end_unfinished_children(state.run, error)
        state.stack.__exit__(type(error), error, error.__traceback__)
    return status


def finish_all(error: BaseException) -> None:
    """End every sweep still open in this process (Hydra or the launcher gave up)."""
    for sweep_dir in list(_OPEN):
        finish_sweep(sweep_dir, error=error)


def _summarize(sweep_dir: Path, state: _OpenSweep, ended: str) -> int:
    rows = sweep_summary.load_results(sweep_dir, state.run.id)
    files = sweep_summary.write_summary(rows, state.reports, state.name)
    if state.search is not None:  # an Optuna search: its trials over time, and importances
        files += study.write_study(rows, state.reports, state.search, state.name)
    summary = sweep_summary.best_summary(rows)
    metrics = {
        key: float(value)
        for key, value in summary.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    metrics["sweep_seconds"] = time.perf_counter() - state.started
    state.run.log_metrics(metrics)
    best = ("best_run_id", "best_overrides", "best_architecture")
    tags = {key: summary[key] for key in best if summary.get(key) is not None}
    if state.search is not None and summary.get("best_job") is not None:
        tags["best_trial"] = summary["best_job"]
    state.run.set_tags(tags)
    for path in files:
        state.run.log_file(path, "summary")
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


class SweepCallback(Callback):
    """Hydra callback (``hydra/callbacks=sweep``): the parent run and the summary of a sweep.

    Hydra only warns when a callback raises an ``Exception``; this one turns its errors into
    ``SystemExit`` so that a sweep whose parent run cannot be started does not run untracked, and
    so that the exit status says when every point failed.
    """

    def __init__(self, reports: str = str(SWEEP_REPORTS)) -> None:
        self.reports = reports

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            start_sweep(config, self.reports)
        except Exception as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(cli.exit_code(exc)) from exc

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        status = finish_sweep(sweep_dir_of(config.hydra))
        if status:
            raise SystemExit(status)

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return  # Hydra reports the exception itself
        row = job_return.return_value
        if isinstance(row, dict) and row.get("status") != FINISHED:
            print(f"error: {row.get('reason')}", file=sys.stderr)
            raise SystemExit(row.get("exit_code") or cli.FAILED)
