"""The sweep as a whole: its MLflow parent run and its summary (``hydra/callbacks=sweep``).

:meth:`SweepCallback.on_multirun_start` runs in the main process before the launcher starts any
point: it validates the base config, starts the parent run and adds its id, store, experiment and
name to the Hydra overrides every job is composed from (:mod:`pipeline.sweeps.state`), so that
they travel with each job to whichever process or machine the launcher runs it on.
:meth:`~SweepCallback.on_multirun_end` collects every point's ``result.json``, registers the best
point's model (chosen on validation accuracy) as a version of ``mnist-mlp`` and moves the alias
``champion`` to it when it beats the champion (:func:`promote`), writes the summary to
``reports/sweep/<grid>/`` (``<grid>``: the chosen ``sweep`` config, or ``adhoc``), logs it to the
parent run and ends that.

The parent run's parameters are the grid (each swept key and its values, as written); its
metrics are the point counts, the sweep's seconds and the best point's numbers under the names
its children use (``val_accuracy``, ``val_loss``, ``test_top1_accuracy``, ...), so that the
parent's row lines up with its children's in the MLflow UI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
from pipeline.data.dataset import check_split, data_digests, split_made
from pipeline.errors import PipelineError
from pipeline.files import require, safe_name
from pipeline.names import (
    CHAMPION,
    CURVES,
    PROCESSED,
    REGISTERED_MODEL,
    SUMMARY,
    SWEEP_REPORTS,
    TRAIN_SECONDS,
)
from pipeline.reporting import study, sweep_summary
from pipeline.reporting.sweep_summary import FINISHED
from pipeline.sweeps import launchers
from pipeline.sweeps.points import is_optuna, plain_config
from pipeline.sweeps.state import add_to_jobs, sweep_dir_of, task_overrides
from pipeline.tracking.provenance import HOST_TAG, PID_TAG, STARTED_TAG, pipeline_outputs
from pipeline.tracking.provenance import process_tags as tracking_process_tags
from pipeline.tracking.reaper import stale_reason

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
        parsed = OverridesParser.create().parse_overrides(task_overrides(hydra_cfg))
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


#: Set by DVC in the environment of a stage's command: the stage's name.
DVC_STAGE = "DVC_STAGE"
#: Where a sweep whose summary may not go to ``reports/sweep/<grid>/`` writes it instead.
OWN_SUMMARY = "summary"


def _dvc_outputs_within(cwd: Path, folder: Path) -> list[str]:
    """The outputs of DVC stages (``dvc.yaml`` in ``cwd``) that lie in ``folder`` or hold it."""
    try:
        relative = folder.resolve().relative_to(cwd.resolve()).as_posix()
    except ValueError:
        return []
    return [
        out
        for out in pipeline_outputs(cwd)
        if out != "dvc.lock"
        and (out == relative or out.startswith(relative + "/") or relative.startswith(out + "/"))
    ]


#: The file that claims a sweep folder for one sweep: its process (host, pid, start time).
OWNER_FILE = ".owner.json"


def _check_folder_is_ours(cwd: Path, sweep_dir: Path) -> None:
    """Refuse a sweep folder that a DVC stage owns, unless DVC runs this sweep."""
    owned = _dvc_outputs_within(cwd, sweep_dir)
    if owned and not os.environ.get(DVC_STAGE):
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir}: {owned[0]} is an output of a DVC stage; run "
            "`dvc repro` for it, or choose another folder"
        )


def _claim_folder(sweep_dir: Path) -> None:
    """Claim ``sweep_dir`` for this process (``.owner.json``, created exclusively), or refuse it
    when another live sweep of this host holds it: concurrent sweeps share nothing they write.
    A claim whose process is gone is taken over."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    mine = tracking_process_tags()
    path = sweep_dir / OWNER_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                other = {}
            tags = {k: str(other[k]) for k in (HOST_TAG, PID_TAG, STARTED_TAG) if k in other}
            alive = (
                tags.get(HOST_TAG) == mine[HOST_TAG] and stale_reason(tags, mine[HOST_TAG]) is None
            )
            if alive and tags.get(PID_TAG) != mine[PID_TAG]:
                raise ConfigError(
                    f"hydra.sweep.dir={sweep_dir}: another sweep (pid {tags.get(PID_TAG)}) is "
                    "writing into this folder; choose another one (or leave hydra.sweep.dir "
                    "out: each sweep gets its own)"
                ) from None
            path.unlink(missing_ok=True)  # a dead sweep's claim (or our own): take it over
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(mine, fh)
        return
    raise ConfigError(f"hydra.sweep.dir={sweep_dir}: another sweep claimed it at the same time")


def _reports_dir(cwd: Path, reports: Path, sweep_dir: Path) -> Path:
    """Where the sweep's summary goes: ``<reports>/<grid>/``, unless that folder holds a DVC
    stage's outputs and DVC is not the one running this sweep: then ``<sweep dir>/summary/``,
    so that a sweep run by hand does not overwrite what ``dvc.lock`` pins."""
    target = cwd / reports
    if _dvc_outputs_within(cwd, target) and not os.environ.get(DVC_STAGE):
        log.warning(
            "%s holds the outputs of a DVC stage: this sweep's summary goes to %s instead "
            "(`dvc repro` writes %s)",
            reports,
            sweep_dir / OWN_SUMMARY,
            reports,
        )
        return sweep_dir / OWN_SUMMARY
    return target


def start_sweep(config: DictConfig, reports: str | Path = SWEEP_REPORTS) -> str:
    """Check the base config, the data and the launcher, start the parent run, and make every
    job carry its id. Returns the parent run's id."""
    hc = config.hydra
    cwd = Path(hc.runtime.cwd)
    sweep_dir = sweep_dir_of(hc)
    choices = OmegaConf.select(hc, "runtime.choices") or {}
    name = safe_name(choices.get("sweep") or choices.get("hparams_search") or ADHOC)
    base = validate(plain_config(config))
    data_path = require(cwd / PROCESSED, "preprocess")
    check_split(base.data, split_made(data_path.with_name(SUMMARY.name)), data_path)
    _check_folder_is_ours(cwd, sweep_dir)
    reports_dir = _reports_dir(cwd, Path(reports) / name, sweep_dir)
    launcher = launchers.check(hc)
    _claim_folder(sweep_dir)
    overrides = " ".join(task_overrides(hc))
    grid = _grid(hc)
    parent_config = {
        "sweep": {"name": name, "overrides": overrides, "grid": grid, "launcher": launcher}
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
            params=grid,
            tags={
                "sweep.name": name,
                "sweep.dir": str(sweep_dir),
                "sweep.launcher": launcher,
                "sweep.overrides": overrides or "(none)",
            },
            description=f"Sweep `{name}` over {', '.join(grid) or 'no key'} ({launcher}): one "
            "child run per point; the best point, chosen on validation accuracy, is registered "
            f"as a version of `{REGISTERED_MODEL}`.",
        )
    )
    search = list(parent_config["sweep"]["grid"]) if is_optuna(hc) else None
    _OPEN[sweep_dir] = _OpenSweep(stack, run, reports_dir, name, time.perf_counter(), search)
    try:
        base_yaml = yaml.safe_dump(to_dict(base), sort_keys=False, default_flow_style=None)
        run.log_text(base_yaml, "base_config.yaml")
        add_to_jobs(
            config,
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


def open_parent_id(sweep_dir: Path) -> str | None:
    """The id of the parent run of the sweep in ``sweep_dir`` while it is open in this process
    (the launcher runs in the process that started it)."""
    state = _OPEN.get(Path(sweep_dir).absolute())
    return state.run.id if state is not None else None


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
    _end_dead_points(state, rows)
    best = sweep_summary.best_point(rows)
    registry = _register_best(state, best) if best is not None else {}
    reports = state.reports
    if reports != sweep_dir / OWN_SUMMARY and (ended != "finished" or not rows):
        # An interrupted sweep, or one without a single point, does not replace the summary of
        # the last sweep that ran to its end: its own goes into its folder (and to its run).
        reports = sweep_dir / OWN_SUMMARY
        log.warning(
            "sweep %s with %d point(s): its summary is in %s; %s keeps the last complete one",
            ended,
            len(rows),
            reports,
            state.reports,
        )
    files = sweep_summary.write_summary(rows, reports, state.name, registry)
    if state.search is not None:  # an Optuna search: its trials over time, and importances
        files += study.write_study(rows, reports, state.search, state.name)
    n = sweep_summary.counts(rows)
    metrics: dict[str, float] = {**n, "sweep_seconds": time.perf_counter() - state.started}
    if best is not None:  # under its children's names, so that the columns line up
        for key, column in _BEST_METRICS.items():
            if isinstance(best.get(key), (int, float)):
                metrics[column] = float(best[key])
        tags = {
            "best_run_id": best.get("run_id"),
            "best_job": best.get("job"),
            "best_overrides": " ".join(best.get("overrides", [])),
            "best_architecture": sweep_summary.architecture(best),
            "best_model_version": registry.get("model_version"),
            "best_champion": registry.get("champion"),
        }
        if state.search is not None:
            tags["best_trial"] = best.get("job")
        state.run.set_tags({key: value for key, value in tags.items() if value is not None})
        state.run.describe(_description(state, best, registry))
    state.run.log_metrics(metrics)
    for path in files:
        state.run.log_file(path, "summary")
    log.info(
        "sweep %s: %d points, %d finished, %d failed; summary in %s",
        ended,
        n["points"],
        n["points_finished"],
        n["points_failed"],
        reports,
    )
    if best is not None:
        log.info(
            "best point #%s %s: validation top-1 %.4f, test top-1 %.4f; %s",
            best["job"],
            " ".join(best.get("overrides", [])),
            best["val_top1_accuracy"],
            best["test_top1_accuracy"],
            _registry_line(registry),
        )
    return sweep_summary.exit_status(rows)


def _end_dead_points(state: _OpenSweep, rows: list[dict[str, Any]]) -> None:
    """Points whose worker process died (their row, written by the launcher, says
    ``worker_died`` and has the worker's pid but no run): their child run, left RUNNING, ends
    FAILED with the row's reason; runs that other dead workers left RUNNING end KILLED."""
    dead = {
        str(row["pid"]): str(row.get("reason"))
        for row in rows
        if row.get("worker_died") and row.get("run_id") is None and row.get("pid")
    }
    ended = tracking.end_dead_children(state.run, dead)
    for row in rows:
        if row.get("run_id") is None and str(row.get("pid")) in ended:
            row["run_id"] = ended[str(row["pid"])]


#: The best point's numbers (``result.json`` keys) -> the names its child run has them under.
_BEST_METRICS = {
    "val_top1_accuracy": CURVES["val_accuracy"],
    "val_cross_entropy": CURVES["val_loss"],
    "test_top1_accuracy": "test_top1_accuracy",
    "test_cross_entropy": "test_cross_entropy",
    "train_seconds": TRAIN_SECONDS,
}


#: The best point's numbers a registered version carries as tags.
_VERSION_TAGS = ("val_top1_accuracy", "test_top1_accuracy")


def _register_best(state: _OpenSweep, best: dict[str, Any]) -> dict[str, Any]:
    """Register the best point's model as a version of ``mnist-mlp``, tagged and described with
    its validation and test accuracy, and :func:`promote` it. Returns what the summary records:
    the registered model, the version and whether it is now the champion."""
    # Few tags: the UI shows about five. The run, its overrides and scores are linked.
    tags = {
        "origin": f"sweep {state.name}",
        **{k: round(float(best[k]), 6) for k in _VERSION_TAGS if best.get(k) is not None},
    }
    description = (
        f"The best of sweep `{state.name}` on validation accuracy: point #{best.get('job')}, "
        f"{sweep_summary.architecture(best)}, learning rate {best.get('learning_rate')}; "
        f"validation top-1 {best['val_top1_accuracy']:.4f}, "
        f"test top-1 {best['test_top1_accuracy']:.4f}."
    )
    try:
        version = tracking.register_model(
            state.run.uri, best["run_id"], tags=tags, description=description
        )
        champion = promote(state.run.uri, version)
    except Exception as exc:
        raise PipelineError(f"could not register the best point's model: {exc}") from exc
    return {"registered_model": REGISTERED_MODEL, "model_version": version, "champion": champion}


def promote(uri: str, version: str) -> bool:
    """Move the alias ``champion`` to ``version`` when it is the better model: when there is no
    champion yet, when its validation accuracy is higher than the champion's on the same
    validation data (a tie keeps the champion), or when the champion was validated on other
    data (its number cannot be compared; the newer data wins). Returns whether it moved."""
    current = tracking.champion(uri)
    new_tags = tracking.model_version_tags(uri, version)
    if current is not None:
        old_version, old_tags = current
        if old_version == version:
            return True
        same_data = old_tags.get("validation_data") == new_tags.get("validation_data")
        try:
            better = float(new_tags["val_top1_accuracy"]) > float(old_tags["val_top1_accuracy"])
        except (KeyError, ValueError):
            better = True
        if same_data and not better:
            return False
    tracking.set_champion(uri, version)
    return True


def _description(state: _OpenSweep, best: dict[str, Any], registry: dict[str, Any]) -> str:
    """The parent run's description once the sweep is over: the best point, linked."""
    point = state.run.link(best["run_id"], f"point #{best.get('job')}")
    return (
        f"Sweep `{state.name}`: the best point on validation accuracy is {point}, "
        f"{sweep_summary.architecture(best)}, learning rate {best.get('learning_rate')}: "
        f"validation top-1 {best['val_top1_accuracy']:.4f}, "
        f"test top-1 {best['test_top1_accuracy']:.4f}; {_registry_line(registry)}."
    )


def _registry_line(registry: dict[str, Any]) -> str:
    if not registry:
        return "not registered"
    where = f"{registry['registered_model']} version {registry['model_version']}"
    if registry["champion"]:
        return f"registered as {where}, now {REGISTERED_MODEL}@{CHAMPION}"
    return f"registered as {where}; {REGISTERED_MODEL}@{CHAMPION} stays (as good or better)"


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
